"""The Kubernetes-facing vocabulary: the CRD models and their generation, resource ids, conditions,
quantities, times and error shapes. Everything else builds on it; it imports nothing of Kova's."""

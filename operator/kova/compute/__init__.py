"""Compute: Nova servers (Instances) and their life cycle over KubeVirt."""

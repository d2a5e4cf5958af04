"""Kova: Nova and Glance as a Kubernetes operator."""

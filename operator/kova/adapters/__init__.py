"""Adapters: the Kubernetes client, watch caches, writes, status publishing, the object store, HTTP
sources, settings from the environment and Kopf's bookkeeping. Domain modules never import these."""

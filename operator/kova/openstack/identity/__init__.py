"""Keystone v3 as OpenStack clients use it: a Kubernetes token is the credential, a namespace the project."""

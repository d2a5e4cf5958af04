"""Kopf handler bodies, one module per kind (none imports another); the cache wiring in wiring.py; the
registrations in kova.main."""

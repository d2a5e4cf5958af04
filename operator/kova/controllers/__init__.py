"""Kopf handler bodies, one module per kind; registration lives in kova.main."""

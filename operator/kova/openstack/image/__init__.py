"""Glance v2 over the Image objects."""

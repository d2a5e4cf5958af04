"""Glance's rules and the verified pipeline: status words, visibility, formats, the import filter and the importer."""

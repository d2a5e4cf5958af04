"""Glance's side of Kova: where image bytes come from, how they are checked, and how they are stored."""

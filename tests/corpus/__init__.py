"""Real small disk images (gzip) and the table of what an import must make of them: see cases.py."""

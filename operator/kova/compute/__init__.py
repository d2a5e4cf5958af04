"""Nova's rules as pure functions: the server's plan and life cycle, its children, guest, access,
flavors and snapshots."""

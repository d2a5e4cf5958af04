"""The OpenStack front door (`kova api`): per service, pure documents and rules, and thin aiohttp handlers."""

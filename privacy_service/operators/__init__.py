"""Operators (staff and back-end services) and their scoped API keys."""

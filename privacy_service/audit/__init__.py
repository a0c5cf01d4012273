"""Audit trail of who touched which subject's data (opaque ids only, never PII)."""

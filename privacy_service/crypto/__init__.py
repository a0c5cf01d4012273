"""Envelope encryption: KEKs from a KeyProvider, per-subject DEKs, AEAD fields, blind indexes."""

"""Outgoing messages: written to an outbox in the sender's transaction, delivered after commit."""

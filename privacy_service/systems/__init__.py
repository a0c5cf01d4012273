"""Downstream systems: the registry, signed webhook fan-out, signed callbacks."""

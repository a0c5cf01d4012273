"""The one way this service compares secrets: in constant time.

Operator key hashes, request tokens, verification codes, audit checkpoint MACs and Vault key
bindings all go through :func:`constant_time_equals`, so a timing side channel cannot reveal how
many leading bytes of a guess were right.
"""

from __future__ import annotations

import hmac


def constant_time_equals(a: bytes, b: bytes) -> bool:
    """``a == b`` in time that depends on the lengths only, never on where the bytes differ."""
    return hmac.compare_digest(a, b)

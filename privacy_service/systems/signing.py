"""Webhook and callback signatures: HMAC-SHA256 over ``<timestamp>.<raw body>`` with a shared key.

Headers (both directions)::

    X-Privacy-Key-Id:    the system's key id (public; says which key signed)
    X-Privacy-Timestamp: Unix seconds when the message was signed
    X-Privacy-Signature: v1=<hex HMAC-SHA256(key, timestamp + "." + body)>[,v1=<hex>...]

The key is the ``pss_...`` string shown once at registration, used as UTF-8 bytes. A message whose
timestamp is further than the replay window from the verifier's clock is stale; within the window the
verifier remembers what it accepted (webhooks: the Idempotency-Key; callbacks: the signature).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from privacy_service.security import constant_time_equals

SCHEME = "v1"
KEY_ID_HEADER = "X-Privacy-Key-Id"
TIMESTAMP_HEADER = "X-Privacy-Timestamp"
SIGNATURE_HEADER = "X-Privacy-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class SignatureError(Exception):
    """Why a message was refused: ``unsigned``, ``malformed``, ``stale`` or ``bad_signature``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def mac(key: bytes, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).digest()


def sign(key: bytes, key_id: str, body: bytes, now: datetime) -> dict[str, str]:
    """The three signature headers for ``body``, signed at ``now``."""
    timestamp = int(now.timestamp())
    return {
        KEY_ID_HEADER: key_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: f"{SCHEME}={mac(key, timestamp, body).hex()}",
    }


def verify(
    key: bytes, body: bytes, *, timestamp: str | None, signature: str | None, now: datetime, window_seconds: int
) -> bytes:
    """Check a signed message; return the MAC that matched (the replay-cache entry). Raises SignatureError."""
    if not timestamp or not signature:
        raise SignatureError("unsigned")
    try:
        signed_at = int(timestamp)
    except ValueError:
        raise SignatureError("malformed") from None
    if abs(now.timestamp() - signed_at) > window_seconds:
        raise SignatureError("stale")
    expected = mac(key, signed_at, body)
    # Several v1 values may be sent while the signer rotates keys; one match is enough.
    for part in signature.split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme != SCHEME:
            continue
        try:
            presented = bytes.fromhex(value)
        except ValueError:
            continue
        if constant_time_equals(presented, expected):
            return expected
    raise SignatureError("bad_signature")

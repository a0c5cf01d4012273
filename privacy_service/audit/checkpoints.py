"""Signatures over the audit chain, and checkpoints kept outside the database.

The chain's SHA-256 links have no key: whoever can write the tables can recompute them. What pins
the chain is a MAC under the audit key, which lives in the keyring file or ``PRIVACY_AUDIT_KEY``,
never in the database: the head row carries one, and so does each checkpoint.

Checkpoints in the ``audit_checkpoints`` table can still be deleted along with the entries they
pin. A copy kept elsewhere cannot: ``audit checkpoint`` prints (and may append to a file) one JSON
line per checkpoint, the sealer logs each automatic checkpoint as the same line, and ``audit verify
--checkpoints FILE`` fails unless the database's chain still contains every one of them. A shipped
log is such a file as it is: lines of other events are skipped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from privacy_service.security import constant_time_equals

CHECKPOINT_EVENT = "audit_checkpoint"
_CHECKPOINT_CONTEXT = b"privacy-service/audit-checkpoint/v1|"
# A different context: a checkpoint's MAC can never be copied onto the head to move it back there.
_HEAD_CONTEXT = b"privacy-service/audit-head/v1|"
_HASH_BYTES = 32


def checkpoint_mac(key: bytes, seq: int, chain_hash: bytes) -> bytes:
    return hmac.new(key, _CHECKPOINT_CONTEXT + struct.pack(">Q", seq) + chain_hash, hashlib.sha256).digest()


def head_mac(key: bytes, seq: int, chain_hash: bytes) -> bytes:
    return hmac.new(key, _HEAD_CONTEXT + struct.pack(">Q", seq) + chain_hash, hashlib.sha256).digest()


class CheckpointFileError(ValueError):
    """A checkpoint file (or shipped log) that cannot be read as checkpoints."""


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """The chain's hash at ``seq``, signed with the audit key."""

    seq: int
    hash: bytes
    mac: bytes
    at: datetime | None = None

    @classmethod
    def sign(cls, key: bytes, seq: int, chain_hash: bytes, at: datetime | None = None) -> SignedCheckpoint:
        return cls(seq, chain_hash, checkpoint_mac(key, seq, chain_hash), at)

    def signed_with(self, key: bytes) -> bool:
        return constant_time_equals(self.mac, checkpoint_mac(key, self.seq, self.hash))

    def fields(self) -> dict[str, Any]:
        """What a log line or a checkpoint file line carries (no personal data: numbers and digests)."""
        fields: dict[str, Any] = {"seq": self.seq, "hash": self.hash.hex(), "mac": self.mac.hex()}
        if self.at is not None:
            fields["at"] = self.at.isoformat(timespec="seconds")
        return fields

    def line(self) -> str:
        return json.dumps({"event": CHECKPOINT_EVENT, **self.fields()}, separators=(",", ":"))


def _hex(value: Any, name: str, where: str) -> bytes:
    if not isinstance(value, str):
        raise CheckpointFileError(f"{where}: '{name}' must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise CheckpointFileError(f"{where}: '{name}' is not hex") from None
    if len(raw) != _HASH_BYTES:
        raise CheckpointFileError(f"{where}: '{name}' must be {_HASH_BYTES} bytes")
    return raw


def parse_checkpoints(text: str, source: str) -> list[SignedCheckpoint]:
    """Checkpoints from JSON lines: ``audit checkpoint`` output, or a log holding ``audit_checkpoint``
    lines among others (those are skipped). Anything else that is not a JSON object is an error, and
    so is a file without a single checkpoint: an empty or wrong file must never pass as "verified"."""
    found: list[SignedCheckpoint] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{source} line {number}"
        try:
            entry = json.loads(raw)
        except ValueError:
            raise CheckpointFileError(f"{where} is not JSON") from None
        if not isinstance(entry, dict):
            raise CheckpointFileError(f"{where} is not a JSON object")
        if entry.get("event", CHECKPOINT_EVENT) != CHECKPOINT_EVENT:
            continue  # another log event
        seq = entry.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 2**63:
            raise CheckpointFileError(f"{where}: 'seq' must be a positive integer")
        found.append(
            SignedCheckpoint(seq, _hex(entry.get("hash"), "hash", where), _hex(entry.get("mac"), "mac", where))
        )
    if not found:
        raise CheckpointFileError(f"{source} holds no audit checkpoint")
    return found

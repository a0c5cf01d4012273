"""Audit events, the chain head and signed checkpoints.

Events hold opaque ids and non-PII detail only, so they can outlive erasure. An event is inserted in
the same transaction as the action it records; the chainer then gives it a gap-free ``seq`` and links
it into the SHA-256 hash chain (see service.py for why sealing is a separate, single-flight step).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, LargeBinary, text
from sqlmodel import Field, SQLModel

from privacy_service.db import UTCDateTime

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_subject_at", "subject_id", "at"),
        Index("ix_audit_seq", "seq", unique=True),
        Index("ix_audit_action_seq", "action", "seq"),  # the console's search by action
        Index("ix_audit_actor_seq", "actor_id", "seq"),  # the console's search by actor
        Index(
            "ix_audit_pending",
            "id",
            postgresql_where=text("seq IS NULL"),
            sqlite_where=text("seq IS NULL"),
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    at: datetime = Field(sa_type=UTCDateTime)
    actor_type: str = Field(max_length=16)
    actor_id: str = Field(max_length=64)
    action: str = Field(max_length=64)
    subject_id: uuid.UUID | None = None
    outcome: str = Field(default="ok", max_length=16)
    request_id: str | None = Field(default=None, max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class AuditHead(SQLModel, table=True):
    """The last sealed event's seq and hash (one row, id = 1); locked while sealing.

    ``mac`` signs (seq, hash) with the audit key, which the database does not hold: someone who can
    only write the tables can neither move the head back nor point it at a recomputed chain. The
    empty log's head (seq 0) is unsigned.
    """

    __tablename__ = "audit_head"

    id: int = Field(primary_key=True)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    mac: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class AuditCheckpoint(SQLModel, table=True):
    """An HMAC over (seq, hash) with the audit key: verification may start from here."""

    __tablename__ = "audit_checkpoints"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    mac: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)


class AuditVerification(SQLModel, table=True):
    """One run of the chain check (``audit verify``, or the worker's daily ``audit-verify`` job).

    Kept outside the chain, so checking the log never adds to it. ``GET /metrics`` reports the last
    successful one (``privacy_audit_chain_last_verified_timestamp_seconds``) and whether the latest passed.
    """

    __tablename__ = "audit_verifications"
    __table_args__ = (Index("ix_audit_verifications_at", "at"),)

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    at: datetime = Field(sa_type=UTCDateTime)
    # "cli", "worker", or "operator:<operator id>" for a check an operator ran from the console.
    actor: str = Field(max_length=80)
    ok: bool
    from_checkpoint: bool = False
    checked: int = Field(sa_column=Column(BigInteger, nullable=False))
    start_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    head_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    external: int = 0
    broken_seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # A fixed sentence with sequence numbers (audit.service.verify_chain): never event content.
    problem: str | None = Field(default=None, max_length=200)

"""Legal holds, purge runs and the anonymised aggregates a purge leaves behind.

- ``legal_holds``: a hold keeps everything of one subject (no purge, no erasure) until it is
  released or its ``until`` passes. The operator's reason is free text and may name people or
  cases, so it is sealed like any other PII: under the subject's own data key (``reason_key`` names
  which one), and it becomes unreadable when that key is shredded. Who placed/released a hold and
  when are ids and times only, and stay as evidence.
- ``retention_runs``: one row per purge run (dry or real) with its per-rule counts; updated in the
  same transaction as each batch it reports, so it always matches what was committed.
- ``retention_aggregates``: what an ``anonymise`` action keeps: counts per (category, record kind,
  month, order of magnitude of the amount). No subject or record id, no exact time or amount.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, LargeBinary, UniqueConstraint
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Field, SQLModel, and_, col, or_

from privacy_service.db import UTCDateTime


class LegalHold(SQLModel, table=True):
    __tablename__ = "legal_holds"
    __table_args__ = (Index("ix_legal_holds_subject", "subject_id"),)

    id: uuid.UUID = Field(primary_key=True)
    subject_id: uuid.UUID = Field(sa_column=Column(ForeignKey("subjects.id"), nullable=False))
    reason_ct: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    # Which of the subject's data keys seals the reason ("primary", or "retention" once restricted).
    reason_key: str = Field(max_length=20)
    placed_by: str = Field(max_length=64)
    placed_at: datetime = Field(sa_type=UTCDateTime)
    until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    released_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    released_by: str | None = Field(default=None, max_length=64)

    @staticmethod
    def active_at(now: datetime) -> ColumnElement[bool]:
        """The SQL condition for "this hold protects its subject at ``now``"."""
        return and_(
            col(LegalHold.released_at).is_(None),
            or_(col(LegalHold.until).is_(None), col(LegalHold.until) > now),
        )

    def is_active(self, now: datetime) -> bool:
        return self.released_at is None and (self.until is None or self.until > now)


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    # A safety threshold was exceeded and --force was not given: nothing was changed.
    REFUSED = "refused"
    FAILED = "failed"
    # Its process died mid-run (found by the next run); what it committed stays committed.
    INTERRUPTED = "interrupted"


class RetentionRun(SQLModel, table=True):
    __tablename__ = "retention_runs"
    __table_args__ = (Index("ix_retention_runs_started", "started_at", "id"),)

    id: uuid.UUID = Field(primary_key=True)
    status: str = Field(max_length=16)
    dry_run: bool
    forced: bool = False
    # The "now" every decision of the run is taken at.
    as_of: datetime = Field(sa_type=UTCDateTime)
    started_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    actor_type: str = Field(max_length=16)
    actor_id: str = Field(max_length=64)
    policy_version: str = Field(max_length=64)
    policy_hash: str = Field(max_length=64)
    batch_size: int
    # Per-rule counts and alerts: category keys and numbers only (schemas.RunReport, without holds).
    report: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # The legal holds in force when the run planned (hold and subject ids); written once, not per batch.
    holds: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str | None = Field(default=None, max_length=200)


# SQLite only auto-increments an INTEGER PRIMARY KEY.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


class RetentionAggregate(SQLModel, table=True):
    __tablename__ = "retention_aggregates"
    __table_args__ = (UniqueConstraint("category", "kind", "month", "amount_band", name="uq_retention_aggregates_key"),)

    id: int | None = Field(default=None, sa_column=Column(_BigId, primary_key=True, autoincrement=True))
    category: str = Field(max_length=80)
    kind: str = Field(max_length=40)
    month: str = Field(max_length=7)  # YYYY-MM of occurred_at
    # "" when the record had no numeric amount, else the decade it falls in ("100-1000").
    amount_band: str = Field(default="", max_length=24)
    count: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(sa_type=UTCDateTime)

"""Downstream-system rows: the registry, the webhook queue with its log, callback nonces, returned data.

Nothing here holds plaintext PII or a plaintext key: a system's signing key is sealed under a data key
owned by the system's id, a webhook body under its request's key, returned access data under the
subject's key (so erasing the subject shreds it).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, LargeBinary, Uuid, text
from sqlmodel import Field, SQLModel

from privacy_service.db import UTCDateTime

_BigId = BigInteger().with_variant(Integer(), "sqlite")


def _request_fk() -> Column[uuid.UUID]:
    # Purging a request (retention) takes its deliveries, their log and the data systems returned.
    return Column(Uuid, ForeignKey("dsr_requests.id", ondelete="CASCADE"), nullable=False)


class DownstreamSystem(SQLModel, table=True):
    __tablename__ = "systems"
    __table_args__ = (
        Index(
            "uq_systems_active_name",
            "name",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
    )

    id: uuid.UUID = Field(primary_key=True)
    name: str = Field(max_length=100)
    callback_url: str = Field(max_length=2000)
    request_types: list[str] = Field(sa_column=Column(JSON, nullable=False))
    # Policy category keys the system holds: decides which rectifications concern it.
    categories: list[str] = Field(sa_column=Column(JSON, nullable=False))
    # The identities it needs to find a customer (schemas.IdentityKind); nothing else is sent.
    identities: list[str] = Field(sa_column=Column(JSON, nullable=False))
    timeout_seconds: float
    required: bool
    key_id: str = Field(max_length=32, unique=True)
    secret_ct: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)
    removed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Delivery(SQLModel, table=True):
    """One request's webhook to one system: a queue row (claimed with a lease) and the system's answer."""

    __tablename__ = "system_deliveries"
    __table_args__ = (
        Index("ix_system_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_system_deliveries_request", "request_id"),
        Index("ix_system_deliveries_system", "system_id", "created_at"),
        # The console's recent deliveries (systems health, dashboard): a range of the last days' rows.
        Index("ix_system_deliveries_status_delivered", "status", "delivered_at"),
    )

    id: uuid.UUID = Field(primary_key=True)
    request_id: uuid.UUID = Field(sa_column=_request_fk())
    system_id: uuid.UUID = Field(foreign_key="systems.id")
    required: bool
    status: str = Field(default="pending", max_length=12)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=100)
    # The signed body's plaintext, sealed under the request's key; wiped once delivered.
    payload: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    created_at: datetime = Field(sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    answer: str | None = Field(default=None, max_length=12)
    answered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    answer_due_at: datetime = Field(sa_type=UTCDateTime)
    escalated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class DeliveryAttempt(SQLModel, table=True):
    """The delivery log: every POST, its outcome and how long it took."""

    __tablename__ = "system_delivery_attempts"
    __table_args__ = (Index("ix_system_delivery_attempts_delivery", "delivery_id", "id"),)

    id: int | None = Field(default=None, sa_column=Column(_BigId, primary_key=True, autoincrement=True))
    delivery_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("system_deliveries.id", ondelete="CASCADE"), nullable=False)
    )
    system_id: uuid.UUID
    attempt: int
    at: datetime = Field(sa_type=UTCDateTime)
    # delivered | http_error | refused_address | timeout | tls_error | network_error | unsendable: a class,
    # never a network detail (no address, port or error text)
    outcome: str = Field(max_length=16)
    status_code: int | None = None
    duration_ms: float


class CallbackNonce(SQLModel, table=True):
    """Signatures of accepted callbacks, kept for the replay window: the same message twice is a replay."""

    __tablename__ = "system_callback_nonces"
    __table_args__ = (Index("ix_system_callback_nonces_received", "system_id", "received_at"),)

    digest: bytes = Field(sa_column=Column(LargeBinary, primary_key=True))
    system_id: uuid.UUID
    received_at: datetime = Field(sa_type=UTCDateTime)


class SystemData(SQLModel, table=True):
    """Access data a system returned, sealed under the subject's key; part of the export, by system."""

    __tablename__ = "system_data"
    __table_args__ = (Index("ix_system_data_request", "request_id", "received_at"),)

    id: uuid.UUID = Field(primary_key=True)
    request_id: uuid.UUID = Field(sa_column=_request_fk())
    delivery_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("system_deliveries.id", ondelete="CASCADE"), nullable=False)
    )
    system_id: uuid.UUID
    subject_id: uuid.UUID
    data_ct: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    received_at: datetime = Field(sa_type=UTCDateTime)


class Fanout(SQLModel, table=True):
    """A request waiting for systems: where its completion mail goes (resolved before any erasure)."""

    __tablename__ = "system_fanouts"

    request_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("dsr_requests.id", ondelete="CASCADE"), primary_key=True)
    )
    recipient_ct: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    created_at: datetime = Field(sa_type=UTCDateTime)

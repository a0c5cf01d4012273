"""Outbox rows. A message to a data subject is sealed under its owner's key (the request's)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary
from sqlmodel import Field, SQLModel

from privacy_service.db import UTCDateTime


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox_messages"
    __table_args__ = (Index("ix_outbox_status_next", "status", "next_attempt_at"),)

    id: uuid.UUID = Field(primary_key=True)
    template: str = Field(max_length=40)
    # The key owner whose data key seals the payload (a request id); None for operator mail (no PII).
    owner_id: uuid.UUID | None = None
    payload: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    status: str = Field(default="pending", max_length=12)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

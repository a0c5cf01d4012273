"""Audit events: opaque ids and non-PII detail only, so they can outlive erasure."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from privacy_service.db import UTCDateTime


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_subject_at", "subject_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime)
    actor_type: str = Field(max_length=16)
    actor_id: str = Field(max_length=64)
    action: str = Field(max_length=64)
    subject_id: uuid.UUID | None = None
    outcome: str = Field(default="ok", max_length=16)
    request_id: str | None = Field(default=None, max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))

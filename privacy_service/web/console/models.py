"""A signed-in console browser. Only the SHA-256 of the session token is stored."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, ForeignKey, Index, LargeBinary, Uuid
from sqlmodel import Field, SQLModel

from privacy_service.db import UTCDateTime


class ConsoleSession(SQLModel, table=True):
    __tablename__ = "console_sessions"
    __table_args__ = (
        Index("ix_console_sessions_token_hash", "token_hash", unique=True),
        Index("ix_console_sessions_operator_id", "operator_id"),
    )

    id: uuid.UUID = Field(primary_key=True)
    token_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    operator_id: uuid.UUID = Field(sa_column=Column(Uuid, ForeignKey("operators.id"), nullable=False))
    # The key's scopes at sign-in; each request narrows them to the key's scopes then.
    scopes: str = Field(max_length=500)
    created_at: datetime = Field(sa_type=UTCDateTime)
    last_seen_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)  # the absolute timeout
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    end_reason: str | None = Field(default=None, max_length=16)

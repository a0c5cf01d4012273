"""Operator API keys: only a SHA-256 hash of the secret part is stored."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, LargeBinary
from sqlmodel import Field, SQLModel

from privacy_service.db import UTCDateTime


class Operator(SQLModel, table=True):
    __tablename__ = "operators"

    id: uuid.UUID = Field(primary_key=True)
    name: str = Field(max_length=100, unique=True)
    key_id: str = Field(max_length=32, unique=True)
    key_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    scopes: str = Field(max_length=500)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

"""Wrapped per-subject data keys, kept in the separate ``keystore`` schema/file."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary
from sqlmodel import Field, SQLModel

from privacy_service.db import KEYSTORE_SCHEMA, UTCDateTime


class DataKeyRow(SQLModel, table=True):
    __tablename__ = "data_keys"
    __table_args__ = (
        Index("ix_data_keys_subject", "subject_id"),
        Index("ix_data_keys_kek_version", "kek_version"),
        {"schema": KEYSTORE_SCHEMA},
    )

    id: uuid.UUID = Field(primary_key=True)
    subject_id: uuid.UUID
    purpose: str = Field(max_length=20)
    kek_version: int
    wrapped: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)
    rewrapped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

"""Subject and record rows. Every PII column is ciphertext; lookups go through blind indexes."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, LargeBinary, text
from sqlmodel import Field, SQLModel

from privacy_service.db import UTCDateTime


class SubjectStatus(StrEnum):
    ACTIVE = "active"
    ERASED = "erased"
    # Erased except for data a legal duty keeps (restricted, purged when the duty ends).
    RESTRICTED = "restricted"


class Subject(SQLModel, table=True):
    __tablename__ = "subjects"

    id: uuid.UUID = Field(primary_key=True)
    status: str = Field(default=SubjectStatus.ACTIVE, max_length=16)
    language: str = Field(default="en", max_length=8)
    email_bidx: bytes | None = Field(default=None, sa_column=Column(LargeBinary, unique=True))
    phone_bidx: bytes | None = Field(default=None, sa_column=Column(LargeBinary, unique=True))
    external_id_bidx: bytes | None = Field(default=None, sa_column=Column(LargeBinary, unique=True))
    email_ct: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    phone_ct: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    external_id_ct: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    profile_ct: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    # Field name -> data category. Names and categories only, never values.
    profile_fields: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    last_activity_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    account_closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    erased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # After a partial erasure: the fields a legal duty keeps, sealed under the "retention" key,
    # no longer returned by normal reads, purged when the duty ends.
    retained_ct: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    retained_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Record(SQLModel, table=True):
    __tablename__ = "records"
    __table_args__ = (
        Index("ix_records_subject_category", "subject_id", "category"),
        # Restricted rows (kept under a legal duty after erasure) are found by their end date (0003).
        Index(
            "ix_records_restricted_until",
            "retain_until",
            postgresql_where=text("restricted"),
            sqlite_where=text("restricted"),
        ),
    )

    id: uuid.UUID = Field(primary_key=True)
    subject_id: uuid.UUID = Field(sa_column=Column(ForeignKey("subjects.id"), nullable=False))
    kind: str = Field(max_length=40)
    category: str = Field(max_length=80)
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    data_ct: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # Kept under a legal duty after erasure: sealed under the retention key, hidden from normal reads.
    restricted: bool = False
    retain_until: datetime | None = Field(default=None, sa_type=UTCDateTime)

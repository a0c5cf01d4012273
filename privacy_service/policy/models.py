"""Published policy versions: immutable snapshots, written once by `privacy-service policy publish`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Column, Integer, String
from sqlmodel import Field, SQLModel

from privacy_service.db import UTCDateTime


class PolicyVersion(SQLModel, table=True):
    """One published version. ``document`` holds the source files' content and the rendered views.

    The rendered views (JSON and JSON-LD per language, as text) are stored rather than re-rendered so
    that an old version is served byte for byte as it was published, whatever the code does later.
    """

    __tablename__ = "policy_versions"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    version: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    content_hash: str = Field(sa_column=Column(String(64), nullable=False))
    effective_date: date
    published_at: datetime = Field(sa_type=UTCDateTime)
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))

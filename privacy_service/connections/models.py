"""The connection registry: one row per database the service reaches itself (issue 18).

The connection URL (with its password) is sealed with AES-GCM under a data key owned by the
connection's id (purpose ``connection``), wrapped by the KEK like every other data key; removing the
connection shreds that key, so no copy of the row (backups, replicas) opens again. Nothing else here
is secret: the dialect, and the last test's outcome as a class of problem (never a driver message,
which may name the host, the user or a value).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, text
from sqlmodel import Field, SQLModel

from privacy_service.db import UTCDateTime


class Connection(SQLModel, table=True):
    __tablename__ = "connections"
    __table_args__ = (
        # A removed connection keeps its row (tasks and the audit trail name it); its name may be used again.
        Index(
            "uq_connections_active_name",
            "name",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
    )

    id: uuid.UUID = Field(primary_key=True)
    name: str = Field(max_length=64)
    # The Fides dataset (fides_key) describing the database's tables and columns.
    dataset: str = Field(max_length=200)
    dialect: str = Field(max_length=16)  # postgresql | mysql | sqlite
    url_ct: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    max_concurrency: int = 2
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    last_test_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_test_ok: bool | None = None
    last_test_problem: str | None = Field(default=None, max_length=500)
    removed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

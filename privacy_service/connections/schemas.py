"""API bodies for the connection registry (/v1/connections)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from privacy_service.subjects.schemas import Strict

ConnectionName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", max_length=64, description="Unique name: lower case, digits, - and _"
    ),
]
FidesKey = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9_.-]{1,200}$",
        max_length=200,
        description="fides_key of a dataset in policies/datasets/ describing the database",
    ),
]
DatabaseUrl = Annotated[
    str,
    msgspec.Meta(
        min_length=8,
        max_length=2000,
        description="postgresql://user:password@host:port/db, mysql:// (MariaDB too) or sqlite:////absolute/path; "
        "sealed at rest, never shown or logged",
    ),
]


class ConnectionCreate(Strict):
    name: ConnectionName
    dataset: FidesKey
    url: DatabaseUrl
    max_concurrency: Annotated[
        int, msgspec.Meta(ge=1, le=32, description="Tasks the worker runs at once against this database")
    ] = 2


class ConnectionOut(msgspec.Struct):
    """A connection as shown: where it points, never who connects or with which password."""

    id: uuid.UUID
    name: str
    dataset: str
    dialect: str
    host: str | None
    port: int | None
    database: str | None
    max_concurrency: int
    created_at: datetime
    updated_at: datetime
    last_test_at: datetime | None
    last_test_ok: bool | None
    last_test_problem: str | None
    removed_at: datetime | None = None


class ConnectionPage(msgspec.Struct):
    items: list[ConnectionOut]


class ConnectionTest(msgspec.Struct):
    """A test's outcome: it connected and found every collection and field, or what stopped it."""

    id: uuid.UUID
    ok: bool
    tested_at: datetime
    # A class of problem (timeout, authentication, missing columns...), never a driver's message.
    problem: str | None
    # "collection" or "collection.field" the dataset names and the database lacks.
    missing: list[str]
    collections: int
    duration_ms: float


class ConnectionRemoved(msgspec.Struct):
    id: uuid.UUID
    removed_at: datetime


class CollectionProgress(msgspec.Struct, omit_defaults=True):
    """One collection of a connection task: done | pending | failed | not_run, rows, and why it failed."""

    status: str
    rows: int = 0
    problem: str | None = None


class TaskProgress(msgspec.Struct):
    """A request's task on a connected database, as an operator sees it (names and counts, never data)."""

    connection: str
    dataset: str
    kind: str  # access | erase
    status: str  # pending | running | done | needs_operator
    attempts: int
    next_attempt_at: datetime | None
    problem: str | None
    collections: dict[str, CollectionProgress]

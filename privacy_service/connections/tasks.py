"""Connection tasks: a request's work on one connected database, persisted so a worker runs it.

One task per request and connection: ``access`` (collect the subject's rows) or ``erase`` (mask
them). Traversal follows references from collection to collection, so a connection's collections
are worked on together, in one transaction on the connected database: a worker killed mid-erasure
leaves that connection unchanged (the transaction rolls back) or fully masked (it committed), and a
rerun masks again, which changes nothing (masking is idempotent). Progress and failures are kept per
collection (``collections``), so an operator sees which collection failed and why, without data.

The identities are captured when the request starts processing, before the vault erasure removes
them (as the webhooks are), sealed under the request's own key; the rows an access task found are
sealed under the same key (purging the request shreds both).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from enum import StrEnum
from typing import Any

from fideslang.models import Dataset, DatasetCollection, DatasetField
from sqlalchemy import JSON, Column, ForeignKey, Index, LargeBinary, UniqueConstraint, Uuid
from sqlmodel import Field, SQLModel

from privacy_service.connections.datasets import policy_category
from privacy_service.crypto.fields import Binding
from privacy_service.db import UTCDateTime
from privacy_service.errors import Conflict
from privacy_service.policy.document import PolicyDocument
from privacy_service.subjects.service import LEGAL_HOLD_BASIS

TABLE = "connection_tasks"


class TaskKind(StrEnum):
    ACCESS = "access"
    ERASE = "erase"


class TaskStatus(StrEnum):
    PENDING = "pending"  # queued, or waiting for its next attempt (next_attempt_at)
    RUNNING = "running"  # claimed by a worker, leased until next_attempt_at
    DONE = "done"
    NEEDS_OPERATOR = "needs_operator"  # gave up after the maximum attempts; an operator retries it
    CANCELLED = "cancelled"  # its connection was removed: the request no longer waits for it


S = TaskStatus
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    S.PENDING: frozenset({S.RUNNING}),
    # RUNNING -> RUNNING: a lease that expired (the worker died) is claimed again.
    S.RUNNING: frozenset({S.RUNNING, S.DONE, S.PENDING, S.NEEDS_OPERATOR, S.CANCELLED}),
    S.NEEDS_OPERATOR: frozenset({S.PENDING, S.CANCELLED}),
    S.DONE: frozenset(),
    S.CANCELLED: frozenset(),
}
# The request waits while one of its tasks is in one of these.
OPEN = frozenset({S.PENDING, S.RUNNING, S.NEEDS_OPERATOR})


class IllegalTaskTransition(Conflict):
    slug = "illegal-task-transition"
    title = "This action is not allowed in the connection task's current status"


def check(current: str, target: TaskStatus) -> None:
    allowed = TRANSITIONS[TaskStatus(current)]
    if target not in allowed:
        raise IllegalTaskTransition(
            f"a connection task that is {current} cannot become {target}",
            extra={"current_status": current, "allowed": sorted(allowed)},
        )


def identities_binding(request_id: uuid.UUID, task_id: uuid.UUID) -> Binding:
    return Binding(TABLE, request_id, task_id, "identities")


def result_binding(request_id: uuid.UUID, task_id: uuid.UUID) -> Binding:
    return Binding(TABLE, request_id, task_id, "result")


class ConnectionTask(SQLModel, table=True):
    __tablename__ = TABLE
    __table_args__ = (
        Index("ix_connection_tasks_status_next", "status", "next_attempt_at"),
        Index("ix_connection_tasks_request", "request_id"),
        Index("ix_connection_tasks_connection", "connection_id", "status"),
        UniqueConstraint("request_id", "connection_id", "kind", name="uq_connection_tasks_request_connection"),
    )

    id: uuid.UUID = Field(primary_key=True)
    # Purging a request (retention) takes its tasks and the rows they found.
    request_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("dsr_requests.id", ondelete="CASCADE"), nullable=False)
    )
    # No foreign key: a removed connection leaves its tasks, which then need an operator.
    connection_id: uuid.UUID
    connection_name: str = Field(max_length=100)
    dataset: str = Field(max_length=200)
    kind: str = Field(max_length=8)
    status: str = Field(default=TaskStatus.PENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    # A class of failure, never a driver message (which may hold a host, a user or a value).
    last_problem: str | None = Field(default=None, max_length=200)
    # Per collection: {"status": pending|done|failed|not_run, "rows": n, "problem": str | None}.
    collections: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Erasure: collection -> field -> {"strategy", "value"} (from the policy; no subject data).
    targets: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Erasure: categories kept (legal duty or hold) as [{category, basis, until, collections}]: planned from the
    # dataset, then cut by the runner to the collections where the subject's rows were found.
    kept: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    identities_ct: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    result_ct: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    rows: int = 0
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# -- planning: what a request asks of one dataset (pure: dataset, policy, rules) -------------------

LEGAL_HOLD = LEGAL_HOLD_BASIS  # the vault's words: one kept line per category across both
READ_ONLY_BASIS = "read-only in the dataset description: this service never writes it"
DEFAULT_STRATEGY = "null_rewrite"
# A collection without a primary key: its rows can be read, never written by key.
NO_PRIMARY_KEY = "no primary key in the dataset"
NOT_ERASED_BASIS = f"not erased: {NO_PRIMARY_KEY}"
NOT_ERASED = "not_erased"  # a collection's status in ConnectionTask.collections
DELETE_ROW = "delete_row"


def _field_categories(dataset: Dataset, collection: DatasetCollection, field: DatasetField) -> list[str]:
    return list(field.data_categories or collection.data_categories or dataset.data_categories or [])


def _read_only(meta: object | None) -> bool:
    return bool(getattr(meta, "read_only", False))


def _primary_key(field: DatasetField) -> bool:
    return bool(field.fides_meta is not None and field.fides_meta.primary_key)


def _deletes_rows(collection: DatasetCollection) -> bool:
    override = collection.fides_meta.masking_strategy_override if collection.fides_meta else None
    return override is not None and override.strategy in ("delete", DELETE_ROW)


def visible_fields(dataset: Dataset, policy: PolicyDocument) -> dict[str, list[str]]:
    """Per collection, the fields an access answer shows: those holding a category of the policy
    (a subject's data); keys and operational columns (``system.*``) stay out."""
    shown: dict[str, list[str]] = {}
    for collection in dataset.collections:
        names = [
            f.name
            for f in collection.fields
            if any(policy_category(c, policy) for c in _field_categories(dataset, collection, f))
        ]
        if names:
            shown[collection.name] = names
    return shown


@dataclass(frozen=True, slots=True)
class Keep:
    basis: str
    until: datetime | None


@dataclass(frozen=True, slots=True)
class ErasurePlan:
    """Collection -> field -> {"strategy", "value"}, and the categories kept as [{category, basis, until,
    collections}] (``collections``: where that category is kept; the runner reports a line only if the
    subject's rows were found in one of them, see :func:`kept_found`)."""

    targets: dict[str, dict[str, dict[str, str | None]]]
    kept: list[dict[str, Any]]
    # Collections holding erasable data this service cannot write (collection -> reason).
    not_erased: dict[str, str] = dataclass_field(default_factory=dict)


def erasure_plan(dataset: Dataset, policy: PolicyDocument, keep: Mapping[str, Keep], *, held: bool) -> ErasurePlan:
    """What an erasure writes in one dataset: every field whose policy categories are all erasable now,
    with the masking the policy names for its category (``null_rewrite`` by default), or its row
    deleted where the dataset or the policy says so and nothing in the row is kept. ``keep`` maps a
    policy category under a legal duty in force to its basis and end; ``held``: a legal hold keeps all.
    Primary keys and read-only fields or collections are never written; a collection without a
    primary key is never written either (its erasable categories are reported as kept with the
    reason, ``not_erased``), and a row holding a read-only field is masked rather than deleted."""
    targets: dict[str, dict[str, dict[str, str | None]]] = {}
    not_erased: dict[str, str] = {}
    unwritable: dict[str, set[str]] = {}  # category -> the collections without a key holding it
    kept: dict[str, Keep] = {}
    where: dict[str, set[str]] = {}  # category -> the collections where it is kept
    for collection in dataset.collections:
        fields: dict[str, dict[str, str | None]] = {}
        keyless = not any(_primary_key(f) for f in collection.fields)
        # A row holding a read-only field (whatever its category) is never deleted.
        row_kept = any(_read_only(f.fides_meta) for f in collection.fields)
        delete_row = _deletes_rows(collection)
        for f in collection.fields:
            categories = sorted(
                {p for p in (policy_category(c, policy) for c in _field_categories(dataset, collection, f)) if p}
            )
            if not categories or _primary_key(f):
                continue
            if held:
                row_kept = True
                for category in categories:
                    kept[category] = Keep(LEGAL_HOLD, None)
                    where.setdefault(category, set()).add(collection.name)
                continue
            if _read_only(collection.fides_meta) or _read_only(f.fides_meta):
                row_kept = True
                for category in categories:
                    kept.setdefault(category, Keep(READ_ONLY_BASIS, None))
                    where.setdefault(category, set()).add(collection.name)
                continue
            duties = [c for c in categories if c in keep]
            if duties:
                row_kept = True
                for category in duties:
                    kept[category] = keep[category]
                    where.setdefault(category, set()).add(collection.name)
                continue
            if keyless:
                not_erased[collection.name] = NO_PRIMARY_KEY
                for category in categories:  # lines of their own: the reason is not another line's basis
                    unwritable.setdefault(category, set()).add(collection.name)
                continue
            masking = policy.data_categories[categories[0]].masking
            strategy = masking.strategy if masking else DEFAULT_STRATEGY
            delete_row = delete_row or strategy == DELETE_ROW
            fields[f.name] = {"strategy": strategy, "value": masking.value if masking else None}
        if delete_row and not row_kept and fields:
            fields = {name: {"strategy": DELETE_ROW, "value": None} for name in fields}
        else:
            # A row that keeps a field is not deleted: its erasable fields are masked instead.
            fields = {
                name: spec if spec["strategy"] != DELETE_ROW else {"strategy": DEFAULT_STRATEGY, "value": None}
                for name, spec in fields.items()
            }
        if fields:
            targets[collection.name] = fields
    return ErasurePlan(
        targets,
        [
            {
                "category": c,
                "basis": k.basis,
                "until": k.until.isoformat() if k.until else None,
                "collections": sorted(where[c]),
            }
            for c, k in sorted(kept.items())
        ]
        + [
            {"category": c, "basis": NOT_ERASED_BASIS, "until": None, "collections": sorted(names)}
            for c, names in sorted(unwritable.items())
        ],
        not_erased,
    )


def kept_found(kept: list[dict[str, Any]], found: Mapping[str, int]) -> list[dict[str, Any]]:
    """The planned kept lines for the collections where the erasure found the subject's rows
    (``found``: rows per collection): a category is kept there only if the subject has data there.
    A line planned without its collections (a task planned before they were recorded) stays."""
    return [
        item
        for item in kept
        if "collections" not in item or any(found.get(name, 0) > 0 for name in item["collections"])
    ]

"""A privacy request on the connected databases: the tasks planned when it starts processing, their
outcome when it completes (a flow: it joins the request workflow with the connections domain).

``plan_work`` runs when a request reaches ``processing``, before the vault erasure (which removes the
identities a connected database is searched by), and ``Work.enqueue`` writes one task per connection
in the same transaction, so the tasks exist exactly when the request's new status does. The request
then waits, as it does for webhooks, until every task is done (``outcome``): a task that needs an
operator keeps it waiting, and the request's view says which connection and collection failed.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from fideslang.models import Dataset
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.connections.datasets import field_categories, load_datasets, policy_category
from privacy_service.connections.models import Connection
from privacy_service.connections.schemas import CollectionProgress, TaskProgress
from privacy_service.connections.tasks import (
    NOT_ERASED,
    OPEN,
    ConnectionTask,
    Keep,
    TaskKind,
    TaskStatus,
    check,
    erasure_plan,
    identities_binding,
    result_binding,
    visible_fields,
)
from privacy_service.crypto.fields import DataKey
from privacy_service.crypto.service import REQUEST, KeyService
from privacy_service.dsr.deadlines import DeadlineRules
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.policy.document import PolicyDocument
from privacy_service.retention.rules import subject_anchors
from privacy_service.subjects.models import Subject
from privacy_service.subjects.service import SubjectService
from privacy_service.systems.events import emit

# What an access request found in the connected databases: dataset -> collection -> rows.
ConnectedRows = dict[str, dict[str, list[dict[str, Any]]]]
KINDS = {"access": TaskKind.ACCESS, "portability": TaskKind.ACCESS, "erase": TaskKind.ERASE}
IDENTITY_KINDS = ("email", "phone", "external_id")


@functools.cache
def _datasets_at(directory: Path, stamp: tuple[tuple[str, int], ...]) -> dict[str, Dataset]:
    return load_datasets(directory)


def datasets(policy_dir: Path) -> dict[str, Dataset]:
    """The datasets in ``policies/datasets/``, read again when a file changes."""
    directory = policy_dir / "datasets"
    files = sorted(directory.glob("*.y*ml")) if directory.is_dir() else []
    return _datasets_at(directory, tuple((p.name, p.stat().st_mtime_ns) for p in files))


async def active_connections(session: AsyncSession) -> list[Connection]:
    query = select(Connection).where(col(Connection.removed_at).is_(None)).order_by(col(Connection.name))
    return list((await session.exec(query)).all())


async def keep_for(
    session: AsyncSession, subjects: SubjectService, rules: DeadlineRules, now: datetime, subject_id: uuid.UUID
) -> tuple[dict[str, Keep], bool]:
    """The policy categories under a legal duty in force for this subject, and whether a hold keeps all.

    A connected row's own time is unknown: a duty that runs from it (``occurred_at``, ``collected_at``)
    is taken to run from now, the latest such a row can carry, so the end date is an upper bound.
    """
    if await subjects.under_hold(subject_id):
        return {}, True
    row = await session.get(Subject, subject_id)
    anchors = subject_anchors(row) if row is not None else {}
    anchors["occurred_at"] = anchors["collected_at"] = now
    if anchors.get("account_closed_at") is None:
        anchors["account_closed_at"] = now  # the erasure closes the account (as the vault's does)
    keep: dict[str, Keep] = {}
    for category in rules.duties:
        duty = rules.legal_duty(category, anchors)
        if duty is not None and duty.until > now:
            keep[category] = Keep(duty.basis, duty.until)
    return keep, False


@dataclass(slots=True)
class Work:
    """The tasks a request gives the connected databases, with the identities to search them by."""

    tasks: list[ConnectionTask] = field(default_factory=list)
    identities: dict[str, list[str]] = field(default_factory=dict)

    def enqueue(
        self,
        session: AsyncSession,
        request: PrivacyRequest,
        key: DataKey,
        *,
        now: datetime,
        actor: Actor,
        http_request_id: str | None = None,
    ) -> bool:
        """Write the tasks (identities sealed under the request's key); True if the request must wait."""
        if not self.tasks:
            return False
        sealed = msgspec.json.encode(self.identities)
        for task in self.tasks:
            task.identities_ct = key.seal(sealed, identities_binding(request.id, task.id))
            session.add(task)
        audit.record(
            session,
            at=now,
            actor=actor,
            action="connections.tasks",
            subject_id=request.subject_id,
            request_id=http_request_id,
            detail={
                "dsr_id": str(request.id),
                "connections": [str(t.connection_id) for t in self.tasks],
                "kind": self.tasks[0].kind,
                "identity_types": sorted(self.identities),
            },
        )
        emit(
            "connection_tasks_planned",
            category="privacy.connections",
            outcome="success",
            dsr_id=str(request.id),
            tasks=len(self.tasks),
        )
        return True


async def plan_work(
    session: AsyncSession,
    policy: PolicyDocument,
    rules: DeadlineRules,
    subjects: SubjectService,
    request: PrivacyRequest,
    *,
    policy_dir: Path,
    now: datetime,
) -> Work:
    """The connections a request concerns: one task each whose dataset holds data the request reaches
    (access: a category the policy names; erasure: a field to mask or a category kept). A request
    without a matched customer concerns none, as for webhooks: there is no identity to search by."""
    work = Work()
    kind = KINDS.get(request.type)
    if kind is None or request.subject_id is None:
        return work
    connections = await active_connections(session)
    if not connections:
        return work
    subject = await subjects.read(request.subject_id)
    work.identities = {k: [v] for k in IDENTITY_KINDS if (v := getattr(subject, k)) is not None}
    if not work.identities:
        return work
    found = datasets(policy_dir)
    keep: dict[str, Keep] = {}
    held = False
    if kind == TaskKind.ERASE:
        keep, held = await keep_for(session, subjects, rules, now, request.subject_id)
    for connection in connections:
        dataset = found.get(connection.dataset)
        collections: dict[str, Any] = {}
        targets: dict[str, Any] = {}
        kept: list[dict[str, Any]] = []
        if dataset is None:
            # Its dataset file is gone: the task needs an operator (it says so) rather than being skipped.
            collections = {}
        elif kind == TaskKind.ACCESS:
            collections = {name: {"status": "pending", "rows": 0} for name in visible_fields(dataset, policy)}
            if not collections:
                continue
        else:
            plan = erasure_plan(dataset, policy, keep, held=held)
            if not plan.targets and not plan.kept:
                continue
            targets, kept = plan.targets, plan.kept
            collections = {name: {"status": "pending", "rows": 0} for name in plan.targets}
            for name, reason in plan.not_erased.items():
                collections[name] = {"status": NOT_ERASED, "rows": 0, "problem": reason}
        work.tasks.append(
            ConnectionTask(
                id=uuid.uuid4(),
                request_id=request.id,
                connection_id=connection.id,
                connection_name=connection.name,
                dataset=connection.dataset,
                kind=kind,
                status=TaskStatus.PENDING,
                next_attempt_at=now,
                collections=collections,
                targets=targets,
                kept=kept,
                created_at=now,
                updated_at=now,
            )
        )
    return work


# -- outcome ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """Every task is done: the answer's lines, categories found (access) and kept (erasure)."""

    systems: list[dict[str, Any]]
    categories: list[str]
    kept: list[dict[str, Any]]
    rows: int
    # An erasure task cancelled (its connection removed): the data there was not erased.
    failed: bool = False


async def tasks_of(session: AsyncSession, request_id: uuid.UUID) -> list[ConnectionTask]:
    query = select(ConnectionTask).where(col(ConnectionTask.request_id) == request_id)
    return list((await session.exec(query.order_by(col(ConnectionTask.connection_name)))).all())


async def outcome(session: AsyncSession, request_id: uuid.UUID) -> Outcome | None:
    """None while a task is open (pending, running, or waiting for an operator)."""
    tasks = await tasks_of(session, request_id)
    if any(t.status in OPEN for t in tasks):
        return None
    categories: set[str] = set()
    kept: list[dict[str, Any]] = []
    for task in tasks:
        for progress in task.collections.values():
            categories.update(progress.get("categories", ()))
        kept.extend(task.kept)
    return Outcome(
        systems=[
            {
                "connection": t.connection_name,
                "dataset": t.dataset,
                "task": t.status,
                "rows": t.rows,
                "collections": {name: p.get("rows", 0) for name, p in sorted(t.collections.items())},
            }
            for t in tasks
        ],
        categories=sorted(categories),
        kept=kept,
        rows=sum(t.rows for t in tasks),
        failed=any(t.kind == TaskKind.ERASE and t.status == TaskStatus.CANCELLED for t in tasks),
    )


def merge(result: dict[str, Any], found: Outcome) -> dict[str, Any]:
    """The request's result with what the connected databases added: their lines under ``connections``,
    categories found (access) and categories kept (erasure; the latest end per category and basis)."""
    merged = dict(result)
    merged["connections"] = found.systems
    if "categories" in merged or found.categories:
        merged["categories"] = sorted(set(merged.get("categories", [])) | set(found.categories))
        if found.rows:
            merged["data_found"] = True
    if found.kept or "kept" in merged:
        latest: dict[tuple[str, str], str | None] = {}
        for item in [*merged.get("kept", []), *found.kept]:
            slot = (item["category"], item["basis"])
            before = latest.get(slot, "")
            # No end date (a hold) outranks any date.
            latest[slot] = None if item["until"] is None or before is None else max(before or "", item["until"])
        merged["kept"] = [{"category": c, "basis": b, "until": u} for (c, b), u in sorted(latest.items())]
    return merged


def found_categories(
    policy: PolicyDocument, dataset: Dataset, rows: dict[str, list[dict[str, Any]]]
) -> dict[str, list[str]]:
    """Per collection, the policy categories of the fields that hold a value in the rows found."""
    found: dict[str, list[str]] = {}
    for collection in dataset.collections:
        items = rows.get(collection.name) or []
        names: set[str] = set()
        for name, categories in field_categories(dataset, collection.name).items():
            if any(item.get(name) is not None for item in items):
                names.update(p for c in categories if (p := policy_category(c, policy)) is not None)
        if names:
            found[collection.name] = sorted(names)
    return found


# -- the access answer -----------------------------------------------------------------------


async def found_rows(session: AsyncSession, keys: KeyService, request_id: uuid.UUID) -> ConnectedRows:
    """What the connected databases returned for an access request: dataset -> collection -> rows
    (the fields the policy names), from the done tasks, opened with the request's key."""
    query = select(ConnectionTask).where(
        col(ConnectionTask.request_id) == request_id,
        col(ConnectionTask.kind) == TaskKind.ACCESS,
        col(ConnectionTask.status) == TaskStatus.DONE,
        col(ConnectionTask.result_ct).is_not(None),
    )
    done = list((await session.exec(query.order_by(col(ConnectionTask.connection_name)))).all())
    if not done:
        return {}
    key = await keys.load_key(session, request_id, REQUEST)
    found: ConnectedRows = {}
    for task in done:
        assert task.result_ct is not None  # noqa: S101 - selected above
        rows = msgspec.json.decode(key.open(task.result_ct, result_binding(request_id, task.id)))
        into = found.setdefault(task.dataset, {})
        for collection, items in rows.items():
            into.setdefault(collection, []).extend(items)
    return found


def by_category(
    policy: PolicyDocument, policy_dir: Path, found: ConnectedRows
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The rows found, split by policy category for the answer page: category -> [(source, fields)],
    ``source`` naming the dataset and collection, ``fields`` the row's values in that category."""
    described = datasets(policy_dir)
    shown: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for fides_key, collections in sorted(found.items()):
        dataset = described.get(fides_key)
        if dataset is None:
            continue
        for name, rows in sorted(collections.items()):
            categories = {
                column: sorted({p for c in cats if (p := policy_category(c, policy)) is not None})
                for column, cats in field_categories(dataset, name).items()
            }
            for row in rows:
                parts: dict[str, dict[str, Any]] = {}
                for column, value in row.items():
                    if value is None:
                        continue
                    for category in categories.get(column, ()):
                        parts.setdefault(category, {})[column] = value
                for category, values in parts.items():
                    shown.setdefault(category, []).append((f"{fides_key} / {name}", values))
    return shown


# -- what an operator sees and does ------------------------------------------------------------


async def progress(session: AsyncSession, request_id: uuid.UUID) -> list[TaskProgress]:
    """The request's tasks on the connected databases: which collection failed and why (no data)."""
    return [
        TaskProgress(
            connection=t.connection_name,
            dataset=t.dataset,
            kind=t.kind,
            status=t.status,
            attempts=t.attempts,
            next_attempt_at=t.next_attempt_at if t.status == TaskStatus.PENDING else None,
            problem=t.last_problem,
            collections={
                name: CollectionProgress(
                    status=p.get("status", "pending"), rows=p.get("rows", 0), problem=p.get("problem")
                )
                for name, p in sorted(t.collections.items())
            },
        )
        for t in await tasks_of(session, request_id)
    ]


async def retry(session: AsyncSession, request_id: uuid.UUID, *, now: datetime, actor: Actor) -> int:
    """Queue again the request's tasks that need an operator (the cause fixed); audited. How many."""
    waiting = [t for t in await tasks_of(session, request_id) if t.status == TaskStatus.NEEDS_OPERATOR]
    for task in waiting:
        check(task.status, TaskStatus.PENDING)
        task.status, task.next_attempt_at, task.updated_at, task.attempts = TaskStatus.PENDING, now, now, 0
        session.add(task)
    if waiting:
        audit.record(
            session,
            at=now,
            actor=actor,
            action="connections.task.retried",
            detail={"dsr_id": str(request_id), "tasks": [str(t.id) for t in waiting]},
        )
    return len(waiting)

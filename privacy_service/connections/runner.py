"""The worker's connection job: run the requests' tasks on the connected databases.

A run claims due tasks with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), at most a
connection's ``max_concurrency`` running at once, commits the claim, then works on each task in
its own transaction on the connected database: an access task collects the subject's rows, an
erasure masks them. A worker killed mid-task leaves the lease to expire and the task runs again:
the connected database rolled the unfinished transaction back, and masking twice changes nothing.
A failure backs off exponentially (``notify.jobs.backoff``); after ``max_attempts`` the task needs
an operator, who sees the connection, the collection and the class of the failure (never a driver
message, a URL or a value). The last task of a request completes it (``finish_after_systems``).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import msgspec
import structlog
from fideslang.models import Dataset
from sqlalchemy import func, text
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.config import Settings
from privacy_service.connections import probe
from privacy_service.connections.flow import datasets, found_categories
from privacy_service.connections.graph import build_plan
from privacy_service.connections.masking import MaskingRefused, MaskSpec, Strategy
from privacy_service.connections.models import Connection
from privacy_service.connections.query import TooManyRows, collect, mask
from privacy_service.connections.service import ConnectionService
from privacy_service.connections.targets import TargetRefused
from privacy_service.connections.tasks import (
    NOT_ERASED,
    OPEN,
    ConnectionTask,
    TaskKind,
    TaskStatus,
    check,
    identities_binding,
    kept_found,
    result_binding,
    visible_fields,
)
from privacy_service.crypto.fields import DataKey, DecryptionFailed
from privacy_service.crypto.service import REQUEST, KeyShredded
from privacy_service.errors import DomainError
from privacy_service.notify.jobs import backoff
from privacy_service.runtime import Runtime
from privacy_service.systems.events import emit

log = structlog.get_logger("privacy_service.connections")
ACTOR = Actor.system("connections")
# A claim lasts longer than its task may take (see lease): a live worker never loses its claim mid-task.
LEASE_MARGIN = timedelta(minutes=5)
# PostgreSQL advisory lock space of a claim (two-key form: apart from the service's one-key locks): "PSCT".
CLAIM_LOCK = 0x50534354
# Connections with due tasks looked at per claim (the longest-waiting first).
CONNECTIONS_PER_CLAIM = 200
MASKING_LABEL = "connection-masking"  # the HMAC message deriving the key, not a key
# Problems no retry fixes: the task needs an operator at once.
PERMANENT = frozenset(
    {
        "dataset_missing",
        "connection_removed",
        "request_purged",
        "too_many_rows",
        "masking_refused",
        "constraint",
        "missing",
        "own_database",
        "target_address",
    }
)
PROBLEMS = {
    "dataset_missing": "the connection's dataset is no longer in policies/datasets",
    "connection_unreadable": "the connection's stored URL cannot be opened (removed, or damaged)",
    "worker_stopped": "the worker stopped during this task each time it ran (killed, or out of memory)",
    "connection_removed": "the connection was removed",
    "request_purged": "the request's data was purged",
    "too_many_rows": "more rows than the per-request limit were found",
    "constraint": "the database refused the masked value (NOT NULL or another constraint): "
    "give the category another masking strategy in the policy",
    "masking_refused": "the dataset does not allow this masking (read-only, a key, or a type it cannot hold)",
    "own_database": "the connection reaches the service's own database: refused (point it at another database)",
    "target_address": "the connection's host leads to an address connections may not reach "
    "(link-local, cloud metadata, or outside connections_allowed_networks)",
}


class TaskFailed(Exception):
    """A task's failure as a problem key and the collection it concerns (None: the whole connection)."""

    def __init__(self, problem: str, collection: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.collection = collection


@dataclass(frozen=True, slots=True)
class _Claimed:
    task_id: uuid.UUID
    request_id: uuid.UUID
    connection: Connection | None
    kind: str
    dataset: str
    attempt: int
    identities: dict[str, list[str]] | None
    targets: dict[str, Any]
    key: DataKey | None


@dataclass(slots=True)
class _Done:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    touched: dict[str, int] = field(default_factory=dict)
    # Erasure: the subject's rows found per collection (kept categories are reported only where found).
    found: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    done: int = 0
    retried: int = 0
    needs_operator: int = 0
    cancelled: int = 0
    completed_requests: int = 0


def lease(settings: Settings) -> timedelta:
    """How long a claim lasts: the task's timeout (``connections_task_timeout_seconds``, up to an hour)
    plus the engine's connect timeout and a margin for the service-side records around it. A shorter
    lease would let a second worker claim a task the first is still running."""
    seconds = settings.connections_task_timeout_seconds + settings.connections_test_timeout_seconds
    return timedelta(seconds=seconds) + LEASE_MARGIN


def masking_secret(runtime: Runtime) -> bytes:
    """The ``hash`` strategy's key: derived from the keyring's index key, never the key itself."""
    return runtime.indexer.index(MASKING_LABEL, "v1")


def _lock_key(connection_id: uuid.UUID) -> int:
    """The second half of a connection's advisory lock key (a signed 32-bit number from its id)."""
    return int.from_bytes(connection_id.bytes[:4], "big", signed=True)


async def _claim(runtime: Runtime, batch: int, max_attempts: int) -> list[_Claimed]:
    """Claim up to ``batch`` due tasks, each connection's at most its room (``max_concurrency`` minus
    the tasks running there now), round-robin across connections, the longest-waiting first.

    The room is counted after taking each connection's advisory lock (PostgreSQL, held until the
    claim commits): a second worker claiming at once waits, then counts this claim's tasks, so the
    limit holds across workers. A connection at its limit is not read from at all, so a backlog on
    one connection never fills the batch and starves the others."""
    db, now = runtime.db, runtime.clock.now()
    postgres = not db.settings.is_sqlite
    claimed: list[_Claimed] = []
    due_now = (
        col(ConnectionTask.status).in_([TaskStatus.PENDING.value, TaskStatus.RUNNING.value]),
        col(ConnectionTask.next_attempt_at) <= now,
    )
    async with db.transaction() as session:
        waiting = await session.exec(
            select(ConnectionTask.connection_id, func.min(ConnectionTask.next_attempt_at))
            .where(*due_now)
            .group_by(col(ConnectionTask.connection_id))
            .order_by(func.min(ConnectionTask.next_attempt_at))
            .limit(CONNECTIONS_PER_CLAIM)
        )
        order = [connection_id for connection_id, _ in waiting.all()]
        if not order:
            return []
        if postgres:
            # One statement, the keys in one order for every worker (no deadlock between two claims).
            await session.exec(
                text("SELECT pg_advisory_xact_lock(:space, k) FROM unnest(CAST(:keys AS integer[])) AS k").bindparams(
                    space=CLAIM_LOCK, keys=sorted({_lock_key(c) for c in order})
                )  # type: ignore[call-overload]
            )
        connections: dict[uuid.UUID, Connection | None] = {c: None for c in order}
        for row in (await session.exec(select(Connection).where(col(Connection.id).in_(order)))).all():
            connections[row.id] = row
        # Running now (leases not expired), per connection: the concurrency limit counts them.
        busy_rows = await session.exec(
            select(ConnectionTask.connection_id, func.count())
            .where(
                col(ConnectionTask.connection_id).in_(order),
                col(ConnectionTask.status) == TaskStatus.RUNNING,
                col(ConnectionTask.next_attempt_at) > now,
            )
            .group_by(col(ConnectionTask.connection_id))
        )
        busy = {connection_id: int(count) for connection_id, count in busy_rows.all()}
        queues: list[list[ConnectionTask]] = []
        for connection_id in order:
            connection = connections[connection_id]
            room = (connection.max_concurrency if connection is not None else 1) - busy.get(connection_id, 0)
            if room <= 0:
                continue
            due = (
                select(ConnectionTask)
                .where(*due_now, col(ConnectionTask.connection_id) == connection_id)
                .order_by(col(ConnectionTask.next_attempt_at))
                .limit(min(room, batch))
            )
            if postgres:
                due = due.with_for_update(skip_locked=True)
            queue = list((await session.exec(due)).all())
            if queue:
                queues.append(queue)
                if len(queues) >= batch:  # one each fills the batch: later connections wait their turn
                    break
        tasks: list[ConnectionTask] = []
        while queues and len(tasks) < batch:  # round-robin: one task of each connection in turn
            for queue in queues:
                if queue and len(tasks) < batch:
                    tasks.append(queue.pop(0))
            queues = [queue for queue in queues if queue]
        keys: dict[uuid.UUID, DataKey | None] = {}
        for task in tasks:
            connection = connections[task.connection_id]
            if task.status == TaskStatus.RUNNING and task.attempts >= max_attempts:
                # Its lease expired that many times: each run died with the worker. Not once more.
                _give_up(session, task, "worker_stopped", now)
                continue
            check(task.status, TaskStatus.RUNNING)
            task.status, task.next_attempt_at, task.updated_at = TaskStatus.RUNNING, now + lease(db.settings), now
            task.attempts += 1
            session.add(task)
            if task.request_id not in keys:
                try:
                    keys[task.request_id] = await runtime.keys.load_key(session, task.request_id, REQUEST)
                except KeyShredded:
                    keys[task.request_id] = None
            key = keys[task.request_id]
            identities: dict[str, list[str]] | None = None
            if key is not None and task.identities_ct is not None:
                try:
                    raw = key.open(task.identities_ct, identities_binding(task.request_id, task.id))
                    identities = msgspec.json.decode(raw, type=dict[str, list[str]])
                except DecryptionFailed:
                    identities = None
            claimed.append(
                _Claimed(
                    task_id=task.id,
                    request_id=task.request_id,
                    connection=connection,
                    kind=task.kind,
                    dataset=task.dataset,
                    attempt=task.attempts,
                    identities=identities,
                    targets=dict(task.targets),
                    key=key,
                )
            )
    return claimed


def _give_up(session: AsyncSession, task: ConnectionTask, problem: str, now: datetime) -> None:
    check(task.status, TaskStatus.NEEDS_OPERATOR)
    task.status, task.last_problem, task.updated_at = TaskStatus.NEEDS_OPERATOR, PROBLEMS[problem], now
    session.add(task)
    fields = {
        "dsr_id": str(task.request_id),
        "task_id": str(task.id),
        "connection_id": str(task.connection_id),
        "connection": task.connection_name,
        "kind": task.kind,
        "attempt": task.attempts,
        "problem": problem,
    }
    audit.record(
        session,
        at=now,
        actor=ACTOR,
        action="connections.task.needs_operator",
        outcome="failed",
        detail={**fields, "problem": task.last_problem},
    )
    emit("connection_task_needs_operator", category="privacy.connections", outcome="failure", alert=True, **fields)


_TABLE = re.compile(r"""(?:FROM|UPDATE|INTO)\s+[`"]?(\w+)[`"]?""", re.IGNORECASE)


def _collection_of(exc: BaseException, dataset: Dataset) -> str | None:
    """The collection a failing statement concerned: the first dataset table its SQL names (the
    statement's text has no values: they are bound parameters)."""
    statement = getattr(exc, "statement", None)
    if not isinstance(statement, str):
        return None
    names = {c.name for c in dataset.collections}
    for match in _TABLE.finditer(statement):
        if match.group(1) in names:
            return match.group(1)
    return None


def _targets(specs: Mapping[str, Mapping[str, Mapping[str, str | None]]]) -> dict[str, dict[str, MaskSpec]]:
    return {
        collection: {
            name: MaskSpec(strategy=cast(Strategy, spec["strategy"]), value=spec.get("value"))
            for name, spec in fields.items()
        }
        for collection, fields in specs.items()
    }


async def _work(runtime: Runtime, job: _Claimed, timeout: float) -> _Done:
    if job.connection is None or job.connection.removed_at is not None:
        raise TaskFailed("connection_removed")
    if job.key is None or job.identities is None:
        raise TaskFailed("request_purged")
    dataset = datasets(runtime.settings.policy_dir).get(job.dataset)
    if dataset is None:
        raise TaskFailed("dataset_missing")
    plan = build_plan(dataset, sorted(job.identities))
    try:
        async with runtime.db.transaction() as session:
            service = ConnectionService(session, runtime.keys, runtime.clock, runtime.settings, ACTOR)
            engine = await service.engine_for(job.connection)
    except DomainError:  # removed meanwhile, or its sealed URL fails its integrity check
        raise TaskFailed("connection_unreadable") from None
    try:
        async with asyncio.timeout(timeout):
            if job.kind == TaskKind.ACCESS:
                async with engine.connect() as connection:
                    found = await collect(connection, dataset, plan, job.identities)
                shown = visible_fields(dataset, runtime.policy)
                rows = {
                    name: [{f: row.get(f) for f in shown[name]} for row in items]
                    for name, items in found.rows.items()
                    if name in shown and items
                }
                return _Done(rows=rows, touched={name: len(items) for name, items in rows.items()})
            seen: dict[str, int] = {}
            async with engine.begin() as connection:  # one transaction: all of this connection or nothing
                touched = await mask(
                    connection,
                    dataset,
                    plan,
                    job.identities,
                    _targets(job.targets),
                    secret=masking_secret(runtime),
                    seen=seen,
                )
                # Stored (committed) before the connected database commits: a rerun after that commit
                # finds nothing by the masked identity columns, and reports what this run found instead.
                masked, found_rows = await _store_found(runtime, job, seen, touched)
            return _Done(touched=masked, found=found_rows)
    except TooManyRows as exc:
        raise TaskFailed("too_many_rows", exc.collection) from None
    except MaskingRefused:
        raise TaskFailed("masking_refused") from None
    except TargetRefused as exc:  # checked on each new connection (targets.guard)
        raise TaskFailed(exc.reason) from None
    except IntegrityError as exc:
        raise TaskFailed("constraint", _collection_of(exc, dataset)) from None
    except (TimeoutError, OSError, DBAPIError, SQLAlchemyError) as exc:
        raise TaskFailed(probe.classify(exc), _collection_of(exc, dataset)) from None


async def _store_found(
    runtime: Runtime, job: _Claimed, seen: Mapping[str, int], touched: Mapping[str, int]
) -> tuple[dict[str, int], dict[str, int]]:
    """Record on the task, in its own committed transaction, the rows found and masked per collection,
    never fewer than an earlier run recorded; the merged counts (masked, found)."""
    db = runtime.db
    async with db.transaction() as session:
        query = select(ConnectionTask).where(col(ConnectionTask.id) == job.task_id)
        if not db.settings.is_sqlite:
            query = query.with_for_update()
        task = (await session.exec(query)).one_or_none()
        before: dict[str, Any] = dict(task.collections) if task is not None else {}
        progress: dict[str, Any] = {}
        for name in sorted(set(before) | set(seen) | set(touched)):
            entry = dict(before.get(name) or {"status": "pending", "rows": 0})
            entry["found"] = max(int(entry.get("found", 0)), seen.get(name, 0))
            entry["masked"] = max(int(entry.get("masked", 0)), touched.get(name, 0))
            progress[name] = entry
        if task is not None:
            task.collections = progress
            session.add(task)
    masked = {name: p["masked"] for name, p in progress.items() if name in touched or p["masked"]}
    return masked, {name: p["found"] for name, p in progress.items()}


def _problem(failure: TaskFailed, timeout: float) -> str:
    return (PROBLEMS.get(failure.problem) or probe.describe(failure.problem, timeout))[:200]


async def _record(
    runtime: Runtime,
    job: _Claimed,
    done: _Done | None,
    failure: TaskFailed | None,
    *,
    max_attempts: int,
    retry_base: float,
) -> tuple[str, bool]:
    """The task's new status (done | retried | needs_operator | cancelled | stale), and whether its request
    completed."""
    from privacy_service.dsr.service import DsrService  # the request workflow, completed by the last task

    async with runtime.db.transaction() as session:
        now = runtime.clock.now()
        task = await session.get(ConnectionTask, job.task_id)
        if task is None or task.status != TaskStatus.RUNNING or task.attempts != job.attempt:
            return "stale", False  # purged, or claimed again after this run's lease expired
        fields: dict[str, Any] = {
            "dsr_id": str(task.request_id),
            "task_id": str(task.id),
            "connection_id": str(task.connection_id),
            "connection": task.connection_name,
            "kind": task.kind,
            "attempt": task.attempts,
        }
        task.updated_at = now
        session.add(task)
        if done is not None:
            check(task.status, TaskStatus.DONE)
            progress: dict[str, Any] = {}
            dataset = datasets(runtime.settings.policy_dir).get(task.dataset)
            categories = found_categories(runtime.policy, dataset, done.rows) if dataset is not None else {}
            for name in sorted(set(task.collections) | set(done.touched)):
                before = task.collections.get(name) or {}
                progress[name] = {"status": "done", "rows": done.touched.get(name, 0)}
                if before.get("status") == NOT_ERASED:  # planned so: no primary key, never written
                    progress[name] = {**before, "rows": 0}
                if done.found is not None:
                    progress[name]["found"] = done.found.get(name, 0)
                if name in categories:
                    progress[name]["categories"] = categories[name]
            task.collections = progress
            if done.found is not None:
                task.kept = kept_found(task.kept, done.found)
            task.rows = sum(done.touched.values())
            task.status, task.finished_at, task.last_problem = TaskStatus.DONE, now, None
            if done.rows and job.key is not None:
                task.result_ct = job.key.seal(msgspec.json.encode(done.rows), result_binding(task.request_id, task.id))
            emit("connection_task_done", category="privacy.connections", outcome="success", rows=task.rows, **fields)
            outcome = "done"
        else:
            assert failure is not None  # noqa: S101 - one of the two is given
            problem = _problem(failure, runtime.settings.connections_task_timeout_seconds)
            failed = failure.collection
            progress = {}
            for name, before in sorted(task.collections.items()):
                if before.get("status") == NOT_ERASED:
                    progress[name] = before  # never run there: it stays as planned
                elif failed is None or name == failed:
                    progress[name] = {**before, "status": "failed", "problem": problem}
                else:
                    progress[name] = {**before, "status": "not_run"}
            if failed is not None and failed not in progress:
                progress[failed] = {"status": "failed", "rows": 0, "problem": problem}
            task.collections = progress
            task.last_problem = problem if failed is None else f"{failed}: {problem}"[:200]
            fields.update(problem=failure.problem, collection=failed)
            if failure.problem == "connection_removed":
                # Nothing left to reach: the request stops waiting for it (an erasure is then partial).
                check(task.status, TaskStatus.CANCELLED)
                task.status, task.finished_at = TaskStatus.CANCELLED, now
                audit.record(
                    session,
                    at=now,
                    actor=ACTOR,
                    action="connections.task.cancelled",
                    outcome="failed",
                    detail={**fields, "problem": task.last_problem},
                )
                emit("connection_task_cancelled", category="privacy.connections", outcome="failure", **fields)
                outcome = "cancelled"
            elif failure.problem in PERMANENT or task.attempts >= max_attempts:
                check(task.status, TaskStatus.NEEDS_OPERATOR)
                task.status = TaskStatus.NEEDS_OPERATOR
                audit.record(
                    session,
                    at=now,
                    actor=ACTOR,
                    action="connections.task.needs_operator",
                    outcome="failed",
                    detail={**fields, "problem": task.last_problem},
                )
                emit(
                    "connection_task_needs_operator",
                    category="privacy.connections",
                    outcome="failure",
                    alert=True,
                    **fields,
                )
                outcome = "needs_operator"
            else:
                check(task.status, TaskStatus.PENDING)
                task.status = TaskStatus.PENDING
                task.next_attempt_at = now + backoff(task.attempts, base_seconds=retry_base)
                emit("connection_task_failed", category="privacy.connections", outcome="failure", **fields)
                outcome = "retried"
        completed = False
        if outcome in ("done", "cancelled"):
            others = await session.exec(
                select(func.count()).where(
                    col(ConnectionTask.request_id) == task.request_id,
                    col(ConnectionTask.id) != task.id,
                    col(ConnectionTask.status).in_([s.value for s in OPEN]),
                )
            )
            if not others.one():
                await session.flush()
                service = DsrService.for_runtime(runtime, session, ACTOR)
                completed = await service.finish_after_systems(task.request_id)
        return outcome, completed


async def run_connection_tasks(
    runtime: Runtime, *, batch: int = 20, max_attempts: int | None = None, retry_base: float | None = None
) -> RunResult:
    """Run every due task once (up to ``batch``), each connection's at most ``max_concurrency`` at a time."""
    settings = runtime.settings
    attempts = max_attempts if max_attempts is not None else settings.connections_max_attempts
    base = retry_base if retry_base is not None else settings.connections_retry_base_seconds
    jobs = await _claim(runtime, batch, attempts)
    if not jobs:
        return RunResult()
    limits: dict[uuid.UUID, asyncio.Semaphore] = {}
    outcomes: list[tuple[str, bool]] = []

    async def run(job: _Claimed) -> None:
        connection_id = job.connection.id if job.connection is not None else job.task_id
        limit = job.connection.max_concurrency if job.connection is not None else 1
        async with limits.setdefault(connection_id, asyncio.Semaphore(limit)):
            done: _Done | None = None
            failure: TaskFailed | None = None
            try:
                done = await _work(runtime, job, settings.connections_task_timeout_seconds)
            except TaskFailed as exc:
                failure = exc
            except Exception as exc:  # one task's fault must not stop the others, nor loop unrecorded
                # Escaping, it would cancel the batch and leave the task to its lease, run after run.
                log.warning("connection_task_crashed", task_id=str(job.task_id), error=type(exc).__name__)
                failure = TaskFailed(type(exc).__name__)
            outcomes.append(await _record(runtime, job, done, failure, max_attempts=attempts, retry_base=base))

    async with asyncio.TaskGroup() as group:
        for job in jobs:
            group.create_task(run(job))
    return RunResult(
        done=sum(1 for o, _ in outcomes if o == "done"),
        retried=sum(1 for o, _ in outcomes if o == "retried"),
        needs_operator=sum(1 for o, _ in outcomes if o == "needs_operator"),
        cancelled=sum(1 for o, _ in outcomes if o == "cancelled"),
        completed_requests=sum(1 for _, c in outcomes if c),
    )


__all__ = ["RunResult", "masking_secret", "run_connection_tasks"]

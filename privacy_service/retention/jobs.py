"""Purge runs: single-flight, planned, checked against the safety thresholds, then done in batches.

A run takes the run lock (or reports that another run is active and does nothing), records itself,
then *plans*: counts, read-only, everything each step would do at its ``now``. That plan is a dry
run's whole answer, so a dry run reports exactly what a real run at the same ``now`` would do.
If the plan would purge more than ``retention_alert_percent`` of the records, subjects or requests
(tables of at least ``retention_alert_min_rows``), or more than ``retention_max_rows_per_run``
rows, the run alerts (audit event and error log) and, without ``force``, stops as ``refused``.
A real run then carries out each step in batches of ``batch_size``: one transaction per batch, the
run's report updated in the same transaction, so after a crash the report matches what was
committed and the next run (which marks the dead one ``interrupted``) finishes the work.
"""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import msgspec
import structlog
from sqlalchemy import bindparam
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor, AuditHeadInvalid, seal_pending, write_checkpoint
from privacy_service.clock import as_utc
from privacy_service.db import carry_appended_rows
from privacy_service.errors import Conflict, InvalidInput
from privacy_service.retention import schemas
from privacy_service.retention.locks import RunLock, try_acquire
from privacy_service.retention.models import RetentionRun, RunStatus
from privacy_service.retention.service import (
    ACTOR,
    MAX_ITEM_ERRORS,
    OUTBOX_KEY,
    SECRET_KEYS,
    RetentionEngine,
    Tally,
)
from privacy_service.runtime import Runtime

log = structlog.get_logger("privacy_service.retention")
_RUNS = RetentionRun.__table__  # type: ignore[attr-defined]
# Built once, so db.carry_appended_rows caches the statement with the audit event's INSERT carried.
_SAVE_REPORT = (
    update(_RUNS)
    .where(_RUNS.c.id == bindparam("run_id", type_=_RUNS.c.id.type))
    .values(report=bindparam("report", type_=_RUNS.c.report.type))
)
_FINISH_RUN = (
    update(_RUNS)
    .where(_RUNS.c.id == bindparam("run_id", type_=_RUNS.c.id.type))
    .values(
        status=bindparam("status", type_=_RUNS.c.status.type),
        finished_at=bindparam("finished_at", type_=_RUNS.c.finished_at.type),
        error=bindparam("error", type_=_RUNS.c.error.type),
        report=bindparam("report", type_=_RUNS.c.report.type),
    )
)
SKIPPED = "skipped"
# Subjects and requests per transaction: the batch size (rows) divided by this (500 at the default
# batch size: erasing a subject is a few statements, deleting a record one row of a range DELETE).
ITEM_COST = 100
# How often a run makes sure it still holds the lock (a round trip; a batch takes milliseconds).
LOCK_CHECK_SECONDS = 1.0
# Connections a plan with its records' scan beside the other steps holds at once: the run lock's,
# the plan's and the scan's.
PLAN_CONNECTIONS = 3

Batch = Callable[[AsyncSession, uuid.UUID | None, int], Awaitable[tuple[Tally, uuid.UUID | None]]]


class RunActive(Conflict):
    slug = "retention-run-active"
    title = "Another retention run is active"


class Progress(Protocol):
    """What the CLI shows: a stage line, then one bar per report entry."""

    def stage(self, text: str) -> None: ...

    def bars(self, entries: list[schemas.RuleReport]) -> None: ...

    def advance(self, key: str, amount: int) -> None: ...


@dataclass(frozen=True, slots=True)
class RunOptions:
    dry_run: bool = False
    now: datetime | None = None
    batch_size: int | None = None
    force: bool = False
    actor: Actor = ACTOR


@dataclass(frozen=True, slots=True)
class RunResult:
    status: str  # a RunStatus value, or "skipped" when another run was active
    run_id: uuid.UUID | None
    message: str
    report: schemas.RunReport | None = None
    active_run_id: uuid.UUID | None = None
    error: str | None = None

    def __repr__(self) -> str:  # the worker logs repr(result): ids and status only
        return f"RunResult(status={self.status!r}, run_id={self.run_id}, message={self.message!r})"


def resolve_now(runtime: Runtime, requested: datetime | None) -> datetime:
    """The run's ``now``: the clock's, or the requested one if it is not beyond the allowed skew."""
    current = runtime.clock.now()
    if requested is None:
        return current
    requested = as_utc(requested, "now")
    skew = timedelta(seconds=runtime.settings.retention_max_future_skew_seconds)
    if requested > current + skew:
        raise InvalidInput(
            f"now may be at most {int(skew.total_seconds())} s in the future: a run must not purge data early"
        )
    return requested


async def _active_run(runtime: Runtime) -> RetentionRun | None:
    async with runtime.db.transaction() as session:
        query = select(RetentionRun).where(col(RetentionRun.status) == RunStatus.RUNNING)
        return (await session.exec(query.order_by(col(RetentionRun.started_at).desc()).limit(1))).first()


async def start_run(runtime: Runtime, options: RunOptions) -> StartedRun:
    """Take the lock and record the run; raises :class:`RunActive` if another run holds the lock."""
    as_of = resolve_now(runtime, options.now)
    batch_size = options.batch_size or runtime.settings.retention_batch_size
    lock = await try_acquire(runtime.db)
    if lock is None:
        active = await _active_run(runtime)
        since = f" (run {active.id}, started {active.started_at.isoformat(timespec='seconds')})" if active else ""
        raise RunActive(
            f"another retention run is active{since}; this one did nothing",
            extra={"active_run_id": str(active.id) if active else None},
        )
    run_id = uuid.uuid4()
    try:
        async with runtime.db.transaction() as session:
            now = runtime.clock.now()
            # We hold the lock, so a run still marked running belongs to a process that died.
            stale = (
                await session.exec(select(RetentionRun).where(col(RetentionRun.status) == RunStatus.RUNNING))
            ).all()
            for dead in stale:
                dead.status, dead.finished_at = RunStatus.INTERRUPTED, now
                dead.error = "the process running it ended before it finished; later runs did the rest"
                session.add(dead)
                audit.record(
                    session,
                    at=now,
                    actor=ACTOR,
                    action="retention.run.interrupted",
                    outcome="failed",
                    detail={"run_id": str(dead.id)},
                )
            policy = runtime.policy
            session.add(
                RetentionRun(
                    id=run_id,
                    status=RunStatus.RUNNING,
                    dry_run=options.dry_run,
                    forced=options.force,
                    as_of=as_of,
                    started_at=now,
                    actor_type=options.actor.type,
                    actor_id=options.actor.id,
                    policy_version=policy.version,
                    policy_hash=policy.content_hash,
                    batch_size=batch_size,
                    report={},
                )
            )
            audit.record(
                session,
                at=now,
                actor=options.actor,
                action="retention.run.started",
                detail={
                    "run_id": str(run_id),
                    "dry_run": options.dry_run,
                    "as_of": as_of.isoformat(),
                    "policy_version": policy.version,
                    "forced": options.force,
                },
            )
    except BaseException:
        await lock.release()
        raise
    return StartedRun(runtime, lock, run_id, as_of, batch_size, options)


async def run_purge(runtime: Runtime, options: RunOptions, progress: Progress | None = None) -> RunResult:
    """Start and carry out a run; if another one is active, return ``skipped`` having done nothing."""
    try:
        started = await start_run(runtime, options)
    except RunActive as exc:
        active = exc.extra.get("active_run_id")
        log.info("retention_run_skipped", active_run_id=active)
        return RunResult(SKIPPED, None, exc.detail, active_run_id=uuid.UUID(active) if active else None)
    return await started.execute(progress)


def _acted(counts: schemas.Counts) -> int:
    return counts.purged + counts.anonymised + counts.restricted


def _found(counts: schemas.Counts) -> bool:
    return any(getattr(counts, name) for name in counts.__struct_fields__)


@dataclass(slots=True)
class StartedRun:
    runtime: Runtime
    lock: RunLock
    run_id: uuid.UUID
    as_of: datetime
    batch_size: int
    options: RunOptions
    _frame: schemas.RunReport = field(default_factory=schemas.RunReport)
    _plan: Tally = field(default_factory=Tally)
    _done: Tally = field(default_factory=Tally)
    _engine: RetentionEngine | None = None
    _totals: dict[str, int] = field(default_factory=dict)
    _connection: AsyncConnection | None = None
    # A safety threshold stopped the run before it changed anything.
    _refused: bool = False
    # Steps (by label) whose plan found something to count: a real run skips the others.
    _planned_steps: set[str] = field(default_factory=set)
    _lock_checked: float = 0.0
    # (end of the physical range of records to walk, rows per unit), measured by the plan.
    _space: tuple[int, int] | None = None

    @property
    def engine(self) -> RetentionEngine:
        if self._engine is None:
            runtime = self.runtime
            self._engine = RetentionEngine(
                policy=runtime.policy,
                keys=runtime.keys,
                clock=runtime.clock,
                settings=runtime.settings,
                now=self.as_of,
                run_id=self.run_id,
                postgres=not runtime.settings.is_sqlite,
            )
        return self._engine

    @asynccontextmanager
    async def _batch_connection(self) -> AsyncIterator[None]:
        """The connection every batch of the purge runs on, one after the other.

        On PostgreSQL its commits do not wait for the WAL flush: a batch lost in a server crash
        loses its deletes, its report update and its audit events together, and the next run redoes
        it; nothing is ever reported done that was not. Set once for the run (per batch it cost a
        round trip each) and reset before the connection goes back to the pool.
        """
        postgres = not self.runtime.settings.is_sqlite
        async with self.runtime.db.engine.connect() as connection:
            if postgres:
                await connection.exec_driver_sql("SET synchronous_commit TO OFF")
                await connection.commit()
            self._connection = connection
            try:
                yield
            finally:
                self._connection = None
                if postgres:
                    try:
                        await connection.rollback()
                        await connection.exec_driver_sql("RESET synchronous_commit")
                        await connection.commit()
                    except (SQLAlchemyError, OSError):
                        await connection.invalidate()  # never back to the pool with the setting on

    @asynccontextmanager
    async def _batch(self) -> AsyncIterator[AsyncSession]:
        """One batch's transaction, on the run's batch connection: commit if it succeeds."""
        if self._connection is None:
            raise RuntimeError("a purge batch runs inside _batch_connection()")
        async with self.runtime.db.transaction(bind=self._connection) as session:
            yield session

    # -- the report ------------------------------------------------------------------------

    def report(self, *, final: bool) -> schemas.RunReport:
        """The plan's counts; for a real run, what was done replaces what the plan would do."""
        rules = []
        totals = schemas.Counts()
        for entry in self.engine.entries():
            planned = self._plan[entry.key]
            counts = msgspec.structs.replace(planned)
            if not self.options.dry_run:
                done = self._done[entry.key]
                counts.purged, counts.anonymised, counts.restricted = done.purged, done.anonymised, done.restricted
                counts.errors = done.errors
                if final and self._refused:
                    # Nothing was attempted: what the plan would have done was refused, not put off.
                    counts.refused = _acted(planned)
                elif final:
                    counts.deferred = max(0, _acted(planned) - _acted(done) - done.errors)
            rules.append(msgspec.structs.replace(entry, counts=counts))
            for name in counts.__struct_fields__:
                setattr(totals, name, getattr(totals, name) + getattr(counts, name))
        errors = self._done.errors[:MAX_ITEM_ERRORS] if not self.options.dry_run else []
        return msgspec.structs.replace(self._frame, rules=rules, totals=totals, item_errors=errors)

    def _stored(self, report: schemas.RunReport) -> dict[str, Any]:
        """The report as the ``report`` column holds it: holds live in their own column."""
        data: dict[str, Any] = msgspec.to_builtins(msgspec.structs.replace(report, holds=schemas.HoldsSummary()))
        del data["holds"]
        return data

    async def _save(self, session: AsyncSession) -> None:
        """Refresh the run's row in the transaction of the batch whose work it reports, on every batch
        that did something: a run killed at any moment shows exactly what it committed. The batch's
        audit event rides on the same statement (PostgreSQL): one round trip for both."""
        params = {"run_id": self.run_id, "report": self._stored(self.report(final=False))}
        statement, params = carry_appended_rows(session, _SAVE_REPORT, params)
        await session.exec(statement, params=params)

    # -- the run ---------------------------------------------------------------------------

    async def execute(self, progress: Progress | None = None) -> RunResult:
        """Plan, check, and (unless dry) purge. Always releases the lock; records any failure."""
        try:
            return await self._execute(progress)
        except Exception as exc:
            # The boundary of a run: whatever stopped it, the run is recorded as failed and the
            # lock released. Logged by type and frames only (driver messages carry SQL parameters).
            return await self._failed(exc)
        finally:
            await self.lock.release()

    async def _failed(self, exc: Exception) -> RunResult:
        error = type(exc).__name__
        frames = [f"{f.filename}:{f.lineno}:{f.name}" for f in traceback.extract_tb(exc.__traceback__)][-8:]
        log.error("retention_run_failed", run_id=str(self.run_id), error=error, frames=frames)
        try:
            await self._finish(RunStatus.FAILED, error=error)
        except (SQLAlchemyError, OSError) as finish_exc:
            self._not_recorded(finish_exc)
        return RunResult(RunStatus.FAILED, self.run_id, f"the run failed ({error})", error=error)

    def _not_recorded(self, exc: BaseException) -> None:
        log.error("retention_run_not_recorded", run_id=str(self.run_id), error=type(exc).__name__)

    async def _execute(self, progress: Progress | None) -> RunResult:
        await self._make_plan(progress)
        report = self.report(final=False)
        if report.alerts:
            self._alert(report)
        if self.options.dry_run:
            report = await self._finish(RunStatus.COMPLETED)
            return RunResult(RunStatus.COMPLETED, self.run_id, "dry run: nothing was changed", report)
        if report.would_refuse and not self.options.force:
            self._refused = True
            report = await self._finish(RunStatus.REFUSED, error="safety threshold exceeded; rerun with force")
            return RunResult(
                RunStatus.REFUSED,
                self.run_id,
                "refused: the run would purge more than the safety thresholds allow; check the policy, "
                "then rerun with --force",
                report,
            )
        if progress is not None:
            progress.bars(report.rules)
        await self._purge(progress)
        report = await self._finish(RunStatus.COMPLETED)
        await self._checkpoint_audit()
        return RunResult(RunStatus.COMPLETED, self.run_id, "purge completed", report)

    async def _batches(
        self,
        label: str,
        batch: Batch,
        *,
        act: bool,
        progress: Progress | None,
        per_item: bool = False,
        plan: AsyncSession | None = None,
    ) -> None:
        """Run ``batch`` until it is done: acting, one transaction per batch on the batch connection;
        planning, in the plan's transaction ``plan``."""
        if progress is not None:
            progress.stage(f"{'purging' if act else 'planning'}: {label}")
        # Erasing a subject or a request is a few statements, deleting a record one row.
        limit = max(1, self.batch_size // ITEM_COST) if per_item else self.batch_size
        after: uuid.UUID | None = None
        while True:
            if act:
                await self._keep_lock()
            async with self._batch() if act else nullcontext(plan) as session:
                if session is None:
                    raise RuntimeError("a plan step runs in the plan's transaction")
                tally, after = await batch(session, after, limit)
                if act:
                    self._done.add(tally)
                    if tally.acted() or tally.errors:
                        # The report changes in the transaction of the work it reports.
                        await self._save(session)
            if act:
                self._advance(progress, tally)
            else:
                self._plan.add(tally)
                if tally.errors or any(_found(counts) for counts in tally.counts.values()):
                    self._planned_steps.add(label)
            if after is None:
                return

    async def _keep_lock(self) -> None:
        """Make sure the run still holds its lock, at most every LOCK_CHECK_SECONDS (a round trip)."""
        if time.monotonic() - self._lock_checked > LOCK_CHECK_SECONDS:
            await self.lock.check()
            self._lock_checked = time.monotonic()

    @staticmethod
    def _advance(progress: Progress | None, tally: Tally) -> None:
        if progress is None:
            return
        for key, counts in tally.counts.items():
            if _acted(counts) + counts.errors:
                progress.advance(key, _acted(counts) + counts.errors)

    def _steps(self, engine: RetentionEngine, *, act: bool) -> list[tuple[str, Batch, bool]]:
        """(label, batch, per item) for every step after the records."""

        def secrets(key: str) -> Batch:
            return lambda s, after, limit: engine.secrets_batch(s, key, after, limit, act=act)

        return [
            ("subjects", lambda s, after, limit: engine.subjects_batch(s, after, limit, act=act), True),
            (
                "restricted records",
                lambda s, after, limit: engine.restricted_records_batch(s, after, limit, act=act),
                False,
            ),
            (
                "restricted subjects",
                lambda s, after, limit: engine.restricted_subjects_batch(s, after, limit, act=act),
                True,
            ),
            # Requests last: purging one takes its mail and credentials, which the steps before
            # must have counted already for a dry run to count the same.
            *((key.replace("_", " "), secrets(key), False) for key in SECRET_KEYS),
            (OUTBOX_KEY, lambda s, after, limit: engine.outbox_batch(s, after, limit, act=act), False),
            ("privacy requests", lambda s, after, limit: engine.requests_batch(s, after, limit, act=act), True),
        ]

    async def _make_plan(self, progress: Progress | None) -> None:
        engine = self.engine
        if progress is not None:
            progress.stage("planning: records")
        # One transaction for the plan (it only reads, then records itself): one BEGIN and COMMIT
        # instead of a pair per step and batch. In READ COMMITTED it holds no snapshot between its
        # statements, so a long plan does not hold back vacuum. On PostgreSQL the records' scan
        # (most of the plan's time at scale) runs in a transaction of its own beside it, and the
        # other steps' few dozen small statements wait for a CPU while it runs instead of after it:
        # every statement reads at its own moment either way. Only when the pool can give the scan
        # a connection of its own (the run lock holds one, the plan another): with fewer, the other
        # steps would wait for the whole scan, and a scan longer than the pool's timeout would
        # fail the run.
        async with self.runtime.db.transaction() as session:
            if self.runtime.db.max_connections < PLAN_CONNECTIONS:
                by_category = await self._plan_records(session)
                holds = await self._plan_rest(session, progress)
            else:
                try:
                    async with asyncio.TaskGroup() as group:
                        scan = group.create_task(self._plan_records_alone())
                        rest = group.create_task(self._plan_rest(session, progress))
                except* Exception as failed:
                    # The run reports the step's own error (its type names the cause), not the group.
                    raise failed.exceptions[0] from None
                by_category, holds = scan.result(), rest.result()
            totals = await engine.table_totals(session, by_category)
            self._totals = totals.tables
            alerts = self._thresholds(totals.tables)
            self._frame = schemas.RunReport(
                holds=holds,
                alerts=alerts,
                would_refuse=bool(alerts),
                unknown_categories=totals.unknown,
            )
            await session.exec(
                update(RetentionRun)
                .where(col(RetentionRun.id) == self.run_id)
                .values(report=self._stored(self.report(final=False)), holds=msgspec.to_builtins(holds))
            )

    async def _plan_records(self, session: AsyncSession) -> dict[str, int]:
        """The records' counts into the plan; returns the records per category (the report's frame)."""
        engine = self.engine
        planned, by_category = await engine.plan_records(session, await engine.category_order(session))
        self._plan.add(planned)
        if not self.options.dry_run:
            # The range the purge walks is the table as planned: rows added later wait for the next
            # run, as rows that become due mid-run do. Read here, it costs no round trip of its own
            # on PostgreSQL (the other steps of the plan run meanwhile).
            self._space = await engine.record_space(session, sum(by_category.values()))
        return by_category

    async def _plan_records_alone(self) -> dict[str, int]:
        async with self.runtime.db.transaction() as session:
            return await self._plan_records(session)

    async def _plan_rest(self, session: AsyncSession, progress: Progress | None) -> schemas.HoldsSummary:
        """Every step of the plan after the records' scan; returns the holds summary."""
        engine = self.engine
        holds = await engine.holds_summary(session)
        if engine.has_windows:
            await self._batches(
                "month-end records",
                lambda s, after, limit: engine.plan_record_window(s, after, limit),
                act=False,
                progress=None,
                plan=session,
            )
        for label, batch, per_item in self._steps(engine, act=False):
            await self._batches(label, batch, act=False, progress=progress, per_item=per_item, plan=session)
        return holds

    def _thresholds(self, totals: dict[str, int]) -> list[schemas.Alert]:
        settings = self.runtime.settings
        plan = self._plan.counts
        planned = {
            "records": sum(_acted(c) for k, c in plan.items() if k.startswith("records:"))
            + _acted(self._plan["restricted_records"]),
            "subjects": _acted(self._plan["subjects"]) + _acted(self._plan["restricted_subjects"]),
            "dsr_requests": sum(_acted(c) for k, c in plan.items() if k.startswith("requests:")),
        }
        alerts = []
        for table, count in planned.items():
            total = totals[table]
            percent = 100.0 * count / total if total else 0.0
            if total >= settings.retention_alert_min_rows and percent > settings.retention_alert_percent:
                alerts.append(
                    schemas.Alert(
                        "share_of_table", table, count, total, round(percent, 2), settings.retention_alert_percent
                    )
                )
        rows = sum(planned.values())
        if rows > settings.retention_max_rows_per_run:
            alerts.append(
                schemas.Alert(
                    "rows_per_run", "*", rows, sum(totals.values()), 0.0, float(settings.retention_max_rows_per_run)
                )
            )
        return alerts

    def _alert(self, report: schemas.RunReport) -> None:
        refusing = not self.options.dry_run and not self.options.force
        log.error(
            "retention_threshold_exceeded",
            run_id=str(self.run_id),
            dry_run=self.options.dry_run,
            forced=self.options.force,
            refused=refusing,
            alerts=[msgspec.to_builtins(alert) for alert in report.alerts],
        )

    async def _purge(self, progress: Progress | None) -> None:
        async with self._batch_connection():
            await self._purge_batches(progress)

    async def _purge_batches(self, progress: Progress | None) -> None:
        engine = self.engine
        if progress is not None:
            progress.stage("purging: records")
        if self._space is None:
            raise RuntimeError("a real run's plan measures the records' range")
        end, per_unit = self._space
        step = max(1, self.batch_size // per_unit)
        # Only categories the plan found due rows in (a row that becomes due mid-run waits for the next run).
        categories = [
            key.removeprefix("records:")
            for key, counts in self._plan.counts.items()
            if key.startswith("records:") and counts.purged + counts.anonymised
        ]
        for lo in range(0, end, step):
            await self._keep_lock()
            async with self._batch() as session:
                tally = await engine.purge_record_range(session, lo, lo + step, categories)
                self._done.add(tally)
                if tally.acted():
                    await self._save(session)
            self._advance(progress, tally)
        # A step whose plan counted nothing has nothing to do at the same ``now`` (what becomes due
        # through another process mid-run waits for the next run, as with records): skipped, at no
        # round trip.
        for label, batch, per_item in self._steps(engine, act=True):
            if label in self._planned_steps:
                await self._batches(label, batch, act=True, progress=progress, per_item=per_item)

    async def _finish(self, status: RunStatus, *, error: str | None = None) -> schemas.RunReport:
        report = self.report(final=True)
        finished_at = self.runtime.clock.now()
        async with self.runtime.db.transaction() as session:
            action = {
                RunStatus.COMPLETED: "retention.run.finished",
                RunStatus.REFUSED: "retention.run.refused",
            }.get(status, "retention.run.failed")
            outcome = {RunStatus.COMPLETED: "ok", RunStatus.REFUSED: "refused"}.get(status, "failed")
            audit.record(
                session,
                at=self.runtime.clock.now(),
                actor=self.options.actor,
                action=action,
                outcome=outcome,
                detail={
                    "run_id": str(self.run_id),
                    "status": str(status),
                    "dry_run": self.options.dry_run,
                    "forced": self.options.force,
                    "totals": msgspec.to_builtins(report.totals),
                    "alerts": msgspec.to_builtins(report.alerts),
                    "holds_active": report.holds.active,
                    "error": error,
                },
            )
            # One statement: the run's row and, on PostgreSQL, the audit event riding on it.
            params = {
                "run_id": self.run_id,
                "status": str(status),
                "finished_at": finished_at,
                "error": error,
                "report": self._stored(report),
            }
            statement, params = carry_appended_rows(session, _FINISH_RUN, params)
            if not (await session.exec(statement, params=params)).rowcount:
                raise LookupError("the run's row disappeared")
        return report

    async def _checkpoint_audit(self) -> None:
        """Seal the run's audit events and sign the chain head, so the purge is provable later."""
        runtime = self.runtime
        try:
            await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
            await write_checkpoint(runtime.db, runtime.clock, runtime.audit_key)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("retention_audit_checkpoint_failed", run_id=str(self.run_id), error=type(exc).__name__)
        except AuditHeadInvalid:
            # The purge itself committed; a chain someone rewrote is an alarm for a person, not a failed run.
            log.critical("retention_audit_checkpoint_refused", run_id=str(self.run_id), error="audit_head_invalid")


async def scheduled_purge(runtime: Runtime) -> RunResult:
    """The worker's daily run (never forced: a run over a threshold waits for an operator)."""
    result = await run_purge(runtime, RunOptions(actor=Actor.system("scheduler")))
    log.info("retention_run", status=result.status, run_id=str(result.run_id) if result.run_id else None)
    return result

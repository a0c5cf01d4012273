"""Timed breach work: the 72-hour clock's reminders, subject-notice dispatch, and audit-stream monitoring.

Monitoring reads ``audit_events`` for signs of a breach and opens a *draft* incident for a person to
review (nothing is notified from a draft; the clock starts only when someone confirms it):

* one operator key reading more distinct subjects than ``breach_monitor_read_subjects`` within
  ``breach_monitor_read_minutes`` (bulk export by a stolen key or an insider);
* ``breach_monitor_integrity_failures`` failed decryptions / unavailable keys within
  ``breach_monitor_integrity_minutes`` (tampering with ciphertext or the key store);
* ``breach_monitor_auth_failures`` rejected operator keys within ``breach_monitor_auth_minutes``
  (guessing or a leaked key list), summed over the aggregated rows the guard writes.

A signal opens at most one draft per ``breach_monitor_cooldown_minutes``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import distinct, func
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.models import AuditEvent
from privacy_service.audit.service import Actor
from privacy_service.breaches.clocks import (
    CALIFORNIA,
    california_clock_running,
    california_deadline,
    day_span,
    human_span,
)
from privacy_service.breaches.flows import CLOCK_RUNNING
from privacy_service.breaches.messaging import QueueResult, queue_subject_notices, team_mail
from privacy_service.breaches.models import Breach
from privacy_service.breaches.policy import BreachPolicy, BreachPolicyError, load_breach_policy
from privacy_service.breaches.service import BreachService
from privacy_service.clock import Clock
from privacy_service.config import Settings
from privacy_service.crypto.service import KeyService
from privacy_service.db import Database
from privacy_service.policy.document import PolicyDocument
from privacy_service.runtime import Runtime

log = structlog.get_logger("privacy_service.breaches.jobs")
CLOCK_ACTOR = Actor.system("breach-clock")
MONITOR_ACTOR = Actor.system("breach-monitor")
# Audit actions that mean "an operator looked at this subject's personal data".
READ_ACTIONS = ("subject.read", "record.read", "subject.lookup", "subject.update", "dsr.export.download")
INTEGRITY_ACTION = "integrity.failure"
AUTH_FAILED_ACTION = "operator.auth_failed"
MAX_DRAFT_SUBJECTS = 100_000


# -- the 72-hour clock ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReminderResult:
    reminded: int = 0
    overdue: int = 0


def _reference(breach: Breach) -> str:
    return str(breach.id)[:8]


@dataclass(frozen=True, slots=True)
class _Clock:
    """One legal clock's reminders: its marks in ``reminders_sent`` (with ``prefix``), mails and audit actions."""

    prefix: str
    marks: list[tuple[str, timedelta]]
    reminder: str  # mail template and audit action (breach.<name>)
    overdue: str
    log_event: str  # logged when overdue (no personal data: the breach id only)
    # Only the 72-hour mail names the mark reached (its subject says "24 hours left").
    names_mark: bool = False


def _remind(
    session: AsyncSession,
    rules: BreachPolicy,
    now: datetime,
    breach: Breach,
    clock: _Clock,
    deadline: datetime,
    context: Callable[[timedelta], dict[str, Any]],
) -> ReminderResult:
    """Mail the breach team once per mark reached and once when overdue, record the marks, audit it."""
    left = deadline - now
    sent = list(breach.reminders_sent)
    due = [f"{clock.prefix}{label}" for label, mark in clock.marks if left <= mark]
    due = [mark for mark in due if mark not in sent]
    overdue_mark = f"{clock.prefix}overdue"
    late = left.total_seconds() < 0 and overdue_mark not in sent
    if not due and not late:
        return ReminderResult()
    values = context(left)
    if late:
        team_mail(session, rules, now, clock.overdue, **values)
        log.warning(clock.log_event, breach_id=str(breach.id))
        marks = [*due, overdue_mark]
    else:
        if clock.names_mark:
            values["mark"] = due[-1].removeprefix(clock.prefix)
        team_mail(session, rules, now, clock.reminder, **values)
        marks = due
    breach.reminders_sent = sent + marks
    session.add(breach)
    audit.record(
        session,
        at=now,
        actor=CLOCK_ACTOR,
        action=f"breach.{(clock.overdue if late else clock.reminder).removeprefix('breach_')}",
        detail={"breach_id": str(breach.id), "marks": marks, "seconds_left": int(left.total_seconds())},
    )
    return ReminderResult(0, 1) if late else ReminderResult(1, 0)


async def remind_deadlines(db: Database, clock: Clock, rules: BreachPolicy) -> ReminderResult:
    """E-mail the breach team once per mark (e.g. 24 h and 6 h left) and once when overdue."""
    now = clock.now()
    spec = _Clock("", rules.reminders, "breach_reminder", "breach_overdue", "breach_authority_overdue", names_mark=True)
    reminded = overdue = 0
    async with db.transaction() as session:
        rows = (
            await session.exec(
                select(Breach).where(
                    col(Breach.status).in_([status.value for status in CLOCK_RUNNING]),
                    col(Breach.authority_notified_at).is_(None),
                    col(Breach.authority_deadline).is_not(None),
                    or_(col(Breach.notify_authority).is_(None), col(Breach.notify_authority).is_(True)),
                )
            )
        ).all()
        for breach in rows:
            deadline = breach.authority_deadline
            assert deadline is not None  # noqa: S101 - filtered above

            def context(left: timedelta, breach: Breach = breach, deadline: datetime = deadline) -> dict[str, Any]:
                return {
                    "breach_id": str(breach.id),
                    "reference": _reference(breach),
                    "deadline": deadline.strftime("%Y-%m-%d %H:%M UTC"),
                    "time_left": human_span(left),
                    "status": breach.status,
                    "band": breach.band,
                    "assessed": breach.assessment is not None,
                }

            result = _remind(session, rules, now, breach, spec, deadline, context)
            reminded, overdue = reminded + result.reminded, overdue + result.overdue
    return ReminderResult(reminded, overdue)


async def remind_california(db: Database, clock: Clock, rules: BreachPolicy) -> ReminderResult:
    """The California 30-day clock (``clock.california``): the same marks-then-overdue mails as the 72-hour one."""
    length = rules.california_deadline
    if length is None:
        return ReminderResult()
    now = clock.now()
    spec = _Clock(
        CALIFORNIA,
        rules.california_reminders,
        "breach_california_reminder",
        "breach_california_overdue",
        "breach_california_overdue",
    )
    reminded = overdue = 0
    async with db.transaction() as session:
        rows = (
            await session.exec(
                select(Breach).where(
                    col(Breach.status).in_([status.value for status in CLOCK_RUNNING]),
                    col(Breach.aware_at).is_not(None),
                )
            )
        ).all()
        for breach in rows:
            deadline = california_deadline(rules, breach)
            if deadline is None or not california_clock_running(breach):
                continue

            def context(left: timedelta, breach: Breach = breach, deadline: datetime = deadline) -> dict[str, Any]:
                return {
                    "breach_id": str(breach.id),
                    "reference": _reference(breach),
                    "aware_at": breach.aware_at.strftime("%Y-%m-%d %H:%M UTC") if breach.aware_at else "",
                    "deadline": deadline.strftime("%Y-%m-%d %H:%M UTC"),
                    "days": length.days,
                    "time_left": day_span(left),
                    "status": breach.status,
                    "notify_subjects": breach.notify_subjects,
                }

            result = _remind(session, rules, now, breach, spec, deadline, context)
            reminded, overdue = reminded + result.reminded, overdue + result.overdue
    return ReminderResult(reminded, overdue)


# -- monitoring -----------------------------------------------------------------------------


@dataclass(slots=True)
class MonitorResult:
    opened: list[uuid.UUID] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Signal:
    key: str
    title: str
    description: str
    subject_ids: list[uuid.UUID]
    nature: tuple[str, ...] = ("confidentiality",)


async def _recently_opened(session: AsyncSession, signal: str, since: datetime) -> bool:
    found = (
        await session.exec(
            select(Breach.id).where(col(Breach.signal) == signal, col(Breach.detected_at) >= since).limit(1)
        )
    ).first()
    return found is not None


async def _bulk_reads(session: AsyncSession, settings: Settings, now: datetime) -> list[Signal]:
    since = now - timedelta(minutes=settings.breach_monitor_read_minutes)
    distinct_subjects = func.count(distinct(col(AuditEvent.subject_id)))
    base = (
        col(AuditEvent.actor_type) == "operator",
        col(AuditEvent.action).in_(READ_ACTIONS),
        col(AuditEvent.subject_id).is_not(None),
        col(AuditEvent.at) >= since,
    )
    rows = (
        await session.exec(
            select(AuditEvent.actor_id, distinct_subjects)
            .where(*base)
            .group_by(col(AuditEvent.actor_id))
            .having(distinct_subjects > settings.breach_monitor_read_subjects)
        )
    ).all()
    signals = []
    for actor_id, count in rows:
        ids = (
            await session.exec(
                select(AuditEvent.subject_id)
                .where(*base, col(AuditEvent.actor_id) == actor_id)
                .distinct()
                .limit(MAX_DRAFT_SUBJECTS)
            )
        ).all()
        signals.append(
            Signal(
                key=f"bulk_read:{actor_id}",
                title=f"Operator {actor_id} read {count} subjects in {settings.breach_monitor_read_minutes} minutes",
                description=(
                    f"Operator {actor_id} read the personal data of {count} distinct subjects between "
                    f"{since.isoformat(timespec='seconds')} and {now.isoformat(timespec='seconds')} "
                    f"(threshold: more than {settings.breach_monitor_read_subjects} in "
                    f"{settings.breach_monitor_read_minutes} minutes). A stolen key or an insider exporting data "
                    "would look like this. Check with the operator's owner; revoke the key if in doubt."
                ),
                subject_ids=[sid for sid in ids if sid is not None],
            )
        )
    return signals


async def _integrity_failures(session: AsyncSession, settings: Settings, now: datetime) -> list[Signal]:
    since = now - timedelta(minutes=settings.breach_monitor_integrity_minutes)
    where = (col(AuditEvent.action) == INTEGRITY_ACTION, col(AuditEvent.at) >= since)
    count = int((await session.exec(select(func.count()).select_from(AuditEvent).where(*where))).one())
    if count < settings.breach_monitor_integrity_failures:
        return []
    ids = (
        await session.exec(
            select(AuditEvent.subject_id).where(*where, col(AuditEvent.subject_id).is_not(None)).distinct()
        )
    ).all()
    return [
        Signal(
            key="integrity",
            title=f"{count} failed decryptions in {settings.breach_monitor_integrity_minutes} minutes",
            description=(
                f"Stored data failed its integrity check {count} times since {since.isoformat(timespec='seconds')} "
                f"(threshold: {settings.breach_monitor_integrity_failures} in "
                f"{settings.breach_monitor_integrity_minutes} minutes). Ciphertext or wrapped keys may have been "
                "altered (an integrity breach), or keys lost (availability). Compare with backups; run "
                "`privacy-service audit verify`."
            ),
            subject_ids=[sid for sid in ids if sid is not None],
            nature=("integrity", "availability"),
        )
    ]


async def _auth_failures(session: AsyncSession, settings: Settings, now: datetime) -> list[Signal]:
    since = now - timedelta(minutes=settings.breach_monitor_auth_minutes)
    where = (col(AuditEvent.action) == AUTH_FAILED_ACTION, col(AuditEvent.at) >= since)
    # One row stands for several attempts from one address (operators/guards.py); older rows for one.
    attempts = func.coalesce(func.sum(func.coalesce(AuditEvent.detail["attempts"].as_integer(), 1)), 0)
    sources = func.count(distinct(col(AuditEvent.actor_id)))
    count_row = (await session.exec(select(attempts, sources).select_from(AuditEvent).where(*where))).one()
    count, source_count = int(count_row[0]), int(count_row[1])
    if count < settings.breach_monitor_auth_failures:
        return []
    return [
        Signal(
            key="auth_failures",
            title=f"{count} rejected operator keys in {settings.breach_monitor_auth_minutes} minutes",
            description=(
                f"{count} requests presented an unknown, revoked or wrong operator key since "
                f"{since.isoformat(timespec='seconds')} ({source_count} distinct client addresses; threshold: "
                f"{settings.breach_monitor_auth_failures} in {settings.breach_monitor_auth_minutes} minutes). "
                "Someone may be guessing keys or replaying a leaked list. No personal data is known to be "
                "affected yet: dismiss the draft if none was."
            ),
            subject_ids=[],
        )
    ]


async def monitor_audit(
    db: Database,
    keys: KeyService,
    clock: Clock,
    settings: Settings,
    document: PolicyDocument,
    rules: BreachPolicy,
) -> MonitorResult:
    """Look for breach signals in the audit trail; open a draft incident (and mail the team) per new signal."""
    now = clock.now()
    result = MonitorResult()
    cooldown = now - timedelta(minutes=settings.breach_monitor_cooldown_minutes)
    async with db.transaction() as session:
        signals = [
            *(await _bulk_reads(session, settings, now)),
            *(await _integrity_failures(session, settings, now)),
            *(await _auth_failures(session, settings, now)),
        ]
        service = BreachService(
            session=session,
            keys=keys,
            policy=document,
            rules=rules,
            clock=clock,
            actor=MONITOR_ACTOR,
            is_sqlite=settings.is_sqlite,
        )
        for signal in signals:
            if await _recently_opened(session, signal.key, cooldown):
                continue
            breach = await service.open_draft(
                signal=signal.key,
                title=signal.title,
                description=signal.description,
                categories=[],
                subject_ids=signal.subject_ids,
                nature=signal.nature,
            )
            team_mail(
                session,
                rules,
                now,
                "breach_draft",
                breach_id=str(breach.id),
                title=breach.title,
                description=breach.description,
            )
            log.warning("breach_signal", signal=signal.key.split(":", 1)[0], breach_id=str(breach.id))
            result.opened.append(breach.id)
            result.signals.append(signal.key)
    return result


# -- scheduling -----------------------------------------------------------------------------


def _rules(runtime: Runtime) -> BreachPolicy | None:
    try:
        return load_breach_policy(runtime.settings.policy_dir, runtime.policy)
    except BreachPolicyError as exc:
        problems = [str(problem) for problem in exc.problems][:20]
    log.error("breach_policy_invalid", problems=problems)
    return None


def scheduled_jobs(runtime: Runtime) -> list[tuple[str, Callable[[], Awaitable[object]], object]]:
    """(name, job, trigger) for the worker: the clock, subject-notice dispatch and monitoring."""
    settings = runtime.settings

    async def clock_job() -> tuple[ReminderResult, ReminderResult] | None:
        rules = _rules(runtime)
        if rules is None:
            return None
        authority = await remind_deadlines(runtime.db, runtime.clock, rules)
        return authority, await remind_california(runtime.db, runtime.clock, rules)

    async def dispatch_job() -> QueueResult:
        return await queue_subject_notices(
            runtime.db, runtime.keys, runtime.clock, batch=settings.breach_dispatch_batch
        )

    async def monitor_job() -> MonitorResult | None:
        rules = _rules(runtime)
        if rules is None:
            return None
        return await monitor_audit(runtime.db, runtime.keys, runtime.clock, settings, runtime.policy, rules)

    return [
        ("breach-clock", clock_job, IntervalTrigger(seconds=settings.breach_clock_interval_seconds)),
        ("breach-dispatch", dispatch_job, IntervalTrigger(seconds=settings.breach_dispatch_interval_seconds)),
        ("breach-monitor", monitor_job, IntervalTrigger(seconds=settings.breach_monitor_interval_seconds)),
    ]

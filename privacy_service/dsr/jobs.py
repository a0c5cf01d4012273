"""Scheduled request work: expire unverified requests, e-mail operators a digest, escalate overdue ones,
and watch the acknowledgement clock (CCPA: confirm receipt within 10 business days)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import func
from sqlmodel import col, select

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.clock import Clock
from privacy_service.config import Settings
from privacy_service.db import Database
from privacy_service.dsr.deadlines import DeadlineRules
from privacy_service.dsr.flows import OPEN, Status, check
from privacy_service.dsr.models import PrivacyRequest, record_transition
from privacy_service.notify.models import OutboxMessage
from privacy_service.notify.service import enqueue
from privacy_service.systems.fanout import escalate_overdue

log = structlog.get_logger("privacy_service.dsr.jobs")
SYSTEM = Actor.system("dsr-jobs")


@dataclass(frozen=True, slots=True)
class DigestResult:
    due_soon: int
    overdue: int
    newly_escalated: int
    mailed: bool


async def expire_unverified(db: Database, clock: Clock, settings: Settings, batch: int = 500) -> int:
    """Requests never verified within the configured days become ``expired``."""
    cutoff = clock.now() - timedelta(days=settings.dsr_unverified_expiry_days)
    expired = 0
    while True:
        async with db.transaction() as session:
            query = (
                select(PrivacyRequest)
                .where(
                    col(PrivacyRequest.status) == Status.AWAITING_VERIFICATION,
                    col(PrivacyRequest.received_at) < cutoff,
                )
                .limit(batch)
            )
            if not settings.is_sqlite:
                # A verification committing meanwhile holds the row: skip it rather than overwrite
                # its new status with "expired" (verify locks the row FOR UPDATE too).
                query = query.with_for_update(skip_locked=True)
            rows = (await session.exec(query)).all()
            now = clock.now()
            for request in rows:
                check(request.status, Status.EXPIRED)
                record_transition(
                    session,
                    request.id,
                    from_status=request.status,
                    to_status=Status.EXPIRED,
                    at=now,
                    actor_type=SYSTEM.type,
                    actor_id=SYSTEM.id,
                    note="not verified in time",
                )
                request.status, request.code_hash, request.completed_at = Status.EXPIRED, None, now
                session.add(request)
                audit.record(session, at=now, actor=SYSTEM, action="dsr.expired", detail={"dsr_id": str(request.id)})
        expired += len(rows)
        if len(rows) < batch:
            return expired


async def send_digest(db: Database, clock: Clock, settings: Settings) -> DigestResult:
    """E-mail operators the open requests due within N days; escalate (once) those already overdue."""
    now = clock.now()
    horizon = now + timedelta(days=settings.dsr_digest_days)
    open_values = [status.value for status in OPEN]
    async with db.transaction() as session:
        rows = (
            await session.exec(
                select(PrivacyRequest)
                .where(col(PrivacyRequest.status).in_(open_values), col(PrivacyRequest.due_at) < horizon)
                .where(col(PrivacyRequest.status) != Status.AWAITING_VERIFICATION)
                .order_by(col(PrivacyRequest.due_at))
            )
        ).all()
        overdue = [r for r in rows if r.due_at < now]
        due_soon = [r for r in rows if r.due_at >= now]
        newly = [r for r in overdue if r.escalated_at is None]
        for request in newly:
            request.escalated_at = now
            session.add(request)
            audit.record(
                session,
                at=now,
                actor=SYSTEM,
                action="dsr.escalated",
                subject_id=request.subject_id,
                detail={"dsr_id": str(request.id), "due_at": request.due_at.isoformat()},
            )
            log.warning("dsr_overdue", dsr_id=str(request.id), type=request.type, regime=request.regime)
        systems_overdue = await escalate_overdue(session, now, SYSTEM)
        mailed = bool(rows or systems_overdue)
        if mailed:

            def line(r: PrivacyRequest) -> dict[str, str]:
                return {
                    "id": str(r.id),
                    "type": r.type,
                    "regime": r.regime,
                    "status": r.status,
                    "due_at": r.due_at.date().isoformat(),
                }

            enqueue(
                session,
                template="operator_digest",
                language="en",
                to=settings.operator_email,
                now=now,
                overdue=[line(r) for r in overdue],
                due_soon=[line(r) for r in due_soon],
                overdue_systems=systems_overdue,
                days=settings.dsr_digest_days,
            )
    return DigestResult(len(due_soon), len(overdue), len(newly), mailed)


# -- the acknowledgement clock ------------------------------------------------------------------

# Mails to the subject that confirm receipt under 11 CCR §7021(a): the code mail says the request was
# received, how it is verified (the code) and by when it will be answered; "received" says the same
# after verification; an answer (completed, denied) needs no confirmation before it (§7021(a) "except
# where the business has already granted or denied the request").
CONFIRMING_TEMPLATES = ("verification_code", "received", "completed", "denied")


@dataclass(frozen=True, slots=True)
class AcknowledgementResult:
    confirmed: int = 0
    reminded: int = 0
    overdue: int = 0


async def watch_acknowledgements(
    db: Database, clock: Clock, settings: Settings, rules: DeadlineRules, *, remind_working_days: int = 2
) -> AcknowledgementResult:
    """Record the confirmation of receipt that went out; remind operators while none has, escalate once late.

    A confirmation counts once the outbox delivered it (a queued mail that is dead-lettered, or a phone
    identity with no address on file, confirms nothing). Operators are e-mailed when
    ``remind_working_days`` working days or fewer are left, and once when the deadline has passed
    (then the clock stops for that request: the escalation is in the audit log and with the operators).
    """
    regimes = [name for name, rule in rules.regimes.items() if rule.acknowledge or rule.acknowledge_working_days]
    if not regimes:
        return AcknowledgementResult()
    now = clock.now()
    confirmed = 0
    remind: list[tuple[PrivacyRequest, datetime]] = []
    late: list[tuple[PrivacyRequest, datetime]] = []
    async with db.transaction() as session:
        rows = (
            await session.exec(
                select(PrivacyRequest)
                .where(
                    col(PrivacyRequest.regime).in_(regimes),
                    col(PrivacyRequest.receipt_confirmed_at).is_(None),
                    col(PrivacyRequest.acknowledge_escalated_at).is_(None),
                )
                .order_by(col(PrivacyRequest.received_at))
            )
        ).all()
        if not rows:
            return AcknowledgementResult()
        sent: dict[object, datetime] = {
            owner: at
            for owner, at in (
                await session.exec(
                    select(OutboxMessage.owner_id, func.min(OutboxMessage.sent_at))
                    .where(
                        col(OutboxMessage.owner_id).in_([r.id for r in rows]),
                        col(OutboxMessage.template).in_(CONFIRMING_TEMPLATES),
                        col(OutboxMessage.status) == "sent",
                    )
                    .group_by(col(OutboxMessage.owner_id))
                )
            ).all()
            if at is not None
        }
        for request in rows:
            due = rules.acknowledge_due_at(request.regime, request.received_at)
            if due is None:
                continue
            at = sent.get(request.id)
            if at is not None:
                request.receipt_confirmed_at = at
                session.add(request)
                audit.record(
                    session,
                    at=now,
                    actor=SYSTEM,
                    action="dsr.receipt_confirmed",
                    subject_id=request.subject_id,
                    detail={"dsr_id": str(request.id), "confirmed_at": at.isoformat(), "in_time": at <= due},
                )
                confirmed += 1
            elif now > due:
                request.acknowledge_escalated_at = now
                session.add(request)
                late.append((request, due))
                audit.record(
                    session,
                    at=now,
                    actor=SYSTEM,
                    action="dsr.acknowledge_overdue",
                    subject_id=request.subject_id,
                    detail={"dsr_id": str(request.id), "due_at": due.isoformat()},
                )
                log.warning("dsr_acknowledge_overdue", dsr_id=str(request.id), regime=request.regime)
            elif request.acknowledge_reminded_at is None and _working_days_left(rules, request, now, due) <= (
                remind_working_days
            ):
                request.acknowledge_reminded_at = now
                session.add(request)
                remind.append((request, due))
        if remind or late:

            def line(item: tuple[PrivacyRequest, datetime]) -> dict[str, str]:
                request, due = item
                return {
                    "id": str(request.id),
                    "type": request.type,
                    "regime": request.regime,
                    "status": request.status,
                    "received": rules.local_date(request.regime, request.received_at).isoformat(),
                    "due": rules.local_date(request.regime, due).isoformat(),
                }

            enqueue(
                session,
                template="acknowledgement_due",
                language="en",
                to=settings.operator_email,
                now=now,
                overdue=[line(item) for item in late],
                due_soon=[line(item) for item in remind],
            )
    return AcknowledgementResult(confirmed, len(remind), len(late))


def _working_days_left(rules: DeadlineRules, request: PrivacyRequest, now: datetime, due: datetime) -> int:
    """Working days after today up to and including the due day, on the regime's calendar."""
    calendar = rules.rule(request.regime).calendar
    day, left = rules.local_date(request.regime, now), 0
    while day < rules.local_date(request.regime, due):
        day += timedelta(days=1)
        left += calendar.is_working_day(day)
    return left

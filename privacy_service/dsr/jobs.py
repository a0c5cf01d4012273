"""Scheduled request work: expire unverified requests, e-mail operators a digest, escalate overdue ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlmodel import col, select

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.clock import Clock
from privacy_service.config import Settings
from privacy_service.db import Database
from privacy_service.dsr.flows import OPEN, Status, check
from privacy_service.dsr.models import PrivacyRequest, record_transition
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

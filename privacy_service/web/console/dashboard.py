"""The dashboard's figures, read with the domain's own definitions: which requests are open
(``dsr.flows.OPEN``), a breach's 72-hour clock (``breaches.clocks.authority_clock``), the retention
runs (``retention.runs.list_runs``), the audit chain checks and the delivery queues that ``/metrics``
reads. A panel is computed only for a session holding its scope (:data:`PANELS`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit.models import AuditVerification
from privacy_service.breaches.clocks import authority_clock
from privacy_service.breaches.flows import CLOCK_RUNNING
from privacy_service.breaches.models import Breach
from privacy_service.dsr.flows import OPEN
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.metrics import RUNNING_STATES, outbox_counts
from privacy_service.retention.runs import list_runs
from privacy_service.retention.schemas import RunSummary
from privacy_service.systems.flows import DeliveryStatus
from privacy_service.systems.models import Delivery
from privacy_service.web.console.systems_health import LIVE, RECENT

# Each panel and the scope a session needs to see it (the same scope its API needs).
PANELS: dict[str, frozenset[str]] = {
    "requests": frozenset({"requests:manage"}),
    "breaches": frozenset({"breaches:manage"}),
    "retention": frozenset({"retention:run"}),
    "audit": frozenset({"audit:read"}),
    "delivery": frozenset({"systems:manage"}),
}
OPEN_SHOWN = 20  # open requests listed, nearest due date first
WEEK = timedelta(days=7)
RUNS_SCANNED = 50  # the newest runs searched for the last real (not dry) one


@dataclass(frozen=True, slots=True)
class OpenRequest:
    id: uuid.UUID
    type: str
    status: str
    regime: str
    due_at: datetime
    overdue: bool


@dataclass(frozen=True, slots=True)
class RequestsPanel:
    open_total: int
    overdue: int
    due_this_week: int
    nearest: list[OpenRequest]


@dataclass(frozen=True, slots=True)
class BreachClock:
    id: uuid.UUID
    title: str
    deadline: datetime
    hours_left: float
    overdue: bool


@dataclass(frozen=True, slots=True)
class AuditPanel:
    last_check_at: datetime | None
    last_check_ok: bool | None
    last_ok_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryPanel:
    mail: dict[str, int]
    webhooks: dict[str, int]


@dataclass(slots=True)
class Dashboard:
    panels: set[str] = field(default_factory=set)
    requests: RequestsPanel | None = None
    breaches: list[BreachClock] | None = None
    last_purge: RunSummary | None = None
    audit: AuditPanel | None = None
    delivery: DeliveryPanel | None = None


async def requests_panel(session: AsyncSession, now: datetime) -> RequestsPanel:
    open_values = [status.value for status in OPEN]
    is_open = col(PrivacyRequest.status).in_(open_values)
    due = col(PrivacyRequest.due_at)
    total, overdue, week = (
        await session.exec(
            select(
                func.count(),
                func.count().filter(due < now),
                func.count().filter(due >= now, due < now + WEEK),
            ).where(is_open)
        )
    ).one()
    rows = (
        await session.exec(
            select(PrivacyRequest).where(is_open).order_by(due, col(PrivacyRequest.id)).limit(OPEN_SHOWN)
        )
    ).all()
    nearest = [OpenRequest(r.id, r.type, r.status, r.regime, r.due_at, r.due_at < now) for r in rows]
    return RequestsPanel(int(total), int(overdue), int(week), nearest)


async def breach_clocks(session: AsyncSession, now: datetime) -> list[BreachClock]:
    """Running 72-hour clocks (GDPR Art. 33), the nearest deadline first."""
    incidents = (
        await session.exec(select(Breach).where(col(Breach.status).in_([s.value for s in CLOCK_RUNNING])))
    ).all()
    clocks = []
    for breach in incidents:
        view = authority_clock(breach, now)
        if view.state in RUNNING_STATES and view.seconds_left is not None and view.authority_deadline is not None:
            clocks.append(
                BreachClock(
                    breach.id,
                    breach.title,
                    view.authority_deadline,
                    round(view.seconds_left / 3600, 1),
                    view.state == "overdue",
                )
            )
    return sorted(clocks, key=lambda clock: clock.deadline)


async def last_purge(session: AsyncSession) -> RunSummary | None:
    page = await list_runs(session, after=None, limit=RUNS_SCANNED)
    return next((run for run in page.items if not run.dry_run), None)


async def audit_panel(session: AsyncSession) -> AuditPanel:
    latest = (
        await session.exec(
            select(AuditVerification.at, AuditVerification.ok).order_by(
                col(AuditVerification.at).desc(), col(AuditVerification.id).desc()
            )
        )
    ).first()
    last_ok = (
        await session.exec(select(func.max(AuditVerification.at)).where(col(AuditVerification.ok).is_(True)))
    ).one()
    return AuditPanel(latest[0] if latest else None, latest[1] if latest else None, last_ok)


async def delivery_panel(session: AsyncSession, now: datetime) -> DeliveryPanel:
    """The mail outbox as ``/metrics`` counts it, and the webhooks' live states (waiting, being sent, gave
    up: what may need an operator, few, counted whole through ``(status, next_attempt_at)``) with those
    delivered in the last :data:`~.systems_health.RECENT` (a range of ``(status, delivered_at)``): counting
    every delivery ever made on each view grew with the history."""
    mail, _ = await outbox_counts(session)  # the figures /metrics reports
    status = col(Delivery.status)
    hook_rows = (
        await session.exec(
            select(Delivery.status, func.count()).where(status.in_([s.value for s in LIVE])).group_by(status)
        )
    ).all()
    found = {row[0]: int(row[1]) for row in hook_rows}
    delivered = (
        await session.exec(
            select(func.count()).where(status == DeliveryStatus.DELIVERED, col(Delivery.delivered_at) >= now - RECENT)
        )
    ).one()
    webhooks = {
        DeliveryStatus.PENDING.value: found.get(DeliveryStatus.PENDING, 0),
        DeliveryStatus.SENDING.value: found.get(DeliveryStatus.SENDING, 0),
        "delivered_recent": int(delivered),
        DeliveryStatus.DEAD.value: found.get(DeliveryStatus.DEAD, 0),
    }
    return DeliveryPanel(mail, webhooks)


async def dashboard(session: AsyncSession, scopes: frozenset[str], now: datetime) -> Dashboard:
    shown = {name for name, needed in PANELS.items() if needed <= scopes}
    board = Dashboard(panels=shown)
    if "requests" in shown:
        board.requests = await requests_panel(session, now)
    if "breaches" in shown:
        board.breaches = await breach_clocks(session, now)
    if "retention" in shown:
        board.last_purge = await last_purge(session)
    if "audit" in shown:
        board.audit = await audit_panel(session)
    if "delivery" in shown:
        board.delivery = await delivery_panel(session, now)
    return board

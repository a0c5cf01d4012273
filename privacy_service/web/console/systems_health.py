"""The systems page's health figures: counts from the delivery queue and the connection tasks.

The rows ``/metrics`` counts (``privacy_webhook_deliveries``, ``privacy_connection_tasks``), split as an
operator asks about them: what is queued, what is retrying after a failure and what gave up (dead: waits
for a retry), counted whole, because they are what needs acting on and few; and what was delivered, when
last, and what a system answered ``failed``, counted over the last :data:`RECENT` only: delivered rows are
the whole history (200,000 at scale), and counting them all on each view grew with it. Two grouped
queries (no per-system query), each through an index on ``status``: the live states through
``ix_system_deliveries_status_next``, the recent deliveries through ``ix_system_deliveries_status_delivered``
(``status, delivered_at``), a range of the last week's rows. Connection tasks are counted by connection
name and open status only (never the connection's URL, which stays sealed).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.connections.tasks import OPEN as OPEN_TASKS
from privacy_service.connections.tasks import ConnectionTask, TaskStatus
from privacy_service.systems.flows import QUEUED, Answer, DeliveryStatus
from privacy_service.systems.models import Delivery

RECENT = timedelta(days=7)  # the window of the delivered figures (the page says so)
LIVE = (DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.DEAD)


@dataclass(frozen=True, slots=True)
class DeliveryHealth:
    queued: int = 0  # pending or being sent
    retrying: int = 0  # pending after at least one failed attempt
    delivered: int = 0  # in the last RECENT
    dead: int = 0  # gave up: an operator may retry it
    failed_answers: int = 0  # the system answered "failed", among the last RECENT's deliveries
    oldest_queued_at: datetime | None = None
    last_delivered_at: datetime | None = None  # within the last RECENT


@dataclass(frozen=True, slots=True)
class TaskHealth:
    connection: str
    pending: int
    running: int
    needs_operator: int


async def delivery_health(
    session: AsyncSession, system_id: uuid.UUID | None, now: datetime | None = None
) -> dict[uuid.UUID, DeliveryHealth]:
    """Each system's figures (one system's, given its id); cancelled deliveries (system removed) are left out.

    ``now``: the service's clock (the wall clock when not given): the delivered figures cover ``RECENT`` to it.
    """
    status = col(Delivery.status)
    queued = status.in_([s.value for s in QUEUED])
    live = select(  # type: ignore[call-overload]
        col(Delivery.system_id),
        func.count().filter(queued),
        func.count().filter(status == DeliveryStatus.PENDING, col(Delivery.attempts) > 0),
        func.count().filter(status == DeliveryStatus.DEAD),
        func.min(col(Delivery.created_at)).filter(queued),
    ).where(status.in_([s.value for s in LIVE]))
    since = (now or datetime.now(UTC)) - RECENT
    recent = select(
        col(Delivery.system_id),
        func.count(),
        func.count().filter(col(Delivery.answer) == Answer.FAILED),
        func.max(col(Delivery.delivered_at)),
    ).where(status == DeliveryStatus.DELIVERED, col(Delivery.delivered_at) >= since)
    if system_id is not None:
        live = live.where(col(Delivery.system_id) == system_id)
        recent = recent.where(col(Delivery.system_id) == system_id)
    figures: dict[uuid.UUID, dict[str, object]] = {}
    for row in (await session.exec(live.group_by(col(Delivery.system_id)))).all():
        figures.setdefault(row[0], {}).update(
            queued=int(row[1]), retrying=int(row[2]), dead=int(row[3]), oldest_queued_at=row[4]
        )
    for row in (await session.exec(recent.group_by(col(Delivery.system_id)))).all():
        figures.setdefault(row[0], {}).update(
            delivered=int(row[1]), failed_answers=int(row[2]), last_delivered_at=row[3]
        )
    return {system: DeliveryHealth(**found) for system, found in figures.items()}  # type: ignore[arg-type]


async def connection_tasks(session: AsyncSession) -> list[TaskHealth]:
    """Open tasks on connected databases by connection: the backlog and what waits for an operator."""
    rows = (
        await session.exec(
            select(ConnectionTask.connection_name, ConnectionTask.status, func.count())
            .where(col(ConnectionTask.status).in_([s.value for s in OPEN_TASKS]))
            .group_by(col(ConnectionTask.connection_name), col(ConnectionTask.status))
        )
    ).all()
    counts: dict[str, dict[str, int]] = {}
    for name, status, n in rows:
        counts.setdefault(name, {})[status] = int(n)
    return [
        TaskHealth(
            name,
            found.get(TaskStatus.PENDING, 0),
            found.get(TaskStatus.RUNNING, 0),
            found.get(TaskStatus.NEEDS_OPERATOR, 0),
        )
        for name, found in sorted(counts.items())
    ]

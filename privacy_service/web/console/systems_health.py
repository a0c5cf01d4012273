"""The systems page's health figures: counts from the delivery queue and the connection tasks.

One grouped query per table (no per-system query): the same rows ``/metrics`` counts
(``privacy_webhook_deliveries``, ``privacy_connection_tasks``), split as an operator asks about them:
what is queued, what is retrying after a failure, what was delivered and when last, what gave up
(dead: waits for a retry) and what a system answered ``failed``. Connection tasks are counted by
connection name and open status only (never the connection's URL, which stays sealed).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.connections.tasks import OPEN as OPEN_TASKS
from privacy_service.connections.tasks import ConnectionTask, TaskStatus
from privacy_service.systems.flows import QUEUED, Answer, DeliveryStatus
from privacy_service.systems.models import Delivery


@dataclass(frozen=True, slots=True)
class DeliveryHealth:
    queued: int  # pending or being sent
    retrying: int  # pending after at least one failed attempt
    delivered: int
    dead: int  # gave up: an operator may retry it
    failed_answers: int  # the system answered "failed"
    oldest_queued_at: datetime | None
    last_delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class TaskHealth:
    connection: str
    pending: int
    running: int
    needs_operator: int


async def delivery_health(session: AsyncSession, system_id: uuid.UUID | None) -> dict[uuid.UUID, DeliveryHealth]:
    """Each system's figures (one system's, given its id); cancelled deliveries (system removed) are left out."""
    status = col(Delivery.status)
    queued = status.in_([s.value for s in QUEUED])
    # More columns than sqlmodel's select() overloads are typed for (four).
    query = select(  # type: ignore[call-overload]
        col(Delivery.system_id),
        func.count().filter(queued),
        func.count().filter(status == DeliveryStatus.PENDING, col(Delivery.attempts) > 0),
        func.count().filter(status == DeliveryStatus.DELIVERED),
        func.count().filter(status == DeliveryStatus.DEAD),
        func.count().filter(col(Delivery.answer) == Answer.FAILED),
        func.min(col(Delivery.created_at)).filter(queued),
        func.max(col(Delivery.delivered_at)),
    ).where(status != DeliveryStatus.CANCELLED)
    if system_id is not None:
        query = query.where(col(Delivery.system_id) == system_id)
    rows = (await session.exec(query.group_by(col(Delivery.system_id)))).all()
    return {
        row[0]: DeliveryHealth(int(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[5]), row[6], row[7])
        for row in rows
    }


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

"""Reading the audit log (filters, keyset pagination, export)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from privacy_service.audit.models import AuditEvent
from privacy_service.audit.schemas import AuditEventOut, AuditPage
from privacy_service.db import Database


@dataclass(frozen=True, slots=True)
class AuditFilter:
    subject_id: uuid.UUID | None = None
    actor_id: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def apply(self, query: SelectOfScalar[AuditEvent]) -> SelectOfScalar[AuditEvent]:
        if self.subject_id is not None:
            query = query.where(col(AuditEvent.subject_id) == self.subject_id)
        if self.actor_id is not None:
            query = query.where(col(AuditEvent.actor_id) == self.actor_id)
        if self.action is not None:
            query = query.where(col(AuditEvent.action) == self.action)
        if self.since is not None:
            query = query.where(col(AuditEvent.at) >= self.since)
        if self.until is not None:
            query = query.where(col(AuditEvent.at) < self.until)
        return query


def to_out(event: AuditEvent) -> AuditEventOut:
    return AuditEventOut(
        seq=event.seq,
        at=event.at,
        actor_type=event.actor_type,
        actor_id=event.actor_id,
        action=event.action,
        subject_id=event.subject_id,
        outcome=event.outcome,
        request_id=event.request_id,
        detail=event.detail,
        hash=event.hash.hex() if event.hash else None,
    )


async def page(session: AsyncSession, where: AuditFilter, *, after: int | None, limit: int) -> AuditPage:
    """Sealed events in chain order (pending ones appear once the chainer has sealed them)."""
    query = where.apply(select(AuditEvent).where(col(AuditEvent.seq).is_not(None)))
    if after is not None:
        query = query.where(col(AuditEvent.seq) > after)
    rows = (await session.exec(query.order_by(col(AuditEvent.seq)).limit(limit + 1))).all()
    items = rows[:limit]
    return AuditPage(
        items=[to_out(row) for row in items],
        next_cursor=items[-1].seq if len(rows) > limit and items else None,
    )


async def stream(db: Database, where: AuditFilter, batch: int = 2000) -> AsyncIterator[AuditEventOut]:
    """Every matching sealed event, in bounded batches (flat memory for exports)."""
    after: int | None = None
    while True:
        async with db.transaction() as session:
            result = await page(session, where, after=after, limit=batch)
        for item in result.items:
            yield item
        if result.next_cursor is None:
            return
        after = result.next_cursor

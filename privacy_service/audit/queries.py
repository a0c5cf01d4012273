"""Reading the audit log (filters, keyset pagination, export).

Every search walks the chain in ``seq`` order. Each filter has an index that keeps that order
(``ix_audit_subject_at``, ``ix_audit_action_seq``, ``ix_audit_actor_seq``, ``ix_audit_seq``), and a time
range is turned into ``seq`` bounds (:func:`seq_bounds`) rather than given an index on ``at`` of its own:
every intake writes audit events, so each index on the table is paid on every request, while the signed
checkpoints (one per 1,000 events) already say up to which ``seq`` the chain had been sealed and when.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from privacy_service.audit.models import AuditCheckpoint, AuditEvent
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


# Allowed for between an event's time (taken when it is recorded, before its transaction commits) and its
# checkpoint's (taken by the sealer, possibly another process or host, after the commit): clock difference
# between processes plus the longest a transaction holding an audit event stays open.
SEAL_MARGIN = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class SeqBounds:
    above: int | None = None  # every match has seq > above
    through: int | None = None  # every match has seq <= through


async def seq_bounds(session: AsyncSession, where: AuditFilter) -> SeqBounds:
    """``since``/``until`` as a range of ``seq`` that holds every match, from the checkpoints' times.

    An event is recorded at ``at`` and sealed after its transaction commits, so a checkpoint signed at
    ``created_at`` covers only events recorded before it (within :data:`SEAL_MARGIN`): events at or after
    ``since`` lie above the last checkpoint signed before ``since - margin``, and events before ``until``
    lie at or below the first checkpoint signed at or after ``until + margin``. The bounds only narrow the
    walk: the exact ``at`` conditions are still applied. No checkpoint on that side: no bound.
    """
    above = through = None
    if where.since is not None:
        above = (
            await session.exec(
                select(func.max(AuditCheckpoint.seq)).where(col(AuditCheckpoint.created_at) < where.since - SEAL_MARGIN)
            )
        ).one()
    if where.until is not None:
        through = (
            await session.exec(
                select(func.min(AuditCheckpoint.seq)).where(
                    col(AuditCheckpoint.created_at) >= where.until + SEAL_MARGIN
                )
            )
        ).one()
    return SeqBounds(above, through)


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


def page_query(where: AuditFilter, bounds: SeqBounds, *, after: int | None, limit: int) -> SelectOfScalar[AuditEvent]:
    """One page's statement: the filters, the keyset and the time range's ``seq`` bounds, in chain order."""
    query = where.apply(select(AuditEvent).where(col(AuditEvent.seq).is_not(None)))
    lowest = max((x for x in (after, bounds.above) if x is not None), default=None)
    if lowest is not None:
        query = query.where(col(AuditEvent.seq) > lowest)
    if bounds.through is not None:
        query = query.where(col(AuditEvent.seq) <= bounds.through)
    return query.order_by(col(AuditEvent.seq)).limit(limit + 1)


async def page(session: AsyncSession, where: AuditFilter, *, after: int | None, limit: int) -> AuditPage:
    """Sealed events in chain order (pending ones appear once the chainer has sealed them)."""
    query = page_query(where, await seq_bounds(session, where), after=after, limit=limit)
    rows = (await session.exec(query)).all()
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

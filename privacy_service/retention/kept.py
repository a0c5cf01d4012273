"""Step 3 of a run: data kept after erasure (a legal duty's records and retained subject data) is
deleted once its date has passed."""

from __future__ import annotations

import uuid

from sqlalchemy import (
    and_,
    delete,
    func,
    true,
)
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.retention.context import EngineBase
from privacy_service.retention.tally import (
    RESTRICTED_RECORDS_KEY,
    RESTRICTED_SUBJECTS_KEY,
    Tally,
)
from privacy_service.subjects.models import Record, Subject, SubjectStatus


class KeptSteps(EngineBase):
    __slots__ = ()

    async def restricted_records_batch(
        self, session: AsyncSession, after: uuid.UUID | None, limit: int, *, act: bool
    ) -> tuple[Tally, uuid.UUID | None]:
        tally = Tally()
        ended = and_(col(Record.restricted) == true(), col(Record.retain_until) <= self.now)
        query = select(col(Record.id), col(Record.subject_id)).where(ended)
        if after is not None:
            query = query.where(col(Record.id) > after)
        rows = (await session.exec(query.order_by(col(Record.id)).limit(limit))).all()
        held = await self.held_among(session, (row[1] for row in rows))
        counts = tally[RESTRICTED_RECORDS_KEY]
        counts.selected += len(rows)
        counts.skipped_hold += sum(1 for row in rows if row[1] in held)
        ids = [row[0] for row in rows if row[1] not in held]
        if act and ids:
            result = await session.exec(
                delete(Record)
                .where(col(Record.id).in_(ids), ended, col(Record.subject_id).not_in(self._held_ids()))
                .execution_options(synchronize_session=False)
            )
            deleted = int(result.rowcount or 0)
            counts.purged += deleted
            counts.deferred += len(ids) - deleted
            self._audit(session, "retention.restricted_records.purged", count=deleted)
        elif not act:
            counts.purged += len(ids)
        return tally, (rows[-1][0] if len(rows) == limit else None)

    async def restricted_subjects_batch(
        self, session: AsyncSession, after: uuid.UUID | None, limit: int, *, act: bool
    ) -> tuple[Tally, uuid.UUID | None]:
        tally = Tally()
        query = select(Subject).where(
            col(Subject.status) == SubjectStatus.RESTRICTED, col(Subject.retained_until) <= self.now
        )
        if after is not None:
            query = query.where(col(Subject.id) > after)
        query = query.order_by(col(Subject.id)).limit(limit)
        if act and self.postgres:
            query = query.with_for_update()
        subjects = (await session.exec(query)).all()
        held = await self.held_among(session, (s.id for s in subjects))
        counts = tally[RESTRICTED_SUBJECTS_KEY]
        for subject in subjects:
            counts.selected += 1
            if subject.id in held:
                counts.skipped_hold += 1
                continue
            later = (
                await session.exec(
                    select(func.count()).where(
                        col(Record.subject_id) == subject.id,
                        col(Record.restricted) == true(),
                        col(Record.retain_until) > self.now,
                    )
                )
            ).one()
            if later:
                counts.skipped_legal_duty += 1
                continue
            counts.purged += 1
            if act:
                await self._end_retention(session, subject)
        return tally, (subjects[-1].id if len(subjects) == limit else None)

    async def _end_retention(self, session: AsyncSession, subject: Subject) -> None:
        deleted = await session.exec(
            delete(Record)
            .where(col(Record.subject_id) == subject.id, col(Record.restricted) == true())
            .execution_options(synchronize_session=False)
        )
        destroyed = await self.keys.shred(session, subject.id)
        subject.retained_ct = None
        subject.profile_fields = {}
        subject.status = SubjectStatus.ERASED
        subject.updated_at = self.clock.now()
        session.add(subject)
        self._audit(
            session,
            "retention.subject.retention_ended",
            subject.id,
            keys_destroyed=destroyed,
            records_deleted=int(deleted.rowcount or 0),
        )

"""Steps 4 and 5 of a run: completed privacy requests (per the rule of ``REQUEST_CATEGORY``),
expired credentials and export links, and old mail."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, timedelta

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    update,
)
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.crypto.service import REQUEST
from privacy_service.dsr.models import PrivacyRequest, RequestTransition
from privacy_service.notify.models import OutboxMessage
from privacy_service.retention.context import EngineBase
from privacy_service.retention.rules import (
    REQUEST_ANCHORS,
    REQUEST_CATEGORY,
    State,
    classify,
    rule_sql,
)
from privacy_service.retention.tally import (
    OUTBOX_KEY,
    REQUESTS_KEY,
    Tally,
)
from privacy_service.subjects.models import Subject


class Housekeeping(EngineBase):
    __slots__ = ()

    # -- 4. privacy requests ---------------------------------------------------------------

    async def requests_batch(
        self, session: AsyncSession, after: uuid.UUID | None, limit: int, *, act: bool
    ) -> tuple[Tally, uuid.UUID | None]:
        tally = Tally()
        bound = self._bounds.get(REQUEST_CATEGORY)
        if bound is None:
            return tally, None
        possible = rule_sql(bound, REQUEST_ANCHORS, None).possible
        query = (
            select(
                PrivacyRequest,
                col(Subject.created_at),
                col(Subject.account_closed_at),
                col(Subject.last_activity_at),
            )
            .outerjoin(Subject, col(Subject.id) == col(PrivacyRequest.subject_id))
            .where(col(PrivacyRequest.completed_at).is_not(None), possible)
        )
        if after is not None:
            query = query.where(col(PrivacyRequest.id) > after)
        rows = (await session.exec(query.order_by(col(PrivacyRequest.id)).limit(limit))).all()
        held = await self.held_among(session, (r[0].subject_id for r in rows if r[0].subject_id is not None))
        counts = tally[REQUESTS_KEY]
        chosen: list[PrivacyRequest] = []
        for request, subject_created, closed_at, activity in rows:
            anchors = {
                "occurred_at": request.received_at,
                "collected_at": request.received_at,
                "request_completed_at": request.completed_at,
                "account_closed_at": closed_at,
                "last_activity_at": activity or subject_created,
            }
            state = classify(bound.rule, anchors, self.now)
            if state is State.LIVE:
                continue
            counts.selected += 1
            if request.subject_id in held:
                counts.skipped_hold += 1
            elif state is State.DUTY:
                counts.skipped_legal_duty += 1
            else:
                chosen.append(request)
        anonymise = bound.rule.action == "anonymise"
        if act and chosen:
            ids = [request.id for request in chosen]
            if anonymise:
                await self._aggregate(
                    session,
                    Counter(
                        (REQUEST_CATEGORY, r.type, r.received_at.astimezone(UTC).strftime("%Y-%m"), "") for r in chosen
                    ),
                )
            await session.exec(
                delete(RequestTransition)
                .where(col(RequestTransition.request_id).in_(ids))
                .execution_options(synchronize_session=False)
            )
            await session.exec(
                delete(OutboxMessage)
                .where(col(OutboxMessage.owner_id).in_(ids))
                .execution_options(synchronize_session=False)
            )
            for request_id in ids:
                await self.keys.shred(session, request_id, REQUEST)
            result = await session.exec(
                delete(PrivacyRequest)
                .where(col(PrivacyRequest.id).in_(ids))
                .execution_options(synchronize_session=False)
            )
            self._audit(session, "retention.requests.purged", count=int(result.rowcount or 0), anonymised=anonymise)
        if anonymise:
            counts.anonymised += len(chosen)
        else:
            counts.purged += len(chosen)
        return tally, (rows[-1][0].id if len(rows) == limit else None)

    # -- 5. expired credentials, export links and old mail -----------------------------------

    def secret_condition(self, key: str) -> tuple[ColumnElement[bool], dict[str, None]]:
        cutoff = self.now - timedelta(hours=self.settings.retention_secret_grace_hours)
        if key == "request_codes":
            return and_(col(PrivacyRequest.code_hash).is_not(None), col(PrivacyRequest.code_expires_at) <= cutoff), {
                "code_hash": None
            }
        if key == "request_tokens":
            return and_(col(PrivacyRequest.token_hash).is_not(None), col(PrivacyRequest.token_expires_at) <= cutoff), {
                "token_hash": None
            }
        return and_(
            col(PrivacyRequest.export_expires_at).is_not(None), col(PrivacyRequest.export_expires_at) <= cutoff
        ), {"export_expires_at": None}

    async def secrets_batch(
        self, session: AsyncSession, key: str, after: uuid.UUID | None, limit: int, *, act: bool
    ) -> tuple[Tally, uuid.UUID | None]:
        """Clear one kind of expired secret. Holds do not apply: credentials are not kept data."""
        tally = Tally()
        condition, values = self.secret_condition(key)
        query = select(col(PrivacyRequest.id)).where(condition)
        if after is not None:
            query = query.where(col(PrivacyRequest.id) > after)
        ids = list((await session.exec(query.order_by(col(PrivacyRequest.id)).limit(limit))).all())
        counts = tally[key]
        counts.selected += len(ids)
        if act and ids:
            result = await session.exec(
                update(PrivacyRequest)
                .where(col(PrivacyRequest.id).in_(ids), condition)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            counts.purged += int(result.rowcount or 0)
            counts.deferred += len(ids) - int(result.rowcount or 0)
            self._audit(session, f"retention.{key}.cleared", count=int(result.rowcount or 0))
        elif not act:
            counts.purged += len(ids)
        return tally, (ids[-1] if len(ids) == limit else None)

    async def outbox_batch(
        self, session: AsyncSession, after: uuid.UUID | None, limit: int, *, act: bool
    ) -> tuple[Tally, uuid.UUID | None]:
        tally = Tally()
        cutoff = self.now - timedelta(days=self.settings.retention_outbox_max_age_days)
        old = and_(col(OutboxMessage.status).in_(["sent", "dead", "dropped"]), col(OutboxMessage.created_at) <= cutoff)
        query = select(col(OutboxMessage.id)).where(old)
        if after is not None:
            query = query.where(col(OutboxMessage.id) > after)
        ids = list((await session.exec(query.order_by(col(OutboxMessage.id)).limit(limit))).all())
        counts = tally[OUTBOX_KEY]
        counts.selected += len(ids)
        if act and ids:
            result = await session.exec(
                delete(OutboxMessage)
                .where(col(OutboxMessage.id).in_(ids), old)
                .execution_options(synchronize_session=False)
            )
            counts.purged += int(result.rowcount or 0)
            counts.deferred += len(ids) - int(result.rowcount or 0)
            self._audit(session, "retention.outbox.purged", count=int(result.rowcount or 0))
        elif not act:
            counts.purged += len(ids)
        return tally, (ids[-1] if len(ids) == limit else None)

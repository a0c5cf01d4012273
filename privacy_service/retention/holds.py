"""Legal holds: place, list and release. A held subject is never purged and never erased.

The operator's reason is free text that may name people or matters, so it is PII by default: it is
sealed under the subject's own data key ("primary" while active, "retention" once only legally
kept data is left), bound to the hold's row, and never logged or audited. It becomes unreadable
when that key is shredded; the hold's ids, times and operator ids stay as evidence.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.clock import Clock, as_utc
from privacy_service.crypto.fields import Binding, DataKey, DecryptionFailed
from privacy_service.crypto.keys import KeyError_
from privacy_service.crypto.service import PRIMARY, RETENTION, KeyService, KeyShredded
from privacy_service.errors import Conflict, DataIntegrityError, Gone, InvalidInput, NotFound
from privacy_service.retention import schemas
from privacy_service.retention.models import LegalHold
from privacy_service.subjects.models import Subject, SubjectStatus

HOLDS = "legal_holds"


@dataclass(slots=True)
class HoldService:
    """Place, list and release legal holds. The reason is sealed under the subject's own data key."""

    session: AsyncSession
    keys: KeyService
    clock: Clock
    actor: Actor
    request_id: str | None = None

    def _audit(self, action: str, subject_id: uuid.UUID, **detail: Any) -> None:
        audit.record(
            self.session,
            at=self.clock.now(),
            actor=self.actor,
            action=action,
            subject_id=subject_id,
            request_id=self.request_id,
            detail=detail,
        )

    @staticmethod
    def _binding(hold: LegalHold) -> Binding:
        return Binding(HOLDS, hold.subject_id, hold.id, "reason")

    async def _subject(self, subject_id: uuid.UUID, *, lock: bool = False) -> Subject:
        query = select(Subject).where(col(Subject.id) == subject_id)
        bind = self.session.bind
        if lock and bind is not None and bind.dialect.name == "postgresql":
            query = query.with_for_update()
        subject = (await self.session.exec(query)).one_or_none()
        if subject is None:
            raise NotFound("no subject with this id")
        return subject

    async def _render(self, hold: LegalHold, now: datetime, keys: dict[str, DataKey | None]) -> schemas.HoldOut:
        if hold.reason_key not in keys:
            try:
                keys[hold.reason_key] = await self.keys.load_key(self.session, hold.subject_id, hold.reason_key)
            except (KeyShredded, KeyError_):
                keys[hold.reason_key] = None
        key = keys[hold.reason_key]
        reason: str | None = None
        if key is not None and hold.reason_ct is not None:
            try:
                reason = key.open(hold.reason_ct, self._binding(hold)).decode()
            except DecryptionFailed as exc:
                raise DataIntegrityError("a stored hold reason failed to decrypt") from exc
        return schemas.HoldOut(
            id=hold.id,
            subject_id=hold.subject_id,
            active=hold.is_active(now),
            reason=reason,
            reason_readable=reason is not None,
            placed_by=hold.placed_by,
            placed_at=hold.placed_at,
            until=hold.until,
            released_at=hold.released_at,
            released_by=hold.released_by,
        )

    async def place(self, subject_id: uuid.UUID, body: schemas.HoldCreate) -> schemas.HoldOut:
        now = self.clock.now()
        until = as_utc(body.until, "until") if body.until is not None else None
        if until is not None and until <= now:
            raise InvalidInput(
                "until must be in the future", extra={"errors": [{"field": "until", "message": "not in the future"}]}
            )
        if not body.reason.strip():
            raise InvalidInput("reason must not be blank", extra={"errors": [{"field": "reason", "message": "blank"}]})
        subject = await self._subject(subject_id, lock=True)
        # Active data is sealed under the primary key; after a partial erasure only the kept data
        # (under the "retention" key) is left to hold. An erased subject has nothing left.
        purpose = {SubjectStatus.ACTIVE: PRIMARY, SubjectStatus.RESTRICTED: RETENTION}.get(
            SubjectStatus(subject.status)
        )
        if purpose is None:
            raise Gone("this subject has been erased: nothing is left to hold")
        try:
            key = await self.keys.load_key(self.session, subject_id, purpose)
        except (KeyShredded, KeyError_) as exc:
            raise DataIntegrityError("the subject's data key is unavailable") from exc
        hold = LegalHold(
            id=uuid.uuid4(),
            subject_id=subject_id,
            reason_key=purpose,
            placed_by=self.actor.id,
            placed_at=now,
            until=until,
        )
        hold.reason_ct = key.seal(body.reason.strip().encode(), self._binding(hold))
        self.session.add(hold)
        self._audit("hold.placed", subject_id, hold_id=str(hold.id), until=until.isoformat() if until else None)
        return await self._render(hold, now, {purpose: key})

    async def list(self, subject_id: uuid.UUID) -> schemas.HoldList:
        await self._subject(subject_id)
        now = self.clock.now()
        rows = (
            await self.session.exec(
                select(LegalHold)
                .where(col(LegalHold.subject_id) == subject_id)
                .order_by(col(LegalHold.placed_at), col(LegalHold.id))
            )
        ).all()
        keys: dict[str, DataKey | None] = {}
        items = [await self._render(row, now, keys) for row in rows]
        self._audit("hold.read", subject_id, count=len(items))
        return schemas.HoldList(items=items)

    async def release(self, subject_id: uuid.UUID, hold_id: uuid.UUID) -> schemas.HoldOut:
        await self._subject(subject_id, lock=True)
        hold = await self.session.get(LegalHold, hold_id)
        if hold is None or hold.subject_id != subject_id:
            raise NotFound("no hold with this id for this subject")
        if hold.released_at is not None:
            raise Conflict("this hold has already been released")
        now = self.clock.now()
        hold.released_at, hold.released_by = now, self.actor.id
        self.session.add(hold)
        self._audit("hold.released", subject_id, hold_id=str(hold.id))
        return await self._render(hold, now, {})

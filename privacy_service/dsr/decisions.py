"""An operator's decisions on a request: approve (then process), deny, extend the deadline, cancel."""

from __future__ import annotations

import uuid

from privacy_service.audit import service as audit
from privacy_service.dsr.flows import EXTENDABLE, Status, check
from privacy_service.dsr.models import PrivacyRequest, record_transition
from privacy_service.dsr.processing import Processing
from privacy_service.errors import Conflict


class Decisions(Processing):
    __slots__ = ()

    async def approve(self, request_id: uuid.UUID) -> PrivacyRequest:
        """Process the request as its verified submitter filed it (a correction: the diff shown for review)."""
        request = await self._get(request_id, for_update=True)
        check(request.status, Status.PROCESSING)
        await self._process(request, await self._request_key(request))
        return request

    async def deny(self, request_id: uuid.UUID, reason: str) -> PrivacyRequest:
        request = await self._get(request_id, for_update=True)
        check(request.status, Status.DENIED)
        await self._deny(request, await self._request_key(request), reason)
        return request

    async def extend(self, request_id: uuid.UUID, reason: str, days: int | None) -> PrivacyRequest:
        request = await self._get(request_id, for_update=True)
        if request.status not in EXTENDABLE:
            raise Conflict(f"a request that is {request.status} cannot be extended")
        if request.extended_at is not None:
            raise Conflict("this request has already been extended once; the law allows one extension")
        now = self.clock.now()
        if now > request.due_at:
            raise Conflict("the deadline has passed; an extension must be notified before it")
        request.due_at = self.rules.extended_due_at(request.regime, request.received_at, request.due_at, days)
        request.extended_at = now
        key = await self._request_key(request)
        request.decision_ct = key.seal(reason.encode(), self._binding(request, "decision"))
        self.session.add(request)
        record_transition(
            self.session,
            request.id,
            from_status=request.status,
            to_status=request.status,
            at=now,
            actor_type=self.actor.type,
            actor_id=self.actor.id,
            note=f"extended to {request.due_at.date()}",
        )
        audit.record(
            self.session,
            at=now,
            actor=self.actor,
            action="dsr.extended",
            subject_id=request.subject_id,
            request_id=self.request_id,
            detail={"dsr_id": str(request.id), "due_at": request.due_at.isoformat()},
        )
        await self._notify(request, key, "extended", reason=reason)
        return request

    async def cancel(self, request_id: uuid.UUID) -> PrivacyRequest:
        request = await self._get(request_id, for_update=True)
        check(request.status, Status.CANCELLED)
        request.completed_at = self.clock.now()
        self._transition(request, Status.CANCELLED)
        return request

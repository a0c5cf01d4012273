"""An operator's decisions on a request: approve (then process), deny, extend the deadline, cancel."""

from __future__ import annotations

import uuid

from sqlmodel import col, select

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.dsr.flows import EXTENDABLE, Status, check
from privacy_service.dsr.models import PrivacyRequest, RequestTransition, record_transition
from privacy_service.dsr.processing import Processing
from privacy_service.errors import Conflict, DataIntegrityError, Forbidden

# Approving a correction that needed review writes to the vault as an operator's PATCH would.
WRITE_SCOPE = "subjects:write"


class Decisions(Processing):
    __slots__ = ()

    async def approve(self, request_id: uuid.UUID) -> PrivacyRequest:
        """Process the request as its verified submitter filed it (a correction: the diff shown for review).

        A correction that needed review writes identifiers or identity/financial data to the vault:
        the approving operator must also hold subjects:write, and must not be the operator who filed
        it (through OpenDSR), or one key would both ask for and grant a change of account.
        """
        request = await self._get(request_id, for_update=True)
        check(request.status, Status.PROCESSING)
        key = await self._request_key(request)
        if self._needs_review(request, key):
            if WRITE_SCOPE not in self.scopes:
                raise Forbidden(f"approving this correction writes to the vault: it needs the scope {WRITE_SCOPE}")
            if await self._filed_by(request) == self.actor:
                raise Forbidden("this correction was filed with this operator's key; another operator must approve it")
        await self._process(request, key)
        return request

    async def _filed_by(self, request: PrivacyRequest) -> Actor:
        """Who filed the request: the actor of its first transition (into ``received``)."""
        first = (
            await self.session.exec(
                select(RequestTransition)
                .where(col(RequestTransition.request_id) == request.id, col(RequestTransition.from_status).is_(None))
                .order_by(col(RequestTransition.id))
                .limit(1)
            )
        ).first()
        if first is None:
            raise DataIntegrityError("request history is missing its first step")
        return Actor(first.actor_type, first.actor_id)

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
            note=f"extended to {self.rules.local_date(request.regime, request.due_at)}",
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

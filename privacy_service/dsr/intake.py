"""Accepting requests: the public intake (a code is mailed), resending a code, and controller-side intake.

The public answer is the same whether or not the identity is a customer. How many codes reach an
identity is capped (per request, per identity per day; see :func:`privacy_service.ratelimit.code_quota`),
but intake itself is never refused because of the identity: a stranger filing requests in a
customer's name cannot lock the customer out of filing their own.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Table, bindparam, insert, literal_column, null
from sqlmodel import col, select

from privacy_service.audit.service import Actor
from privacy_service.crypto.fields import NORMALISERS, InvalidIdentifier
from privacy_service.crypto.service import REQUEST
from privacy_service.db import carry_appended_rows, column_values, new_row, write_last
from privacy_service.dsr import schemas
from privacy_service.dsr.context import TooManyCodes
from privacy_service.dsr.flows import VERIFIED_OPEN, Status
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.dsr.processing import Processing
from privacy_service.errors import Conflict, InvalidInput

# Built once: intake runs them on every request (building one per call cost as much as running it).
_OPEN_DUPLICATE = (
    select(PrivacyRequest.id)
    .where(
        col(PrivacyRequest.identity_bidx) == bindparam("dup_bidx"),
        col(PrivacyRequest.type) == bindparam("dup_type"),
        # Constants written into the SQL: a list parameter ("expanding") would make SQLAlchemy rewrite
        # the whole statement (intake's carries ~80 parameters) on every execution.
        col(PrivacyRequest.status).in_([literal_column(f"'{status.value}'") for status in sorted(VERIFIED_OPEN)]),
        col(PrivacyRequest.duplicate_of).is_(None),
    )
    .order_by(col(PrivacyRequest.received_at))
    .limit(1)
)
_REQUESTS: Table = PrivacyRequest.__table__  # type: ignore[attr-defined]
# The new request's row, linked in the same statement to the oldest verified open request of the same
# type for the same identity, if any (information for operators: nothing acts on the link). On
# PostgreSQL the rows intake queued (its data key, transitions, audit event and mail) ride on this
# INSERT too, so intake writes everything in one statement.
# Columns a new request never has at intake are NULL in the SQL, not parameters (each parameter costs
# binding time on every intake); submit checks they are still unset.
_UNSET_AT_INTAKE = frozenset(
    {
        "subject_id",
        "receipt_confirmed_at",
        "acknowledge_reminded_at",
        "acknowledge_escalated_at",
        "extended_at",
        "verified_at",
        "completed_at",
        "escalated_at",
        "token_hash",
        "token_expires_at",
        "export_expires_at",
        "decision_ct",
    }
)
_NEW_PARAMS = {
    column.key: f"new_{column.key}"
    for column in _REQUESTS.columns
    if column.key != "duplicate_of" and column.key not in _UNSET_AT_INTAKE
}
_NEW_PARAM_PAIRS = tuple(_NEW_PARAMS.items())
_NEW_REQUEST = insert(_REQUESTS).values(
    {key: bindparam(name, type_=_REQUESTS.c[key].type) for key, name in _NEW_PARAMS.items()}
    | dict.fromkeys(_UNSET_AT_INTAKE, null())
    | {"duplicate_of": _OPEN_DUPLICATE.scalar_subquery()}
)


def new_request_params(request: PrivacyRequest) -> dict[str, Any]:
    """The values of ``_NEW_REQUEST`` for a new request's row (its columns, and the duplicate look-up's)."""
    columns = column_values(request)
    if any(columns[name] is not None for name in _UNSET_AT_INTAKE):
        raise RuntimeError("intake set a column its INSERT writes as NULL")
    params: dict[str, Any] = {name: columns[column] for column, name in _NEW_PARAM_PAIRS}
    params["dup_bidx"] = columns["identity_bidx"]
    params["dup_type"] = columns["type"]
    return params


class Intake(Processing):
    __slots__ = ()

    async def submit(self, body: schemas.RequestCreate) -> schemas.RequestAccepted:
        """Accept a request. The answer is the same whether or not the identity is known, and whether
        or not the identity's code mails for the day are used up (then no code is sent: ask for one
        later with a resend)."""
        given = [(kind, getattr(body.identity, kind)) for kind in ("email", "phone") if getattr(body.identity, kind)]
        if len(given) != 1:
            raise InvalidInput("identity must contain exactly one of email or phone")
        kind, raw_identity = given[0]
        try:
            identity = NORMALISERS[kind](raw_identity)
        except InvalidIdentifier as exc:
            raise InvalidInput(
                f"identity.{kind}: {exc}", extra={"errors": [{"field": f"identity.{kind}", "message": str(exc)}]}
            ) from None
        if (body.type == "rectify") != (body.changes is not None):
            raise InvalidInput("'changes' is required for rectify requests and not allowed otherwise")
        if body.changes is not None:
            self._validate_changes(body.changes)
        bidx = self.keys.indexer.index(kind, identity)
        now = self.clock.now()
        regime = body.regime or self.settings.dsr_default_regime
        request_id = uuid.uuid4()
        key = await self.keys.create_key(self.session, request_id, REQUEST)
        # Every value the row starts with, before the row: an assignment to a model instance's
        # attribute goes through SQLModel's and SQLAlchemy's instrumentation (~4 µs each).
        values: dict[str, Any] = {
            "id": request_id,
            "type": body.type,
            "status": Status.RECEIVED,
            "regime": regime,
            "language": body.language,
            "identity_kind": kind,
            "identity_bidx": bidx,
            "identity_ct": key.seal(identity.encode(), self._binding_of(request_id, "identity")),
            "received_at": now,
            "due_at": self.rules.due_at(regime, now),
            "acknowledged_at": now,
        }
        if body.changes is not None:
            values["changes_ct"] = key.seal(msgspec.json.encode(body.changes), self._binding_of(request_id, "changes"))
        if body.reason is not None:
            values["reason_ct"] = key.seal(body.reason.encode(), self._binding_of(request_id, "reason"))
        # Counted before the request is written, as before: a failed write still used the mail.
        code = None
        if await self._may_mail_code(bidx) is None:
            # Sent (and expiring) from now, after the quota's round trip, as a resend's code.
            code, code_columns = self._code_columns(request_id, self.clock.now())
            values |= code_columns
        request = new_row(PrivacyRequest, values)
        self._received(request, now, Actor("subject", str(request.id)))
        if self.actor.type == "subject":
            self.actor = Actor("subject", str(request.id))
        self._transition(request, Status.AWAITING_VERIFICATION)
        if code is not None:
            # An e-mail identity is its own recipient: no need to open what was just sealed.
            to = identity if kind == "email" else None
            minutes = self.settings.dsr_code_ttl_minutes
            await self._notify(request, key, "verification_code", to=to, public=True, code=code, minutes=minutes)
        # A new row nothing else in this transaction changes: a Core INSERT, not the unit of work.
        statement, params = carry_appended_rows(self.session, _NEW_REQUEST, new_request_params(request))
        # Intake's last write: on PostgreSQL, with every row carried, its only statement (run alone, in autocommit).
        await write_last(self.session, statement, params)
        return schemas.RequestAccepted(id=request.id, status=request.status, due_at=request.due_at)

    def _validate_changes(self, changes: schemas.Changes) -> None:
        unknown = sorted(name for name in changes.profile if name not in self.policy.profile_fields)
        if unknown:
            raise InvalidInput(
                "changes.profile has fields without a data category in the policy: " + ", ".join(unknown)[:300]
            )
        for kind in ("email", "phone"):
            value = getattr(changes, kind)
            if value is not None:
                try:
                    NORMALISERS[kind](value)
                except InvalidIdentifier as exc:
                    raise InvalidInput(
                        f"changes.{kind}: {exc}",
                        extra={"errors": [{"field": f"changes.{kind}", "message": str(exc)}]},
                    ) from None
        if not changes.profile and changes.email is None and changes.phone is None:
            raise InvalidInput(
                "changes is empty", extra={"errors": [{"field": "changes", "message": "give at least one change"}]}
            )

    async def _open_duplicate(self, bidx: bytes, type_: str) -> uuid.UUID | None:
        return (await self.session.exec(_OPEN_DUPLICATE, params={"dup_bidx": bidx, "dup_type": type_})).first()

    async def resend_code(self, request_id: uuid.UUID) -> None:
        """A new code for this request (the old one stops working), within the cooldown and the caps."""
        request = await self._get(request_id, for_update=True)
        if request.status != Status.AWAITING_VERIFICATION:
            raise Conflict("this request is not waiting for verification")
        self._check_cooldown(request.code_sent_at)
        if request.resends >= self.settings.dsr_resend_max_per_request:
            raise TooManyCodes("this request has been sent as many codes as it can have; submit a new request")
        await self._take_code_mail(request.identity_bidx)
        key = await self._request_key(request)
        code = self._new_code(request)
        request.resends += 1
        self.session.add(request)
        minutes = self.settings.dsr_code_ttl_minutes
        await self._notify(request, key, "verification_code", public=True, code=code, minutes=minutes)

    async def submit_verified(
        self,
        *,
        request_id: uuid.UUID,
        type_: str,
        kind: str,
        value: str,
        regime: str,
        changes: schemas.Changes | None = None,
        received_at: datetime | None = None,
        note: str,
    ) -> PrivacyRequest:
        """Intake from a controller-side system authenticated with an operator key (the OpenDSR facade).

        That system has verified the subject itself, so no code is sent: the request is verified on
        arrival, then processed or queued for review like any other (a correction that needs review
        waits for an operator who holds subjects:write and did not file it; see ``Decisions.approve``).
        The caller chooses the id; the legal clock starts when the controller received the request
        (``received_at``, never later than now).
        """
        try:
            identity = NORMALISERS[kind](value)
        except InvalidIdentifier as exc:
            raise InvalidInput(f"identity: {exc}") from None
        if (type_ == "rectify") != (changes is not None):
            raise InvalidInput("changes are required for rectification and not allowed otherwise")
        if changes is not None:
            self._validate_changes(changes)
        if await self.session.get(PrivacyRequest, request_id) is not None:
            raise Conflict("a request with this id already exists")
        bidx = self.keys.indexer.index(kind, identity)
        # Only a verified one counts: an unverified request anybody may file must not block this intake.
        if await self._open_duplicate(bidx, type_) is not None:
            raise Conflict("a request of this type for this identity is still open")
        now = self.clock.now()
        received = min(received_at, now) if received_at is not None else now
        request = PrivacyRequest(
            id=request_id,
            type=type_,
            status=Status.RECEIVED,
            regime=regime,
            language=self.policy.default_language,
            identity_kind=kind,
            identity_bidx=bidx,
            received_at=received,
            due_at=self.rules.due_at(regime, received),
            acknowledged_at=now,
            verified_at=now,
        )
        key = await self.keys.create_key(self.session, request.id, REQUEST)
        request.identity_ct = key.seal(identity.encode(), self._binding(request, "identity"))
        if changes is not None:
            request.changes_ct = key.seal(msgspec.json.encode(changes), self._binding(request, "changes"))
        self.session.add(request)
        self._received(request, received, self.actor)
        request.subject_id = await self._match_subject(request)
        self._transition(request, Status.VERIFIED, note=note)
        # The same review as a code-verified correction: an operator key files on its own word, and a
        # correction of an identifier or of identity/financial data would move the account to it.
        await self._process_or_queue(request, key)
        return request

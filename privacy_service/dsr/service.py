"""Data-subject request use cases: intake, verification, operator decisions, and the answers.

Services never commit. Where a failed attempt must still be recorded (a wrong code counts), the
use case returns an outcome instead of raising, so the request's transaction commits it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import Table, bindparam, insert
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.clock import Clock, as_utc
from privacy_service.config import Settings
from privacy_service.crypto.fields import NORMALISERS, Binding, DataKey, DecryptionFailed, InvalidIdentifier
from privacy_service.crypto.service import REQUEST, KeyService, KeyShredded
from privacy_service.db import carry_appended_rows, column_values, new_row
from privacy_service.dsr import schemas
from privacy_service.dsr.deadlines import DeadlineRules
from privacy_service.dsr.flows import EXTENDABLE, OPEN, TRANSITIONS, IllegalTransition, Status, check
from privacy_service.dsr.models import PrivacyRequest, RequestTransition, record_transition
from privacy_service.errors import Conflict, DataIntegrityError, Forbidden, Gone, InvalidInput, NotFound
from privacy_service.notify.recipients import PHONE_ON_FILE
from privacy_service.notify.service import enqueue
from privacy_service.policy.document import PolicyDocument
from privacy_service.security import constant_time_equals
from privacy_service.subjects.models import Subject, SubjectStatus
from privacy_service.subjects.schemas import SubjectOut, SubjectPatch
from privacy_service.subjects.service import Retention, SubjectService
from privacy_service.systems import fanout as downstream

TABLE = "dsr_requests"
TOKEN_PREFIX = "psr_"  # noqa: S105 - a prefix, not a secret
CURSOR_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
ACTIONS = {"access": "see", "portability": "export", "rectify": "correct", "erase": "delete"}
ACTIONS_ZH = {"access": "查阅", "portability": "导出", "rectify": "更正", "erase": "删除"}
EXPORTABLE = frozenset({Status.COMPLETED, Status.PARTIALLY_COMPLETED})
IDENTITY_COLUMNS = {"email": Subject.email_bidx, "phone": Subject.phone_bidx, "external_id": Subject.external_id_bidx}
# Built once: intake runs them on every request (building one per call cost as much as running it).
_OPEN_DUPLICATE = (
    select(PrivacyRequest.id)
    .where(
        col(PrivacyRequest.identity_bidx) == bindparam("dup_bidx"),
        col(PrivacyRequest.type) == bindparam("dup_type"),
        col(PrivacyRequest.status).in_([status.value for status in OPEN]),
        col(PrivacyRequest.duplicate_of).is_(None),
    )
    .order_by(col(PrivacyRequest.received_at))
    .limit(1)
)
_REQUESTS: Table = PrivacyRequest.__table__  # type: ignore[attr-defined]
# The new request's row, linked in the same statement to the oldest open request of the same type
# for the same identity, if any. On PostgreSQL the rows intake queued (its data key, transitions,
# audit event and mail) ride on this INSERT too, so intake writes everything in one statement.
_NEW_REQUEST = insert(_REQUESTS).values(
    {
        column.key: bindparam(f"new_{column.key}", type_=column.type)
        for column in _REQUESTS.columns
        if column.key != "duplicate_of"
    }
    | {"duplicate_of": _OPEN_DUPLICATE.scalar_subquery()}
)
# Shown when a verified correction cannot be written (say, the new address belongs to another account).
RECTIFY_REFUSED = {
    "en": "The correction could not be applied as submitted: the new e-mail address or phone number is already in "
    "use, or a field is no longer accepted. Please contact us or submit a corrected request.",
    "zh": "无法按提交的内容进行更正。新的电子邮箱或电话号码已被使用或某个字段不再被接受。请联系我们或重新提交请求。",
}


class CodeRejected(Exception):
    """A verification code was wrong or expired; the attempt is recorded, then this maps to 422."""

    def __init__(self, slug: str, detail: str, attempts_left: int) -> None:
        super().__init__(detail)
        self.slug, self.detail, self.attempts_left = slug, detail, attempts_left


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    verified: schemas.Verified | None = None
    rejected: CodeRejected | None = None


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(slots=True)
class DsrService:
    session: AsyncSession
    keys: KeyService
    policy: PolicyDocument
    rules: DeadlineRules
    clock: Clock
    settings: Settings
    actor: Actor
    request_id: str | None = None
    identity_limiter: Callable[[bytes], None] | None = None
    _subjects: SubjectService | None = field(default=None, init=False)

    # -- helpers -------------------------------------------------------------------------

    @property
    def subjects(self) -> SubjectService:
        if self._subjects is None:
            self._subjects = SubjectService(
                self.session, self.keys, self.policy, self.clock, self.actor, self.request_id
            )
        return self._subjects

    def _code_digest(self, request_id: uuid.UUID, code: str) -> bytes:
        # Keyed with the blind-index key (domain-separated): a database thief cannot brute-force
        # the 10^6 code space offline.
        return self.keys.indexer.index("otp", f"{request_id}:{code}")

    def _status_url(self, request: PrivacyRequest) -> str:
        return f"{self.settings.base_url.rstrip('/')}/privacy/requests/{request.id}"

    def _received(self, request: PrivacyRequest, at: datetime, actor: Actor) -> None:
        """Every request's first transition: into ``received``, from no state."""
        record_transition(
            self.session,
            request.id,
            from_status=None,
            to_status=Status.RECEIVED,
            at=at,
            actor_type=actor.type,
            actor_id=actor.id,
        )

    def _transition(self, request: PrivacyRequest, target: Status, note: str | None = None) -> None:
        check(request.status, target)
        now = self.clock.now()
        record_transition(
            self.session,
            request.id,
            from_status=request.status,
            to_status=target,
            at=now,
            actor_type=self.actor.type,
            actor_id=self.actor.id,
            note=note,
        )
        audit.record(
            self.session,
            at=now,
            actor=self.actor,
            action=f"dsr.{target}",
            subject_id=request.subject_id,
            request_id=self.request_id,
            detail={"dsr_id": str(request.id), "type": request.type, "from": request.status},
        )
        request.status = target

    async def _get(self, request_id: uuid.UUID, *, for_update: bool = False) -> PrivacyRequest:
        query = select(PrivacyRequest).where(col(PrivacyRequest.id) == request_id)
        if for_update and not self.settings.is_sqlite:
            query = query.with_for_update()
        request = (await self.session.exec(query)).one_or_none()
        if request is None:
            raise NotFound("no request with this id")
        return request

    async def _request_key(self, request: PrivacyRequest) -> DataKey:
        try:
            return await self.keys.load_key(self.session, request.id, REQUEST)
        except KeyShredded:
            raise Gone("this request's data has been purged") from None

    def _binding(self, request: PrivacyRequest, name: str) -> Binding:
        return Binding(TABLE, request.id, None, name)

    def _open_text(self, key: DataKey, request: PrivacyRequest, name: str, blob: bytes | None) -> str | None:
        if blob is None:
            return None
        try:
            return key.open(blob, self._binding(request, name)).decode()
        except DecryptionFailed as exc:
            raise DataIntegrityError(f"stored request {name} failed to decrypt") from exc

    async def _recipient(self, request: PrivacyRequest, key: DataKey) -> str | None:
        """Where mail about the request goes: the e-mail identity itself, or for a phone identity the
        e-mail on file of the customer with that phone (no match: no mail, and the request expires)."""
        if request.identity_kind == "email":
            return self._open_text(key, request, "identity", request.identity_ct)
        subject_id = request.subject_id or await self._match_subject(request)
        if subject_id is None:
            return None
        try:
            return await self.subjects.contact_email(subject_id)
        except Gone:
            return None  # erased meanwhile: no address is left to write to

    async def _notify(
        self,
        request: PrivacyRequest,
        key: DataKey,
        template: str,
        *,
        to: str | None = None,
        public: bool = False,
        **context: Any,
    ) -> None:
        """Queue mail about the request; ``to`` when the address was resolved earlier (before an erasure).

        ``public``: answering an unauthenticated caller (intake, resend). A phone identity's address
        is then found at delivery (notify.recipients), so a known phone costs no more than an unknown
        one here and the answer's timing tells nobody which numbers are customers.
        """
        recipient = None
        if to is None and public and request.identity_kind == "phone":
            recipient = PHONE_ON_FILE
        elif to is None:
            to = await self._recipient(request, key)
            if to is None:
                return
        actions = ACTIONS_ZH if request.language == "zh" else ACTIONS
        enqueue(
            self.session,
            template=template,
            language=request.language,
            to=to,
            recipient=recipient,
            now=self.clock.now(),
            key=key,
            owner_id=request.id,
            request_id=str(request.id),
            action=actions[request.type],
            status_url=self._status_url(request),
            due_date=request.due_at.date().isoformat(),
            **context,
        )

    def _new_code(self, request: PrivacyRequest) -> str:
        code = f"{secrets.randbelow(1_000_000):06d}"
        now = self.clock.now()
        request.code_hash = self._code_digest(request.id, code)
        request.code_expires_at = now + timedelta(minutes=self.settings.dsr_code_ttl_minutes)
        request.code_sent_at = now
        return code

    # -- intake --------------------------------------------------------------------------

    async def submit(self, body: schemas.RequestCreate) -> schemas.RequestAccepted:
        """Accept a request. The answer is the same whether or not the identity is known."""
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
        if self.identity_limiter is not None:
            self.identity_limiter(bidx)
        now = self.clock.now()
        regime = body.regime or self.settings.dsr_default_regime
        request = new_row(
            PrivacyRequest,
            {
                "id": uuid.uuid4(),
                "type": body.type,
                "status": Status.RECEIVED,
                "regime": regime,
                "language": body.language,
                "identity_kind": kind,
                "identity_bidx": bidx,
                "received_at": now,
                "due_at": self.rules.due_at(regime, now),
                "acknowledged_at": now,
            },
        )
        key = await self.keys.create_key(self.session, request.id, REQUEST)
        request.identity_ct = key.seal(identity.encode(), self._binding(request, "identity"))
        if body.changes is not None:
            request.changes_ct = key.seal(msgspec.json.encode(body.changes), self._binding(request, "changes"))
        if body.reason is not None:
            request.reason_ct = key.seal(body.reason.encode(), self._binding(request, "reason"))
        code = self._new_code(request)
        self._received(request, now, Actor("subject", str(request.id)))
        if self.actor.type == "subject":
            self.actor = Actor("subject", str(request.id))
        self._transition(request, Status.AWAITING_VERIFICATION)
        # An e-mail identity is its own recipient: no need to open what was just sealed.
        to = identity if kind == "email" else None
        minutes = self.settings.dsr_code_ttl_minutes
        await self._notify(request, key, "verification_code", to=to, public=True, code=code, minutes=minutes)
        # A new row nothing else in this transaction changes: a Core INSERT, not the unit of work.
        params = {f"new_{name}": value for name, value in column_values(request).items() if name != "duplicate_of"}
        params |= {"dup_bidx": bidx, "dup_type": body.type}
        statement, params = carry_appended_rows(self.session, _NEW_REQUEST, params)
        await self.session.exec(statement, params=params)
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
        request = await self._get(request_id, for_update=True)
        if request.status != Status.AWAITING_VERIFICATION:
            raise Conflict("this request is not waiting for verification")
        now = self.clock.now()
        cooldown = timedelta(seconds=self.settings.dsr_resend_cooldown_seconds)
        if request.code_sent_at is not None and now - request.code_sent_at < cooldown:
            wait = int((request.code_sent_at + cooldown - now).total_seconds()) + 1
            raise Conflict(f"a code was sent moments ago; try again in {wait} s", headers={"Retry-After": str(wait)})
        key = await self._request_key(request)
        code = self._new_code(request)
        self.session.add(request)
        minutes = self.settings.dsr_code_ttl_minutes
        await self._notify(request, key, "verification_code", public=True, code=code, minutes=minutes)

    # -- verification --------------------------------------------------------------------

    async def verify(self, request_id: uuid.UUID, code: str) -> VerifyOutcome:
        request = await self._get(request_id, for_update=True)
        if request.status != Status.AWAITING_VERIFICATION:
            # Not check(..., VERIFIED): the table also lets a *received* request become verified
            # (controller-side intake), which must not open a way round the code.
            raise IllegalTransition(
                f"a request that is {request.status} cannot be verified with a code",
                extra={"current_status": request.status, "allowed": sorted(TRANSITIONS[Status(request.status)])},
            )
        now = self.clock.now()
        expected = request.code_hash or b""
        presented = self._code_digest(request.id, code)
        if not constant_time_equals(expected, presented):
            return VerifyOutcome(rejected=self._failed_attempt(request, "invalid-code", "the code is not correct"))
        if request.code_expires_at is None or request.code_expires_at <= now:
            return VerifyOutcome(
                rejected=self._failed_attempt(request, "code-expired", "the code has expired; request a new one")
            )
        request.code_hash = request.code_expires_at = None
        request.verified_at = now
        request.subject_id = await self._match_subject(request)
        self.actor = Actor("subject", str(request.id))
        if request.duplicate_of is not None:
            original = await self._get(request.duplicate_of, for_update=True)
            if original.status in OPEN:
                request.completed_at = now
                self._transition(request, Status.CANCELLED, note=f"duplicate of {original.id}")
                if original.status != Status.AWAITING_VERIFICATION:
                    return VerifyOutcome(verified=self._issue_token(original, now))
                # The same identity has just proved control, which verifies the original too; else
                # it would wait for its own (perhaps lost) code and expire unanswered.
                original.code_hash = original.code_expires_at = None
                original.verified_at = now
                original.subject_id = request.subject_id
                return VerifyOutcome(verified=await self._accept(original, now, note=f"verified by {request.id}"))
            request.duplicate_of = None
        return VerifyOutcome(verified=await self._accept(request, now))

    async def _accept(self, request: PrivacyRequest, now: datetime, note: str | None = None) -> schemas.Verified:
        """A verified request: a token for the subject, then processing (auto-approved types) or review."""
        key = await self._request_key(request)
        self._transition(request, Status.VERIFIED, note=note)
        verified = self._issue_token(request, now)
        if request.type in self.settings.dsr_auto_approve:
            self.actor = Actor.system("auto-approval")
            await self._process(request, key)
        else:
            self._transition(request, Status.AWAITING_REVIEW)
            await self._notify(request, key, "received")
        return schemas.Verified(verified.id, verified.token, request.status, verified.token_expires_at)

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
        arrival, then processed or queued for review like any other. The caller chooses the id; the
        legal clock starts when the controller received the request (``received_at``, never later than now).
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
        if request.type in self.settings.dsr_auto_approve:
            self.actor = Actor.system("auto-approval")
            await self._process(request, key)
        else:
            self._transition(request, Status.AWAITING_REVIEW)
            await self._notify(request, key, "received")
        return request

    def _failed_attempt(self, request: PrivacyRequest, slug: str, detail: str) -> CodeRejected:
        request.code_attempts += 1
        left = max(0, self.settings.dsr_code_max_attempts - request.code_attempts)
        if left == 0:
            request.code_hash = None
            self.actor = Actor.system("verification")
            self._transition(request, Status.VERIFICATION_FAILED, note="too many wrong codes")
            detail = "too many wrong codes: this request can no longer be verified; submit a new one"
        self.session.add(request)
        return CodeRejected(slug, detail, left)

    def _issue_token(self, request: PrivacyRequest, now: datetime) -> schemas.Verified:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        request.token_hash = hash_token(token)
        request.token_expires_at = now + timedelta(days=self.settings.dsr_token_ttl_days)
        self.session.add(request)
        return schemas.Verified(request.id, token, request.status, request.token_expires_at)

    async def _match_subject(self, request: PrivacyRequest) -> uuid.UUID | None:
        column = col(IDENTITY_COLUMNS[request.identity_kind])
        query = select(Subject.id).where(column == request.identity_bidx, col(Subject.status) == SubjectStatus.ACTIVE)
        return (await self.session.exec(query)).first()

    # -- operator decisions --------------------------------------------------------------

    async def approve(self, request_id: uuid.UUID) -> PrivacyRequest:
        request = await self._get(request_id, for_update=True)
        check(request.status, Status.PROCESSING)
        await self._process(request, await self._request_key(request))
        return request

    async def deny(self, request_id: uuid.UUID, reason: str) -> PrivacyRequest:
        request = await self._get(request_id, for_update=True)
        check(request.status, Status.DENIED)
        await self._deny(request, await self._request_key(request), reason)
        return request

    async def _deny(self, request: PrivacyRequest, key: DataKey, reason: str, *, to: str | None = None) -> None:
        request.decision_ct = key.seal(reason.encode(), self._binding(request, "decision"))
        request.completed_at = self.clock.now()
        self._transition(request, Status.DENIED)
        await self._notify(request, key, "denied", to=to, reason=reason)

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

    # -- processing ----------------------------------------------------------------------

    async def _process(self, request: PrivacyRequest, key: DataKey) -> None:
        self._transition(request, Status.PROCESSING)
        # Resolved first: for a phone identity the address is the subject's, which erasure removes.
        to = await self._recipient(request, key)
        # Also before the vault changes: the downstream systems are sent the identities as they were.
        changes = self._changes(request, key) if request.type == "rectify" else None
        plan = await downstream.plan_fanout(self.session, self.policy, request, self.subjects.read, changes)
        partial = False
        if request.subject_id is None:
            result: dict[str, Any] = {"data_found": False}
        elif request.type in ("access", "portability"):
            held = await self.subjects.categories_held(request.subject_id)
            result = {"data_found": True, "categories": sorted(held), "records": sum(held.values())}
        elif request.type == "rectify":
            rectified = await self._rectify(request, key)
            if rectified is None:
                await self._deny(request, key, RECTIFY_REFUSED.get(request.language, RECTIFY_REFUSED["en"]), to=to)
                return
            result = rectified
        else:
            result = await self._erase(request)
            partial = bool(result["kept"])
        request.result = result
        now = self.clock.now()
        if plan.enqueue(
            self.session,
            request,
            key,
            to=to,
            settings=self.settings,
            now=now,
            actor=self.actor,
            http_request_id=self.request_id,
        ):
            return  # stays processing until every required system has answered (finish_after_systems)
        await self._complete(request, key, to=to, partial=partial)

    async def _complete(self, request: PrivacyRequest, key: DataKey, *, to: str | None, partial: bool) -> None:
        now = self.clock.now()
        download = request.type in ("access", "portability") and request.subject_id is not None
        if download:
            request.export_expires_at = now + timedelta(days=self.settings.dsr_export_ttl_days)
            if request.token_expires_at and request.token_expires_at < request.export_expires_at:
                request.token_expires_at = request.export_expires_at
        request.completed_at = now
        self._transition(request, Status.PARTIALLY_COMPLETED if partial else Status.COMPLETED)
        await self._notify(
            request,
            key,
            "completed",
            to=to,
            partial=partial,
            download=download,
            export_until=request.export_expires_at.date().isoformat() if request.export_expires_at else "",
        )

    async def finish_after_systems(self, request_id: uuid.UUID) -> bool:
        """Complete a request that waited for downstream systems once every required one has answered.

        Partial if the vault kept data (erasure) or a required system reported failure.
        """
        request = await self._get(request_id, for_update=True)
        if request.status != Status.PROCESSING:
            return False
        answers = await downstream.outcome(self.session, request.id)
        if answers is None:
            return False
        key = await self._request_key(request)
        result = dict(request.result or {})
        result["systems"] = answers.summary
        request.result = result
        to = await downstream.recipient(self.session, key, request.id)
        await self._complete(request, key, to=to, partial=bool(result.get("kept")) or answers.failed)
        return True

    def _changes(self, request: PrivacyRequest, key: DataKey) -> schemas.Changes:
        raw = key.open(request.changes_ct or b"", self._binding(request, "changes"))
        return msgspec.json.decode(raw, type=schemas.Changes)

    async def _rectify(self, request: PrivacyRequest, key: DataKey) -> dict[str, Any] | None:
        """Write the corrections; None if the vault refuses them (the caller denies the request).

        The write runs in a savepoint: a refusal found at flush time (a unique identifier) must not
        fail the whole verification, which would leave the request unverifiable until it expires.
        """
        changes = self._changes(request, key)
        assert request.subject_id is not None  # noqa: S101 - checked by the caller
        patch = SubjectPatch(profile=changes.profile) if changes.profile else SubjectPatch()
        if changes.email is not None:
            patch.email = changes.email
        if changes.phone is not None:
            patch.phone = changes.phone
        try:
            async with self.session.begin_nested():
                await self.subjects.patch(request.subject_id, patch)
        except (InvalidInput, Conflict):
            return None
        fields = sorted(
            [*(f"profile.{name}" for name in changes.profile), *(k for k in ("email", "phone") if getattr(changes, k))]
        )
        categories = sorted(
            {self.policy.profile_fields[name] for name in changes.profile}
            | {self.policy.identifier_fields[k] for k in ("email", "phone") if getattr(changes, k)}
        )
        return {
            "data_found": True,
            "changed_fields": fields,
            "categories": categories,
            # Art. 19: recipients of these categories are told of the rectification.
            "recipients_to_notify": self.rules.recipients(categories),
        }

    async def _erase(self, request: PrivacyRequest) -> dict[str, Any]:
        assert request.subject_id is not None  # noqa: S101 - checked by the caller
        subject = await self.session.get(Subject, request.subject_id)
        held = await self.subjects.categories_held(request.subject_id)
        now = self.clock.now()
        # Erasure ends the business relationship if the account was still open.
        anchors = {
            "account_closed_at": (subject.account_closed_at if subject else None) or now,
            "last_activity_at": (subject.last_activity_at if subject else None) or now,
            "collected_at": subject.created_at if subject else now,
            "request_completed_at": now,
        }
        keep: dict[str, Retention] = {}
        for category in held:
            duty = self.rules.legal_duty(category, anchors)
            if duty is not None and duty.until > now:
                keep[category] = duty
        report = await self.subjects.erase(request.subject_id, keep)
        return {
            "data_found": True,
            "erased": sorted(category for category in held if category not in report.kept),
            # A legal hold keeps every category (basis from the report, no end date); a duty keeps some.
            "kept": [
                {
                    "category": category,
                    "basis": report.kept[category],
                    "until": (
                        keep[category].until.isoformat()
                        if category in keep and keep[category].basis == report.kept[category]
                        else None
                    ),
                }
                for category in sorted(report.kept)
            ],
            "recipients_to_notify": self.rules.recipients(sorted(held)),
        }

    # -- reading -------------------------------------------------------------------------

    async def view(self, request_id: uuid.UUID) -> schemas.RequestView:
        request = await self._get(request_id)
        transitions = (
            await self.session.exec(
                select(RequestTransition)
                .where(col(RequestTransition.request_id) == request.id)
                .order_by(col(RequestTransition.id))
            )
        ).all()
        decision = None
        if request.decision_ct is not None:
            decision = self._open_text(await self._request_key(request), request, "decision", request.decision_ct)
        now = self.clock.now()
        export_ready = (
            request.type in ("access", "portability")
            and request.status in EXPORTABLE
            and request.export_expires_at is not None
            and request.export_expires_at > now
            and request.subject_id is not None
        )
        return schemas.RequestView(
            id=request.id,
            type=request.type,
            status=request.status,
            regime=request.regime,
            language=request.language,
            received_at=request.received_at,
            due_at=request.due_at,
            history=[schemas.Transition(t.to_status, t.at, t.actor_type, t.note) for t in transitions],
            extended=request.extended_at is not None,
            verified_at=request.verified_at,
            completed_at=request.completed_at,
            overdue=request.status in OPEN and request.due_at < now,
            duplicate_of=request.duplicate_of,
            decision=decision,
            result=request.result,
            export_url=f"/v1/requests/{request.id}/export" if export_ready else None,
            export_expires_at=request.export_expires_at if export_ready else None,
            systems=await downstream.progress(self.session, request.id, now) or None,
        )

    async def list_requests(
        self,
        *,
        status: str | None,
        type_: str | None,
        overdue: bool | None,
        due_before: datetime | None,
        after: str | None,
        limit: int,
    ) -> schemas.RequestPage:
        now = self.clock.now()
        query = select(PrivacyRequest)
        if status is not None:
            query = query.where(col(PrivacyRequest.status) == status)
        if type_ is not None:
            query = query.where(col(PrivacyRequest.type) == type_)
        if overdue is not None:
            open_values = [s.value for s in OPEN]
            if overdue:
                query = query.where(col(PrivacyRequest.status).in_(open_values), col(PrivacyRequest.due_at) < now)
            else:
                query = query.where(
                    or_(col(PrivacyRequest.status).not_in(open_values), col(PrivacyRequest.due_at) >= now)
                )
        if due_before is not None:
            query = query.where(col(PrivacyRequest.due_at) < as_utc(due_before, "due_before"))
        if after is not None:
            due_text, _, id_text = after.partition("_")
            try:
                cursor_due, cursor_id = datetime.fromisoformat(due_text), uuid.UUID(id_text)
            except ValueError:
                raise InvalidInput("after: not a cursor returned by this endpoint") from None
            if cursor_due.tzinfo is None:
                raise InvalidInput("after: not a cursor returned by this endpoint")
            cursor_due = as_utc(cursor_due, "after")
            query = query.where(
                or_(
                    col(PrivacyRequest.due_at) > cursor_due,
                    (col(PrivacyRequest.due_at) == cursor_due) & (col(PrivacyRequest.id) > cursor_id),
                )
            )
        rows = (
            await self.session.exec(query.order_by(col(PrivacyRequest.due_at), col(PrivacyRequest.id)).limit(limit + 1))
        ).all()
        page = rows[:limit]
        return schemas.RequestPage(
            items=[
                schemas.RequestSummary(
                    id=r.id,
                    type=r.type,
                    status=r.status,
                    regime=r.regime,
                    received_at=r.received_at,
                    due_at=r.due_at,
                    overdue=r.status in OPEN and r.due_at < now,
                    subject_id=r.subject_id,
                )
                for r in page
            ],
            # "Z", not "+00:00": a '+' pasted unencoded into a query string arrives as a space.
            next_cursor=f"{page[-1].due_at.strftime(CURSOR_TIME)}_{page[-1].id}" if len(rows) > limit else None,
        )

    async def export_parts(
        self, request_id: uuid.UUID
    ) -> tuple[PrivacyRequest, SubjectOut, dict[str, Any], list[dict[str, Any]]]:
        """What a download needs: the request, the subject's profile, the Art. 15 information, history."""
        request = await self._get(request_id)
        if request.type not in ("access", "portability"):
            raise Conflict("only access and portability requests have an export")
        if request.status not in EXPORTABLE:
            raise Conflict(f"the export is not available while the request is {request.status}")
        if request.export_expires_at is None or request.export_expires_at <= self.clock.now():
            raise Gone("the export link has expired; submit a new request")
        if request.subject_id is None:
            raise NotFound("no personal data is held for this identity")
        subject = await self.subjects.read(request.subject_id)
        held = await self.subjects.categories_held(request.subject_id)
        processing = self.rules.processing_information(sorted(held), request.language)
        history = [
            {"id": str(r.id), "type": r.type, "status": r.status, "received_at": r.received_at.isoformat()}
            for r in (
                await self.session.exec(
                    select(PrivacyRequest)
                    .where(col(PrivacyRequest.identity_bidx) == request.identity_bidx)
                    .order_by(col(PrivacyRequest.received_at))
                )
            ).all()
        ]
        audit.record(
            self.session,
            at=self.clock.now(),
            actor=self.actor,
            action="dsr.export.download",
            subject_id=request.subject_id,
            request_id=self.request_id,
            detail={"dsr_id": str(request.id)},
        )
        return request, subject, processing, history

    async def authorise_token(self, request_id: uuid.UUID, token: str) -> PrivacyRequest:
        """A subject token opens only its own request, and only until it expires."""
        request = await self._get(request_id)
        if request.token_hash is None or not constant_time_equals(request.token_hash, hash_token(token)):
            raise Forbidden("this token is not valid for this request")
        if request.token_expires_at is None or request.token_expires_at <= self.clock.now():
            raise Gone("this link has expired")
        return request

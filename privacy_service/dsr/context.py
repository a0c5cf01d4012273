"""What every data-subject request use case shares: the row, its data key, its history, its mail.

:class:`DsrBase` holds the collaborators (session, keys, policy, clock, ...) and the small steps the
use cases are made of. The use cases themselves live by concept: ``intake``, ``verification``,
``processing``, ``decisions`` and ``reading``; :class:`~privacy_service.dsr.service.DsrService`
joins them. Services never commit: the request (or job) owns the transaction.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.clock import Clock
from privacy_service.config import Settings
from privacy_service.crypto.fields import Binding, DataKey, DecryptionFailed
from privacy_service.crypto.service import REQUEST, KeyService, KeyShredded
from privacy_service.dsr import schemas
from privacy_service.dsr.deadlines import DeadlineRules
from privacy_service.dsr.flows import Status, check
from privacy_service.dsr.models import PrivacyRequest, record_transition
from privacy_service.errors import Conflict, DataIntegrityError, DomainError, Gone, NotFound
from privacy_service.notify.recipients import PHONE_ON_FILE
from privacy_service.notify.service import enqueue
from privacy_service.policy.document import PolicyDocument
from privacy_service.ratelimit import CodeQuota
from privacy_service.subjects.models import Subject, SubjectStatus
from privacy_service.subjects.service import SubjectService

TABLE = "dsr_requests"
TOKEN_PREFIX = "psr_"  # noqa: S105 - a prefix, not a secret
ACTIONS = {"access": "see", "portability": "export", "rectify": "correct", "erase": "delete"}
ACTIONS_ZH = {"access": "查阅", "portability": "导出", "rectify": "更正", "erase": "删除"}
IDENTITY_COLUMNS = {"email": Subject.email_bidx, "phone": Subject.phone_bidx, "external_id": Subject.external_id_bidx}


class TooManyCodes(DomainError):
    """No further code mail now: the request's resends, or the identity's mails for the day, are used up."""

    status = 429
    slug = "too-many-codes"
    title = "No more verification codes can be sent now"


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> tuple[str, bytes]:
    """A subject token (for the caller) and its hash (for the database)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token)


@dataclass(slots=True)
class DsrBase:
    session: AsyncSession
    keys: KeyService
    policy: PolicyDocument
    rules: DeadlineRules
    clock: Clock
    settings: Settings
    actor: Actor
    request_id: str | None = None
    # How many code mails may still go to an identity (see ratelimit.code_quota); None: no cap.
    code_quota: CodeQuota | None = None
    # The operator's scopes when an operator key is the caller (what a status read may show).
    scopes: frozenset[str] = frozenset()
    _subjects: SubjectService | None = field(default=None, init=False)

    @property
    def subjects(self) -> SubjectService:
        if self._subjects is None:
            self._subjects = SubjectService(
                self.session, self.keys, self.policy, self.clock, self.actor, self.request_id
            )
        return self._subjects

    async def _may_mail_code(self, bidx: bytes) -> float | None:
        """None if a code mail may go to this identity now (and count it), else seconds to wait."""
        return await self.code_quota.take(bidx) if self.code_quota is not None else None

    def _check_cooldown(self, last_sent: datetime | None) -> None:
        """Another code for a request (a resend, or a code to open it) waits out the cooldown (409)."""
        now = self.clock.now()
        cooldown = timedelta(seconds=self.settings.dsr_resend_cooldown_seconds)
        if last_sent is not None and now - last_sent < cooldown:
            wait = int((last_sent + cooldown - now).total_seconds()) + 1
            raise Conflict(f"a code was sent moments ago; try again in {wait} s", headers={"Retry-After": str(wait)})

    async def _take_code_mail(self, bidx: bytes) -> None:
        """Count a code mail to this identity, or refuse it (429 with Retry-After) past its quota."""
        retry_after = await self._may_mail_code(bidx)
        if retry_after is not None:
            raise TooManyCodes(
                "this identity has been sent as many codes as allowed for now; try again later",
                headers={"Retry-After": str(max(1, int(retry_after) + 1))},
            )

    async def _code_confirmed(self, bidx: bytes) -> None:
        """A code for this identity was entered correctly (see ``ratelimit.code_quota``)."""
        if self.code_quota is not None:
            await self.code_quota.confirmed(bidx)

    def _code_digest(self, request_id: uuid.UUID, code: str) -> bytes:
        # Keyed with the blind-index key (domain-separated) and bound to the request: a database
        # thief cannot brute-force the 10^6 code space offline, and a code opens its own request only.
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
        return self._binding_of(request.id, name)

    @staticmethod
    def _binding_of(request_id: uuid.UUID, name: str) -> Binding:
        return Binding(TABLE, request_id, None, name)

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
            due_date=self.rules.local_date(request.regime, request.due_at).isoformat(),
            **context,
        )

    def _fresh_code(self, request_id: uuid.UUID) -> tuple[str, bytes]:
        """A new 6-digit code for the request, and the digest that is stored in its place."""
        code = f"{secrets.randbelow(1_000_000):06d}"
        return code, self._code_digest(request_id, code)

    def _code_columns(self, request_id: uuid.UUID, now: datetime) -> tuple[str, dict[str, Any]]:
        """A new code for the request, and the columns that record it (its digest, expiry, when sent)."""
        code, digest = self._fresh_code(request_id)
        expires = now + timedelta(minutes=self.settings.dsr_code_ttl_minutes)
        return code, {"code_hash": digest, "code_expires_at": expires, "code_sent_at": now}

    def _new_code(self, request: PrivacyRequest) -> str:
        code, columns = self._code_columns(request.id, self.clock.now())
        for name, value in columns.items():
            setattr(request, name, value)
        return code

    def _issue_token(self, request: PrivacyRequest, now: datetime) -> schemas.Verified:
        token, request.token_hash = new_token()
        request.token_expires_at = now + timedelta(days=self.settings.dsr_token_ttl_days)
        self.session.add(request)
        return schemas.Verified(request.id, token, request.status, request.token_expires_at)

    async def _match_subject(self, request: PrivacyRequest) -> uuid.UUID | None:
        column = col(IDENTITY_COLUMNS[request.identity_kind])
        query = select(Subject.id).where(column == request.identity_bidx, col(Subject.status) == SubjectStatus.ACTIVE)
        return (await self.session.exec(query)).first()

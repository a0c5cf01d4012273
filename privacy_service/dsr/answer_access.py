"""Who may read a request: its own token, or a browser opened with a new code (issue 20 item 1).

The request token lives in the browser where the request's code was entered. From any other browser
or device (the completion mail's link opened on a phone) the customer asks for a new code, which
goes where the request's own mail goes, to its verified identity (never to an address the visitor
types), and entering it gives that browser a token of its own: read-only access to the request's
page and its download, alongside the first browser's. Nothing about the request changes: no
transition, no new verification, no processing.

The rules are those of every code, from the same places: the mail counts against the identity's
code quota (``ratelimit.code_quota``, and a code entered correctly gives its network's share back),
a new code waits out the resend cooldown, a request gets at most the first code and
``dsr_resend_max_per_request`` more in any 24 hours (429 ``too-many-codes``, as a resend), the code
is keyed and bound to its request (``_code_digest``: a code for one request never opens another)
and compared in constant time, it expires after ``dsr_code_ttl_minutes``, works once, and
``dsr_code_max_attempts`` wrong tries void it. The access it gives lasts ``dsr_answer_access_hours``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Literal, Protocol

from sqlmodel import col, delete, select

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.crypto.fields import DataKey
from privacy_service.dsr import schemas
from privacy_service.dsr.context import TooManyCodes, hash_token, new_token
from privacy_service.dsr.flows import Status
from privacy_service.dsr.models import AnswerAccess, PrivacyRequest
from privacy_service.dsr.processing import Processing
from privacy_service.dsr.verification import CodeRejected, VerifyOutcome
from privacy_service.errors import Conflict, Forbidden, Gone, NotFound
from privacy_service.security import constant_time_equals

# What a browser without a token for the request is shown: see Opening.gate.
Gate = Literal["verify", "open", "unconfirmed"]
NOT_WAITING = "no code is waiting for this request; ask for a new one"
# The window of the per-request cap on opening codes (see Opening._check_request_cap).
CAP_WINDOW = timedelta(hours=24)


class TokenFields(Protocol):
    """A request's own token as its row holds it (a PrivacyRequest, or the status read's SubjectRead)."""

    @property
    def token_hash(self) -> bytes | None: ...
    @property
    def token_expires_at(self) -> datetime | None: ...


def own_token(request: TokenFields, presented: bytes, now: datetime) -> bool:
    """Whether ``presented`` (a token's hash) is the request's own token, the one its code gave: 410
    once that has expired. False: another token, which may be one a browser got with a code
    (``Opening.check_token`` looks those up)."""
    if request.token_hash is None or not constant_time_equals(request.token_hash, presented):
        return False
    if request.token_expires_at is None or request.token_expires_at <= now:
        raise Gone("this link has expired")
    return True


class Opening(Processing):
    __slots__ = ()

    async def authorise_token(self, request_id: uuid.UUID, token: str) -> PrivacyRequest:
        """A subject token opens only its own request, and only until it expires: the token its code
        gave, or one a browser got with a code sent to open the request (``open_with_code``)."""
        request = await self._get(request_id)
        await self.check_token(request, token)
        return request

    async def check_token(self, request: PrivacyRequest, token: str) -> None:
        """``authorise_token`` for a request row the caller has read (the status read reads it with
        its history in one statement): 410 if the request's own token has expired, 403 if it is not
        a token for this request."""
        presented = hash_token(token)
        if own_token(request, presented, self.clock.now()):
            return
        if await self._opened_with(request.id, presented):
            return
        raise Forbidden("this token is not valid for this request")

    async def _opened_with(self, request_id: uuid.UUID, presented: bytes) -> bool:
        now = self.clock.now()
        held = await self.session.exec(
            select(AnswerAccess.token_hash, AnswerAccess.token_expires_at).where(
                col(AnswerAccess.request_id) == request_id, col(AnswerAccess.token_hash).is_not(None)
            )
        )
        found = False
        for token_hash, expires_at in held:
            # Every live token is compared, a match or not: the time does not depend on which one.
            live = expires_at is not None and expires_at > now
            found |= constant_time_equals(token_hash or b"", presented) and live
        return found

    async def gate(self, request_id: uuid.UUID) -> tuple[Gate, str | None]:
        """The page for a browser without this request's token, and the request's language: the code
        page while the request waits for its code (and, as before, for an id that names no request:
        the page tells nobody whether it exists), the page to open it with a new code once it is
        confirmed, or a closed notice."""
        try:
            request = await self._get(request_id)
        except NotFound:
            return "verify", None
        if request.status in (Status.RECEIVED, Status.AWAITING_VERIFICATION):
            return "verify", request.language
        return ("unconfirmed" if request.verified_at is None else "open"), request.language

    async def send_opening_code(self, request_id: uuid.UUID) -> None:
        """Mail a new code to open this confirmed request (the previous one stops working)."""
        request = await self._get(request_id, for_update=True)
        if request.verified_at is None:
            raise Conflict("this request is not confirmed: use the code sent when it was made")
        now = self.clock.now()
        rows = list(
            (await self.session.exec(select(AnswerAccess).where(col(AnswerAccess.request_id) == request.id))).all()
        )
        self._check_cooldown(max((row.created_at for row in rows), default=None))
        day_ago = now - CAP_WINDOW
        self._check_request_cap(sorted(row.created_at for row in rows if row.created_at > day_ago), now)
        await self._take_code_mail(request.identity_bidx)
        key = await self._request_key(request)
        # The code still waiting stops working. A row stays while its browser may read the request,
        # or, for the request's cap, for a day after its code was sent; the others go.
        spent = [row.id for row in rows if not _live_token(row, now) and row.created_at <= day_ago]
        if spent:
            await self.session.exec(delete(AnswerAccess).where(col(AnswerAccess.id).in_(spent)))
        for row in rows:
            if row.id not in spent and row.code_hash is not None:
                row.code_hash = None
                self.session.add(row)
        code, digest = self._fresh_code(request.id)
        minutes = self.settings.dsr_code_ttl_minutes
        self.session.add(
            AnswerAccess(
                id=uuid.uuid4(),
                request_id=request.id,
                created_at=now,
                code_hash=digest,
                code_expires_at=now + timedelta(minutes=minutes),
            )
        )
        self.actor = Actor("subject", str(request.id))
        self._audit(request, "dsr.answer_code.sent", now)
        to = await self._verified_address(request, key)
        if to is not None:  # the same answer either way: the caller learns no address and no customer
            await self._notify(request, key, "answer_code", to=to, code=code, minutes=minutes)

    def _check_request_cap(self, sent: list[datetime], now: datetime) -> None:
        """A request gets as many opening codes in any 24 hours as it could have for its confirmation:
        the first and ``dsr_resend_max_per_request`` more (``sent``: the times of this day's, oldest first)."""
        cap = 1 + self.settings.dsr_resend_max_per_request
        if len(sent) >= cap:
            frees_up = sent[len(sent) - cap] + CAP_WINDOW
            wait = max(1, int((frees_up - now).total_seconds()) + 1)
            raise TooManyCodes(
                "this request has been sent as many codes to open it as it can have today; try again later",
                headers={"Retry-After": str(wait)},
            )

    async def _verified_address(self, request: PrivacyRequest, key: DataKey) -> str | None:
        """The address of the identity this request was confirmed with: the e-mail itself, or for a
        phone the e-mail on file of the customer it was confirmed as (``subject_id``), never whoever
        holds that phone now (a number given up and taken by another customer must not open this
        customer's answer). No such customer left: no mail."""
        if request.identity_kind == "email":
            return await self._recipient(request, key)
        if request.subject_id is None:
            return None
        try:
            return await self.subjects.contact_email(request.subject_id)
        except (Gone, NotFound):  # erased, or the row deleted: no address is left to write to
            return None

    async def open_with_code(self, request_id: uuid.UUID, code: str) -> VerifyOutcome:
        """Give this browser read-only access to a confirmed request, for the code last mailed to open it.

        A failure is returned, not raised, so that the counted attempt commits.
        """
        request = await self._get(request_id)
        query = (
            select(AnswerAccess)
            .where(col(AnswerAccess.request_id) == request.id, col(AnswerAccess.code_hash).is_not(None))
            .order_by(col(AnswerAccess.created_at).desc())
            .limit(1)
        )
        if not self.settings.is_sqlite:
            query = query.with_for_update()
        pending = (await self.session.exec(query)).first()
        if request.verified_at is None or pending is None or pending.code_hash is None:
            return VerifyOutcome(rejected=CodeRejected("no-code-waiting", NOT_WAITING, 0))
        now = self.clock.now()
        if not constant_time_equals(pending.code_hash, self._code_digest(request.id, code)):
            pending.attempts += 1
            left = max(0, self.settings.dsr_code_max_attempts - pending.attempts)
            if left == 0:
                pending.code_hash = None
            self.session.add(pending)
            return VerifyOutcome(rejected=CodeRejected("invalid-code", "the code is not correct", left))
        pending.code_hash = None  # one use only, right or expired
        self.session.add(pending)
        if pending.code_expires_at is None or pending.code_expires_at <= now:
            return VerifyOutcome(rejected=CodeRejected("code-expired", "the code has expired; ask for a new one", 0))
        token, pending.token_hash = new_token()
        pending.token_expires_at = now + timedelta(hours=self.settings.dsr_answer_access_hours)
        await self._code_confirmed(request.identity_bidx)
        self.actor = Actor("subject", str(request.id))
        self._audit(request, "dsr.answer.opened", now)
        return VerifyOutcome(verified=schemas.Verified(request.id, token, request.status, pending.token_expires_at))

    def _audit(self, request: PrivacyRequest, action: str, now: datetime) -> None:
        audit.record(
            self.session,
            at=now,
            actor=self.actor,
            action=action,
            subject_id=request.subject_id,
            request_id=self.request_id,
            detail={"dsr_id": str(request.id)},
        )


def _live_token(row: AnswerAccess, now: datetime) -> bool:
    return row.token_hash is not None and row.token_expires_at is not None and row.token_expires_at > now

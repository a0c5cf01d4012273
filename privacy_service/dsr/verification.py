"""Proving control of an identity: the e-mailed code, and the request token it yields.

A code proves control of the identity *for the request that sent it*, and nothing else rides on it:
verifying one request never verifies, processes or hands a token for another one (say an older
request for the same address, whose body a stranger may have written). Each request is verified and
answered on its own; ``duplicate_of`` only tells an operator that another verified request of the
same type for the same identity is open.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from privacy_service.audit.service import Actor
from privacy_service.dsr import schemas
from privacy_service.dsr.flows import TRANSITIONS, IllegalTransition, Status
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.dsr.processing import Processing
from privacy_service.security import constant_time_equals

# The transition note when a code-verified correction waits for an operator (no values: names only).


class CodeRejected(Exception):
    """A verification code was wrong or expired; the attempt is recorded, then this maps to 422."""

    def __init__(self, slug: str, detail: str, attempts_left: int) -> None:
        super().__init__(detail)
        self.slug, self.detail, self.attempts_left = slug, detail, attempts_left


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    verified: schemas.Verified | None = None
    rejected: CodeRejected | None = None


class Verification(Processing):
    __slots__ = ()

    async def verify(self, request_id: uuid.UUID, code: str) -> VerifyOutcome:
        """Verify this request with its own code, then answer it or queue it for review; nothing else."""
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
        await self._code_confirmed(request.identity_bidx)
        request.subject_id = await self._match_subject(request)
        self.actor = Actor("subject", str(request.id))
        return VerifyOutcome(verified=await self._accept(request, now))

    async def _accept(self, request: PrivacyRequest, now: datetime) -> schemas.Verified:
        """A code-verified request: a token for the subject, then processing (auto-approved types) or review.

        A correction of an identifier, or of a field the policy does not free from review, always
        waits for an operator: a six-digit code alone must not move an account to another address.
        """
        key = await self._request_key(request)
        self._transition(request, Status.VERIFIED)
        verified = self._issue_token(request, now)
        await self._process_or_queue(request, key)
        return schemas.Verified(verified.id, verified.token, request.status, verified.token_expires_at)

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

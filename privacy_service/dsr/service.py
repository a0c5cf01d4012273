"""Data-subject request use cases, joined in one service for the routes, jobs and other domains.

Each concept lives in its own module: ``intake`` (submit, resend, controller-side intake),
``verification`` (the code and the request token), ``answer_access`` (who may read a request: its
token, or a browser opened with a new code), ``processing`` (the flow that answers a verified
request across the vault, downstream systems and mail), ``decisions`` (an operator's approve, deny,
extend, cancel) and ``reading`` (status, list, export parts); ``context`` holds what they share.

Services never commit. Where a failed attempt must still be recorded (a wrong code counts), the
use case returns an outcome instead of raising, so the request's transaction commits it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from privacy_service.dsr.answer_access import Opening
from privacy_service.dsr.context import TOKEN_PREFIX, TooManyCodes, hash_token
from privacy_service.dsr.decisions import Decisions
from privacy_service.dsr.flows import Status
from privacy_service.dsr.intake import Intake
from privacy_service.dsr.processing import RECTIFY_REFUSED
from privacy_service.dsr.reading import Reading
from privacy_service.dsr.verification import CodeRejected, Verification, VerifyOutcome
from privacy_service.errors import Conflict

if TYPE_CHECKING:  # runtime imports the dsr package (deadline rules)
    from sqlmodel.ext.asyncio.session import AsyncSession

    from privacy_service.audit.service import Actor
    from privacy_service.dsr.models import PrivacyRequest
    from privacy_service.runtime import Runtime

# The note on an erasure an operator files for a subject (the console), in the request's history.
OPERATOR_ERASURE_NOTE = "erasure filed by an operator for this subject and approved by them at once"

__all__ = [
    "OPERATOR_ERASURE_NOTE",
    "RECTIFY_REFUSED",
    "TOKEN_PREFIX",
    "CodeRejected",
    "DsrService",
    "TooManyCodes",
    "VerifyOutcome",
    "hash_token",
]


class DsrService(Intake, Verification, Opening, Decisions, Reading):
    """Every request use case on one object (built per HTTP request or job; see ``dsr.routes``)."""

    __slots__ = ()

    @classmethod
    def for_runtime(cls, runtime: Runtime, session: AsyncSession, actor: Actor) -> DsrService:
        """The service for a job, a command or a bench, built from the process's runtime (HTTP
        handlers build theirs from the app state, with the HTTP request id: ``dsr.routes``)."""
        return cls(
            session=session,
            keys=runtime.keys,
            policy=runtime.policy,
            rules=runtime.deadlines,
            clock=runtime.clock,
            settings=runtime.settings,
            actor=actor,
        )

    async def file_erasure(self, subject_id: uuid.UUID) -> PrivacyRequest:
        """An operator's erasure of a subject they found (the console): filed as an erasure request for the
        subject's own identifier, verified on the operator's word and approved at once by the same operator.

        So it runs exactly what a data subject's erasure runs (``Processing._process``): the vault's erasure
        (a hold or a legal duty keeps), the downstream systems and connection tasks queued, the recipients to
        tell (Art. 19) in the request's result, the subject's mail and the request's history and audit.
        An open erasure request for the same identifier is a 409, as on the OpenDSR intake.
        """
        subject = await self.subjects.read(subject_id)  # 404 / 410 as the API's GET; audited as a read
        found = [(kind, getattr(subject, kind)) for kind in ("email", "phone", "external_id")]
        kind, value = next(((kind, value) for kind, value in found if value is not None), ("", None))
        if value is None:
            raise Conflict("this subject has no identifier an erasure request can name")
        request = await self.submit_verified(
            request_id=uuid.uuid4(),
            type_="erase",
            kind=kind,
            value=value,
            regime=self.settings.dsr_default_regime,
            note=OPERATOR_ERASURE_NOTE,
        )
        if request.status == Status.AWAITING_REVIEW:  # not auto-approved: this operator approves it now
            await self.approve(request.id)
        return request

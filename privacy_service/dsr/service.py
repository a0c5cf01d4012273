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

from typing import TYPE_CHECKING

from privacy_service.dsr.answer_access import Opening
from privacy_service.dsr.context import TOKEN_PREFIX, TooManyCodes, hash_token
from privacy_service.dsr.decisions import Decisions
from privacy_service.dsr.intake import Intake
from privacy_service.dsr.processing import RECTIFY_REFUSED
from privacy_service.dsr.reading import Reading
from privacy_service.dsr.verification import CodeRejected, Verification, VerifyOutcome

if TYPE_CHECKING:  # runtime imports the dsr package (deadline rules)
    from sqlmodel.ext.asyncio.session import AsyncSession

    from privacy_service.audit.service import Actor
    from privacy_service.runtime import Runtime

__all__ = [
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

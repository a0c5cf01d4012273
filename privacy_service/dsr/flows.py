"""The request state machine: every legal transition, in one table.

An illegal transition is a domain error (409), never a silent no-op.
"""

from __future__ import annotations

from enum import StrEnum

from privacy_service.errors import Conflict


class Status(StrEnum):
    RECEIVED = "received"
    AWAITING_VERIFICATION = "awaiting_verification"
    VERIFIED = "verified"
    AWAITING_REVIEW = "awaiting_review"
    PROCESSING = "processing"
    COMPLETED = "completed"
    PARTIALLY_COMPLETED = "partially_completed"
    DENIED = "denied"
    VERIFICATION_FAILED = "verification_failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


S = Status
TRANSITIONS: dict[Status, frozenset[Status]] = {
    # RECEIVED -> VERIFIED: a controller-side system that verified the subject itself (OpenDSR intake).
    S.RECEIVED: frozenset({S.AWAITING_VERIFICATION, S.VERIFIED, S.CANCELLED}),
    S.AWAITING_VERIFICATION: frozenset({S.VERIFIED, S.VERIFICATION_FAILED, S.EXPIRED, S.CANCELLED}),
    S.VERIFIED: frozenset({S.PROCESSING, S.AWAITING_REVIEW, S.CANCELLED}),
    S.AWAITING_REVIEW: frozenset({S.PROCESSING, S.DENIED, S.CANCELLED}),
    S.PROCESSING: frozenset({S.COMPLETED, S.PARTIALLY_COMPLETED, S.DENIED}),
    S.COMPLETED: frozenset(),
    S.PARTIALLY_COMPLETED: frozenset(),
    S.DENIED: frozenset(),
    S.VERIFICATION_FAILED: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
}

TERMINAL = frozenset(status for status, targets in TRANSITIONS.items() if not targets)
OPEN = frozenset(Status) - TERMINAL
# Open and verified: what a new request of the same type for the same identity is linked to
# (``duplicate_of``, for the operator's information only).
VERIFIED_OPEN = frozenset({S.VERIFIED, S.AWAITING_REVIEW, S.PROCESSING})
# A request's clock can be extended only while someone still owes an answer.
EXTENDABLE = frozenset({S.AWAITING_VERIFICATION, S.VERIFIED, S.AWAITING_REVIEW, S.PROCESSING})


class IllegalTransition(Conflict):
    slug = "illegal-transition"
    title = "This action is not allowed in the request's current status"


def check(current: str, target: Status) -> None:
    allowed = TRANSITIONS[Status(current)]
    if target not in allowed:
        raise IllegalTransition(
            f"a request that is {current} cannot become {target}",
            extra={"current_status": current, "allowed": sorted(allowed)},
        )

"""A system's part in a request: the delivery's statuses and the answers it may give, in one place."""

from __future__ import annotations

from enum import StrEnum

from privacy_service.errors import Conflict


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # queued, or waiting for its next attempt
    SENDING = "sending"  # claimed by a sender (leased)
    DELIVERED = "delivered"  # the system acknowledged it (2xx), or answered
    DEAD = "dead"  # gave up after the maximum attempts; an operator may retry it
    CANCELLED = "cancelled"  # the system was removed; it no longer counts


class Answer(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


QUEUED = frozenset({DeliveryStatus.PENDING, DeliveryStatus.SENDING})
# A delivery still owed to the system: an answer proves it arrived whatever the sender recorded.
UNDELIVERED = frozenset({DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.DEAD})

# None: no answer yet.
ANSWERS: dict[Answer | None, frozenset[Answer]] = {
    None: frozenset({Answer.IN_PROGRESS, Answer.COMPLETED, Answer.FAILED}),
    Answer.IN_PROGRESS: frozenset({Answer.IN_PROGRESS, Answer.COMPLETED, Answer.FAILED}),
    Answer.COMPLETED: frozenset(),
    Answer.FAILED: frozenset(),
}
FINAL = frozenset({Answer.COMPLETED, Answer.FAILED})


class AnswerNotAllowed(Conflict):
    slug = "answer-not-allowed"
    title = "This answer is not allowed after the system's previous one"


def check_answer(current: str | None, target: Answer) -> None:
    allowed = ANSWERS[Answer(current) if current else None]
    if target not in allowed:
        raise AnswerNotAllowed(
            f"the system already answered {current}", extra={"current_answer": current, "allowed": sorted(allowed)}
        )


def owes_answer(status: str, answer: str | None) -> bool:
    """Whether the request still waits for this delivery's system."""
    return status != DeliveryStatus.CANCELLED and answer not in FINAL

"""An incident's life: every legal status transition and every action allowed in each status, in one place.

``draft``      opened by monitoring, waiting for someone to confirm it is a breach (the clock has not started)
``open``       a breach: facts recorded, not yet assessed (the 72-hour clock runs from ``aware_at``)
``assessed``   severity and decisions known; notifications may start
``notifying``  at least one notification was made or queued; duties may remain
``closed``     every duty done (the record stays in the register)
``dismissed``  reviewed and found not to be a personal data breach (stays in the register with the reason)

An illegal transition or action is a domain error (409), never a silent no-op.
"""

from __future__ import annotations

from enum import StrEnum

from privacy_service.errors import Conflict


class Status(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    ASSESSED = "assessed"
    NOTIFYING = "notifying"
    CLOSED = "closed"
    DISMISSED = "dismissed"


S = Status
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.DRAFT: frozenset({S.OPEN, S.DISMISSED}),
    S.OPEN: frozenset({S.ASSESSED, S.DISMISSED}),
    S.ASSESSED: frozenset({S.NOTIFYING, S.CLOSED}),
    S.NOTIFYING: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
    S.DISMISSED: frozenset(),
}

# What may be done in each status (actions that do not change the status are listed here too).
ACTIONS: dict[str, frozenset[Status]] = {
    "update": frozenset({S.DRAFT, S.OPEN, S.ASSESSED, S.NOTIFYING}),
    "confirm": frozenset({S.DRAFT}),
    "dismiss": frozenset({S.DRAFT, S.OPEN}),
    "assess": frozenset({S.OPEN, S.ASSESSED, S.NOTIFYING}),
    "notify_authority": frozenset({S.ASSESSED, S.NOTIFYING}),
    "notify_subjects": frozenset({S.ASSESSED, S.NOTIFYING}),
    "public_communication": frozenset({S.ASSESSED, S.NOTIFYING}),
    "close": frozenset({S.ASSESSED, S.NOTIFYING}),
}

TERMINAL = frozenset(status for status, targets in TRANSITIONS.items() if not targets)
# The authority clock runs in these (a draft is a suspicion, not yet awareness).
CLOCK_RUNNING = frozenset({S.OPEN, S.ASSESSED, S.NOTIFYING})


class IllegalTransition(Conflict):
    slug = "illegal-transition"
    title = "This action is not allowed in the incident's current status"


def check(current: str, target: Status) -> None:
    allowed = TRANSITIONS[Status(current)]
    if target not in allowed:
        raise IllegalTransition(
            f"an incident that is {current} cannot become {target}",
            extra={"current_status": current, "allowed": sorted(allowed)},
        )


def check_action(current: str, action: str) -> None:
    allowed = ACTIONS[action]
    if Status(current) not in allowed:
        raise IllegalTransition(
            f"{action.replace('_', ' ')} is not possible while the incident is {current}",
            extra={"current_status": current, "allowed_in": sorted(allowed)},
        )

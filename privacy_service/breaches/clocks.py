"""The legal clocks of an incident, in one place: when a notification is due, and how much time is left.

GDPR Art. 33(1): the supervisory authority is notified without undue delay and, where feasible, within
72 hours of the controller becoming aware (``clock.authority_deadline`` in policies/breach.yaml).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from privacy_service.breaches import schemas
from privacy_service.breaches.flows import CLOCK_RUNNING
from privacy_service.breaches.models import Breach
from privacy_service.breaches.policy import BreachPolicy


def authority_deadline(rules: BreachPolicy, aware_at: datetime) -> datetime:
    """When the Art. 33 notification to the supervisory authority is due."""
    return aware_at + rules.authority_deadline


def due_reminders(rules: BreachPolicy, left: timedelta, sent: list[str]) -> list[str]:
    """The reminder marks reached with ``left`` time to the deadline and not sent yet (``clock.reminders``)."""
    return [label for label, mark in rules.reminders if left <= mark and label not in sent]


def human_span(delta: timedelta) -> str:
    """'41h 05m', or 'overdue by 3h 10m'."""
    seconds = int(delta.total_seconds())
    sign, seconds = ("overdue by ", -seconds) if seconds < 0 else ("", seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{sign}{hours}h {rest // 60:02d}m"


def authority_clock(breach: Breach, now: datetime) -> schemas.ClockView:
    """The 72-hour clock as shown on the incident: not started, running, overdue, met (late), not required."""
    sent = list(breach.reminders_sent)
    if breach.aware_at is None or breach.authority_deadline is None:
        return schemas.ClockView("not_started", None, None, None, sent)
    deadline = breach.authority_deadline
    if breach.authority_notified_at is not None:
        state = "met_late" if breach.authority_notified_late else "met"
        return schemas.ClockView(state, deadline, None, None, sent)
    if breach.notify_authority is False or breach.status not in CLOCK_RUNNING:
        return schemas.ClockView("not_required", deadline, None, None, sent)
    left = deadline - now
    state = "overdue" if left.total_seconds() < 0 else "running"
    return schemas.ClockView(state, deadline, int(left.total_seconds()), human_span(left), sent)

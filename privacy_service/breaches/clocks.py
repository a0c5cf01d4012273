"""The legal clocks of an incident, in one place: when a notification is due, and how much time is left.

GDPR Art. 33(1): the supervisory authority is notified without undue delay and, where feasible, within
72 hours of the controller becoming aware (``clock.authority_deadline`` in policies/breach.yaml).

California, Civ. Code §1798.82(a) as amended by SB 446 (from 1 Jan 2026): affected residents are told
within 30 calendar days of discovery (``clock.california.notice_deadline``). The clock runs from
``aware_at`` on a confirmed breach of confidentiality of readable data (the statute's trigger is
acquisition of unencrypted data, or of encrypted data with its key) until the people are told (subject
notification or public communication) or the breach is closed; closing needs that notice or a recorded
justification (``california_notice`` duty, breaches/closing.py), so closing never ends the duty silently.
Its reminder marks share ``reminders_sent`` with the 72-hour clock, prefixed ``us-ca:``.
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


CALIFORNIA = "us-ca:"


def california_deadline(rules: BreachPolicy, breach: Breach) -> datetime | None:
    """When the notice to affected California residents is due, or None when that clock does not run."""
    length = rules.california_deadline
    if length is None or breach.aware_at is None:
        return None
    return breach.aware_at + length


def california_notice_pending(breach: Breach) -> bool:
    """Readable data was acquired (a breach of confidentiality, not encrypted with the key safe: §1798.82(a)
    exempts encrypted data) and its people have not been told yet (subject notice or public communication)."""
    return (
        "confidentiality" in breach.nature
        and not (breach.encrypted and not breach.key_compromised)
        and breach.subject_notice is None
        and breach.public_notice is None
    )


def california_clock_running(breach: Breach) -> bool:
    """A confirmed, unclosed breach of readable data whose people have not been told yet."""
    return breach.status in CLOCK_RUNNING and california_notice_pending(breach)


def california_clock(rules: BreachPolicy, breach: Breach, now: datetime) -> schemas.CaliforniaClockView | None:
    """The California clock as shown on the incident; None without ``clock.california`` or before aware_at."""
    deadline = california_deadline(rules, breach)
    if deadline is None:
        return None
    sent = [mark.removeprefix(CALIFORNIA) for mark in breach.reminders_sent if mark.startswith(CALIFORNIA)]
    told = [
        datetime.fromisoformat(str(notice[field]))
        for notice, field in ((breach.subject_notice, "requested_at"), (breach.public_notice, "published_at"))
        if notice is not None and notice.get(field)
    ]
    if told:
        state = "met_late" if min(told) > deadline else "met"
        return schemas.CaliforniaClockView(state, deadline, None, None, sent)
    if not california_clock_running(breach):
        return schemas.CaliforniaClockView("not_required", deadline, None, None, sent)
    left = deadline - now
    state = "overdue" if left.total_seconds() < 0 else "running"
    return schemas.CaliforniaClockView(state, deadline, int(left.total_seconds()), day_span(left), sent)


def day_span(delta: timedelta) -> str:
    """'6 days 23h', or 'overdue by 1 day 2h' (the 30-day clock counts in days)."""
    seconds = int(delta.total_seconds())
    sign, seconds = ("overdue by ", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(seconds, 86400)
    return f"{sign}{days} day{'' if days == 1 else 's'} {rest // 3600}h"


def human_span(delta: timedelta) -> str:
    """'41h 05m', or 'overdue by 3h 10m'."""
    seconds = int(delta.total_seconds())
    sign, seconds = ("overdue by ", -seconds) if seconds < 0 else ("", seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{sign}{hours}h {rest // 60:02d}m"


def authority_clock(breach: Breach, now: datetime) -> schemas.ClockView:
    """The 72-hour clock as shown on the incident: not started, running, overdue, met (late), not required."""
    sent = [mark for mark in breach.reminders_sent if not mark.startswith(CALIFORNIA)]
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

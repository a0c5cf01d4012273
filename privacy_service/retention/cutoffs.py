"""Which anchors a period has run out for, as bounds a database can compare against.

Data is due when ``period.add_to(anchor) <= now`` (:meth:`Duration.add_to`, calendar months with
clamping). Selecting due rows in SQL needs the inverse: the anchors at or before some instant.
Month clamping makes the exact set slightly irregular: on 28 February, ``P1M`` has run out for
31 January 09:00 (due 28 February 09:00) but not for 30 January 10:00 (due 28 February 10:00). So
a :class:`Cut` has two bounds. Every anchor at or before ``lo`` is due; none after ``hi`` is; the
few in between (only when ``now`` falls on the last day of a month shorter than the anchor's)
are decided one by one with ``add_to`` itself. Nothing is purged early and nothing late.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from privacy_service.policy.duration import Duration

_END_OF_DAY = {"hour": 23, "minute": 59, "second": 59, "microsecond": 999_999}


@dataclass(frozen=True, slots=True)
class Cut:
    """``lo <= hi``; both None when the period reaches back before year 1 (nothing is due)."""

    lo: datetime | None
    hi: datetime | None

    @property
    def exact(self) -> bool:
        return self.lo == self.hi

    def certainly_due(self, anchor: datetime | None) -> bool:
        return anchor is not None and self.lo is not None and anchor <= self.lo


NEVER = Cut(None, None)


def due(period: Duration, anchor: datetime | None, now: datetime) -> bool:
    """The reference answer the bounds agree with: has ``period`` run out since ``anchor``?"""
    if anchor is None:
        return False
    try:
        return period.add_to(anchor) <= now
    except OverflowError:
        return False


def cut(period: Duration, now: datetime) -> Cut:
    """The bounds for ``period`` at ``now`` (``now`` timezone-aware; results are UTC)."""
    now = now.astimezone(UTC)
    try:
        # add_to adds months first, then the fixed part: add_months(t, m) + fixed <= now.
        limit = now - timedelta(
            weeks=period.weeks, days=period.days, hours=period.hours, minutes=period.minutes, seconds=period.seconds
        )
    except OverflowError:
        return NEVER
    months = period.years * 12 + period.months
    if months == 0:
        return Cut(limit, limit)
    year, month_index = divmod(limit.year * 12 + limit.month - 1 - months, 12)
    month = month_index + 1
    if year < 1:
        return NEVER
    # Anchors in months before `month` are due, after it are not; within it, it depends on the day.
    last_day_anchor = calendar.monthrange(year, month)[1]
    last_day_limit = calendar.monthrange(limit.year, limit.month)[1]
    clock = {"hour": limit.hour, "minute": limit.minute, "second": limit.second, "microsecond": limit.microsecond}

    def at(day: int, **time: int) -> datetime:
        return datetime(year, month, day, tzinfo=UTC, **time)

    if limit.day < last_day_limit:
        if limit.day > last_day_anchor:
            bound = at(last_day_anchor, **_END_OF_DAY)
        else:
            bound = at(limit.day, **clock)
        return Cut(bound, bound)
    # `limit` is on the last day of its month: anchor days from there on are clamped to it.
    if last_day_anchor < last_day_limit:
        bound = at(last_day_anchor, **_END_OF_DAY)
        return Cut(bound, bound)
    return Cut(at(last_day_limit, **clock), at(last_day_anchor, **clock))

"""Working-day calendars: weekends, a jurisdiction's public holidays and its make-up working days.

Public holidays come from the ``holidays`` package (the maintained calendar library) for the country
and subdivision the policy names per regime. China's State Council moves working days onto weekends
around its long holidays (调休); the package keeps those days in ``weekend_workdays`` and its
``is_working_day`` counts them, so such a Saturday is a working day here too. The policy's own
``holidays`` list adds closed days on top of every calendar (a day the package lacks).

Several jurisdictions on one regime: a day is a working day only if it is one in every calendar.

Days are the jurisdiction's local days: a calendar has the time zone of its (first) jurisdiction, so
a deadline's last day ends at midnight there, not at midnight UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, timedelta, tzinfo
from zoneinfo import ZoneInfo

import holidays

# The civil time of each jurisdiction a regime's calendar may name (the holidays package has dates,
# not zones). A jurisdiction missing here counts its days in UTC, as before zones were known.
TIME_ZONES = {
    "IE": "Europe/Dublin",
    "US-CA": "America/Los_Angeles",
    "CN": "Asia/Shanghai",
}


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    country: str  # ISO 3166-1 alpha-2, as the holidays package names it
    subdivision: str | None = None  # the ISO 3166-2 part after the dash, e.g. CA for US-CA

    @property
    def code(self) -> str:
        return f"{self.country}-{self.subdivision}" if self.subdivision else self.country


def unsupported(jurisdiction: Jurisdiction) -> str | None:
    """Why the holidays package cannot give this calendar, or None if it can."""
    supported = holidays.list_supported_countries()
    if jurisdiction.country not in supported:
        return f"the holidays package has no calendar for country {jurisdiction.country!r}"
    if jurisdiction.subdivision is not None and jurisdiction.subdivision not in supported[jurisdiction.country]:
        return f"the holidays package has no subdivision {jurisdiction.code!r}"
    return None


class WorkingCalendar:
    """Which days count as working days for one regime's deadlines."""

    __slots__ = ("_extra", "_public", "jurisdictions", "zone")

    def __init__(self, jurisdictions: Iterable[Jurisdiction] = (), extra: Iterable[date] = ()) -> None:
        self.jurisdictions = tuple(jurisdictions)
        # Years are filled in on first use (the package's expand=True), so any year works.
        self._public = tuple(
            holidays.country_holidays(j.country, subdiv=j.subdivision, language="en_US") for j in self.jurisdictions
        )
        self._extra = frozenset(extra)
        names = [TIME_ZONES[j.code] for j in self.jurisdictions if j.code in TIME_ZONES]
        self.zone: tzinfo = ZoneInfo(names[0]) if names else UTC

    def is_working_day(self, day: date) -> bool:
        if day in self._extra:
            return False
        if not self._public:
            return day.weekday() < 5
        return all(calendar.is_working_day(day) for calendar in self._public)

    def holiday_names(self, day: date) -> list[str]:
        """The public holidays on ``day`` (for messages and tests), empty on a plain day or weekend."""
        names = [str(name) for calendar in self._public for name in calendar.get_list(day)]
        return [*names, "policy holiday"] if day in self._extra else names

    def roll(self, day: date) -> date:
        """Reg. 1182/71 Art. 3(4): a period ending on a holiday, Saturday or Sunday ends on the next working day."""
        while not self.is_working_day(day):
            day += timedelta(days=1)
        return day

    def add_working_days(self, day: date, count: int) -> date:
        """The ``count``-th working day after ``day`` (``day`` itself is not counted)."""
        while count > 0:
            day += timedelta(days=1)
            if self.is_working_day(day):
                count -= 1
        return day

"""Working-day calendars: weekends, a jurisdiction's public holidays and its make-up working days.

Public holidays come from the ``holidays`` package (the maintained calendar library) for the country
and subdivision the policy names per regime. China's State Council moves working days onto weekends
around its long holidays (调休); the package keeps those days in ``weekend_workdays`` and its
``is_working_day`` counts them, so such a Saturday is a working day here too. The policy's own
``holidays`` list adds closed days on top of every calendar (a day the package lacks).

Several jurisdictions on one regime: a day is a working day only if it is one in every calendar.

Each calendar of a regime may list its own ``closed_days`` and ``working_days`` (policy.yaml): the
package's data for a year comes out after the jurisdiction announces it (China's State Council publishes
the next year's holidays and make-up days in November), so until the package is upgraded the policy can
state them. A calendar the package does not have at all, such as the EU institutions' (published in
the Official Journal each year; the package's ECB calendar is TARGET's closing days, not that list),
is a named calendar in policy.yaml ``calendars``: an optional package base plus listed days and their
source. Nothing here invents days: what the package and the policy do not list is an ordinary day,
and ``policy check`` warns when a calendar that depends on a yearly announcement has no data for the
coming year (:func:`uncovered_years`).

Days are the jurisdiction's local days: a calendar has the time zone of its (first) jurisdiction, so
a deadline's last day ends at midnight there, not at midnight UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, timedelta, tzinfo
from importlib.metadata import version
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import holidays

if TYPE_CHECKING:
    from privacy_service.policy.document import PolicySpec, Regime

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


# Jurisdictions whose working days the package can only know once a yearly notice is out: the years
# for which it has that notice show as make-up working days (weekend_workdays) in that year.
ANNOUNCED_YEARLY = {"CN": "the State Council's yearly holiday notice (make-up working days)"}


@dataclass(frozen=True, slots=True)
class CalendarSource:
    """One calendar of a regime: a package base (jurisdiction or financial market, or none) and the
    days the policy lists for it. ``label`` names it in messages and the published notice."""

    label: str
    jurisdiction: Jurisdiction | None = None
    market: str | None = None
    closed: frozenset[date] = frozenset()
    working: frozenset[date] = frozenset()
    time_zone: str | None = None
    announced_yearly: bool = False  # a named calendar of listed days: each year's days come from a notice


def holidays_version() -> str:
    """The installed holidays package's version (its data for a year arrives with a release)."""
    return version("holidays")


def unsupported_market(market: str) -> str | None:
    """Why the holidays package cannot give this financial market's calendar, or None if it can."""
    if market not in holidays.list_supported_financial():
        return f"the holidays package has no financial market {market!r}"
    return None


def _package_calendar(source: CalendarSource) -> holidays.HolidayBase | None:
    if source.jurisdiction is not None:
        j = source.jurisdiction
        return holidays.country_holidays(j.country, subdiv=j.subdivision, language="en_US")
    if source.market is not None:
        return holidays.financial_holidays(source.market)
    return None


def uncovered_years(source: CalendarSource, years: Iterable[int]) -> list[int]:
    """The years in ``years`` for which this calendar depends on a yearly announcement that neither the
    installed package nor the policy's listed days contain (``policy check`` warns about them)."""
    base = _package_calendar(source)
    missing = []
    for year in years:
        if source.jurisdiction is not None and source.jurisdiction.country in ANNOUNCED_YEARLY and base is not None:
            base.get(date(year, 1, 1))  # fills in the year (expand=True)
            known = any(day.year == year for day in getattr(base, "weekend_workdays", ()))
            if not known and not any(day.year == year for day in source.working):
                missing.append(year)
        elif source.announced_yearly and not any(day.year == year for day in source.closed | source.working):
            missing.append(year)
    return missing


class WorkingCalendar:
    """Which days count as working days for one regime's deadlines."""

    __slots__ = ("_extra", "_parts", "jurisdictions", "sources", "zone")

    def __init__(self, jurisdictions: Iterable[Jurisdiction | CalendarSource] = (), extra: Iterable[date] = ()) -> None:
        self.sources = tuple(
            item if isinstance(item, CalendarSource) else CalendarSource(label=item.code, jurisdiction=item)
            for item in jurisdictions
        )
        self.jurisdictions = tuple(s.jurisdiction for s in self.sources if s.jurisdiction is not None)
        # Years are filled in on first use (the package's expand=True), so any year works.
        self._parts = tuple((source, _package_calendar(source)) for source in self.sources)
        self._extra = frozenset(extra)
        names = [
            source.time_zone or TIME_ZONES.get(source.jurisdiction.code if source.jurisdiction else "", "")
            for source in self.sources
        ]
        names = [name for name in names if name]
        self.zone: tzinfo = ZoneInfo(names[0]) if names else UTC

    @staticmethod
    def _part_works(source: CalendarSource, base: holidays.HolidayBase | None, day: date) -> bool:
        if day in source.closed:
            return False
        if day in source.working:
            return True
        if base is None:
            return day.weekday() < 5
        return bool(base.is_working_day(day))

    def is_working_day(self, day: date) -> bool:
        if day in self._extra:
            return False
        if not self._parts:
            return day.weekday() < 5
        return all(self._part_works(source, base, day) for source, base in self._parts)

    def holiday_names(self, day: date) -> list[str]:
        """The public holidays on ``day`` (for messages and tests), empty on a plain day or weekend."""
        names: list[str] = []
        for source, base in self._parts:
            if day in source.working:
                continue
            if base is not None:
                names.extend(str(name) for name in base.get_list(day))
            if day in source.closed:
                names.append(f"{source.label} closed day")
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


def regime_sources(spec: PolicySpec, regime: Regime) -> list[CalendarSource]:
    """The calendars a regime of the policy names, resolved (named calendars from ``spec.calendars``)."""
    sources = []
    for entry in regime.calendars:
        if entry.name is not None:
            named = spec.calendars[entry.name]
            base = Jurisdiction(named.country, named.subdivision) if named.country else None
            sources.append(
                CalendarSource(
                    label=entry.name,
                    jurisdiction=base,
                    market=named.market,
                    closed=frozenset([*named.closed_days, *entry.closed_days]),
                    working=frozenset([*named.working_days, *entry.working_days]),
                    time_zone=named.time_zone,
                    announced_yearly=bool(named.closed_days or named.working_days),
                )
            )
        elif entry.country is not None:  # HolidayCalendar requires country or name
            jurisdiction = Jurisdiction(entry.country, entry.subdivision)
            sources.append(
                CalendarSource(
                    label=jurisdiction.code,
                    jurisdiction=jurisdiction,
                    closed=frozenset(entry.closed_days),
                    working=frozenset(entry.working_days),
                )
            )
    return sources


def regime_calendar(spec: PolicySpec, regime: Regime) -> WorkingCalendar:
    """The working calendar of one regime of the policy, with the policy's days closed everywhere."""
    return WorkingCalendar(regime_sources(spec, regime), spec.holidays)

"""ISO 8601 durations (``P5Y``, ``P13M``, ``P2W``, ``P1DT12H``) with calendar-aware addition.

Retention periods and request deadlines are written as durations in the policy files. Years and
months are calendar units: ``P1M`` after 31 January is the last day of February, as Regulation
1182/71 Art. 3(2)(c) counts a month and as the GDPR's one-month deadline is applied. ``timedelta``
cannot express that, hence this small value type.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

Moment = TypeVar("Moment", date, datetime)

# Each component is optional but at least one must be present; "T" needs a time component after it.
# Six digits per component is far beyond any real period and keeps arithmetic in range.
_PATTERN = re.compile(
    r"P(?!$)"
    r"(?:(?P<years>\d{1,6})Y)?(?:(?P<months>\d{1,6})M)?(?:(?P<weeks>\d{1,6})W)?(?:(?P<days>\d{1,6})D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d{1,6})H)?(?:(?P<minutes>\d{1,6})M)?(?:(?P<seconds>\d{1,6})S)?)?"
)
_DATE_UNITS = (("years", "Y"), ("months", "M"), ("weeks", "W"), ("days", "D"))
_TIME_UNITS = (("hours", "H"), ("minutes", "M"), ("seconds", "S"))
PARSE_HINT = "not an ISO 8601 duration such as P5Y, P13M, P30D or PT72H"


def add_months(moment: Moment, months: int) -> Moment:
    """Shift by whole calendar months, clamping to the month's last day (31 Jan + 1 month = 28/29 Feb)."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    if not 1 <= year <= 9999:
        raise OverflowError("date out of range")
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


@dataclass(frozen=True, slots=True)
class Duration:
    """A non-negative ISO 8601 duration. Equality is by component: ``P12M`` and ``P1Y`` differ."""

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        for name in ("years", "months", "weeks", "days", "hours", "minutes", "seconds"):
            if getattr(self, name) < 0:
                raise ValueError("duration components must not be negative")

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _PATTERN.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(PARSE_HINT)
        return cls(**{name: int(value) for name, value in match.groupdict().items() if value is not None})

    def __str__(self) -> str:
        out = "P" + "".join(f"{getattr(self, name)}{unit}" for name, unit in _DATE_UNITS if getattr(self, name))
        time = "".join(f"{getattr(self, name)}{unit}" for name, unit in _TIME_UNITS if getattr(self, name))
        if time:
            out += "T" + time
        return out if out != "P" else "P0D"

    def __repr__(self) -> str:
        return f"Duration({str(self)!r})"

    @property
    def is_zero(self) -> bool:
        return not any(getattr(self, name) for name, _ in (*_DATE_UNITS, *_TIME_UNITS))

    @property
    def has_time(self) -> bool:
        return bool(self.hours or self.minutes or self.seconds)

    def add_to(self, moment: Moment) -> Moment:
        """``moment`` + this duration: months and years first (clamped), then weeks, days and time.

        That is the order of XML Schema's algorithm and of ``dateutil.relativedelta``, so
        ``2024-01-31 + P1M1D`` is ``2024-03-01``. A ``date`` accepts date components only.
        """
        if not isinstance(moment, datetime) and self.has_time:
            raise ValueError("a duration with hours, minutes or seconds needs a datetime, not a date")
        shifted = add_months(moment, self.years * 12 + self.months)
        return shifted + timedelta(
            weeks=self.weeks, days=self.days, hours=self.hours, minutes=self.minutes, seconds=self.seconds
        )

    # -- pydantic: validate from the ISO string, serialise back to it ----------------------

    @classmethod
    def _validate(cls, value: Any) -> Duration:
        if isinstance(value, Duration):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        raise ValueError(PARSE_HINT)

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            json_schema_input_schema=core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

"""ISO 8601 durations: parsing, canonical form and calendar-aware addition."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privacy_service.policy.duration import Duration, add_months

components = st.integers(min_value=0, max_value=400)
durations = st.builds(
    Duration,
    years=components,
    months=components,
    weeks=components,
    days=components,
    hours=components,
    minutes=components,
    seconds=components,
)
moments = st.datetimes(
    min_value=datetime(1900, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive; tz added below
    max_value=datetime(2200, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P5Y", Duration(years=5)),
        ("P13M", Duration(months=13)),
        ("P30D", Duration(days=30)),
        ("P2W", Duration(weeks=2)),
        ("PT72H", Duration(hours=72)),
        ("P1Y2M3W4DT5H6M7S", Duration(1, 2, 3, 4, 5, 6, 7)),
        ("P0D", Duration()),
        ("PT30M", Duration(minutes=30)),
        (" P1M ", Duration(months=1)),
    ],
)
def test_parses_iso_8601(text: str, expected: Duration) -> None:
    assert Duration.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "P", "PT", "5Y", "P5", "P-1Y", "P1.5Y", "P1H", "PT1D", "P1M1Y", "p5y", "P5Y ago", "P1234567Y", "P1DT"],
)
def test_rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO 8601 duration"):
        Duration.parse(text)


def test_negative_components_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Duration(days=-1)


@pytest.mark.parametrize(
    ("start", "duration", "expected"),
    [
        # Reg. 1182/71 Art. 3(2)(c): no such date next month -> the last day of that month.
        (date(2026, 1, 31), "P1M", date(2026, 2, 28)),
        (date(2028, 1, 31), "P1M", date(2028, 2, 29)),
        (date(2026, 8, 31), "P1M", date(2026, 9, 30)),
        (date(2026, 3, 31), "P1M", date(2026, 4, 30)),
        (date(2026, 1, 15), "P1M", date(2026, 2, 15)),
        (date(2026, 12, 31), "P1M", date(2027, 1, 31)),
        (date(2024, 2, 29), "P1Y", date(2025, 2, 28)),
        (date(2024, 2, 29), "P4Y", date(2028, 2, 29)),
        (date(2026, 11, 30), "P3M", date(2027, 2, 28)),
        (date(2026, 1, 31), "P1M1D", date(2026, 3, 1)),  # months first, then days
        (date(2026, 1, 1), "P45D", date(2026, 2, 15)),
        (date(2026, 1, 1), "P2W", date(2026, 1, 15)),
        (date(2026, 1, 1), "P13M", date(2027, 2, 1)),
    ],
)
def test_calendar_addition(start: date, duration: str, expected: date) -> None:
    assert Duration.parse(duration).add_to(start) == expected


def test_adds_time_to_datetimes_in_utc() -> None:
    start = datetime(2026, 1, 31, 22, 30, tzinfo=UTC)
    assert Duration.parse("P1MT2H").add_to(start) == datetime(2026, 3, 1, 0, 30, tzinfo=UTC)
    assert Duration.parse("PT72H").add_to(start) == start + timedelta(hours=72)


def test_a_date_cannot_take_hours() -> None:
    with pytest.raises(ValueError, match="datetime"):
        Duration.parse("PT1H").add_to(date(2026, 1, 1))


def test_out_of_range_raises_overflow() -> None:
    with pytest.raises(OverflowError):
        Duration(years=20).add_to(date(9990, 1, 1))


@given(durations)
def test_string_form_round_trips(duration: Duration) -> None:
    assert Duration.parse(str(duration)) == duration


@given(moments, st.integers(min_value=0, max_value=600))
def test_months_clamp_to_the_last_day(moment: datetime, months: int) -> None:
    result = Duration(months=months).add_to(moment)
    index = moment.year * 12 + moment.month - 1 + months
    assert (result.year, result.month) == (divmod(index, 12)[0], divmod(index, 12)[1] + 1)
    assert result.day == min(moment.day, calendar.monthrange(result.year, result.month)[1])
    assert result.time() == moment.time()
    assert result.tzinfo == moment.tzinfo


@given(moments, st.integers(min_value=0, max_value=50))
def test_twelve_months_are_a_year(moment: datetime, years: int) -> None:
    assert Duration(years=years).add_to(moment) == Duration(months=12 * years).add_to(moment)


@given(moments, st.integers(min_value=0, max_value=20_000), st.integers(min_value=0, max_value=500))
def test_days_weeks_and_hours_are_exact(moment: datetime, days: int, hours: int) -> None:
    duration = Duration(weeks=days // 7, days=days % 7, hours=hours)
    assert duration.add_to(moment) == moment + timedelta(days=days, hours=hours)


@given(moments, durations)
def test_addition_never_goes_backwards(moment: datetime, duration: Duration) -> None:
    assert duration.add_to(moment) >= moment


@given(moments, st.integers(min_value=0, max_value=240), st.integers(min_value=0, max_value=240))
def test_more_months_is_never_earlier(moment: datetime, first: int, second: int) -> None:
    low, high = sorted((first, second))
    assert add_months(moment, low) <= add_months(moment, high)

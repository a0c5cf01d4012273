"""The SQL bounds of a retention period agree with Duration.add_to, the policy's definition, exactly:
every anchor at or before ``lo`` is due, none after ``hi`` is, and ``lo < hi`` only at month ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from privacy_service.policy.duration import Duration
from privacy_service.retention.cutoffs import cut, due
from privacy_service.retention.service import amount_band

periods = st.builds(
    Duration,
    years=st.integers(0, 12),
    months=st.integers(0, 30),
    weeks=st.integers(0, 3),
    days=st.integers(0, 45),
    hours=st.integers(0, 30),
)
# hypothesis bounds are naive; the drawn values carry UTC.
moments = st.datetimes(
    min_value=datetime(1990, 1, 1, tzinfo=UTC).replace(tzinfo=None),
    max_value=datetime(2100, 1, 1, tzinfo=UTC).replace(tzinfo=None),
    timezones=st.just(UTC),
)
offsets = st.integers(-5 * 86_400 * 10**6, 5 * 86_400 * 10**6)


@settings(max_examples=2000, deadline=None, derandomize=True, database=None)
@given(period=periods, now=moments, offset=offsets)
def test_bounds_agree_with_add_to(period: Duration, now: datetime, offset: int) -> None:
    bounds = cut(period, now)
    assert bounds.lo is not None
    assert bounds.hi is not None
    assert bounds.lo <= bounds.hi
    for anchor in (
        bounds.lo,
        bounds.hi,
        bounds.hi + timedelta(microseconds=1),
        bounds.hi + timedelta(microseconds=offset),
    ):
        if anchor <= bounds.lo:
            assert due(period, anchor, now), anchor
        if anchor > bounds.hi:
            assert not due(period, anchor, now), anchor
    assert due(period, bounds.hi, now)
    if bounds.exact:
        assert not due(period, bounds.lo + timedelta(microseconds=1), now)


def test_month_end_is_decided_by_the_time_of_day() -> None:
    # On 28 February 09:30, P1M has run out for 31 January 09:00 but not for 30 January 10:00.
    now = datetime(2025, 2, 28, 9, 30, tzinfo=UTC)
    bounds = cut(Duration(months=1), now)
    assert bounds.lo == datetime(2025, 1, 28, 9, 30, tzinfo=UTC)
    assert bounds.hi == datetime(2025, 1, 31, 9, 30, tzinfo=UTC)
    assert due(Duration(months=1), datetime(2025, 1, 31, 9, 0, tzinfo=UTC), now)
    assert not due(Duration(months=1), datetime(2025, 1, 30, 10, 0, tzinfo=UTC), now)


def test_periods_beyond_the_calendar_never_expire() -> None:
    bounds = cut(Duration(years=5000), datetime(2025, 1, 1, tzinfo=UTC))
    assert (bounds.lo, bounds.hi) == (None, None)
    assert not due(Duration(years=5000), datetime(1, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))


def test_amount_band_keeps_only_the_order_of_magnitude() -> None:
    assert [amount_band({"amount": v}) for v in (0.5, 7, 250, -1234.5, 10**15)] == [
        "0-1",
        "1-10",
        "100-1000",
        "1000-10000",
        f"{10**12}-{10**13}",
    ]
    assert [amount_band(d) for d in ({}, {"amount": "12"}, {"amount": True}, [], {"amount": float("nan")})] == [""] * 5

"""The legal clock, computed from the shipped policy files (no number lives in the code)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from privacy_service.dsr.deadlines import build_deadline_rules
from privacy_service.errors import InvalidInput
from privacy_service.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[2]
RULES = build_deadline_rules(load_policy(ROOT / "policies"))
DUBLIN, LOS_ANGELES, SHANGHAI = ZoneInfo("Europe/Dublin"), ZoneInfo("America/Los_Angeles"), ZoneInfo("Asia/Shanghai")


def at(y: int, m: int, d: int, hour: int = 10) -> datetime:
    return datetime(y, m, d, hour, tzinfo=UTC)


@pytest.mark.parametrize(
    ("received", "due"),
    [
        # Same date next month.
        (at(2026, 3, 10), date(2026, 3, 10).replace(month=4)),
        # 31 Jan -> 28 Feb 2026, a Saturday -> next working day, Monday 2 March (Reg. 1182/71 Art. 3(4)).
        (at(2026, 1, 31), date(2026, 3, 2)),
        # Leap year: 31 Jan 2028 -> 29 Feb 2028 (a Tuesday).
        (at(2028, 1, 31), date(2028, 2, 29)),
        # 31 Aug -> 30 Sep (shorter month), a Wednesday in 2026.
        (at(2026, 8, 31), date(2026, 9, 30)),
        # 15 Nov 2026 -> 15 Dec 2026 (Tuesday).
        (at(2026, 11, 15), date(2026, 12, 15)),
        # Received late on 31 Dec -> 31 Jan 2027 is a Sunday; Monday 1 Feb is St Brigid's Day in
        # Ireland (the GDPR calendar) -> Tuesday 2 Feb.
        (at(2026, 12, 31, 23), date(2027, 2, 2)),
    ],
)
def test_gdpr_one_calendar_month(received: datetime, due: date) -> None:
    # The period ends at the end of its last day in Ireland (22:59:59 UTC in summer time).
    result = RULES.due_at("gdpr", received).astimezone(DUBLIN)
    assert result.date() == due
    assert result.time() == time(23, 59, 59)


def la_day(moment: datetime) -> date:
    """The Los Angeles day a CCPA deadline ends on (its end is 07:59 or 08:59 UTC the next morning)."""
    return moment.astimezone(LOS_ANGELES).date()


def test_ccpa_45_calendar_days_no_rolling() -> None:
    assert la_day(RULES.due_at("ccpa", at(2026, 1, 31))) == date(2026, 3, 17)
    # 45 days after 2026-03-01 is Wednesday 15 April; a weekend end would not roll under CCPA.
    assert la_day(RULES.due_at("ccpa", at(2026, 3, 1))) == date(2026, 4, 15)
    assert la_day(RULES.due_at("ccpa", at(2026, 2, 19))) == date(2026, 4, 5)  # a Sunday, kept


def test_pipl_working_days() -> None:
    # Working days on China's calendar, the receipt day not counted. Friday 6 Mar 2026: no holiday
    # in the next three weeks -> Friday 27 Mar.
    assert RULES.due_at("pipl", at(2026, 3, 6)).date() == date(2026, 3, 27)
    # From a Saturday: the count starts on Monday.
    assert RULES.due_at("pipl", at(2026, 3, 7)).date() == date(2026, 3, 27)


def test_gdpr_extension_two_more_months_at_most() -> None:
    received = at(2026, 1, 15)
    due = RULES.due_at("gdpr", received)
    ceiling = RULES.extended_due_at("gdpr", received, due, None)
    assert ceiling.date() == date(2026, 4, 15)
    assert RULES.extended_due_at("gdpr", received, due, 30).date() == date(2026, 3, 18)
    with pytest.raises(InvalidInput, match="at most"):
        RULES.extended_due_at("gdpr", received, due, 90)


def test_ccpa_extension_45_days() -> None:
    received = at(2026, 1, 31)
    due = RULES.due_at("ccpa", received)
    assert la_day(RULES.extended_due_at("ccpa", received, due, None)) == date(2026, 5, 1)


def test_unknown_regime_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="not configured"):
        RULES.due_at("lgpd", at(2026, 1, 1))


def test_aml_duty_runs_from_account_closure() -> None:
    closed = at(2026, 6, 30)
    kept = RULES.legal_duty("user.financial.transaction", {"account_closed_at": closed})
    assert kept is not None
    assert kept.until.date() == date(2031, 6, 30)
    assert "AML" in kept.basis or "2015/849" in kept.basis
    assert RULES.legal_duty("user.behavior", {"account_closed_at": closed}) is None


# -- The last day ends at midnight in the regime calendar's time zone -------------------------------


def _last_instant(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(23, 59, 59), tzinfo=zone).astimezone(UTC)


def test_a_pipl_deadline_ends_at_midnight_beijing_time() -> None:
    # Friday 6 Mar 2026 -> Friday 27 Mar, ending 23:59:59 in Beijing (15:59:59 UTC),
    # not 08:00 the next morning.
    due = RULES.due_at("pipl", at(2026, 3, 6))
    assert due == datetime(2026, 3, 27, 15, 59, 59, tzinfo=UTC)
    assert due.astimezone(SHANGHAI).date() == date(2026, 3, 27)


def test_a_request_received_late_evening_utc_counts_from_the_local_day() -> None:
    # 20:00 UTC on Thursday 5 Mar is 04:00 on Friday 6 Mar in Beijing: counted from Friday.
    assert RULES.due_at("pipl", at(2026, 3, 5, 20)) == RULES.due_at("pipl", at(2026, 3, 6))


def test_a_gdpr_deadline_ends_at_midnight_dublin_time_across_the_dst_change() -> None:
    # Received 10 Mar 2026 (GMT, UTC+0) -> due Friday 10 Apr 2026, in Irish summer time (UTC+1).
    due = RULES.due_at("gdpr", at(2026, 3, 10))
    assert due == _last_instant(date(2026, 4, 10), DUBLIN)
    assert due == datetime(2026, 4, 10, 22, 59, 59, tzinfo=UTC)
    # Received in summer time, due after the clocks go back (25 Oct 2026): midnight is UTC midnight.
    due = RULES.due_at("gdpr", at(2026, 10, 15))
    assert due == datetime(2026, 11, 16, 23, 59, 59, tzinfo=UTC)  # 15 Nov is a Sunday


def test_a_ccpa_deadline_ends_at_midnight_los_angeles_time_across_the_dst_change() -> None:
    # Received 1 Feb 2026 (PST, UTC-8) -> 45 days -> Wednesday 18 Mar 2026, in PDT (UTC-7, from 8 Mar).
    due = RULES.due_at("ccpa", at(2026, 2, 1, 18))
    assert due == _last_instant(date(2026, 3, 18), LOS_ANGELES)
    assert due == datetime(2026, 3, 19, 6, 59, 59, tzinfo=UTC)
    # Received in PDT, due after the clocks go back (1 Nov 2026): PST, 08:00 UTC the next day.
    due = RULES.due_at("ccpa", at(2026, 10, 1, 18))
    assert due == datetime(2026, 11, 16, 7, 59, 59, tzinfo=UTC)


def test_a_ccpa_request_received_in_the_utc_evening_of_the_previous_local_day() -> None:
    # 03:00 UTC on 2 Feb is 19:00 on 1 Feb in Los Angeles: the same local receipt day as 1 Feb 18:00 UTC.
    assert RULES.due_at("ccpa", at(2026, 2, 2, 3)) == RULES.due_at("ccpa", at(2026, 2, 1, 18))


@pytest.mark.parametrize("regime", sorted(RULES.regimes))
def test_due_at_remembered_per_day_equals_the_computation(regime: str) -> None:
    """due_at keeps one answer per (regime, day of receipt) where the deadline counts days: every
    hour of days around month ends and the DST changes gets what the full computation gives."""
    rule = RULES.rule(regime)
    assert rule.due_by_day  # the shipped policies count days, so the remembered path is the one tested
    fresh = build_deadline_rules(load_policy(ROOT / "policies"))
    days = [date(2026, 1, 30), date(2026, 2, 27), date(2026, 3, 7), date(2026, 3, 28), date(2026, 10, 24)]
    days += [date(2026, 10, 31), date(2026, 12, 31), date(2028, 2, 28)]
    for day in days:
        for hour in range(24):
            for minute in (0, 59):
                received = datetime.combine(day, time(hour, minute), tzinfo=UTC)
                computed = fresh._due_at(rule, received.astimezone(rule.calendar.zone))
                assert fresh.due_at(regime, received) == computed  # the first of its day computes, the rest recall
                assert RULES.due_at(regime, received) == computed

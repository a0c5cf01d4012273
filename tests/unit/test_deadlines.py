"""The legal clock, computed from the shipped policy files (no number lives in the code)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from privacy_service.dsr.deadlines import build_deadline_rules
from privacy_service.errors import InvalidInput
from privacy_service.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[2]
RULES = build_deadline_rules(load_policy(ROOT / "policies"))


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
    result = RULES.due_at("gdpr", received)
    assert result.date() == due
    assert (result.hour, result.minute) == (23, 59)  # the period ends at the end of its last day
    assert result.tzinfo is not None


def test_ccpa_45_calendar_days_no_rolling() -> None:
    assert RULES.due_at("ccpa", at(2026, 1, 31)).date() == date(2026, 3, 17)
    # 45 days after 2026-03-01 is Wednesday 15 April; a weekend end would not roll under CCPA.
    assert RULES.due_at("ccpa", at(2026, 3, 1)).date() == date(2026, 4, 15)
    assert RULES.due_at("ccpa", at(2026, 2, 19)).date() == date(2026, 4, 5)  # a Sunday, kept


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
    assert RULES.extended_due_at("ccpa", received, due, None).date() == date(2026, 5, 1)


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

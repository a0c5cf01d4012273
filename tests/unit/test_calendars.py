"""Deadlines on real public-holiday calendars (the holidays package, as the shipped policy names them).

Each date below was checked against the published calendar for that year: Ireland's public holidays
(Organisation of Working Time Act 1997, Sch. 2), China's State Council notice of 2025-11-04 on the 2026
holidays (make-up working days 4 Jan, 14 Feb, 28 Feb, 20 Sep, 10 Oct), California's state holidays
(Gov. Code §6700).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from privacy_service.calendars import Jurisdiction, WorkingCalendar, holidays_version
from privacy_service.dsr.deadlines import build_deadline_rules
from privacy_service.policy.loader import calendar_warnings, check_policy, load_policy
from privacy_service.policy.render import policy_view
from tests.policy_files import copy_policies, edit_yaml

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy(ROOT / "policies")
RULES = build_deadline_rules(POLICY)

LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def at(y: int, m: int, d: int, hour: int = 10) -> datetime:
    return datetime(y, m, d, hour, tzinfo=UTC)


def test_each_regime_names_its_calendar() -> None:
    regimes = POLICY.spec.regimes.items()
    calendars = {name: [c.model_dump(exclude_none=True) for c in r.calendars] for name, r in regimes}
    assert calendars == {
        "gdpr": [{"country": "IE"}],
        "ccpa": [{"country": "US", "subdivision": "CA"}],
        "pipl": [{"country": "CN"}],
    }


@pytest.mark.parametrize(
    ("regime", "day", "working", "holiday"),
    [
        ("gdpr", date(2026, 12, 24), True, None),
        ("gdpr", date(2026, 12, 25), False, "Christmas Day"),
        ("gdpr", date(2026, 12, 26), False, "Saint Stephen's Day"),
        ("gdpr", date(2027, 1, 1), False, "New Year's Day"),
        ("gdpr", date(2026, 3, 17), False, "Saint Patrick's Day"),
        ("gdpr", date(2027, 2, 1), False, "Saint Brigid's Day"),
        ("pipl", date(2026, 2, 17), False, "Chinese New Year (Spring Festival)"),
        # Make-up working days (调休): weekend days that are working days in China.
        ("pipl", date(2026, 2, 14), True, None),
        ("pipl", date(2026, 2, 28), True, None),
        ("pipl", date(2026, 9, 20), True, None),
        ("pipl", date(2026, 10, 10), True, None),
        # The weekdays the make-up days pay for are days off.
        ("pipl", date(2026, 2, 20), False, "Day off (substituted from 02/14/2026)"),
        ("pipl", date(2026, 10, 1), False, "National Day"),
        ("pipl", date(2026, 10, 7), False, "Day off (substituted from 10/10/2026)"),
        ("pipl", date(2026, 9, 25), False, "Mid-Autumn Festival"),
        ("pipl", date(2026, 2, 21), False, None),  # an ordinary Saturday stays off
        ("ccpa", date(2026, 3, 31), False, "Cesar Chavez Day"),
        ("ccpa", date(2026, 11, 27), False, "Day After Thanksgiving"),
        ("ccpa", date(2026, 7, 3), False, "Independence Day (observed)"),
        ("ccpa", date(2026, 4, 3), True, None),  # Good Friday is no California holiday
    ],
)
def test_working_days_follow_the_regimes_calendar(regime: str, day: date, working: bool, holiday: str | None) -> None:
    assert RULES.is_working_day(regime, day) is working
    names = RULES.rule(regime).calendar.holiday_names(day)
    assert names == ([holiday] if holiday else [])


@pytest.mark.parametrize(
    ("received", "due", "why"),
    [
        (at(2026, 11, 25), date(2026, 12, 28), "25 Dec Christmas, 26 St Stephen's (Sat), 27 Sun"),
        (at(2026, 12, 1), date(2027, 1, 4), "1 Jan New Year (Fri), then the weekend"),
        (at(2026, 2, 17), date(2026, 3, 18), "17 Mar St Patrick's Day"),
        (at(2026, 12, 24), date(2027, 1, 25), "24 Jan 2027 is a Sunday"),
        (at(2026, 11, 24), date(2026, 12, 24), "Christmas Eve is a working day"),
    ],
)
def test_gdpr_period_ending_on_an_irish_holiday_moves_to_the_next_working_day(
    received: datetime, due: date, why: str
) -> None:
    assert RULES.due_at("gdpr", received).date() == due, why


@pytest.mark.parametrize(
    ("received", "due", "why"),
    [
        # 2-6 Feb (5), 9-13 (10), Sat 14 Feb make-up (11), 16-20 Spring Festival, 21-22 weekend,
        # 23 Feb day off, 24-27 (15).
        (at(2026, 1, 30), date(2026, 2, 27), "Chinese New Year with the make-up Saturday 14 Feb"),
        # Sun 20 Sep make-up (1), 21-24 (5), 25 Mid-Autumn, 28-30 (8), 1-7 Oct Golden Week,
        # 8-9 (10), Sat 10 Oct make-up (11), 12-15 (15).
        (at(2026, 9, 18), date(2026, 10, 15), "Golden Week with make-up days 20 Sep and 10 Oct"),
        # Sun 4 Jan 2026 is a make-up day: 31 Dec 2025 + 15 working days counts it.
        (at(2025, 12, 31), date(2026, 1, 22), "New Year 1-3 Jan, make-up Sunday 4 Jan"),
    ],
)
def test_pipl_working_days_on_chinas_calendar(received: datetime, due: date, why: str) -> None:
    assert RULES.due_at("pipl", received).date() == due, why


def test_weekends_only_would_give_other_dates() -> None:
    """The holiday calendar changes the answer (the tests above could not pass on weekends alone)."""
    plain = WorkingCalendar()
    assert plain.add_working_days(date(2026, 1, 30), 15) == date(2026, 2, 20)
    assert plain.roll(date(2026, 12, 25)) == date(2026, 12, 25)
    china = WorkingCalendar([Jurisdiction("CN")])
    assert china.add_working_days(date(2026, 1, 30), 15) == date(2026, 2, 27)


@pytest.mark.parametrize(
    ("received", "acknowledge_by", "why"),
    [
        (at(2026, 11, 20), date(2026, 12, 8), "Thanksgiving and the day after"),
        (at(2026, 3, 20), date(2026, 4, 6), "Cesar Chavez Day, 31 Mar"),
        (at(2026, 12, 18), date(2027, 1, 5), "Christmas Day and New Year's Day"),
        (at(2026, 6, 26), date(2026, 7, 13), "Independence Day observed Fri 3 Jul"),
    ],
)
def test_ccpa_acknowledgement_within_ten_california_business_days(
    received: datetime, acknowledge_by: date, why: str
) -> None:
    due = RULES.acknowledge_due_at("ccpa", received)
    assert due is not None
    # The last day is a Los Angeles day (it ends 07:59/08:59 UTC the next morning).
    assert due.astimezone(LOS_ANGELES).date() == acknowledge_by, why
    assert RULES.acknowledge_due_at("gdpr", received) is None
    # The answer itself is 45 calendar days: holidays do not move it.
    answer = RULES.due_at("ccpa", received).astimezone(LOS_ANGELES).date()
    assert (answer - received.astimezone(LOS_ANGELES).date()).days == 45


def test_the_policys_own_holidays_add_to_every_calendar(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    edit_yaml(folder / "policy.yaml", lambda d: d.__setitem__("holidays", ["2026-03-27"]))
    rules = build_deadline_rules(load_policy(folder))
    assert not rules.is_working_day("pipl", date(2026, 3, 27))
    assert not rules.is_working_day("ccpa", date(2026, 3, 27))
    assert rules.rule("pipl").calendar.holiday_names(date(2026, 3, 27)) == ["policy holiday"]
    # 6 Mar + 15 working days was Friday 27 Mar; closed, it is Monday 30 Mar.
    assert rules.due_at("pipl", at(2026, 3, 6)).date() == date(2026, 3, 30)


@pytest.mark.parametrize(
    ("calendar", "message"),
    [
        ({"country": "XX"}, "no calendar for country 'XX'"),
        ({"country": "US", "subdivision": "QQ"}, "no subdivision 'US-QQ'"),
    ],
)
def test_policy_check_refuses_a_calendar_the_package_lacks(
    tmp_path: Path, calendar: dict[str, str], message: str
) -> None:
    folder = copy_policies(tmp_path)
    edit_yaml(folder / "policy.yaml", lambda d: d["regimes"]["ccpa"].__setitem__("calendars", [calendar]))
    document, problems = check_policy(folder)
    assert document is None
    assert any("regimes.ccpa.calendars[0]" in str(p) and message in str(p) for p in problems), problems


@pytest.mark.parametrize(
    ("regime", "zone"),
    [("gdpr", "Europe/Dublin"), ("ccpa", "America/Los_Angeles"), ("pipl", "Asia/Shanghai")],
)
def test_each_regimes_calendar_has_its_jurisdictions_time_zone(regime: str, zone: str) -> None:
    assert RULES.rule(regime).calendar.zone == ZoneInfo(zone)


def test_a_calendar_without_jurisdiction_counts_utc_days() -> None:
    assert WorkingCalendar().zone == UTC


# -- days the policy lists per calendar, named calendars, coverage warnings, the CCPA roll ------------


def _pipl_calendar(folder: Path, **days: list[str]) -> None:
    edit_yaml(
        folder / "policy.yaml", lambda d: d["regimes"]["pipl"].__setitem__("calendars", [{"country": "CN", **days}])
    )


def test_a_regimes_calendar_lists_its_own_working_and_closed_days(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    # A Saturday worked (as a make-up day the package lacks would be) and a Wednesday closed, in China only.
    _pipl_calendar(folder, working_days=["2026-03-21"], closed_days=["2026-03-25"])
    rules = build_deadline_rules(load_policy(folder))
    assert rules.is_working_day("pipl", date(2026, 3, 21))
    assert not rules.is_working_day("pipl", date(2026, 3, 25))
    assert rules.rule("pipl").calendar.holiday_names(date(2026, 3, 25)) == ["CN closed day"]
    # Other regimes are untouched: the days belong to the PIPL calendar only.
    assert not rules.is_working_day("gdpr", date(2026, 3, 21))
    assert rules.is_working_day("ccpa", date(2026, 3, 25))
    # 6 Mar + 15 working days: Friday 27 Mar before; one day gained and one lost, still 27 Mar.
    assert rules.due_at("pipl", at(2026, 3, 6)).date() == date(2026, 3, 27)
    # A listed working day beats a package holiday (National Day, 1 Oct 2026).
    _pipl_calendar(folder, working_days=["2026-10-01"])
    assert build_deadline_rules(load_policy(folder)).is_working_day("pipl", date(2026, 10, 1))


def test_a_named_calendar_from_a_package_base_plus_listed_days(tmp_path: Path) -> None:
    """The EU institutions' calendar is not in the package: the policy builds it from a base and listed days."""
    folder = copy_policies(tmp_path)

    def edit(d: dict[str, Any]) -> None:
        d["calendars"] = {
            "eu_institutions": {
                "market": "ECB",
                "time_zone": "Europe/Brussels",
                # Europe Day (9 May) is an EU institutions' holiday; a test lists it, the shipped policy does not.
                "closed_days": ["2028-05-09"],
                "source": "test: one day, to show how listed days work",
            }
        }
        d["regimes"]["gdpr"]["calendars"] = [{"name": "eu_institutions"}]

    edit_yaml(folder / "policy.yaml", edit)
    document = load_policy(folder)
    rules = build_deadline_rules(document)
    calendar = rules.rule("gdpr").calendar
    assert calendar.zone == ZoneInfo("Europe/Brussels")
    assert not rules.is_working_day("gdpr", date(2028, 5, 9))  # listed
    assert calendar.holiday_names(date(2028, 5, 9)) == ["eu_institutions closed day"]
    assert not rules.is_working_day("gdpr", date(2026, 4, 3))  # Good Friday: the ECB base
    assert rules.is_working_day("gdpr", date(2026, 3, 17))  # St Patrick's Day is Ireland's, not this calendar's
    # The published notice names the calendar as the policy does.
    regimes = {r["id"]: r for r in policy_view(document, "en")["regimes"]}
    assert regimes["gdpr"]["calendars"] == ["eu_institutions"]
    # Using the new keys changes the content hash (so a new version is needed); not using them does not.
    assert document.content_hash != POLICY.content_hash
    assert "calendars" not in POLICY.source()["policy"]


@pytest.mark.parametrize(
    ("edit", "where", "message"),
    [
        (
            lambda d: d["regimes"]["gdpr"].__setitem__("calendars", [{"name": "nowhere"}]),
            "regimes.gdpr.calendars[0]",
            "calendar 'nowhere' is not in calendars",
        ),
        (
            lambda d: d["regimes"]["gdpr"].__setitem__("calendars", [{"name": "x", "country": "IE"}]),
            "regimes.gdpr.calendars[0]",
            "exactly one of country",
        ),
        (
            lambda d: d["regimes"]["gdpr"].__setitem__(
                "calendars", [{"country": "IE", "closed_days": ["2026-05-05"], "working_days": ["2026-05-05"]}]
            ),
            "regimes.gdpr.calendars[0]",
            "both as closed and as a working day",
        ),
        (
            lambda d: d.__setitem__("calendars", {"eu": {"market": "QQQ", "source": "s"}}),
            "calendars.eu",
            "no financial market 'QQQ'",
        ),
        (
            lambda d: d.__setitem__("calendars", {"eu": {"closed_days": ["2026-05-09"]}}),
            "calendars.eu.source",
            "Field required",
        ),
        (
            lambda d: d.__setitem__("calendars", {"eu": {"time_zone": "Mars/Olympus", "source": "s"}}),
            "calendars.eu",
            "not an IANA time zone",
        ),
    ],
)
def test_policy_check_refuses_a_broken_calendar(tmp_path: Path, edit: Any, where: str, message: str) -> None:
    folder = copy_policies(tmp_path)
    edit_yaml(folder / "policy.yaml", edit)
    document, problems = check_policy(folder)
    assert document is None
    assert any(where in str(p) and message in str(p) for p in problems), problems


def test_policy_check_warns_when_a_calendar_has_no_data_for_a_coming_year(tmp_path: Path) -> None:
    # Mid-2026: the package has China's 2026 notice (make-up days), and no deadline reaches 2027 yet.
    assert calendar_warnings(POLICY, date(2026, 6, 1)) == []
    # A year no package release has (2099): China's make-up days are unknown, Ireland and California
    # are fixed rules and never warn.
    warned = [str(w) for w in calendar_warnings(POLICY, date(2099, 12, 1))]
    assert len(warned) == 2, warned
    assert all("regimes.pipl.calendars[0]: calendar CN has no data for" in w for w in warned)
    assert ["2099" in warned[0], "2100" in warned[1]] == [True, True]
    # Listing the year's make-up working days in the policy covers it.
    folder = copy_policies(tmp_path)
    _pipl_calendar(folder, working_days=["2099-12-05", "2100-01-02"])
    assert calendar_warnings(load_policy(folder), date(2099, 12, 1)) == []


def test_a_named_calendar_of_listed_days_warns_for_a_year_it_does_not_list(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)

    def edit(d: dict[str, Any]) -> None:
        d["calendars"] = {"eu_institutions": {"closed_days": ["2026-05-09"], "source": "test"}}
        d["regimes"]["gdpr"]["calendars"] = [{"country": "IE"}, {"name": "eu_institutions"}]

    edit_yaml(folder / "policy.yaml", edit)
    document = load_policy(folder)
    assert calendar_warnings(document, date(2026, 6, 1)) == []
    warned = [str(w) for w in calendar_warnings(document, date(2026, 12, 4)) if "regimes.gdpr" in w.path]
    assert warned == [
        f"policy.yaml: regimes.gdpr.calendars[1]: calendar eu_institutions has no data for 2027 (holidays "
        f"{holidays_version()}): upgrade the holidays package or list that year's closed_days and working_days"
    ]


def test_the_ccpa_answer_rolls_off_a_holiday_only_if_the_policy_says_so(tmp_path: Path) -> None:
    """Cal. Civ. Code §1798.130(a)(2) counts 45 days; whether Code Civ. Proc. §12a moves an end on a
    holiday is unsettled [verify], so the shipped policy does not roll (the earlier, safe date)."""
    received = at(2026, 10, 12, 18)  # 45 days later is Thanksgiving, Thursday 26 Nov 2026
    assert RULES.due_at("ccpa", received).astimezone(LOS_ANGELES).date() == date(2026, 11, 26)
    folder = copy_policies(tmp_path)
    edit_yaml(folder / "policy.yaml", lambda d: d["regimes"]["ccpa"].__setitem__("roll_to_working_day", True))
    rolled = build_deadline_rules(load_policy(folder)).due_at("ccpa", received)
    # Thanksgiving, the day after (a California holiday), then the weekend: Monday 30 Nov.
    assert rolled.astimezone(LOS_ANGELES).date() == date(2026, 11, 30)

"""Moments on the portal's pages: written as the language writes them, in a given zone (Babel)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import ValidationError

from privacy_service.policy.document import PolicySpec
from privacy_service.web.i18n import date_time, format_locale, local_time, long_date

POLICIES = Path(__file__).resolve().parents[2] / "policies"
MOMENT = datetime(2026, 12, 3, 7, 57, tzinfo=UTC)


@pytest.mark.parametrize(
    ("language", "zone", "expected"),
    [
        ("en", "Europe/Dublin", "3 December 2026, 07:57"),
        ("en", "Asia/Shanghai", "3 December 2026, 15:57"),
        ("zh", "Asia/Shanghai", "2026年12月3日 15:57"),
        ("zh", "Europe/Dublin", "2026年12月3日 07:57"),
        # Summer: Irish Standard Time is an hour ahead of UTC.
        ("en", "Europe/Dublin", "1 July 2026, 13:00"),
    ],
)
def test_a_moment_as_the_language_writes_it_in_the_zone(language: str, zone: str, expected: str) -> None:
    moment = MOMENT if "December" in expected or "12月" in expected else datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert date_time(moment, language, ZoneInfo(zone)) == expected


def test_the_browser_gets_utc_and_the_day_turns_in_the_zone() -> None:
    late = datetime(2026, 12, 3, 20, 30, tzinfo=timezone(timedelta(hours=2)))
    shown = local_time(late, "zh", ZoneInfo("Asia/Shanghai"))
    assert shown.iso == "2026-12-03T18:30:00+00:00"
    assert shown.text == "2026年12月4日 02:30"


def test_days_use_the_languages_locale() -> None:
    assert format_locale("en") == "en-IE"
    assert long_date(MOMENT, "en") == "3 December 2026"
    assert long_date(MOMENT, "zh") == "2026年12月3日"


def test_the_policy_names_its_zone_and_refuses_one_that_does_not_exist() -> None:
    shipped = yaml.safe_load((POLICIES / "policy.yaml").read_text(encoding="utf-8"))
    assert PolicySpec.model_validate(shipped).display_time_zone == "Europe/Dublin"
    with pytest.raises(ValidationError, match="not an IANA time zone"):
        PolicySpec.model_validate({**shipped, "display_time_zone": "Mars/Olympus_Mons"})

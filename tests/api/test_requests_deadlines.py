"""The legal clock through the API, with time travel: due dates per regime, the one extension,
overdue escalation with the operators' digest over SMTP, and the expiry of unverified requests.

Every date comes from the shipped policy files; these tests pin what they must produce.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from httpx import AsyncClient

from privacy_service.config import Settings
from privacy_service.dsr.jobs import expire_unverified, send_digest
from privacy_service.runtime import Runtime
from tests.api.dsr_support import (
    assert_problem,
    code_from,
    deliver,
    fresh_settings,
    make_subject,
    rows,
    submit,
    submit_and_verify,
    utc,
)
from tests.conftest import MailSink

EMAIL = "dora.deadline@example.com"
PROFILE = {"name": "Dora Deadline", "date_of_birth": "1979-09-09"}


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend)


@dataclass(frozen=True)
class Rule:
    id: str
    regime: str
    received: datetime
    due: str  # the last day; the period ends at 23:59:59 on it in the regime calendar's time zone


ZONES = {"gdpr": "Europe/Dublin", "ccpa": "America/Los_Angeles", "pipl": "Asia/Shanghai"}


def end_of(day: str, regime: str) -> str:
    """The API's ``due_at`` for a period ending on ``day`` (local midnight, shown in UTC)."""
    local = datetime.combine(date.fromisoformat(day), time(23, 59, 59), tzinfo=ZoneInfo(ZONES[regime]))
    return local.astimezone(UTC).isoformat().replace("+00:00", "Z")


RULES = [
    # GDPR Art. 12(3) with Reg. 1182/71 Art. 3: same date next month, else the month's last day,
    # and a period ending on a weekend ends on the next working day.
    Rule("gdpr-same-date-next-month", "gdpr", utc(2026, 3, 10), "2026-04-10"),
    Rule("gdpr-31-jan-to-sat-28-feb-to-mon-2-mar", "gdpr", utc(2026, 1, 31), "2026-03-02"),
    Rule("gdpr-31-jan-2027-to-sun-28-feb-to-mon-1-mar", "gdpr", utc(2027, 1, 31), "2027-03-01"),
    Rule("gdpr-leap-year-2028-tue-29-feb", "gdpr", utc(2028, 1, 31), "2028-02-29"),
    Rule("gdpr-leap-year-2024-thu-29-feb", "gdpr", utc(2024, 1, 31), "2024-02-29"),
    Rule("gdpr-30-jan-leap-year", "gdpr", utc(2028, 1, 30), "2028-02-29"),
    Rule("gdpr-31-aug-to-30-sep", "gdpr", utc(2026, 8, 31), "2026-09-30"),
    # ... and on an Irish public holiday too (the GDPR calendar is Ireland's, policies/policy.yaml).
    Rule("gdpr-sun-31-jan-then-st-brigids-day-mon-1-feb", "gdpr", utc(2026, 12, 31, 23, 30), "2027-02-02"),
    Rule("gdpr-christmas-st-stephens-weekend", "gdpr", utc(2026, 11, 25), "2026-12-28"),
    Rule("gdpr-new-years-day-then-weekend", "gdpr", utc(2026, 12, 1), "2027-01-04"),
    # CCPA: 45 calendar days, no rolling, holidays or not.
    Rule("ccpa-45-days", "ccpa", utc(2026, 1, 31), "2026-03-17"),
    Rule("ccpa-45-days-across-29-feb", "ccpa", utc(2028, 1, 31), "2028-03-16"),
    Rule("ccpa-ends-on-a-sunday", "ccpa", utc(2026, 2, 19), "2026-04-05"),
    Rule("ccpa-ends-on-thanksgiving-kept", "ccpa", utc(2026, 10, 12), "2026-11-26"),
    # PIPL: the policy's 15 working days on China's calendar, the receipt day not counted.
    Rule("pipl-15-working-days-plain", "pipl", utc(2026, 3, 6), "2026-03-27"),
    Rule("pipl-15-working-days-from-saturday", "pipl", utc(2026, 3, 7), "2026-03-27"),
    Rule("pipl-across-29-feb", "pipl", utc(2028, 2, 21), "2028-03-13"),
    # Spring Festival 16-23 Feb 2026 off, Saturday 14 Feb a make-up working day.
    Rule("pipl-chinese-new-year-with-make-up-saturday", "pipl", utc(2026, 1, 30), "2026-02-27"),
    # Mid-Autumn 25 Sep and Golden Week 1-7 Oct off, Sunday 20 Sep and Saturday 10 Oct worked.
    Rule("pipl-golden-week-with-make-up-days", "pipl", utc(2026, 9, 18), "2026-10-15"),
]


async def test_due_dates_follow_each_regime(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    failures: list[str] = []
    ids: list[str] = []
    for n, rule in enumerate(RULES):
        with time_machine.travel(rule.received, tick=False):
            response = await client.post(
                "/v1/requests",
                json={"type": "access", "identity": {"email": f"clock.{n}@example.com"}, "regime": rule.regime},
            )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
        stored = (await client.get(f"/v1/requests/{response.json()['id']}", headers=auth)).json()
        expected = end_of(rule.due, rule.regime)
        got = (response.json()["due_at"], stored["due_at"], stored["received_at"])
        if got != (expected, expected, rule.received.isoformat().replace("+00:00", "Z")):
            failures.append(f"{rule.id}: expected due {expected}, got {got}")
    assert not failures, "\n".join(failures)
    # Receipt is acknowledged at once (CCPA: within 10 business days) by the code mail, queued with it.
    for row in await rows(runtime, "dsr_requests"):
        assert row["acknowledged_at"] == row["received_at"]
    queued = {str(uuid.UUID(str(m["owner_id"]))): m for m in await rows(runtime, "outbox_messages")}
    assert all(queued[request_id]["template"] == "verification_code" for request_id in ids)


async def review(
    client: AsyncClient, runtime: Runtime, mail: MailSink, auth: dict[str, str], regime: str, email: str = EMAIL
) -> str:
    await make_subject(client, auth, email=email, profile=PROFILE)
    request_id, verified = await submit_and_verify(client, runtime, mail, email, "erase", regime=regime)
    assert verified["status"] == "awaiting_review"
    return request_id


async def extend(client: AsyncClient, auth: dict[str, str], request_id: str, **body: Any) -> Any:
    return await client.post(f"/v1/requests/{request_id}/extend", json={"reason": "complex", **body}, headers=auth)


async def test_gdpr_extends_once_by_two_months_at_most(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    with time_machine.travel(utc(2026, 1, 15), tick=True):
        request_id = await review(client, runtime, mail, auth, "gdpr")
        view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
        assert view["due_at"] == end_of("2026-02-16", "gdpr")  # 15 Feb is a Sunday
    with time_machine.travel(utc(2026, 2, 10), tick=True):
        # Two further months run from the end of the first (15 Feb, before its weekend roll): 15 April.
        assert_problem(await extend(client, auth, request_id, days=60), 422, "invalid-input")
        assert_problem(await extend(client, auth, request_id, days=93), 400, "validation-error")
        extended = await extend(client, auth, request_id)
        assert extended.status_code == 200, extended.text
        assert (extended.json()["due_at"], extended.json()["extended"]) == (end_of("2026-04-15", "gdpr"), True)
        assert_problem(await extend(client, auth, request_id), 409, "conflict")
    await deliver(runtime)
    notice = mail.to(EMAIL)[-1]
    assert "more time" in str(notice["Subject"])
    assert "New deadline: 2026-04-15" in notice.get_content()
    assert [e["action"] for e in await rows(runtime, "audit_events")].count("dsr.extended") == 1


async def test_gdpr_extension_may_ask_for_less(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    with time_machine.travel(utc(2026, 1, 15), tick=True):
        request_id = await review(client, runtime, mail, auth, "gdpr")
        extended = await extend(client, auth, request_id, days=30)
    assert extended.json()["due_at"] == end_of("2026-03-18", "gdpr")  # 16 Feb + 30 days


async def test_ccpa_extends_once_by_45_days(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    with time_machine.travel(utc(2026, 1, 31), tick=True):
        request_id = await review(client, runtime, mail, auth, "ccpa")
    with time_machine.travel(utc(2026, 3, 1), tick=True):
        assert_problem(await extend(client, auth, request_id, days=46), 422, "invalid-input")
        extended = await extend(client, auth, request_id, days=45)
        # 90 days from receipt at most: 1 May ends 06:59:59 UTC on 2 May (Pacific daylight time).
        assert extended.json()["due_at"] == end_of("2026-05-01", "ccpa") == "2026-05-02T06:59:59Z"
        assert_problem(await extend(client, auth, request_id, days=1), 409, "conflict")
    # The mail names the last day as it is in California, not the UTC date of its end.
    await deliver(runtime)
    assert "New deadline: 2026-05-01" in mail.to(EMAIL)[-1].get_content()


async def test_overdue_requests_are_escalated_once_and_operators_get_a_digest(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink, settings: Settings
) -> None:
    start = utc(2026, 3, 2, 9)
    with time_machine.travel(start, tick=True):
        late = await review(client, runtime, mail, auth, "gdpr")  # due 2 April
        soon = await review(client, runtime, mail, auth, "ccpa", "soon@example.com")  # due 16 April
        unverified = await submit(client, {"email": "pending@example.com"}, "erase")
        done, _ = await submit_and_verify(client, runtime, mail, EMAIL, "access")
    mail.clear()
    with time_machine.travel(utc(2026, 4, 13, 8), tick=True):
        first = await send_digest(runtime.db, runtime.clock, settings)
        assert (first.overdue, first.due_soon, first.newly_escalated, first.mailed) == (1, 1, 1, True)
        await deliver(runtime)
        overdue = (await client.get("/v1/requests", params={"overdue": "true"}, headers=auth)).json()["items"]
        assert {item["id"] for item in overdue} == {late, unverified}
    escalated_at = {str(uuid.UUID(str(r["id"]))): r["escalated_at"] for r in await rows(runtime, "dsr_requests")}
    assert escalated_at[late] is not None
    assert escalated_at[soon] is None
    assert escalated_at[unverified] is None
    assert escalated_at[done] is None
    (digest,) = mail.to(settings.operator_email)
    text = str(digest["Subject"]) + digest.get_content()
    assert "1 overdue, 1 due within 7 days" in text
    assert late in text
    assert soon in text
    assert unverified not in text
    assert done not in text
    for secret in (EMAIL, "soon@example.com", "pending@example.com", "Dora", "1979-09-09"):
        assert secret not in digest.as_string()

    with time_machine.travel(utc(2026, 4, 14, 8), tick=True):
        again = await send_digest(runtime.db, runtime.clock, settings)
    assert (again.overdue, again.newly_escalated) == (1, 0)
    after = {str(uuid.UUID(str(r["id"]))): r["escalated_at"] for r in await rows(runtime, "dsr_requests")}
    assert after[late] == escalated_at[late]
    escalations = [e for e in await rows(runtime, "audit_events") if e["action"] == "dsr.escalated"]
    assert len(escalations) == 1
    assert escalations[0]["actor_type"] == "system"
    detail = escalations[0]["detail"]
    assert (json.loads(detail) if isinstance(detail, str) else detail)["dsr_id"] == late


async def test_unverified_requests_expire(
    client: AsyncClient, runtime: Runtime, mail: MailSink, settings: Settings
) -> None:
    start = utc(2026, 5, 4, 9)
    with time_machine.travel(start, tick=True):
        stale = await submit(client, {"email": EMAIL}, "access")
        await deliver(runtime)
        code = code_from(mail, EMAIL)
    with time_machine.travel(start + timedelta(days=settings.dsr_unverified_expiry_days, hours=1), tick=True):
        fresh = await submit(client, {"email": "fresh@example.com"}, "access")
        assert await expire_unverified(runtime.db, runtime.clock, settings) == 1
        assert await expire_unverified(runtime.db, runtime.clock, settings) == 0
        late = await client.post(f"/v1/requests/{stale}/verify", json={"code": code})
    assert assert_problem(late, 409, "illegal-transition")["current_status"] == "expired"
    status = {str(uuid.UUID(str(r["id"]))): r for r in await rows(runtime, "dsr_requests")}
    assert status[stale]["status"] == "expired"
    assert status[stale]["code_hash"] is None
    assert status[fresh]["status"] == "awaiting_verification"
    last = (await rows(runtime, "dsr_transitions"))[-1]
    assert (last["to_status"], last["actor_type"], last["note"]) == ("expired", "system", "not verified in time")


async def test_the_published_policy_names_each_regimes_calendar(client: AsyncClient) -> None:
    published = (await client.get("/v1/policy")).json()
    calendars = {regime["id"]: regime["calendars"] for regime in published["regimes"]}
    assert calendars == {"gdpr": ["IE"], "ccpa": ["US-CA"], "pipl": ["CN"]}
    page = (await client.get("/privacy")).text
    assert "Working days skip the public holidays of: US-CA" in page
    assert "weekend days the State Council makes working days" in page
    chinese = (await client.get("/privacy", headers={"Accept-Language": "zh"})).text
    assert "工作日不含下列地区的法定节假日\uff1aCN" in chinese

"""The California 30-day clock (Civ. Code §1798.82(a) as amended by SB 446; policies/breach.yaml
``clock.california``), travelled through on both databases: reminders at the marks over SMTP, overdue
once, stopped when the people are told, not run for a breach that is not one of confidentiality."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import time_machine
from httpx import AsyncClient

from privacy_service.breaches.jobs import ReminderResult, remind_california
from privacy_service.breaches.policy import check_breach_policy, load_breach_policy
from privacy_service.runtime import Runtime
from tests.api.dsr_support import rows
from tests.breach_support import BREACH_TEAM, assess, create, deliver_all, make_subjects
from tests.conftest import MailSink
from tests.policy_files import copy_policies, edit_yaml


def start_time() -> datetime:
    return (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)


async def remind(runtime: Runtime) -> tuple[int, int]:
    rules = load_breach_policy(runtime.settings.policy_dir, runtime.policy)
    result: ReminderResult = await remind_california(runtime.db, runtime.clock, rules)
    return result.reminded, result.overdue


def test_the_shipped_policy_sets_thirty_days_with_reminders(runtime: Runtime) -> None:
    rules = load_breach_policy(runtime.settings.policy_dir, runtime.policy)
    assert rules.california_deadline == timedelta(days=30)
    assert rules.california_reminders == [("P7D", timedelta(days=7)), ("P2D", timedelta(days=2))]


async def test_thirty_days_from_discovery_with_reminders_then_overdue_once(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    start = start_time()
    with time_machine.travel(start, tick=False) as traveller:
        breach = await create(client, auth)
        reference = breach["id"][:8]
        assert breach["california_clock"] == {
            "state": "running",
            "deadline": (start + timedelta(days=30)).isoformat().replace("+00:00", "Z"),
            "seconds_left": 30 * 86400,
            "time_left": "30 days 0h",
            "reminders_sent": [],
        }
        assert await remind(runtime) == (0, 0)
        traveller.move_to(start + timedelta(days=22, hours=23, minutes=59))
        assert await remind(runtime) == (0, 0)

        traveller.move_to(start + timedelta(days=23))
        assert await remind(runtime) == (1, 0)
        assert await remind(runtime) == (0, 0)  # once per mark
        await deliver_all(runtime)
        (first,) = [m for m in mail.to(BREACH_TEAM) if "California" in str(m["Subject"])]
        assert (
            str(first["Subject"]).strip()
            == f"Breach {reference}: 7 days 0h left to notify affected California residents"
        )
        deadline = (start + timedelta(days=30)).strftime("%Y-%m-%d %H:%M UTC")
        assert f"that ends at {deadline}" in first.get_content()

        traveller.move_to(start + timedelta(days=28, hours=1))
        assert await remind(runtime) == (1, 0)
        traveller.move_to(start + timedelta(days=30, minutes=1))
        assert await remind(runtime) == (0, 1)
        assert await remind(runtime) == (0, 0)
        await deliver_all(runtime)
        california = [m for m in mail.to(BREACH_TEAM) if "California" in str(m["Subject"])]
        assert len(california) == 3
        overdue = california[-1]
        assert str(overdue["Subject"]).strip().startswith(f"OVERDUE: breach {reference}: affected California residents")
        assert "overdue by 0 days 0h" in overdue.get_content()

        view = (await client.get(f"/v1/breaches/{breach['id']}", headers=auth)).json()
        # The 72-hour clock's own marks are not mixed with California's.
        assert view["clock"]["reminders_sent"] == []
        california = view["california_clock"]
        assert (california["state"], california["time_left"]) == ("overdue", "overdue by 0 days 0h")
        assert california["reminders_sent"] == ["P7D", "P2D", "overdue"]
    events = [e["action"] for e in await rows(runtime, "audit_events") if "california" in e["action"]]
    assert sorted(events) == ["breach.california_overdue", "breach.california_reminder", "breach.california_reminder"]


async def test_telling_the_people_stops_the_clock_and_availability_alone_never_starts_it(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    start = start_time()
    subjects = [str(s) for s in await make_subjects(runtime, 2, domain="ca.example")]
    with time_machine.travel(start, tick=False) as traveller:
        told = await create(
            client,
            auth,
            categories=["user.name", "user.contact.email", "user.financial.transaction"],
            affected={"subject_ids": subjects},
        )
        outage = await create(client, auth, nature=["availability"], malicious=False, exfiltration_known=False)
        traveller.move_to(start + timedelta(days=5))
        assessed = await assess(client, auth, told["id"])
        assert assessed["decisions"]["notify_subjects"]["value"]
        queued = await client.post(f"/v1/breaches/{told['id']}/subject-notifications", json={}, headers=auth)
        assert queued.status_code == 202, queued.text
        traveller.move_to(start + timedelta(days=31))
        assert await remind(runtime) == (0, 0)
    states = {}
    for breach in (told, outage):
        view = (await client.get(f"/v1/breaches/{breach['id']}", headers=auth)).json()
        assert view["california_clock"]["reminders_sent"] == []
        states[breach["id"]] = view["california_clock"]["state"]
    assert states == {told["id"]: "met", outage["id"]: "not_required"}


def test_policy_check_refuses_a_california_clock_that_cannot_run(runtime: Runtime, tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)

    def break_it(data: dict[str, Any]) -> None:
        data["clock"]["california"] = {"notice_deadline": "P1M", "reminders": ["P40D", "P40D", "PT0S"]}

    edit_yaml(folder / "breach.yaml", break_it)
    _, problems = check_breach_policy(folder, runtime.policy)
    said = {(p.path, p.message) for p in problems}
    assert (
        "clock.california.notice_deadline",
        "use days, hours or minutes: months and years have no fixed length",
    ) in said
    edit_yaml(folder / "breach.yaml", lambda d: d["clock"]["california"].update(notice_deadline="P30D"))
    _, problems = check_breach_policy(folder, runtime.policy)
    assert sorted((p.path, p.message) for p in problems) == [
        ("clock.california.reminders[0]", "a reminder must come before the deadline"),
        ("clock.california.reminders[1]", "a reminder must come before the deadline"),
        ("clock.california.reminders[1]", "listed twice"),
        ("clock.california.reminders[2]", "must be longer than zero"),
    ]
    edit_yaml(folder / "breach.yaml", lambda d: d["clock"].pop("california"))
    rules, problems = check_breach_policy(folder, runtime.policy)
    assert problems == []
    assert rules is not None
    assert rules.california_deadline is None
    assert rules.california_reminders == []


async def test_closing_does_not_end_the_california_duty_without_a_notice_or_a_justification(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    # §1798.82 has no risk threshold: a low-risk GDPR assessment (no Art. 33/34 duty) still owes Californians
    # a notice of readable data that was acquired; closing would otherwise stop the clock silently.
    start = start_time()
    with time_machine.travel(start, tick=False) as traveller:
        breach = await create(client, auth, categories=["user.device"], malicious=False, exfiltration_known=False)
        unreadable = await create(client, auth, encrypted=True, key_compromised=False)
        low = await assess(client, auth, breach["id"], recipient={"trust": "untrusted", "data": "returned_or_deleted"})
        assert low["decisions"]["notify_authority"]["value"] is False
        assert low["open_duties"] == ["california_notice"]
        refused = await client.post(f"/v1/breaches/{breach['id']}/close", json={}, headers=auth)
        assert refused.status_code == 409, refused.text
        assert refused.json()["open_duties"] == ["california_notice"]
        assert (await client.get(f"/v1/breaches/{breach['id']}", headers=auth)).json()["status"] == "assessed"

        too_short = await client.post(
            f"/v1/breaches/{breach['id']}/close", json={"california_not_required": "no"}, headers=auth
        )
        assert too_short.status_code == 400

        # Encrypted with the key safe: nothing readable was acquired, so no California duty.
        assert "california_notice" not in (await assess(client, auth, unreadable["id"]))["open_duties"]

        traveller.move_to(start + timedelta(days=3))
        why = "Every affected account is registered in Ireland; no California resident is affected."
        closed = await client.post(
            f"/v1/breaches/{breach['id']}/close",
            json={"note": "Device list sent to a partner by mistake.", "california_not_required": why},
            headers=auth,
        )
        assert closed.status_code == 200, closed.text
        assert closed.json()["open_duties"] == []
        assert closed.json()["closing_note"].endswith(why)
        assert closed.json()["closing_note"].startswith("Device list sent to a partner by mistake.")
        traveller.move_to(start + timedelta(days=31))
        assert await remind(runtime) == (0, 0)
    close = [e for e in await rows(runtime, "audit_events") if e["action"] == "breach.close"]
    details = [e["detail"] if isinstance(e["detail"], dict) else json.loads(e["detail"]) for e in close]
    assert [detail["california_not_required"] for detail in details] == [True]
    assert why not in str(close)  # free text stays out of the audit log


async def test_a_policy_without_the_california_clock_owes_no_california_notice(
    runtime: Runtime, tmp_path: Path
) -> None:
    from privacy_service.breaches.closing import california_notice_owed
    from privacy_service.breaches.models import Breach

    shipped = load_breach_policy(runtime.settings.policy_dir, runtime.policy)
    policy_dir = copy_policies(tmp_path)
    edit_yaml(policy_dir / "breach.yaml", lambda doc: doc["clock"].pop("california"))
    without = load_breach_policy(policy_dir, runtime.policy)
    breach = Breach(title="t", description="d", nature=["confidentiality"], status="assessed")
    assert california_notice_owed(shipped, breach)
    assert not california_notice_owed(without, breach)
    base: dict[str, Any] = {"title": "t", "description": "d", "nature": ["confidentiality"], "status": "assessed"}
    for told in (
        {"subject_notice": {"requested_at": "2026-01-01T00:00:00+00:00"}},
        {"public_notice": {"published_at": "2026-01-01T00:00:00+00:00"}},
        {"encrypted": True, "key_compromised": False},
        {"nature": ["availability"]},
    ):
        assert not california_notice_owed(shipped, Breach(**{**base, **told})), told
    assert california_notice_owed(
        shipped,
        Breach(
            title="t",
            description="d",
            nature=["confidentiality"],
            status="assessed",
            encrypted=True,
            key_compromised=True,
        ),
    )

"""The 72-hour clock, travelled through: reminders at the marks over SMTP, overdue, the late-reason rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine
from httpx import AsyncClient

from privacy_service.breaches.jobs import remind_deadlines
from privacy_service.breaches.policy import BreachPolicy, load_breach_policy
from privacy_service.runtime import Runtime
from tests.breach_support import BREACH_TEAM, assess, create, deliver_all
from tests.conftest import MailSink


def rules_of(runtime: Runtime) -> BreachPolicy:
    return load_breach_policy(runtime.settings.policy_dir, runtime.policy)


def start_time() -> datetime:
    return (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)


async def remind(runtime: Runtime) -> tuple[int, int]:
    result = await remind_deadlines(runtime.db, runtime.clock, rules_of(runtime))
    return result.reminded, result.overdue


async def test_reminders_at_the_marks_then_overdue_then_a_late_notice_needs_reasons(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    start = start_time()
    with time_machine.travel(start, tick=False) as traveller:
        breach = await create(client, auth)
        assert datetime.fromisoformat(breach["aware_at"]) == start
        clock = breach["clock"]
        assert datetime.fromisoformat(clock["authority_deadline"]) == start + timedelta(hours=72)
        assert (clock["state"], clock["seconds_left"], clock["time_left"]) == ("running", 72 * 3600, "72h 00m")
        assert await remind(runtime) == (0, 0)

        traveller.move_to(start + timedelta(hours=47, minutes=59))
        assert await remind(runtime) == (0, 0)

        traveller.move_to(start + timedelta(hours=48))
        assert await remind(runtime) == (1, 0)
        await deliver_all(runtime)
        first = mail.to(BREACH_TEAM)
        assert len(first) == 1
        assert (
            str(first[0]["Subject"]) == f"Breach {breach['id'][:8]}: 24h 00m left to notify the supervisory authority"
        )
        assert "has not been assessed yet" in first[0].get_content()
        assert await remind(runtime) == (0, 0)  # once per mark

        traveller.move_to(start + timedelta(hours=66, minutes=30))
        await assess(client, auth, breach["id"])
        assert await remind(runtime) == (1, 0)
        await deliver_all(runtime)
        second = mail.to(BREACH_TEAM)[-1]
        assert "5h 30m left" in str(second["Subject"])
        assert "reminder at PT6H" in second.get_content()

        traveller.move_to(start + timedelta(hours=72, minutes=1))
        assert await remind(runtime) == (0, 1)
        await deliver_all(runtime)
        overdue = mail.to(BREACH_TEAM)[-1]
        assert str(overdue["Subject"]).strip().startswith("OVERDUE: breach")
        assert "overdue by 0h 01m" in overdue.get_content()
        assert await remind(runtime) == (0, 0)
        view = (await client.get(f"/v1/breaches/{breach['id']}", headers=auth)).json()
        assert view["clock"]["state"] == "overdue"
        assert view["clock"]["time_left"] == "overdue by 0h 01m"
        assert view["clock"]["reminders_sent"] == ["PT24H", "PT6H", "overdue"]

        url = f"/v1/breaches/{breach['id']}/authority-notification"
        late = await client.post(url, json={"recipient": "DPC web form"}, headers=auth)
        assert late.status_code == 422
        assert late.json()["type"] == "/problems/late-notification-reason-required"
        unchanged = (await client.get(f"/v1/breaches/{breach['id']}", headers=auth)).json()
        assert unchanged["authority_notifications"] == []
        assert unchanged["version"] == view["version"]

        reason = "Forensics could only confirm which customers were affected on day 3."
        notified = await client.post(url, json={"recipient": "DPC web form", "reason_for_delay": reason}, headers=auth)
        assert notified.status_code == 201, notified.text
        assert notified.json()["late"] is True
        assert notified.json()["content"]["notice"]["reasons_for_delay"] == reason
        html = await client.get(notified.json()["documents"]["en"]["html"], headers=auth)
        assert "Reasons for the delay (Art. 33(1))" in html.text
        assert reason in html.text
        after = (await client.get(f"/v1/breaches/{breach['id']}", headers=auth)).json()
        assert after["clock"]["state"] == "met_late"
        # Follow-ups (Art. 33(4)) do not reopen the question of delay.
        follow_up = await client.post(url, json={"recipient": "DPC case officer"}, headers=auth)
        assert follow_up.status_code == 201
        assert follow_up.json()["late"] is False

        traveller.move_to(start + timedelta(hours=100))
        assert await remind(runtime) == (0, 0)  # notified: the clock has stopped


async def test_notice_sent_in_time_but_recorded_later_is_not_late(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    start = start_time()
    with time_machine.travel(start, tick=False) as traveller:
        aware = start - timedelta(hours=10)
        breach = await create(client, auth, aware_at=aware.isoformat())
        assert datetime.fromisoformat(breach["clock"]["authority_deadline"]) == aware + timedelta(hours=72)
        await assess(client, auth, breach["id"])
        traveller.move_to(start + timedelta(hours=70))
        sent_at = aware + timedelta(hours=71)
        response = await client.post(
            f"/v1/breaches/{breach['id']}/authority-notification",
            json={"recipient": "dpc@example.ie", "sent_at": sent_at.isoformat()},
            headers=auth,
        )
        assert response.status_code == 201
        assert response.json()["late"] is False
        before_awareness = await client.post(
            f"/v1/breaches/{breach['id']}/authority-notification",
            json={"recipient": "x", "sent_at": (aware - timedelta(hours=1)).isoformat()},
            headers=auth,
        )
        assert before_awareness.status_code == 422


async def test_a_worker_that_was_down_sends_one_reminder_for_all_passed_marks(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    start = start_time()
    with time_machine.travel(start, tick=False) as traveller:
        breach = await create(client, auth)
        traveller.move_to(start + timedelta(hours=70))
        assert await remind(runtime) == (1, 0)
        await deliver_all(runtime)
        assert len(mail.to(BREACH_TEAM)) == 1
        view = (await client.get(f"/v1/breaches/{breach['id']}", headers=auth)).json()
        assert view["clock"]["reminders_sent"] == ["PT24H", "PT6H"]


async def test_no_reminders_when_the_authority_need_not_be_told(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    start = start_time()
    with time_machine.travel(start, tick=False) as traveller:
        breach = await create(client, auth, categories=["user.device"], malicious=False, exfiltration_known=False)
        low = await assess(client, auth, breach["id"], recipient={"trust": "untrusted", "data": "returned_or_deleted"})
        assert low["decisions"]["notify_authority"]["value"] is False
        traveller.move_to(start + timedelta(hours=80))
        assert await remind(runtime) == (0, 0)
        # Art. 33 owes nothing, but California's notice (no risk threshold) must be given or justified away.
        refused = await client.post(f"/v1/breaches/{breach['id']}/close", json={}, headers=auth)
        assert refused.json()["open_duties"] == ["california_notice"]
        why = {"california_not_required": "No California resident is among the affected people."}
        assert (await client.post(f"/v1/breaches/{breach['id']}/close", json=why, headers=auth)).status_code == 200

"""Monitoring the audit trail: bulk reads, failed decryptions and failed operator logins open drafts."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from privacy_service.app import create_app
from privacy_service.breaches.jobs import MonitorResult, monitor_audit
from privacy_service.breaches.policy import load_breach_policy
from privacy_service.runtime import Runtime
from privacy_service.subjects.models import Subject
from tests.breach_support import BREACH_TEAM, deliver_all, make_subjects, runtime_for
from tests.conftest import MailSink, _empty_postgres, make_operator_key

THRESHOLDS = {
    "breach_monitor_read_subjects": 5,
    "breach_monitor_read_minutes": 10,
    "breach_monitor_integrity_failures": 3,
    "breach_monitor_integrity_minutes": 60,
    "breach_monitor_auth_failures": 4,
    "breach_monitor_auth_minutes": 5,
}


@pytest.fixture
async def monitored(make_settings: Any, backend: str) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    settings = make_settings(**THRESHOLDS)
    if backend == "postgres":
        await _empty_postgres(settings.database_url)
    async with runtime_for(settings) as runtime:
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, runtime


async def monitor(runtime: Runtime) -> MonitorResult:
    rules = load_breach_policy(runtime.settings.policy_dir, runtime.policy)
    return await monitor_audit(runtime.db, runtime.keys, runtime.clock, runtime.settings, runtime.policy, rules)


async def audit_events(runtime: Runtime, action: str) -> list[dict[str, Any]]:
    async with runtime.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT actor_type, actor_id, subject_id, outcome, detail FROM audit_events WHERE action = :a"),
                {"a": action},
            )
        ).all()
    events = [dict(row._mapping) for row in rows]
    for event in events:
        if isinstance(event["detail"], str):
            event["detail"] = json.loads(event["detail"])
    return events


async def test_one_operator_reading_too_many_subjects_opens_one_draft(
    monitored: tuple[httpx.AsyncClient, Runtime], mail: MailSink
) -> None:
    client, runtime = monitored
    ids = await make_subjects(runtime, 6, domain="bulk.example")
    careful = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
    for subject_id in ids[:5]:  # exactly the threshold: not more than 5
        assert (await client.get(f"/v1/subjects/{subject_id}", headers=careful)).status_code == 200
    assert (await monitor(runtime)).opened == []

    greedy_key = await make_operator_key(runtime)
    greedy = {"Authorization": f"Bearer {greedy_key}"}
    for subject_id in ids:
        assert (await client.get(f"/v1/subjects/{subject_id}", headers=greedy)).status_code == 200
        assert (await client.get(f"/v1/subjects/{subject_id}", headers=greedy)).status_code == 200  # twice: distinct
    result = await monitor(runtime)
    assert len(result.opened) == 1
    assert result.signals[0].startswith("bulk_read:")
    assert (await monitor(runtime)).opened == []  # one draft per signal per cooldown

    auth = greedy
    draft = (await client.get(f"/v1/breaches/{result.opened[0]}", headers=auth)).json()
    assert draft["status"] == "draft"
    assert draft["source"] == "monitoring"
    assert draft["clock"]["state"] == "not_started"
    assert draft["open_duties"] == ["review"]
    assert draft["affected"] == {"kind": "subjects", "count": 6, "selector": None}
    assert "read the personal data of 6 distinct subjects" in draft["description"]
    await deliver_all(runtime)
    alert = mail.to(BREACH_TEAM)
    assert len(alert) == 1
    assert str(alert[0]["Subject"]).startswith("Possible breach detected")

    confirmed = await client.post(f"/v1/breaches/{draft['id']}/confirm", json={}, headers=auth)
    assert confirmed.status_code == 200
    assert confirmed.json()["status"] == "open"
    assert confirmed.json()["clock"]["state"] == "running"
    assert (await client.post(f"/v1/breaches/{draft['id']}/confirm", json={}, headers=auth)).status_code == 409


async def test_repeated_failed_decryptions_open_a_draft_even_though_the_requests_failed(
    monitored: tuple[httpx.AsyncClient, Runtime],
) -> None:
    client, runtime = monitored
    auth = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
    ids = await make_subjects(runtime, 3, domain="tamper.example")
    async with runtime.db.transaction() as session:
        for subject_id in ids:
            subject = await session.get(Subject, subject_id)
            assert subject is not None
            assert subject.email_ct is not None
            subject.email_ct = subject.email_ct[:-1] + bytes([subject.email_ct[-1] ^ 0x01])
            session.add(subject)

    for subject_id in ids[:2]:
        response = await client.get(f"/v1/subjects/{subject_id}", headers=auth)
        assert response.status_code == 500
        assert response.json()["type"] == "/problems/data-integrity"
    failures = await audit_events(runtime, "integrity.failure")
    assert len(failures) == 2
    assert {f["outcome"] for f in failures} == {"failed"}
    assert {str(f["subject_id"]).replace("-", "") for f in failures} == {i.hex for i in ids[:2]}
    assert (await monitor(runtime)).opened == []  # 2 < 3

    assert (await client.get(f"/v1/subjects/{ids[2]}", headers=auth)).status_code == 500
    result = await monitor(runtime)
    assert result.signals == ["integrity"]
    draft = (await client.get(f"/v1/breaches/{result.opened[0]}", headers=auth)).json()
    assert draft["affected"]["count"] == 3
    assert "failed its integrity check 3 times" in draft["description"]
    dismissed = await client.post(
        f"/v1/breaches/{draft['id']}/dismiss", json={"reason": "A test fixture altered the rows."}, headers=auth
    )
    assert dismissed.status_code == 200
    assert dismissed.json()["status"] == "dismissed"
    register = (await client.get("/v1/breaches", params={"status": "dismissed"}, headers=auth)).json()
    assert [item["id"] for item in register["items"]] == [draft["id"]]


async def test_a_burst_of_rejected_operator_keys_opens_a_draft(monitored: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, runtime = monitored
    guessed = f"psk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    for key in (guessed, guessed, "not-a-key"):
        response = await client.get("/v1/breaches", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 401
    assert (await monitor(runtime)).opened == []  # 3 < 4
    # Aggregated per client address: rows at its 1st, 2nd, 4th, 8th... rejection, each with the count since.
    events = await audit_events(runtime, "operator.auth_failed")
    one = {"attempts": 1, "throttled": 0, "malformed": 0, "key_ids": [guessed[4:16]]}
    assert [e["detail"] for e in events] == [one, one]
    assert all(guessed not in str(event) and guessed[17:] not in str(event) for event in events)
    assert {e["actor_type"] for e in events} == {"client"}
    assert "127.0.0.1" not in str(events)  # the address only as a keyed pseudonym

    assert (await client.get("/v1/subjects", headers={"Authorization": "Bearer psk_x"})).status_code == 401
    events = await audit_events(runtime, "operator.auth_failed")
    assert events[-1]["detail"] == {"attempts": 2, "throttled": 0, "malformed": 2, "key_ids": []}
    result = await monitor(runtime)
    assert result.signals == ["auth_failures"]
    auth = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
    draft = (await client.get(f"/v1/breaches/{result.opened[0]}", headers=auth)).json()
    assert draft["affected"] == {"kind": "estimate", "count": 0, "selector": None}
    assert "4 requests presented an unknown, revoked or wrong operator key" in draft["description"]

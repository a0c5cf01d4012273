"""The downstream-system registry and the signed callback endpoint, on SQLite and PostgreSQL.

Callbacks: unsigned, wrongly signed, stale or replayed answers are refused (401/409); a request with
two required systems completes only after both answered, and its export holds their data by system.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import text

from privacy_service.config import Settings
from privacy_service.dsr.jobs import send_digest
from privacy_service.runtime import Runtime, build_runtime
from tests.api.dsr_support import assert_problem, bearer, deliver, fresh_settings, submit_and_verify
from tests.conftest import MailSink, make_operator_key
from tests.integration.systems_support import (
    CUSTOMER_EMAIL,
    HookReceiver,
    OffsetClock,
    answer,
    make_customer,
    register,
    signed,
)
from tests.integration.systems_support import deliver as deliver_webhooks

UNUSED_URL = "http://127.0.0.1:9/hooks"


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    # Receivers here listen on 127.0.0.1: a development set-up (tests/security/test_ssrf.py covers the default).
    return await fresh_settings(make_settings, backend, systems_allow_private_networks=True)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """The app's clock can travel (overdue systems, the digest)."""
    rt = build_runtime(settings, clock=OffsetClock())
    yield rt
    await rt.close()


async def callback_urls(client: AsyncClient, auth: dict[str, str], systems: list[dict[str, Any]]) -> list[str]:
    """Each system's callback path, read from its delivery log."""
    urls = []
    for system in systems:
        page = (await client.get(f"/v1/systems/{system['system']['id']}/deliveries", headers=auth)).json()
        urls.append(f"/v1/systems/callbacks/{page['items'][-1]['id']}")
    return urls


# -- registry ------------------------------------------------------------------------------------


async def test_register_list_and_remove(client: AsyncClient, auth: dict[str, str]) -> None:
    created = await register(client, auth, "https://crm.example/privacy", identities=("email", "phone_sha256"))
    system = created["system"]
    assert created["signing_key"].startswith("pss_")
    assert system["key_id"].startswith("sk_")
    assert system["required"] is True
    assert system["identities"] == ["email", "phone_sha256"]
    listed = (await client.get("/v1/systems", headers=auth)).json()["items"]
    assert [s["name"] for s in listed] == ["crm"]
    assert created["signing_key"] not in json.dumps(listed)
    one = await client.get(f"/v1/systems/{system['id']}", headers=auth)
    assert one.json()["key_id"] == system["key_id"]
    assert "signing_key" not in one.json()
    assert_problem(await client.post("/v1/systems", json=_body("crm"), headers=auth), 409, "conflict")
    removed = await client.delete(f"/v1/systems/{system['id']}", headers=auth)
    assert removed.status_code == 200, removed.text
    assert (await client.get("/v1/systems", headers=auth)).json()["items"] == []
    assert len((await client.get("/v1/systems?include_removed=true", headers=auth)).json()["items"]) == 1
    assert_problem(await client.delete(f"/v1/systems/{system['id']}", headers=auth), 410, "gone")
    # The name is free again once removed.
    assert (await client.post("/v1/systems", json=_body("crm"), headers=auth)).status_code == 201


def _body(name: str, **changes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "callback_url": "https://crm.example/privacy",
        "request_types": ["access"],
        "categories": ["user.name"],
        **changes,
    }


@pytest.mark.parametrize(
    ("changes", "status", "slug"),
    [
        ({"categories": ["user.name", "user.not_a_category_at_all"]}, 422, "invalid-input"),
        ({"callback_url": "http://crm.example/privacy"}, 422, "invalid-input"),
        ({"callback_url": "ftp://crm.example/privacy"}, 422, "invalid-input"),
        ({"callback_url": "https://user:secret@crm.example/x"}, 422, "invalid-input"),
        ({"request_types": ["delete_everything"]}, 400, "validation-error"),
        ({"identities": ["passport"]}, 400, "validation-error"),
        ({"timeout_seconds": 600}, 400, "validation-error"),
        ({"signing_key": "mine"}, 400, "validation-error"),
    ],
)
async def test_invalid_registrations_are_refused_without_echo(
    client: AsyncClient, auth: dict[str, str], changes: dict[str, Any], status: int, slug: str
) -> None:
    response = await client.post("/v1/systems", json=_body("crm", **changes), headers=auth)
    problem = assert_problem(response, status, slug)
    assert "not_a_category_at_all" not in json.dumps(problem)
    assert "secret@" not in json.dumps(problem)


async def test_plain_http_is_accepted_to_loopback(client: AsyncClient, auth: dict[str, str]) -> None:
    assert (await client.post("/v1/systems", json=_body("a", callback_url=UNUSED_URL), headers=auth)).status_code == 201
    assert (
        await client.post("/v1/systems", json=_body("b", callback_url="http://[::1]:9/x"), headers=auth)
    ).status_code == 201


async def test_the_registry_needs_the_systems_scope(client: AsyncClient, runtime: Runtime) -> None:
    key = await make_operator_key(runtime, frozenset({"requests:manage"}))
    assert_problem(await client.get("/v1/systems", headers=bearer(key)), 403, "forbidden")
    assert_problem(await client.get("/v1/systems"), 401, "unauthenticated")


# -- callbacks -----------------------------------------------------------------------------------


async def _waiting_access_request(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink, names: tuple[str, ...] = ("crm",)
) -> tuple[str, list[dict[str, Any]], list[str]]:
    systems = [await register(client, auth, UNUSED_URL, name=name) for name in names]
    await make_customer(client, auth)
    request_id, verified = await submit_and_verify(client, runtime, mail, CUSTOMER_EMAIL, "access")
    assert verified["status"] == "processing"
    return request_id, systems, await callback_urls(client, auth, systems)


async def test_unsigned_wrong_stale_and_replayed_callbacks_are_refused(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    request_id, [system], [url] = await _waiting_access_request(client, auth, runtime, mail)
    raw = json.dumps({"request_status": "in_progress"}).encode()
    key, key_id = system["signing_key"], system["system"]["key_id"]

    unsigned = await client.post(url, content=raw, headers={"Content-Type": "application/json"})
    assert_problem(unsigned, 401, "invalid-signature")
    wrong_key = await client.post(url, content=raw, headers=signed("pss_guess", key_id, raw))
    assert_problem(wrong_key, 401, "invalid-signature")
    other_key_id = await client.post(url, content=raw, headers=signed(key, "sk_0000000000000000", raw))
    assert_problem(other_key_id, 401, "invalid-signature")
    stale = await client.post(url, content=raw, headers=signed(key, key_id, raw, at=time.time() - 3600))
    assert_problem(stale, 401, "invalid-signature")
    tampered_headers = signed(key, key_id, raw)
    tampered = await client.post(url, content=raw.replace(b"in_progress", b"completed"), headers=tampered_headers)
    assert_problem(tampered, 401, "invalid-signature")

    headers = signed(key, key_id, raw)
    accepted = await client.post(url, content=raw, headers=headers)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {
        "delivery_id": url.rsplit("/", 1)[1],
        "request_status": "in_progress",
        "request": "processing",
    }
    replayed = await client.post(url, content=raw, headers=headers)
    assert_problem(replayed, 409, "replayed-callback")
    # Nothing the refused callbacks said was taken.
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["status"] == "processing"
    assert view["systems"][0]["answer"] == "in_progress"


async def test_answers_follow_their_own_state_machine(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    _, [system], [url] = await _waiting_access_request(client, auth, runtime, mail)
    bad = await answer(client, system, url, {"request_status": "failed", "data": {"x": 1}})
    assert_problem(bad, 422, "invalid-input")
    unknown = await answer(client, system, url, {"request_status": "finished"})
    problem = assert_problem(unknown, 422, "invalid-input")
    assert "finished" not in json.dumps(problem)
    wrong_request = await answer(
        client,
        system,
        url,
        {"request_status": "completed", "subject_request_id": "00000000-0000-4000-8000-000000000000"},
    )
    assert_problem(wrong_request, 422, "invalid-input")
    assert (
        await answer(client, system, url, {"request_status": "failed", "reason": "customer locked"})
    ).status_code == 202
    again = await answer(client, system, url, {"request_status": "completed"})
    assert_problem(again, 409, "answer-not-allowed")
    assert_problem(
        await answer(
            client,
            system,
            "/v1/systems/callbacks/00000000-0000-4000-8000-000000000000",
            {"request_status": "completed"},
        ),
        404,
        "not-found",
    )


async def test_request_completes_only_after_both_required_systems_answered(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    request_id, systems, urls = await _waiting_access_request(client, auth, runtime, mail, names=("crm", "ticketing"))
    crm_data = {"segments": ["premium"], "notes": ["called 2026-01-04"]}
    tickets = [{"id": "T-1", "subject": "card blocked"}]
    first = await answer(client, systems[0], urls[0], {"request_status": "completed", "data": crm_data})
    assert first.status_code == 202
    assert first.json()["request"] == "processing"
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["status"] == "processing"
    assert view["export_url"] is None
    assert {s["system"]: s["answer"] for s in view["systems"]} == {"crm": "completed", "ticketing": None}
    assert_problem(await client.get(f"/v1/requests/{request_id}/export", headers=auth), 409, "conflict")

    second = await answer(client, systems[1], urls[1], {"request_status": "completed", "data": tickets})
    assert second.status_code == 202
    assert second.json()["request"] == "completed"
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["status"] == "completed"
    assert [s["answer"] for s in view["result"]["systems"]] == ["completed", "completed"]
    assert view["history"][-1]["actor_type"] == "downstream"
    export = await client.get(view["export_url"], headers=auth)
    assert export.status_code == 200, export.text
    by_system = {item["system"]: item["data"] for item in export.json()["systems"]}
    assert by_system == {"crm": crm_data, "ticketing": tickets}
    assert [r["data"]["reference"] for r in export.json()["records"]] == ["TX-1"]
    archive = await client.get(view["export_url"], params={"format": "zip"}, headers=auth)
    assert archive.status_code == 200
    # The completion mail went out once every system had answered.
    await deliver(runtime)
    assert any("complete" in m["Subject"].lower() for m in mail.to(CUSTOMER_EMAIL))


async def test_returned_data_is_sealed_under_the_subjects_key(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    _, [system], [url] = await _waiting_access_request(client, auth, runtime, mail)
    marker = "MARKER-7731-downstream"
    assert (
        await answer(client, system, url, {"request_status": "completed", "data": {"m": marker}})
    ).status_code == 202
    async with runtime.db.engine.connect() as conn:
        blobs = (await conn.execute(text("SELECT data_ct FROM system_data"))).scalars().all()
    assert len(blobs) == 1
    assert marker.encode() not in blobs[0]


async def test_a_failed_required_system_makes_the_answer_partial(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    request_id, [system], [url] = await _waiting_access_request(client, auth, runtime, mail)
    assert (await answer(client, system, url, {"request_status": "failed", "reason": "locked"})).status_code == 202
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["status"] == "partially_completed"
    assert view["export_url"] is not None  # what the vault holds is still available


async def test_optional_systems_do_not_hold_the_request_back(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    optional = await register(client, auth, UNUSED_URL, name="marketing", required=False)
    await make_customer(client, auth)
    request_id, verified = await submit_and_verify(client, runtime, mail, CUSTOMER_EMAIL, "access")
    assert verified["status"] == "completed"
    [url] = await callback_urls(client, auth, [optional])
    assert (
        await answer(client, optional, url, {"request_status": "completed", "data": {"late": True}})
    ).status_code == 202
    export = (await client.get(f"/v1/requests/{request_id}/export", headers=auth)).json()
    assert export["systems"] == [
        {"system": "marketing", "received_at": export["systems"][0]["received_at"], "data": {"late": True}}
    ]


async def test_removing_a_system_releases_the_requests_waiting_for_it(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    request_id, [system], [url] = await _waiting_access_request(client, auth, runtime, mail)
    removed = await client.delete(f"/v1/systems/{system['system']['id']}", headers=auth)
    assert removed.json()["cancelled_deliveries"] == 1
    assert removed.json()["completed_requests"] == 1
    assert (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()["status"] == "completed"
    assert_problem(await answer(client, system, url, {"request_status": "completed"}), 410, "gone")


async def test_erasure_sends_the_identities_it_had_before_the_vault_erased_them(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    with HookReceiver().running() as receiver:
        system = await register(client, auth, receiver.url, types=("erase",))
        subject_id = await make_customer(client, auth)
        request_id, _ = await submit_and_verify(client, runtime, mail, CUSTOMER_EMAIL, "erase")
        approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
        assert approved.json()["status"] == "processing"
        assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).status_code == 410
        assert (await deliver_webhooks(runtime)).delivered == 1
    body = receiver.received[0].json
    assert body["subject_request_type"] == "erasure"
    assert body["subject_identities"] == [
        {"identity_type": "email", "identity_value": CUSTOMER_EMAIL, "identity_format": "raw"}
    ]
    assert (
        await answer(client, system, body["status_callback_url"], {"request_status": "completed"})
    ).status_code == 202
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["status"] == "partially_completed"  # the vault kept AML records: still partial
    assert view["result"]["kept"]


async def test_rectification_reaches_only_systems_holding_a_changed_category(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    with HookReceiver().running() as receiver:
        await register(client, auth, receiver.url, name="crm", categories=("user.name",))
        await register(client, auth, receiver.url, name="kyc", categories=("user.government_id",))
        await make_customer(client, auth)
        request_id, verified = await submit_and_verify(
            client, runtime, mail, CUSTOMER_EMAIL, "rectify", changes={"profile": {"name": "Dana D. Downstream"}}
        )
        assert verified["status"] == "awaiting_review"  # a name: an operator reviews the correction
        approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
        assert approved.json()["status"] == "processing", approved.text
        assert (await deliver_webhooks(runtime)).delivered == 1
    [hit] = receiver.received
    extension = hit.json["extensions"]["privacy-service"]
    assert hit.json["subject_request_type"] == "rectification"
    assert extension["system"] == "crm"
    assert extension["changes"] == {"profile": {"name": "Dana D. Downstream"}}


async def test_overdue_systems_are_escalated_in_the_digest_and_shown_on_the_request(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    request_id, _, _ = await _waiting_access_request(client, auth, runtime, mail, names=("ticketing",))
    assert isinstance(runtime.clock, OffsetClock)
    runtime.clock.travel(timedelta(days=8))
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["systems"][0]["overdue"] is True
    assert view["overdue"] is False
    mail.clear()
    await send_digest(runtime.db, runtime.clock, runtime.settings)
    await send_digest(runtime.db, runtime.clock, runtime.settings)
    await deliver(runtime)
    digests = mail.to(runtime.settings.operator_email)
    assert len(digests) == 2
    body = digests[0].get_content()
    assert "ticketing" in body
    assert request_id in body
    assert CUSTOMER_EMAIL not in body
    async with runtime.db.engine.connect() as conn:
        escalations = (
            await conn.execute(text("SELECT count(*) FROM audit_events WHERE action = 'systems.escalated'"))
        ).scalar_one()
    assert escalations == 1  # escalated once, listed in every digest until answered


async def test_purging_a_request_takes_its_deliveries_log_and_returned_data(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    _request_id, [system], [url] = await _waiting_access_request(client, auth, runtime, mail)
    assert (await answer(client, system, url, {"request_status": "in_progress"})).status_code == 202
    tables = ("system_deliveries", "system_fanouts", "system_data", "system_delivery_attempts")
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO system_delivery_attempts (delivery_id, system_id, attempt, at, outcome, duration_ms) "
                "SELECT id, system_id, 1, created_at, 'delivered', 1.0 FROM system_deliveries"
            )
        )
        # What a retention purge of old requests does (the foreign keys cascade).
        await conn.execute(text("DELETE FROM dsr_transitions"))
        await conn.execute(text("DELETE FROM dsr_requests"))
    async with runtime.db.engine.connect() as conn:
        for table in tables:
            assert (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one() == 0, table  # noqa: S608

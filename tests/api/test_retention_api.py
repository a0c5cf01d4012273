"""Legal holds and purge runs over HTTP, on both databases: the happy paths, erasure refused under a
hold (vault DELETE and the DSR erasure), and bad input answered as problem+json that changes nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from httpx import AsyncClient

from privacy_service.retention.locks import try_acquire
from privacy_service.runtime import Runtime
from tests.api.dsr_support import assert_problem, deliver, make_subject, submit_and_verify
from tests.conftest import MailSink, make_operator_key
from tests.retention_support import NOW, add_record, add_subject, count_rows, years

REASON = "Litigation hold: matter Zebedee-Quux 2031/77"


async def _hold_rows(runtime: Runtime) -> int:
    return await count_rows(runtime, "legal_holds")


async def test_hold_lifecycle_keeps_the_reason_sealed(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    subject_id = await make_subject(client, auth, email="held.person@example.com", profile={"name": "Held Person"})
    until = (runtime.clock.now() + timedelta(days=400)).isoformat()
    placed = await client.post(
        f"/v1/subjects/{subject_id}/holds", json={"reason": REASON, "until": until}, headers=auth
    )
    assert placed.status_code == 201, placed.text
    hold = placed.json()
    assert hold["reason"] == REASON
    assert hold["active"] is True
    assert hold["reason_readable"] is True
    assert hold["placed_by"]
    assert hold["released_at"] is None

    listed = await client.get(f"/v1/subjects/{subject_id}/holds", headers=auth)
    assert [item["id"] for item in listed.json()["items"]] == [hold["id"]]

    # The reason is operator free text: sealed at rest, never in the audit trail.
    async with runtime.db.engine.connect() as conn:
        from sqlalchemy import text

        stored = (await conn.execute(text("SELECT reason_ct FROM legal_holds"))).scalar_one()
        details = [str(row[0]) for row in await conn.execute(text("SELECT detail FROM audit_events"))]
    assert b"Zebedee" not in stored
    assert not any("Zebedee" in detail for detail in details)

    released = await client.delete(f"/v1/subjects/{subject_id}/holds/{hold['id']}", headers=auth)
    assert released.status_code == 200, released.text
    assert released.json()["active"] is False
    assert released.json()["released_at"]
    again = await client.delete(f"/v1/subjects/{subject_id}/holds/{hold['id']}", headers=auth)
    assert_problem(again, 409, "conflict")


async def test_a_held_subject_is_not_erased(client: AsyncClient, auth: dict[str, str]) -> None:
    subject_id = await make_subject(
        client, auth, email="kept.person@example.com", profile={"name": "Kept Person"}, records={"user.device": 2}
    )
    hold = (await client.post(f"/v1/subjects/{subject_id}/holds", json={"reason": REASON}, headers=auth)).json()

    refused = await client.delete(f"/v1/subjects/{subject_id}", headers=auth)
    report = assert_problem(refused, 409, "legal-hold")
    assert {item["category"] for item in report["kept"]} >= {"user.name", "user.contact.email", "user.device"}
    assert all(item["basis"].startswith("legal hold") and item["until"] is None for item in report["kept"])
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()["email"] == "kept.person@example.com"

    await client.delete(f"/v1/subjects/{subject_id}/holds/{hold['id']}", headers=auth)
    erased = await client.delete(f"/v1/subjects/{subject_id}", headers=auth)
    assert erased.json()["status"] == "restricted"  # the name stays under the AML duty, as for a request
    assert "user.device" in erased.json()["erased"]
    assert erased.json()["records_deleted"] == 2


async def test_dsr_erasure_of_a_held_subject_says_why_nothing_was_erased(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    email = "dsr.held@example.com"
    subject_id = await make_subject(client, auth, email=email, profile={"name": "Dsr Held"})
    await client.post(f"/v1/subjects/{subject_id}/holds", json={"reason": REASON}, headers=auth)
    request_id, _ = await submit_and_verify(client, runtime, mail, email, "erase")
    approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
    assert approved.status_code == 200, approved.text
    await deliver(runtime)
    status = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert status["status"] == "partially_completed"
    assert status["result"]["erased"] == []
    assert {k["category"] for k in status["result"]["kept"]} >= {"user.name", "user.contact.email"}
    assert all(k["basis"].startswith("legal hold") and k["until"] is None for k in status["result"]["kept"]), status[
        "result"
    ]
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).status_code == 200


HOLD_CASES: list[tuple[str, str, Any, int, str]] = [
    ("POST", "{id}", {}, 400, "validation-error"),
    ("POST", "{id}", {"reason": ""}, 400, "validation-error"),
    ("POST", "{id}", {"reason": "x" * 501}, 400, "validation-error"),
    ("POST", "{id}", {"reason": "   "}, 422, "invalid-input"),
    ("POST", "{id}", {"reason": REASON, "extra": 1}, 400, "validation-error"),
    ("POST", "{id}", {"reason": REASON, "until": "soon"}, 400, "validation-error"),
    ("POST", "{id}", {"reason": REASON, "until": "2031-01-01T00:00:00"}, 422, "invalid-input"),
    ("POST", "{id}", {"reason": REASON, "until": "2001-01-01T00:00:00Z"}, 422, "invalid-input"),
    ("POST", "{id}", {"reason": REASON, "until": "9999-01-01T00:00:00Z"}, 422, "invalid-input"),
    ("POST", "{missing}", {"reason": REASON}, 404, "not-found"),
    ("POST", "{erased}", {"reason": REASON}, 410, "gone"),
    ("DELETE", "{id}/holds/{missing}", None, 404, "not-found"),
    ("DELETE", "{other}/holds/{hold}", None, 404, "not-found"),
    ("GET", "{missing}", None, 404, "not-found"),
]


async def test_bad_hold_input_changes_nothing(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    ids = {
        "id": await make_subject(client, auth, email="bad.input@example.com", profile={"name": "Bad Input"}),
        "other": await make_subject(client, auth, email="other@example.com"),
        "erased": await make_subject(client, auth, email="erased@example.com"),
        "missing": str(uuid.uuid4()),
    }
    await client.delete(f"/v1/subjects/{ids['erased']}", headers=auth)
    ids["hold"] = (await client.post(f"/v1/subjects/{ids['id']}/holds", json={"reason": REASON}, headers=auth)).json()[
        "id"
    ]
    before = await _hold_rows(runtime)
    for method, template, body, status, slug in HOLD_CASES:
        path = "/v1/subjects/" + template.format(**ids)
        if "/holds" not in path:
            path += "/holds"
        response = await client.request(method, path, json=body, headers=auth)
        assert_problem(response, status, slug)
        assert "Zebedee" not in response.text, (method, template)
        assert await _hold_rows(runtime) == before, (method, template, body)

    reader = {"Authorization": f"Bearer {await make_operator_key(runtime, frozenset({'subjects:read'}))}"}
    forbidden = await client.post(f"/v1/subjects/{ids['id']}/holds", json={"reason": REASON}, headers=reader)
    assert_problem(forbidden, 403, "forbidden")
    anonymous = await client.post(f"/v1/subjects/{ids['id']}/holds", json={"reason": REASON})
    assert_problem(anonymous, 401, "unauthenticated")
    assert await _hold_rows(runtime) == before


async def test_runs_over_http(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    subject_id = await add_subject(runtime, created_at=NOW - years(3), profile={"name": "Run Person"})
    await add_record(runtime, subject_id, category="user.device", created_at=NOW - years(2))
    dry = await client.post("/v1/retention/runs", json={"dry_run": True, "now": NOW.isoformat()}, headers=auth)
    assert dry.status_code == 202, dry.text
    assert dry.json()["status"] == "running"
    assert dry.json()["dry_run"] is True
    # httpx's ASGI transport returns after the background task, so the run is finished here.
    report = (await client.get(f"/v1/retention/runs/{dry.json()['id']}", headers=auth)).json()
    assert report["status"] == "completed"
    assert report["dry_run"] is True
    assert report["requested_by"].startswith("operator:")
    device = next(r for r in report["report"]["rules"] if r["key"] == "records:user.device")
    assert device["counts"]["selected"] == 1
    assert device["counts"]["purged"] == 1

    real = await client.post("/v1/retention/runs", json={"now": NOW.isoformat()}, headers=auth)
    assert real.status_code == 202
    finished = (await client.get(f"/v1/retention/runs/{real.json()['id']}", headers=auth)).json()
    assert finished["status"] == "completed"
    assert finished["report"]["totals"]["purged"] == 1
    assert finished["report"] == {**finished["report"], "alerts": [], "would_refuse": False}

    page = (await client.get("/v1/retention/runs", params={"limit": 1}, headers=auth)).json()
    assert [item["id"] for item in page["items"]] == [real.json()["id"]]
    rest = (await client.get("/v1/retention/runs", params={"after": page["next_cursor"]}, headers=auth)).json()
    assert [item["id"] for item in rest["items"]] == [dry.json()["id"]]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        ({"dry_run": "yes"}, 400, "validation-error"),
        ({"unknown": True}, 400, "validation-error"),
        ({"batch_size": 0}, 400, "validation-error"),
        ({"now": "2099-01-01T00:00:00Z"}, 422, "invalid-input"),
        ({"now": "2025-01-01T00:00:00"}, 422, "invalid-input"),
    ],
)
async def test_bad_run_input_starts_nothing(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, body: dict[str, Any], status: int, slug: str
) -> None:
    response = await client.post("/v1/retention/runs", json=body, headers=auth)
    assert_problem(response, status, slug)
    assert await count_rows(runtime, "retention_runs") == 0


async def test_run_scope_missing_run_and_concurrent_run(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    reader = {"Authorization": f"Bearer {await make_operator_key(runtime, frozenset({'subjects:read'}))}"}
    assert_problem(await client.post("/v1/retention/runs", json={}, headers=reader), 403, "forbidden")
    assert_problem(await client.get("/v1/retention/runs", headers=reader), 403, "forbidden")
    assert_problem(await client.get(f"/v1/retention/runs/{uuid.uuid4()}", headers=auth), 404, "not-found")
    assert_problem(await client.get("/v1/retention/runs", params={"after": "nope"}, headers=auth), 422, "invalid-input")

    lock = await try_acquire(runtime.db)  # another process's run, as far as the API can tell
    assert lock is not None
    try:
        busy = await client.post("/v1/retention/runs", json={"dry_run": True}, headers=auth)
        problem = assert_problem(busy, 409, "retention-run-active")
        assert "another retention run is active" in problem["detail"]
    finally:
        await lock.release()
    assert await count_rows(runtime, "retention_runs") == 0

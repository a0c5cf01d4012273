"""Happy paths of the vault API on both databases."""

from __future__ import annotations

import uuid

from httpx import AsyncClient
from sqlalchemy import func
from sqlmodel import col, select

from privacy_service.audit.models import AuditEvent
from privacy_service.runtime import Runtime

SUBJECT = {
    "email": " Alice@Example.COM ",
    "phone": "+44 7911 123456",
    "external_id": "cust-0001",
    "language": "en",
    "profile": {"name": "Alice Liddell", "date_of_birth": "1990-01-02", "national_id": "AB123456C"},
}


async def test_create_read_lookup_patch_erase(client: AsyncClient, auth: dict[str, str]) -> None:
    created = await client.post("/v1/subjects", json=SUBJECT, headers=auth)
    assert created.status_code == 201, created.text
    subject_id = created.json()["id"]

    read = await client.get(f"/v1/subjects/{subject_id}", headers=auth)
    assert read.status_code == 200
    body = read.json()
    assert body["email"] == "alice@example.com"
    assert body["phone"] == "+447911123456"
    assert body["profile"]["national_id"] == "AB123456C"
    assert body["profile_categories"]["national_id"] == "user.government_id"

    found = await client.post("/v1/subjects/lookup", json={"email": "ALICE@example.com"}, headers=auth)
    assert [item["id"] for item in found.json()["items"]] == [subject_id]
    by_phone = await client.get("/v1/subjects", params={"phone": "+447911123456"}, headers=auth)
    assert [item["id"] for item in by_phone.json()["items"]] == [subject_id]

    patched = await client.patch(
        f"/v1/subjects/{subject_id}", json={"phone": None, "profile": {"name": "Alice L."}}, headers=auth
    )
    assert patched.status_code == 200
    assert patched.json()["phone"] is None
    assert patched.json()["profile"]["name"] == "Alice L."
    assert (await client.get("/v1/subjects", params={"phone": "+447911123456"}, headers=auth)).json()["items"] == []

    record = await client.post(
        f"/v1/subjects/{subject_id}/records",
        json={
            "kind": "transaction",
            "category": "user.financial.transaction",
            "occurred_at": "2026-01-31T10:00:00Z",
            "data": {"amount": "12.50", "currency": "EUR", "reference": "TX-1"},
        },
        headers=auth,
    )
    assert record.status_code == 201
    records = await client.get(f"/v1/subjects/{subject_id}/records", headers=auth)
    assert records.json()["items"][0]["data"]["reference"] == "TX-1"

    erased = await client.delete(f"/v1/subjects/{subject_id}", headers=auth)
    assert erased.status_code == 200
    assert erased.json()["keys_destroyed"] == 1
    # The transaction and the national id are kept, restricted, under the AML duty (as an erasure request would).
    assert erased.json()["records_deleted"] == 0
    assert erased.json()["status"] == "restricted"
    assert {item["category"] for item in erased.json()["kept"]} >= {"user.financial.transaction", "user.government_id"}
    assert "user.contact.email" in erased.json()["erased"]
    again = await client.delete(f"/v1/subjects/{subject_id}", headers=auth)
    assert again.status_code == 200
    assert again.json()["already_erased"] is True
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).status_code == 410
    assert (await client.post("/v1/subjects/lookup", json={"email": "alice@example.com"}, headers=auth)).json()[
        "items"
    ] == []


async def test_events_set_lifecycle_dates(client: AsyncClient, auth: dict[str, str]) -> None:
    subject_id = (await client.post("/v1/subjects", json={"email": "bob@example.com"}, headers=auth)).json()["id"]
    closed = await client.post(
        f"/v1/subjects/{subject_id}/events", json={"type": "account_closed", "at": "2026-02-01T00:00:00Z"}, headers=auth
    )
    assert closed.status_code == 202
    body = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
    assert body["account_closed_at"] == "2026-02-01T00:00:00Z"


async def test_scopes_are_enforced(client: AsyncClient, runtime) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import make_operator_key

    reader = await make_operator_key(runtime, frozenset({"subjects:read"}))
    response = await client.post(
        "/v1/subjects", json={"email": "c@example.com"}, headers={"Authorization": f"Bearer {reader}"}
    )
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "subjects:write" in response.json()["detail"]
    missing = await client.get("/v1/subjects", params={"email": "c@example.com"})
    assert missing.status_code == 401
    wrong = await client.get(
        "/v1/subjects",
        params={"email": "c@example.com"},
        headers={"Authorization": "Bearer psk_aaaaaaaaaaaa_" + "b" * 43},
    )
    assert wrong.status_code == 401


async def test_operator_rate_limit_answers_429_with_retry_after(make_settings, backend: str) -> None:  # type: ignore[no-untyped-def]
    import httpx

    from privacy_service.app import create_app
    from privacy_service.runtime import build_runtime
    from tests.conftest import make_operator_key

    runtime = build_runtime(make_settings(rate_limits={"operator": "2/min burst 3"}))
    try:
        key = await make_operator_key(runtime)
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            headers = {"Authorization": f"Bearer {key}"}
            statuses = [
                (await client.get("/v1/subjects", params={"external_id": "x"}, headers=headers)).status_code
                for _ in range(4)
            ]
            assert statuses == [200, 200, 200, 429]
            last = await client.get("/v1/subjects", params={"external_id": "x"}, headers=headers)
            assert last.status_code == 429
            assert 1 <= int(last.headers["retry-after"]) <= 30
            assert last.headers["content-type"].startswith("application/problem+json")
    finally:
        await runtime.close()


async def test_deeply_nested_json_is_a_400_not_a_500(client: AsyncClient, auth: dict[str, str]) -> None:
    absurd = '{"profile": {"address": ' + "[" * 50_000 + "]" * 50_000 + "}}"
    response = await client.post("/v1/subjects", content=absurd, headers={**auth, "content-type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    nested: object = "x"
    for _ in range(20):
        nested = {"n": nested}
    too_deep = await client.post("/v1/subjects", json={"profile": {"address": nested}}, headers=auth)
    assert too_deep.status_code == 422
    assert "nested" in too_deep.json()["detail"]


async def test_security_headers(client: AsyncClient, auth: dict[str, str]) -> None:
    response = await client.get("/v1/subjects", params={"external_id": "nobody"}, headers=auth)
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "no-referrer"
    assert "server" not in headers
    assert "strict-transport-security" not in headers  # base_url is plain http in tests
    assert len(headers["x-request-id"]) >= 16


async def test_a_read_that_finds_nothing_leaves_no_read_event(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    # The audited read's event goes in with the read's own query; a 404 or 410 must roll it back.
    subject_id = (await client.post("/v1/subjects", json={"email": "gone@example.com"}, headers=auth)).json()["id"]
    assert (await client.delete(f"/v1/subjects/{subject_id}", headers=auth)).status_code == 200
    assert (await client.get(f"/v1/subjects/{uuid.uuid4()}", headers=auth)).status_code == 404
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).status_code == 410
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).status_code == 410
    async with runtime.db.transaction() as session:
        reads = (await session.exec(select(func.count()).where(col(AuditEvent.action) == "subject.read"))).one()
    assert reads == 0
    # The same check can see a read event when there is one.
    live = (await client.post("/v1/subjects", json={"email": "live@example.com"}, headers=auth)).json()["id"]
    assert (await client.get(f"/v1/subjects/{live}", headers=auth)).status_code == 200
    async with runtime.db.transaction() as session:
        reads = (await session.exec(select(func.count()).where(col(AuditEvent.action) == "subject.read"))).one()
    assert reads == 1

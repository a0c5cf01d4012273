"""Data-subject requests end to end: intake, e-mailed code over real SMTP, verification, answers."""

from __future__ import annotations

import asyncio
import io
import re
import zipfile

import pytest
from httpx import AsyncClient
from litestar import Litestar
from sqlalchemy import func
from sqlmodel import col, select

from privacy_service.dsr.models import PrivacyRequest, RequestTransition
from privacy_service.notify.jobs import deliver_pending
from privacy_service.runtime import Runtime
from tests.conftest import MailSink, sql_statements

EMAIL = "carol.customer@example.com"
PROFILE = {"name": "Carol Customer", "date_of_birth": "1985-05-05", "national_id": "ZX998877"}


async def deliver(runtime: Runtime) -> None:
    await deliver_pending(runtime.db, runtime.keys, runtime.mailer, runtime.clock)


def code_from(mail: MailSink, address: str) -> str:
    body = mail.to(address)[-1].get_content()
    match = re.search(r"\b(\d{6})\b", body)
    assert match, body
    return match.group(1)


async def make_subject(client: AsyncClient, auth: dict[str, str], records: int = 3) -> str:
    subject_id = (await client.post("/v1/subjects", json={"email": EMAIL, "profile": PROFILE}, headers=auth)).json()[
        "id"
    ]
    for i in range(records):
        await client.post(
            f"/v1/subjects/{subject_id}/records",
            json={
                "kind": "transaction",
                "category": "user.financial.transaction",
                "occurred_at": "2026-01-01T00:00:00Z",
                "data": {"reference": f"TX-{i}", "amount": i},
            },
            headers=auth,
        )
    return subject_id


async def submit_and_verify(client: AsyncClient, runtime: Runtime, mail: MailSink, **body: object) -> tuple[str, str]:
    response = await client.post("/v1/requests", json={"identity": {"email": EMAIL}, **body})
    assert response.status_code == 202, response.text
    request_id = response.json()["id"]
    assert response.json()["status"] == "awaiting_verification"
    await deliver(runtime)
    verified = await client.post(f"/v1/requests/{request_id}/verify", json={"code": code_from(mail, EMAIL)})
    assert verified.status_code == 200, verified.text
    return request_id, verified.json()["token"]


async def test_access_request_answers_with_everything_held(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    await make_subject(client, auth)
    request_id, token = await submit_and_verify(client, runtime, mail, type="access")
    bearer = {"Authorization": f"Bearer {token}"}
    status = (await client.get(f"/v1/requests/{request_id}", headers=bearer)).json()
    assert status["status"] == "completed"
    assert [step["status"] for step in status["history"]] == [
        "received",
        "awaiting_verification",
        "verified",
        "processing",
        "completed",
    ]
    assert status["export_url"] == f"/v1/requests/{request_id}/export"
    export = await client.get(status["export_url"], headers=bearer)
    assert export.status_code == 200
    body = export.json()
    assert body["subject"]["email"] == EMAIL
    assert body["subject"]["profile"] == PROFILE
    assert sorted(r["data"]["reference"] for r in body["records"]) == ["TX-0", "TX-1", "TX-2"]
    categories = {c["category"] for c in body["processing"]["categories"]}
    assert "user.financial.transaction" in categories
    assert body["processing"]["complaint_authorities"]

    archive = await client.get(status["export_url"], params={"format": "zip"}, headers=bearer)
    assert archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        assert {"profile.csv", "records.csv", "processing.json"} <= set(zipped.namelist())
        assert "TX-2" in zipped.read("records.csv").decode()

    await deliver(runtime)
    for message in mail.to(EMAIL):
        text = message.get_content()
        for secret in ("Carol", "ZX998877", "1985-05-05", "TX-"):
            assert secret not in text
            assert secret not in str(message["Subject"])


async def test_unknown_identity_gets_the_same_answer(client: AsyncClient, runtime: Runtime, mail: MailSink) -> None:
    response = await client.post("/v1/requests", json={"type": "access", "identity": {"email": "nobody@example.com"}})
    assert response.status_code == 202
    assert set(response.json()) == {"id", "status", "due_at"}
    await deliver(runtime)
    code = code_from(mail, "nobody@example.com")
    verified = await client.post(f"/v1/requests/{response.json()['id']}/verify", json={"code": code})
    token = verified.json()["token"]
    status = (
        await client.get(f"/v1/requests/{response.json()['id']}", headers={"Authorization": f"Bearer {token}"})
    ).json()
    assert status["status"] == "completed"
    assert status["result"] == {"data_found": False}
    assert status["export_url"] is None


async def test_erasure_keeps_aml_records_and_says_why(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    subject_id = await make_subject(client, auth)
    await client.post(
        f"/v1/subjects/{subject_id}/records",
        json={"kind": "note", "category": "user.behavior", "occurred_at": "2026-01-01T00:00:00Z", "data": {"x": 1}},
        headers=auth,
    )
    request_id, _token = await submit_and_verify(client, runtime, mail, type="erase")
    status = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert status["status"] == "awaiting_review"
    approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
    assert approved.status_code == 200, approved.text
    result = approved.json()
    assert result["status"] == "partially_completed"
    kept = {item["category"]: item for item in result["result"]["kept"]}
    assert "user.financial.transaction" in kept
    assert kept["user.financial.transaction"]["basis"]
    assert kept["user.financial.transaction"]["until"] > "2031"
    assert "user.behavior" in result["result"]["erased"]
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).status_code == 410
    assert (await client.post("/v1/subjects/lookup", json={"email": EMAIL}, headers=auth)).json()["items"] == []
    again = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
    assert again.status_code == 409


async def test_audit_never_records_a_subjects_address(client: AsyncClient, runtime: Runtime, mail: MailSink) -> None:
    from sqlalchemy import text

    request_id, _ = await submit_and_verify(client, runtime, mail, type="access")
    async with runtime.db.engine.connect() as conn:
        actors = {(row[0], row[1]) for row in await conn.execute(text("SELECT actor_type, actor_id FROM audit_events"))}
    subject_actors = {actor_id for actor_type, actor_id in actors if actor_type == "subject"}
    assert subject_actors == {request_id}
    assert not any("127.0.0.1" in actor_id for _, actor_id in actors)


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_intake_writes_everything_in_one_statement(client: AsyncClient, runtime: Runtime, mail: MailSink) -> None:
    # The request row's INSERT links a duplicate itself (an open, verified request of the same type
    # for the same identity) and carries the key, transitions, audit event and mail rows as CTEs
    # (db.carry_appended_rows): BEGIN, one statement, COMMIT.
    first, _ = await submit_and_verify(client, runtime, mail, type="erase")
    with sql_statements(runtime) as sent:
        for _ in range(2):
            response = await client.post("/v1/requests", json={"type": "erase", "identity": {"email": EMAIL}})
            assert response.status_code == 202
    assert len(sent) == 2
    assert all(s.startswith("WITH") and "INSERT INTO dsr_requests" in s for s in sent)
    async with runtime.db.transaction() as session:
        rows = (await session.exec(select(PrivacyRequest).order_by(col(PrivacyRequest.received_at)))).all()
        kinds = (await session.exec(select(func.count()).select_from(RequestTransition))).one()
    assert str(rows[0].id) == first
    assert [row.duplicate_of for row in rows] == [None, rows[0].id, rows[0].id]
    assert kinds == 4 + 2 * 2  # received, awaiting_verification, verified, awaiting_review; then 2 each


async def test_intake_wakes_the_delivery_loops_once_its_write_is_done(
    app: Litestar, client: AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The code mail goes out when a delivery loop wakes: intake wakes them after its write, and only
    # then (a refused request queued nothing).
    async def requests_stored() -> int:
        async with runtime.db.transaction() as session:
            return (await session.exec(select(func.count()).select_from(PrivacyRequest))).one()

    kicks: list[asyncio.Task[int]] = []

    class Recorder:
        def set(self) -> None:  # what was stored when it was called, counted as the loops would see it
            kicks.append(asyncio.create_task(requests_stored()))

    monkeypatch.setattr(app.state, "outbox_kick", Recorder())
    refused = await client.post("/v1/requests", json={"type": "access", "identity": {}})
    assert refused.status_code == 422
    assert kicks == []
    accepted = await client.post("/v1/requests", json={"type": "access", "identity": {"email": EMAIL}})
    assert accepted.status_code == 202, accepted.text
    assert len(kicks) == 1
    assert await kicks[0] == 1  # a woken loop finds the request stored

"""Abuse cases for the operator scopes (issue 16, items 6, 7 and 8), each as an attacker would try it.

6. A key with subjects:write but not subjects:read must never see decrypted data (an empty PATCH used
   to answer the whole subject).
7. A key with requests:manage must not read a customer's data by filing a pre-verified OpenDSR access
   request and downloading its export.
8. An operator erasure must respect legal duties and holds exactly as an erasure request does; setting
   a duty aside needs its own scope and a reason, and is audited.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from httpx import AsyncClient
from sqlmodel import col, select

from privacy_service.audit.models import AuditEvent
from privacy_service.config import Settings
from privacy_service.runtime import Runtime
from privacy_service.systems.jobs import deliver_from_runtime
from tests.api.dsr_support import (
    TRANSACTION,
    assert_no_leak,
    assert_problem,
    assert_unchanged,
    bearer,
    fresh_settings,
    make_subject,
    rows,
    snapshot,
    submit_and_verify,
)
from tests.conftest import MailSink, make_operator_key
from tests.integration.systems_support import HookReceiver, register

EMAIL = "victor.victim@example.com"
PHONE = "+447911123457"
PROFILE = {"name": "Victor Victim", "iban": "GB33BUKB20201555555555", "national_id": "QQ123456C"}
SECRETS = (EMAIL, PHONE, "Victor Victim", "GB33BUKB20201555555555", "QQ123456C")
ID_DOCUMENT = "user.government_id"
# An erase-override's justification: a basis and the case where the explanation lives (no free text).
JUSTIFICATION = {"basis": "court_order", "reference": "CASE-2026/0417"}


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    # The controller system's receiver listens on 127.0.0.1.
    return await fresh_settings(make_settings, backend, systems_allow_private_networks=True)


async def _key(runtime: Runtime, *scopes: str) -> dict[str, str]:
    return bearer(await make_operator_key(runtime, frozenset(scopes)))


async def _victim(client: AsyncClient, auth: dict[str, str], **extra: Any) -> str:
    return await make_subject(client, auth, email=EMAIL, phone=PHONE, profile=PROFILE, **extra)


async def _events(runtime: Runtime, action: str) -> list[AuditEvent]:
    async with runtime.db.sessionmaker() as session:
        query = select(AuditEvent).where(col(AuditEvent.action) == action).order_by(col(AuditEvent.id))
        return list((await session.exec(query)).all())


# -- 6. a write-only key reads nothing ------------------------------------------------------------


async def test_a_write_only_key_gets_no_decrypted_subject_from_an_empty_patch(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    subject_id = await _victim(client, auth)
    writer = await _key(runtime, "subjects:write")
    before = await snapshot(runtime)

    empty = await client.patch(f"/v1/subjects/{subject_id}", json={}, headers=writer)
    assert_problem(empty, 422, "invalid-input")
    assert_no_leak(empty, *SECRETS)
    empty_profile = await client.patch(f"/v1/subjects/{subject_id}", json={"profile": {}}, headers=writer)
    assert_problem(empty_profile, 422, "invalid-input")

    assert_unchanged(before, await snapshot(runtime))
    assert [e.detail for e in await _events(runtime, "subject.update")] == []


async def test_a_write_only_key_changing_a_field_is_told_what_changed_not_the_subject(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    subject_id = await _victim(client, auth)
    writer = await _key(runtime, "subjects:write")

    changed = await client.patch(f"/v1/subjects/{subject_id}", json={"language": "zh"}, headers=writer)
    assert changed.status_code == 200, changed.text
    assert_no_leak(changed, *SECRETS)
    assert changed.json()["changed"] == ["language"]
    assert changed.json()["id"] == subject_id
    assert await _events(runtime, "subject.read") == []

    # Every other write answers ids or metadata only.
    record = await client.post(
        f"/v1/subjects/{subject_id}/records",
        json={"kind": "note", "category": "user.behavior", "occurred_at": "2026-01-05T09:00:00Z", "data": {}},
        headers=writer,
    )
    event = await client.post(f"/v1/subjects/{subject_id}/events", json={"type": "last_activity"}, headers=writer)
    hold = await client.post(f"/v1/subjects/{subject_id}/holds", json={"reason": "litigation 2026-17"}, headers=writer)
    for response in (record, event, hold):
        assert response.status_code in (201, 202), response.text
        assert_no_leak(response, *SECRETS)


async def test_a_key_with_read_and_write_gets_the_subject_back_as_an_audited_read(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    subject_id = await _victim(client, auth)
    both = await _key(runtime, "subjects:read", "subjects:write")
    changed = await client.patch(f"/v1/subjects/{subject_id}", json={"language": "zh"}, headers=both)
    assert changed.status_code == 200, changed.text
    assert changed.json()["email"] == EMAIL
    assert changed.json()["language"] == "zh"
    assert [str(e.subject_id) for e in await _events(runtime, "subject.read")] == [subject_id]


# -- 7. requests:manage reads no one's data -------------------------------------------------------


def _opendsr_access() -> dict[str, Any]:
    return {
        "regulation": "gdpr",
        "subject_request_id": str(uuid.uuid4()),
        "subject_request_type": "access",
        "submitted_time": datetime.now(UTC).isoformat(),
        "subject_identities": [{"identity_type": "email", "identity_value": EMAIL, "identity_format": "raw"}],
    }


async def test_a_request_manager_cannot_download_a_customers_export(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    subject_id = await _victim(client, auth, records={TRANSACTION: 1})
    manager = await _key(runtime, "requests:manage")
    body = _opendsr_access()
    created = await client.post("/opendsr/requests", json=body, headers=manager)
    assert created.status_code == 201, created.text
    request_id = body["subject_request_id"]
    status = await client.get(f"/opendsr/requests/{request_id}", headers=manager)
    assert status.json()["request_status"] == "completed", status.text
    assert_no_leak(status, *SECRETS)
    reads_before = await _events(runtime, "subject.read")

    for fmt in ("json", "zip"):
        stolen = await client.get(f"/v1/requests/{request_id}/export", params={"format": fmt}, headers=manager)
        assert_problem(stolen, 403, "forbidden")
        assert_no_leak(stolen, *SECRETS)
    assert await _events(runtime, "subject.read") == reads_before
    assert await _events(runtime, "dsr.export.download") == []

    # The scope made for it, granted deliberately, reads it, and the read is audited as one of the subject.
    exporter = await _key(runtime, "subjects:export")
    export = await client.get(f"/v1/requests/{request_id}/export", headers=exporter)
    assert export.status_code == 200, export.text
    assert export.json()["subject"]["email"] == EMAIL
    reads = await _events(runtime, "subject.read")
    assert [str(e.subject_id) for e in reads[len(reads_before) :]] == [subject_id]
    assert reads[-1].actor_type == "operator"
    downloads = await _events(runtime, "dsr.export.download")
    assert [(str(e.subject_id), e.actor_type) for e in downloads] == [(subject_id, "operator")]


async def test_an_opendsr_answer_goes_signed_to_the_registered_controller_system_only(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    await _victim(client, auth, records={TRANSACTION: 1})
    # Having an export sent to a system is reading it: subjects:export, as for a download.
    manager = await _key(runtime, "requests:manage", "subjects:export")
    with HookReceiver().running() as receiver:
        # Registered by someone with systems:manage; it holds no data of its own to answer access requests.
        system = await register(client, auth, receiver.url, name="consent-platform", types=("erase",))
        receiver.keys[system["system"]["key_id"]] = system["signing_key"].encode()

        # A callback address the caller picks freely is refused, and nothing is filed.
        before = await snapshot(runtime)
        elsewhere = {**_opendsr_access(), "status_callback_urls": ["https://attacker.example/collect"]}
        refused = await client.post("/opendsr/requests", json=elsewhere, headers=manager)
        assert refused.status_code == 400, refused.text
        assert_unchanged(before, await snapshot(runtime))

        body = {**_opendsr_access(), "status_callback_urls": [receiver.url]}
        created = await client.post("/opendsr/requests", json=body, headers=manager)
        assert created.status_code == 201, created.text
        request_id = body["subject_request_id"]
        downloader = await _key(runtime, "requests:manage")
        assert_problem(await client.get(f"/v1/requests/{request_id}/export", headers=downloader), 403, "forbidden")

        await deliver_from_runtime(runtime)
        await deliver_from_runtime(runtime)  # queued once, sent once
    (sent,) = receiver.received
    assert sent.valid_signature
    assert sent.json["subject_request_id"] == request_id
    assert sent.json["request_status"] == "completed"
    assert sent.json["results"]["subject"]["email"] == EMAIL
    assert sent.json["results_count"] == 1
    downloads = await _events(runtime, "dsr.export.download")
    assert [(e.actor_type, e.actor_id) for e in downloads] == [("system", "opendsr")]


@pytest.mark.parametrize("request_type", ["access", "portability"])
async def test_request_and_system_managers_cannot_have_an_export_sent_to_their_own_system(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, request_type: str
) -> None:
    """requests:manage + systems:manage, no reading scope: register a system of one's own, then file a
    pre-verified access request answered to it. Refused, nothing filed, nothing sent."""
    await _victim(client, auth, records={TRANSACTION: 1})
    attacker = await _key(runtime, "requests:manage", "systems:manage")
    with HookReceiver().running() as receiver:
        system = await register(client, attacker, receiver.url, name="attacker-sink", types=("erase",))
        receiver.keys[system["system"]["key_id"]] = system["signing_key"].encode()
        before = await snapshot(runtime)
        body = {**_opendsr_access(), "subject_request_type": request_type, "status_callback_urls": [receiver.url]}
        refused = await client.post("/opendsr/requests", json=body, headers=attacker)
        assert_problem(refused, 403, "forbidden")
        assert "subjects:export" in refused.json()["detail"]
        assert_no_leak(refused, *SECRETS)
        assert_unchanged(before, await snapshot(runtime))
        assert await rows(runtime, "opendsr_requests", order="request_id") == []
        await deliver_from_runtime(runtime)
        await deliver_from_runtime(runtime)
    assert receiver.received == []
    assert await _events(runtime, "dsr.export.download") == []
    assert await _events(runtime, "subject.read") == []


# -- 8. an operator erasure respects duties and holds ---------------------------------------------


async def _closed_customer_with_a_transaction_and_an_id_document(client: AsyncClient, auth: dict[str, str]) -> str:
    return await _victim(client, auth, records={TRANSACTION: 1, ID_DOCUMENT: 1}, closed_at="2026-01-10T09:00:00Z")


async def test_operator_delete_keeps_what_the_aml_duty_keeps(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    subject_id = await _closed_customer_with_a_transaction_and_an_id_document(client, auth)
    writer = await _key(runtime, "subjects:write")

    erased = await client.delete(f"/v1/subjects/{subject_id}", headers=writer)
    assert erased.status_code == 200, erased.text
    assert_no_leak(erased, *SECRETS)
    report = erased.json()
    assert report["status"] == "restricted"
    kept = {item["category"]: item for item in report["kept"]}
    assert {TRANSACTION, ID_DOCUMENT} <= set(kept)
    for item in kept.values():
        assert item["basis"]
        assert datetime.fromisoformat(item["until"]) > datetime(2030, 1, 1, tzinfo=UTC)
    assert "user.contact.email" in report["erased"]
    assert report["overridden"] == []
    records = await rows(runtime, "records")
    assert {(r["category"], r["restricted"]) for r in records} == {(TRANSACTION, True), (ID_DOCUMENT, True)}

    again = await client.delete(f"/v1/subjects/{subject_id}", headers=writer)
    assert again.status_code == 200, again.text
    assert again.json()["already_erased"] is True
    assert {item["category"] for item in again.json()["kept"]} == set(kept)
    assert all(item["until"] for item in again.json()["kept"])


async def test_operator_delete_answers_what_an_erasure_request_answers(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    """The same erasure: two identical customers, one erased by their own request, one by an operator."""
    same = {"profile": PROFILE, "records": {TRANSACTION: 2, ID_DOCUMENT: 1}, "closed_at": "2026-01-10T09:00:00Z"}
    await make_subject(client, auth, email="erin.request@example.com", **same)  # type: ignore[arg-type]
    by_operator = await make_subject(client, auth, email="oscar.operator@example.com", **same)  # type: ignore[arg-type]

    request_id, _ = await submit_and_verify(client, runtime, mail, "erin.request@example.com", "erase")
    approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
    assert approved.status_code == 200, approved.text
    result = approved.json()["result"]
    deleted = await client.delete(f"/v1/subjects/{by_operator}", headers=auth)
    assert deleted.status_code == 200, deleted.text
    report = deleted.json()

    def kept(items: list[dict[str, Any]]) -> list[tuple[str, str, datetime]]:
        return [(i["category"], i["basis"], datetime.fromisoformat(i["until"].replace("Z", "+00:00"))) for i in items]

    assert report["erased"] == result["erased"]
    assert kept(report["kept"]) == kept(result["kept"])
    assert {TRANSACTION, ID_DOCUMENT} <= {item["category"] for item in report["kept"]}
    assert report["recipients_to_notify"] == result["recipients_to_notify"]


async def test_operator_delete_of_a_held_subject_erases_nothing(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    subject_id = await _closed_customer_with_a_transaction_and_an_id_document(client, auth)
    placed = await client.post(f"/v1/subjects/{subject_id}/holds", json={"reason": "litigation 2026-17"}, headers=auth)
    assert placed.status_code == 201, placed.text
    before = await snapshot(runtime)

    for path, body, scopes in (
        (f"/v1/subjects/{subject_id}", None, ("subjects:write",)),
        (f"/v1/subjects/{subject_id}/erase-override", JUSTIFICATION, ("subjects:write", "subjects:erase-override")),
    ):
        key = await _key(runtime, *scopes)
        if body is None:
            refused = await client.delete(path, headers=key)
        else:
            refused = await client.post(path, json=body, headers=key)
        problem = assert_problem(refused, 409, "legal-hold")
        assert problem["kept"]
        assert all(item["basis"].startswith("legal hold") for item in problem["kept"])
        assert_no_leak(refused, *SECRETS)

    assert_unchanged(before, await snapshot(runtime))
    assert len(await _events(runtime, "subject.erase.held")) == 2
    # The refused override is on record with its justification, and as refused.
    (attempt,) = await _events(runtime, "subject.erase.override")
    assert attempt.outcome == "failed"
    assert attempt.detail == {**JUSTIFICATION, "overridden_categories": [], "refused": "legal_hold"}


async def test_setting_a_duty_aside_needs_its_own_scope_and_a_justification_and_is_audited(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    """The justification goes into the permanent audit log, which is never erased: a basis and a case
    reference only, never free text that could carry a customer's name or story."""
    subject_id = await _closed_customer_with_a_transaction_and_an_id_document(client, auth)
    path = f"/v1/subjects/{subject_id}/erase-override"
    before = await snapshot(runtime)

    writer = await _key(runtime, "subjects:write")
    assert_problem(await client.post(path, json=JUSTIFICATION, headers=writer), 403, "forbidden")
    overrider = await _key(runtime, "subjects:write", "subjects:erase-override")
    for body in (
        {},
        {"reason": "Jane Doe (born 1980-02-01) asked us to delete her AML file"},
        {**JUSTIFICATION, "reason": "Jane Doe asked"},
        {"basis": "court_order"},
        {"basis": "because_i_can", "reference": "CASE-2026/0417"},
        {"basis": "court_order", "reference": "Jane Doe asked"},
        {"basis": "court_order", "reference": "CASE-2026/0417\n"},
        {"basis": "court_order", "reference": "-CASE"},
        {"basis": "court_order", "reference": "C" * 65},
    ):
        refused = await client.post(path, json=body, headers=overrider)
        assert_problem(refused, 400, "validation-error")
        assert "Jane" not in refused.text
    assert_unchanged(before, await snapshot(runtime))

    erased = await client.post(path, json=JUSTIFICATION, headers=overrider)
    assert erased.status_code == 200, erased.text
    report = erased.json()
    assert report["status"] == "erased"
    assert report["kept"] == []
    assert {TRANSACTION, ID_DOCUMENT} <= {item["category"] for item in report["overridden"]}
    assert await rows(runtime, "records") == []
    (event,) = await _events(runtime, "subject.erase.override")
    assert str(event.subject_id) == subject_id
    assert event.outcome == "ok"
    assert {key: event.detail[key] for key in JUSTIFICATION} == JUSTIFICATION
    assert "reason" not in event.detail
    assert {TRANSACTION, ID_DOCUMENT} <= set(event.detail["overridden_categories"])

    # Once erased, nothing is left to override: a clear 409, not a 200 that sets nothing aside, on record.
    after = await snapshot(runtime)
    again = await client.post(path, json={"basis": "duty_ended", "reference": "TICKET-88"}, headers=overrider)
    assert assert_problem(again, 409, "already-erased")["kept"] == []
    assert_unchanged(after, await snapshot(runtime))
    _, repeated = await _events(runtime, "subject.erase.override")
    assert repeated.outcome == "failed"
    assert repeated.detail == {
        "basis": "duty_ended",
        "reference": "TICKET-88",
        "overridden_categories": [],
        "refused": "already_erased",
    }

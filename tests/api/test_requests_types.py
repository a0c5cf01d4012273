"""Every request type end to end, on SQLite and PostgreSQL, through the HTTP API and real SMTP.

Access (JSON export with the Art. 15 information), portability (CSV files in a ZIP), rectification
(values written, only field names reported), erasure (AML records kept restricted under the
retention key; a subject without AML data erased completely), duplicates, the operator's list and
decisions, and mail in the request's language.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
import zipfile
from datetime import timedelta
from typing import Any

import msgspec
import pytest
import time_machine
from httpx import AsyncClient
from sqlmodel import col, select

from privacy_service.config import Settings
from privacy_service.crypto.fields import Binding
from privacy_service.crypto.service import PRIMARY, RETENTION, KeyShredded
from privacy_service.runtime import Runtime
from privacy_service.subjects.models import Record, Subject
from privacy_service.subjects.service import RECORDS, SUBJECTS
from tests.api.dsr_support import (
    BEHAVIOUR,
    TRANSACTION,
    bearer,
    code_from,
    deliver,
    fresh_settings,
    make_subject,
    rows,
    submit,
    submit_and_verify,
)
from tests.conftest import MailSink

EMAIL = "carol.customer@example.com"
PHONE = "+447911123456"
PROFILE = {"name": "Carol Customer", "date_of_birth": "1985-05-05", "national_id": "ZX998877"}
PII = ("Carol", "Customer", "1985-05-05", "ZX998877", PHONE, "TX-")
CLOSED = "2026-06-30T00:00:00Z"  # the account closed: the AML duty runs five years from here
AML_UNTIL = "2031-06-30"


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend)


def records_body(data: list[dict[str, Any]]) -> list[str]:
    return sorted(item["data"]["reference"] for item in data)


async def audit_text(runtime: Runtime) -> str:
    return json.dumps(await rows(runtime, "audit_events"), default=str)


# -- access and portability ------------------------------------------------------------------


async def test_access_export_holds_everything_and_the_art15_information(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    subject_id = await make_subject(client, auth, email=EMAIL, profile=PROFILE, records={TRANSACTION: 3, BEHAVIOUR: 2})
    request_id, verified = await submit_and_verify(client, runtime, mail, EMAIL, "access")
    assert verified["status"] == "completed"
    token = bearer(verified["token"])
    status = (await client.get(f"/v1/requests/{request_id}", headers=token)).json()
    assert status["result"] == {
        "data_found": True,
        "categories": sorted(
            {"user.name", "user.date_of_birth", "user.government_id", "user.contact.email", TRANSACTION, BEHAVIOUR}
        ),
        "records": 5,
    }
    export = await client.get(status["export_url"], headers=token)
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/json")
    assert "attachment" in export.headers["content-disposition"]
    body = export.json()
    assert {"request", "subject", "records", "requests", "processing"} <= set(body)
    assert body["subject"]["id"] == subject_id
    assert (body["subject"]["email"], body["subject"]["profile"]) == (EMAIL, PROFILE)
    assert records_body(body["records"]) == [f"{BEHAVIOUR}-{i}" for i in range(2)] + [
        f"{TRANSACTION}-{i}" for i in range(3)
    ]
    assert [r["id"] for r in body["requests"]] == [request_id]
    processing = body["processing"]
    # GDPR Art. 15(1): purposes and bases (a), categories (b), recipients (c), retention (d),
    # rights (e), complaint (f), source (g), automated decisions (h).
    assert processing["controller"]["name"]
    assert processing["dpo"]
    held = {item["category"]: item for item in processing["categories"]}
    assert set(held) == set(status["result"]["categories"])
    for item in held.values():
        assert item["purposes"]
        assert all(p["legal_basis_gdpr"] for p in item["purposes"])
        assert item["recipients"]
        assert item["source"]
        assert item["retention"]["period"]
    assert held[TRANSACTION]["retention"]["legal_duty"]["basis"]
    assert processing["rights"]
    assert processing["automated_decisions"]
    assert {a["url"] for a in processing["complaint_authorities"]} >= {"https://www.dataprotection.ie"}
    downloads = [e for e in await rows(runtime, "audit_events") if e["action"] == "dsr.export.download"]
    assert len(downloads) == 1


async def test_portability_is_csv_files_in_a_zip(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    await make_subject(client, auth, email=EMAIL, profile=PROFILE, records={TRANSACTION: 3})
    request_id, verified = await submit_and_verify(client, runtime, mail, EMAIL, "portability")
    assert verified["status"] == "completed"
    archive = await client.get(
        f"/v1/requests/{request_id}/export", params={"format": "zip"}, headers=bearer(verified["token"])
    )
    assert archive.status_code == 200
    assert archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        assert zipped.testzip() is None
        assert set(zipped.namelist()) >= {
            "profile.csv",
            "records.csv",
            "requests.json",
            "processing.json",
            "request.json",
        }
        profile = list(csv.DictReader(io.StringIO(zipped.read("profile.csv").decode())))
        records = list(csv.DictReader(io.StringIO(zipped.read("records.csv").decode())))
        processing = json.loads(zipped.read("processing.json"))
        request = json.loads(zipped.read("request.json"))
    fields = {row["field"]: row for row in profile}
    assert fields["email"]["value"] == EMAIL
    assert {name: fields[name]["value"] for name in PROFILE} == PROFILE
    assert fields["national_id"]["category"] == "user.government_id"
    # The identifiers carry the policy's category too (identifier_fields), like every other row.
    assert fields["email"]["category"] == "user.contact.email"
    assert all(row["category"] for row in profile), profile
    assert len(records) == 3
    assert {row["category"] for row in records} == {TRANSACTION}
    assert sorted(json.loads(row["data"])["reference"] for row in records) == [f"{TRANSACTION}-{i}" for i in range(3)]
    assert processing["categories"]
    assert request["type"] == "portability"


# -- rectification -----------------------------------------------------------------------------


async def test_rectification_writes_values_and_reports_field_names_only(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink, capfd: pytest.CaptureFixture[str]
) -> None:
    subject_id = await make_subject(client, auth, email=EMAIL, profile={**PROFILE, "city": "Leeds"})
    changes = {"phone": "+14155552671", "profile": {"name": "Carol Corrected", "city": "Lyon"}}
    request_id, verified = await submit_and_verify(client, runtime, mail, EMAIL, "rectify", changes=changes)
    # An identifier and identity data: an operator reviews the correction before it is written.
    assert verified["status"] == "awaiting_review"
    approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
    assert approved.json()["status"] == "completed", approved.text
    subject = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
    assert subject["phone"] == "+14155552671"
    assert subject["profile"] == {**PROFILE, "name": "Carol Corrected", "city": "Lyon"}
    status = (await client.get(f"/v1/requests/{request_id}", headers=bearer(verified["token"]))).json()
    result = status["result"]
    assert result["changed_fields"] == ["phone", "profile.city", "profile.name"]
    assert result["categories"] == ["user.contact.address", "user.contact.phone_number", "user.name"]
    assert result["recipients_to_notify"]  # GDPR Art. 19
    values = ("Corrected", "Lyon", "Leeds", "5552671", "Carol Customer")
    answer = json.dumps(status)
    stored = json.dumps(await rows(runtime, "dsr_requests"), default=str) + json.dumps(
        await rows(runtime, "dsr_transitions"), default=str
    )
    logged = "".join(capfd.readouterr())
    for value in values:
        assert value not in answer, value
        assert value not in stored, value
        assert value not in await audit_text(runtime), value
        assert value not in logged, value
    updates = [e for e in await rows(runtime, "audit_events") if e["action"] == "subject.update"]
    details = [json.loads(u["detail"]) if isinstance(u["detail"], str) else u["detail"] for u in updates]
    assert details == [{"fields": ["phone", "profile.city", "profile.name"]}]


async def test_rectification_to_an_address_in_use_is_denied_not_stuck(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    subject_id = await make_subject(client, auth, email=EMAIL, profile=PROFILE)
    await make_subject(client, auth, email="taken@example.com")
    request_id, verified = await submit_and_verify(
        client, runtime, mail, EMAIL, "rectify", changes={"email": "taken@example.com", "profile": {"name": "X"}}
    )
    assert verified["status"] == "awaiting_review"
    approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
    assert approved.json()["status"] == "denied", approved.text
    status = (await client.get(f"/v1/requests/{request_id}", headers=bearer(verified["token"]))).json()
    assert "already in use" in status["decision"]
    assert status["result"] is None
    subject = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
    assert (subject["email"], subject["profile"]) == (EMAIL, PROFILE)  # nothing half-written
    assert not [e for e in await rows(runtime, "audit_events") if e["action"] == "subject.update"]
    await deliver(runtime)
    assert "declined" in str(mail.to(EMAIL)[-1]["Subject"])


# -- erasure -----------------------------------------------------------------------------------


async def erase(client: AsyncClient, runtime: Runtime, mail: MailSink, auth: dict[str, str], **identity: str) -> Any:
    request_id, verified = await submit_and_verify(
        client, runtime, mail, EMAIL, "erase", identity=identity or {"email": EMAIL}
    )
    assert verified["status"] == "awaiting_review"
    approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
    assert approved.status_code == 200, approved.text
    return approved.json()


async def test_erasure_keeps_aml_data_restricted_under_the_retention_key(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    subject_id = await make_subject(
        client, auth, email=EMAIL, profile=PROFILE, records={TRANSACTION: 3, BEHAVIOUR: 2}, closed_at=CLOSED
    )
    answer = await erase(client, runtime, mail, auth)
    assert answer["status"] == "partially_completed"
    result = answer["result"]
    kept = {item["category"]: item for item in result["kept"]}
    assert set(kept) == {TRANSACTION, "user.name", "user.date_of_birth", "user.government_id"}
    for item in kept.values():
        assert "2015/849" in item["basis"]
        assert item["until"].startswith(AML_UNTIL)
    assert result["erased"] == sorted({BEHAVIOUR, "user.contact.email"})
    assert result["recipients_to_notify"]

    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).status_code == 410
    assert (await client.get(f"/v1/subjects/{subject_id}/records", headers=auth)).status_code == 410
    assert (await client.post("/v1/subjects/lookup", json={"email": EMAIL}, headers=auth)).json()["items"] == []
    assert (await client.get("/v1/subjects", params={"email": EMAIL}, headers=auth)).json()["items"] == []

    sid = uuid.UUID(subject_id)
    async with runtime.db.transaction() as session:
        subject = await session.get(Subject, sid)
        kept_rows = (await session.exec(select(Record).where(col(Record.subject_id) == sid))).all()
        with pytest.raises(KeyShredded):
            await runtime.keys.load_key(session, sid, PRIMARY)
        retention = await runtime.keys.load_key(session, sid, RETENTION)
    assert subject is not None
    assert subject.status == "restricted"
    assert subject.email_bidx is subject.email_ct is subject.profile_ct is None
    assert subject.retained_until is not None
    assert subject.retained_until.date().isoformat() == AML_UNTIL
    assert [(r.category, r.restricted) for r in kept_rows] == [(TRANSACTION, True)] * 3
    assert {r.retain_until.date().isoformat() for r in kept_rows if r.retain_until} == {AML_UNTIL}
    # Restricted, not lost: the retention key still opens what the law keeps.
    opened = [msgspec.json.decode(retention.open(r.data_ct, Binding(RECORDS, sid, r.id, "data"))) for r in kept_rows]
    assert sorted(item["reference"] for item in opened) == [f"{TRANSACTION}-{i}" for i in range(3)]
    assert subject.retained_ct is not None
    retained = msgspec.json.decode(retention.open(subject.retained_ct, Binding(SUBJECTS, sid, None, "retained")))
    assert {name: value for name, (_, value) in retained.items()} == PROFILE


async def test_erasure_without_aml_data_is_complete(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    subject_id = await make_subject(
        client, auth, email=EMAIL, profile={"secondary_email": "carol@example.org"}, records={BEHAVIOUR: 2}
    )
    answer = await erase(client, runtime, mail, auth)
    assert answer["status"] == "completed"
    assert answer["result"]["kept"] == []
    assert answer["result"]["erased"] == [BEHAVIOUR, "user.contact.email"]
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).status_code == 410
    assert [
        k for k in await rows(runtime, "keystore.data_keys") if uuid.UUID(str(k["subject_id"])) == uuid.UUID(subject_id)
    ] == []
    assert [r for r in await rows(runtime, "records")] == []
    await deliver(runtime)
    completed = mail.to(EMAIL)[-1]
    assert "complete" in str(completed["Subject"])
    assert "some data kept" not in completed.get_content()


async def test_erasure_requested_by_phone_completes_and_mails_the_address_on_file(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    await make_subject(client, auth, email=EMAIL, phone=PHONE, profile=PROFILE, records={TRANSACTION: 1})
    answer = await erase(client, runtime, mail, auth, phone=PHONE)
    assert answer["status"] == "partially_completed"
    await deliver(runtime)
    subjects = [str(m["Subject"]) for m in mail.to(EMAIL)]
    assert subjects[0].startswith("Your verification code")
    assert "complete" in subjects[-1]
    for message in mail.to(EMAIL):
        for secret in PII:
            assert secret not in message.as_string(), secret


# -- duplicates --------------------------------------------------------------------------------


async def test_a_duplicate_is_answered_on_its_own_and_linked_for_operators_only(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    await make_subject(client, auth, email=EMAIL, profile=PROFILE)
    original, first = await submit_and_verify(client, runtime, mail, EMAIL, "erase")
    duplicate, second = await submit_and_verify(client, runtime, mail, EMAIL, "erase")
    # Each verification verifies its own request and hands a token for it alone.
    assert (first["id"], second["id"]) == (original, duplicate)
    assert second["status"] == "awaiting_review"
    assert (await client.get(f"/v1/requests/{original}", headers=bearer(second["token"]))).status_code == 403
    assert (await client.get(f"/v1/requests/{original}", headers=bearer(first["token"]))).status_code == 200
    view = (await client.get(f"/v1/requests/{duplicate}", headers=auth)).json()
    assert (view["status"], view["duplicate_of"]) == ("awaiting_review", original)
    own = (await client.get(f"/v1/requests/{duplicate}", headers=bearer(second["token"]))).json()
    assert own["duplicate_of"] is None  # another request's id is for operators
    listed = (await client.get("/v1/requests", params={"status": "awaiting_review"}, headers=auth)).json()
    assert sorted(item["id"] for item in listed["items"]) == sorted([original, duplicate])


async def test_verifying_a_new_request_leaves_an_unverified_older_one_alone(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    await make_subject(client, auth, email=EMAIL, profile=PROFILE)
    older = await submit(client, {"email": EMAIL}, "erase")  # its code mail is never used
    newer, verified = await submit_and_verify(client, runtime, mail, EMAIL, "erase")
    assert (verified["id"], verified["status"]) == (newer, "awaiting_review")
    view = (await client.get(f"/v1/requests/{older}", headers=auth)).json()
    assert (view["status"], view["verified_at"]) == ("awaiting_verification", None)
    assert [h["status"] for h in view["history"]] == ["received", "awaiting_verification"]
    mine = (await client.get(f"/v1/requests/{newer}", headers=auth)).json()
    assert mine["duplicate_of"] is None  # an unverified request is not linked: anybody may have filed it


# -- the operator's side -----------------------------------------------------------------------


async def test_operator_lists_filters_and_pages(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    await make_subject(client, auth, email=EMAIL, profile=PROFILE)
    unverified = await submit(client, {"email": "nobody@example.com"}, "access")
    completed, _ = await submit_and_verify(client, runtime, mail, EMAIL, "access")
    review = {
        regime: (await submit_and_verify(client, runtime, mail, f"{regime}@example.com", "erase", regime=regime))[0]
        for regime in ("gdpr", "ccpa", "pipl")
    }
    everything = (await client.get("/v1/requests", headers=auth)).json()["items"]
    due = {item["id"]: item["due_at"] for item in everything}
    assert len(due) == 5
    assert [item["due_at"] for item in everything] == sorted(due.values())

    async def ids(**params: Any) -> set[str]:
        response = await client.get("/v1/requests", params=params, headers=auth)
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    assert await ids(status="awaiting_review") == set(review.values())
    assert await ids(type="access") == {unverified, completed}
    assert await ids(type="erase", status="awaiting_review") == set(review.values())
    assert await ids(overdue="true") == set()
    assert await ids(due_before=due[review["pipl"]].replace("Z", "+00:00")) == set()
    cutoff = min(due[review["gdpr"]], due[review["ccpa"]])
    assert await ids(due_before=cutoff) == {review["pipl"]}
    with time_machine.travel(runtime.clock.now() + timedelta(days=50), tick=True):
        assert await ids(overdue="true") == {unverified, *review.values()}
        assert await ids(overdue="false") == {completed}
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"after": cursor} if cursor else {})
        # The cursor goes into the URL unencoded, as a shell user would paste it.
        url = "/v1/requests?" + "&".join(f"{k}={v}" for k, v in params.items())
        page = (await client.get(url, headers=auth)).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [item["id"] for item in everything]


async def test_operator_decisions_reach_the_subject(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    tokens: dict[str, str] = {}
    requests: dict[str, str] = {}
    for action in ("deny", "extend", "cancel"):
        address = f"{action}@example.com"
        await make_subject(client, auth, email=address)
        requests[action], verified = await submit_and_verify(client, runtime, mail, address, "erase")
        tokens[action] = verified["token"]
    reason = "Manifestly unfounded: the same request was answered last week."
    denied = await client.post(f"/v1/requests/{requests['deny']}/deny", json={"reason": reason}, headers=auth)
    assert denied.status_code == 200
    assert denied.json()["status"] == "denied"
    before = (await client.get(f"/v1/requests/{requests['extend']}", headers=auth)).json()["due_at"]
    extended = await client.post(
        f"/v1/requests/{requests['extend']}/extend", json={"reason": "Many systems to search."}, headers=auth
    )
    assert extended.status_code == 200, extended.text
    cancelled = await client.post(f"/v1/requests/{requests['cancel']}/cancel", json={}, headers=auth)
    assert cancelled.json()["status"] == "cancelled"

    seen = {
        action: (await client.get(f"/v1/requests/{requests[action]}", headers=bearer(tokens[action]))).json()
        for action in requests
    }
    assert (seen["deny"]["status"], seen["deny"]["decision"]) == ("denied", reason)
    assert seen["deny"]["history"][-1]["actor_type"] == "operator"
    assert seen["extend"]["status"] == "awaiting_review"
    assert seen["extend"]["extended"]
    assert seen["extend"]["decision"] == "Many systems to search."
    assert seen["extend"]["due_at"] > before
    assert seen["extend"]["history"][-1]["note"] == f"extended to {seen['extend']['due_at'][:10]}"
    assert seen["cancel"]["status"] == "cancelled"
    await deliver(runtime)
    assert reason in mail.to("deny@example.com")[-1].get_content()
    extension = mail.to("extend@example.com")[-1].get_content()
    assert "Many systems to search." in extension
    assert seen["extend"]["due_at"][:10] in extension


async def test_a_chinese_request_is_answered_in_chinese(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    await make_subject(client, auth, email=EMAIL, profile=PROFILE)
    request_id = await submit(client, {"email": EMAIL}, "access", language="zh", regime="pipl")
    await deliver(runtime)
    code_mail = mail.to(EMAIL)[-1]
    assert str(code_mail["Subject"]).startswith("您的验证码")
    assert "验证码将在 15 分钟后失效" in code_mail.get_content()
    verified = await client.post(f"/v1/requests/{request_id}/verify", json={"code": code_from(mail, EMAIL)})
    assert verified.json()["status"] == "completed"
    await deliver(runtime)
    done = mail.to(EMAIL)[-1]
    assert str(done["Subject"]) == "您的隐私请求已完成"
    assert "已处理完毕" in done.get_content()
    export = (await client.get(f"/v1/requests/{request_id}/export", headers=bearer(verified.json()["token"]))).json()
    assert export["request"]["regime"] == "pipl"
    assert any("\u4e00" <= ch <= "\u9fff" for ch in export["processing"]["categories"][0]["name"])

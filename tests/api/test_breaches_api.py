"""Breach incidents over HTTP: record, assess, notify, register, close; and every refusal leaves no trace."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

from httpx import AsyncClient
from sqlalchemy import text

from privacy_service.breaches.messaging import queue_subject_notices
from privacy_service.runtime import Runtime
from tests.breach_support import assess, create, deliver_all, incident, make_subjects
from tests.conftest import MailSink, make_operator_key


async def audit_rows(runtime: Runtime, prefix: str) -> list[dict[str, Any]]:
    async with runtime.db.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT action, actor_type, outcome, detail FROM audit_events WHERE action LIKE :p ORDER BY id"),
            {"p": prefix + "%"},
        )
        out = [dict(row._mapping) for row in rows]
    for row in out:
        if isinstance(row["detail"], str):  # SQLite returns JSON as text to a raw query
            row["detail"] = json.loads(row["detail"])
    return out


async def breach_count(runtime: Runtime) -> dict[str, int]:
    counts = {}
    async with runtime.db.engine.connect() as conn:
        for table in ("breaches", "breach_versions", "breach_subjects", "breach_authority_notices"):
            counts[table] = int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())  # noqa: S608
    return counts


async def test_workflow_from_report_to_closed_incident(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    subject_ids = await make_subjects(runtime, 3, domain="workflow.example")
    zh_subject = (
        await client.post("/v1/subjects", json={"email": "li@zh.example", "language": "zh"}, headers=auth)
    ).json()
    erased = (await client.post("/v1/subjects", json={"email": "gone@erased.example"}, headers=auth)).json()
    assert (await client.delete(f"/v1/subjects/{erased['id']}", headers=auth)).status_code in (200, 204)
    affected = [*map(str, subject_ids), zh_subject["id"], erased["id"]]

    breach = await create(
        client,
        auth,
        categories=["user.name", "user.contact.email", "user.financial.transaction"],
        affected={"subject_ids": affected},
        approx_records=120,
        translations={
            "zh": {"description": "邮箱规则将客服邮件转发至外部地址长达两天。", "advice": "请勿回复索要密码的邮件。"}
        },
    )
    assert breach["status"] == "open"
    assert breach["affected"] == {"kind": "subjects", "count": 5, "selector": None}
    assert breach["clock"]["state"] == "running"
    assert 71 * 3600 < breach["clock"]["seconds_left"] <= 72 * 3600
    assert breach["open_duties"] == ["assessment"]

    assessed = await assess(client, auth, breach["id"])
    # Financial data (DPC 3) x maximum identifiability + unknown recipients + malicious intent = 4.0.
    assert assessed["severity"] == 4.0
    assert assessed["band"] == "very_high"
    decisions = assessed["decisions"]
    assert decisions["notify_authority"]["value"]
    assert decisions["notify_subjects"]["value"]
    assert "ENISA severity 4.00 = DPC 3 x EI 1.00 + CB 1.00" in decisions["notify_subjects"]["reasons"][0]
    assert assessed["open_duties"] == ["authority_notification", "subject_notifications"]

    notice = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification",
        json={"recipient": "DPC online breach form, ref. BN-1234"},
        headers=auth,
    )
    assert notice.status_code == 201, notice.text
    content = notice.json()["content"]
    assert notice.json()["kind"] == "initial"
    assert notice.json()["late"] is False
    # Art. 33(3): (a) nature, categories, approximate numbers; (b) DPO; (c) consequences; (d) measures.
    assert content["nature"]["types"] == ["confidentiality"]
    assert content["categories"] == ["user.name", "user.contact.email", "user.financial.transaction"]
    assert content["data_subjects"] == {"approximate_number": 5, "basis": "identified"}
    assert content["records"] == {"approximate_number": 120}
    assert content["dpo"]["email"] == "dpo@wallet.example"
    assert content["texts"]["consequences"]
    assert content["texts"]["mitigation"]
    assert content["notice"]["authority"]["key"] == "ie_dpc"
    assert content["notice"]["recipient"] == "DPC online breach form, ref. BN-1234"

    links = notice.json()["documents"]
    html_en = await client.get(links["en"]["html"], headers=auth)
    assert html_en.headers["content-type"].startswith("text/html")
    assert "Nature of the breach (Art. 33(3)(a))" in html_en.text
    assert "dpo@wallet.example" in html_en.text
    html_zh = await client.get(links["zh"]["html"], headers=auth)
    assert "个人信息安全事件报告" in html_zh.text
    assert "邮箱规则将客服邮件转发至外部地址" in html_zh.text
    assert "交易记录" in html_zh.text  # category names from the Chinese notice
    markdown = await client.get(links["en"]["markdown"], headers=auth)
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith("# Personal data breach notification")
    assert (await client.get(links["zh"]["json"], headers=auth)).json() == content

    again = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification",
        json={"recipient": "again", "kind": "initial"},
        headers=auth,
    )
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/already-notified"
    follow_up = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification",
        json={"recipient": "DPC case officer", "note": "Forensics confirm 2 days of forwarding."},
        headers=auth,
    )
    assert follow_up.status_code == 201
    assert follow_up.json()["kind"] == "follow_up"
    assert follow_up.json()["seq"] == 2
    assert follow_up.json()["content"]["notice"]["previous"][0]["seq"] == 1

    refused = await client.post(f"/v1/breaches/{breach['id']}/close", json={}, headers=auth)
    assert refused.status_code == 409
    assert refused.json()["open_duties"] == ["subject_notifications"]

    queued = await client.post(f"/v1/breaches/{breach['id']}/subject-notifications", json={}, headers=auth)
    assert queued.status_code == 202, queued.text
    assert queued.json()["counts"]["pending"] == 5
    twice = await client.post(f"/v1/breaches/{breach['id']}/subject-notifications", json={}, headers=auth)
    assert twice.status_code == 409

    result = await queue_subject_notices(runtime.db, runtime.keys, runtime.clock)
    assert (result.queued, result.skipped_erased) == (4, 1)
    assert await deliver_all(runtime) == 4
    status = (await client.get(f"/v1/breaches/{breach['id']}/subject-notifications", headers=auth)).json()
    assert status["counts"]["sent"] == 4
    assert status["counts"]["skipped_erased"] == 1
    assert status["done"]
    english = mail.to("person0@workflow.example")
    assert len(english) == 1
    assert english[0]["Subject"].startswith("Notice of Data Breach")
    body = english[0].get_content()
    for heading in ("What Happened", "What Information Was Involved", "What We Are Doing", "What You Can Do"):
        assert heading in body
    assert "Transactions" in body or "transaction" in body.lower()
    chinese = mail.to("li@zh.example")
    assert len(chinese) == 1
    assert "个人信息安全事件告知" in str(chinese[0]["Subject"])
    assert "请勿回复索要密码的邮件。" in chinese[0].get_content()
    assert not mail.to("gone@erased.example")

    closed = await client.post(f"/v1/breaches/{breach['id']}/close", json={"note": "All duties done."}, headers=auth)
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    assert closed.json()["open_duties"] == []
    assert [step["status"] for step in closed.json()["history"]] == ["open", "assessed", "notifying", "closed"]

    versions = (await client.get(f"/v1/breaches/{breach['id']}/versions", headers=auth)).json()
    assert [v["action"] for v in versions] == [
        "create",
        "assess",
        "authority_notification",
        "authority_notification",
        "subject_notifications",
        "close",
    ]
    assert [v["version"] for v in versions] == [1, 2, 3, 4, 5, 6]
    assert versions[1]["snapshot"]["assessment"]["severity"]["se"] == 4.0

    exported = await client.get("/v1/breaches/register.csv", headers=auth)
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 1
    assert rows[0]["id"] == breach["id"]
    assert rows[0]["notify_subjects"] == "yes"
    assert rows[0]["subjects_sent"] == "4"
    assert rows[0]["subjects_erased_not_contacted"] == "1"

    # The audit trail names the incident and what changed, never its texts or anyone's address.
    events = await audit_rows(runtime, "breach.")
    assert [e["action"] for e in events if e["actor_type"] == "operator"][:2] == ["breach.create", "breach.assess"]
    for event in events:
        flat = str(event["detail"])
        assert "mailbox" not in flat
        assert "@" not in flat


async def test_refusals_change_nothing(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    before = await breach_count(runtime)
    cases: list[tuple[dict[str, Any], int, str]] = [
        (incident(categories=["user.name", "user.shoe_size"]), 422, "user.shoe_size"),
        (incident(aware_at="2999-01-01T00:00:00Z"), 422, "aware_at is in the future"),
        (incident(aware_at="2026-01-01T00:00:00"), 422, "timezone"),
        (incident(affected={"estimated_count": 3, "subject_ids": [str(uuid.uuid4())]}), 422, "exactly one"),
        (incident(affected={"subject_ids": [str(uuid.uuid4())]}), 422, "not subjects of the vault"),
        (incident(occurred_from="2026-02-01T00:00:00Z", occurred_to="2026-01-01T00:00:00Z"), 422, "before"),
        (incident(nature=["confidentiality", "secrecy"]), 400, ""),
        (incident(surprise=True), 400, ""),
        (incident(title="NUL \u0000 inside"), 400, ""),
    ]
    for body, status, words in cases:
        response = await client.post("/v1/breaches", json=body, headers=auth)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert words in response.json()["detail"] or words in str(response.json())
    assert await breach_count(runtime) == before

    breach = await create(client, auth, categories=["user.name", "user.financial.transaction"])
    snapshot = await breach_count(runtime)
    early = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification", json={"recipient": "DPC"}, headers=auth
    )
    assert early.status_code == 409
    assert early.json()["type"] == "/problems/illegal-transition"
    bad_assessments: list[tuple[dict[str, Any], int]] = [
        ({"ease_of_identification": "maximum", "dpc_factors": {"user.name": ["fraud_enabling"]}}, 422),
        ({"ease_of_identification": "maximum", "dpc_factors": {"user.device": ["little_insight"]}}, 422),
        ({"ease_of_identification": "maximum", "availability": "full"}, 422),
        ({"ease_of_identification": "maximum", "contained": True}, 422),
        ({"ease_of_identification": "somewhat"}, 400),
        (
            {
                "ease_of_identification": "maximum",
                "overrides": {"notify_subjects": {"value": False, "justification": "no"}},
            },
            400,
        ),
    ]
    for body, status in bad_assessments:
        response = await client.post(f"/v1/breaches/{breach['id']}/assessment", json=body, headers=auth)
        assert response.status_code == status, (body, response.text)
    assert await breach_count(runtime) == snapshot
    view = (await client.get(f"/v1/breaches/{breach['id']}", headers=auth)).json()
    assert view["status"] == "open"
    assert view["version"] == 1
    assert view["assessment"] is None

    await assess(client, auth, breach["id"])
    snapshot = await breach_count(runtime)
    closing = await client.post(f"/v1/breaches/{breach['id']}/close", json={}, headers=auth)
    assert closing.status_code == 409
    assert closing.json()["type"] == "/problems/open-duties"
    assert closing.json()["open_duties"] == ["authority_notification", "subject_notifications"]
    estimate_only = await client.post(f"/v1/breaches/{breach['id']}/subject-notifications", json={}, headers=auth)
    assert estimate_only.status_code == 409
    assert "only estimated" in estimate_only.json()["detail"]
    in_future = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification",
        json={"recipient": "DPC", "sent_at": "2999-01-01T00:00:00Z"},
        headers=auth,
    )
    assert in_future.status_code == 422
    assert await breach_count(runtime) == snapshot
    after = (await client.get(f"/v1/breaches/{breach['id']}", headers=auth)).json()
    assert after["status"] == "assessed"
    assert after["version"] == 2

    assert (await client.get(f"/v1/breaches/{uuid.uuid4()}", headers=auth)).status_code == 404
    reader = await make_operator_key(runtime, frozenset({"subjects:read"}))
    forbidden = await client.get("/v1/breaches", headers={"Authorization": f"Bearer {reader}"})
    assert forbidden.status_code == 403


async def test_override_needs_a_justification_and_is_recorded(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    breach = await create(
        client,
        auth,
        categories=["user.device"],
        malicious=False,
        exfiltration_known=False,
        affected={"estimated_count": 3},
    )
    low = await assess(client, auth, breach["id"], confidentiality="known_recipients")
    assert low["band"] == "low"
    assert low["decisions"]["notify_authority"]["value"] is False
    assert low["clock"]["state"] == "not_required"
    # No GDPR duty, but Cal. Civ. Code §1798.82 has no risk threshold: the readable data's people are owed a notice.
    assert low["open_duties"] == ["california_notice"]
    refused = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification", json={"recipient": "DPC"}, headers=auth
    )
    assert refused.status_code == 409
    assert refused.json()["type"] == "/problems/notification-not-required"

    justification = "The recipient is a competitor; legal wants the authority informed regardless."
    overridden = await assess(
        client,
        auth,
        breach["id"],
        confidentiality="known_recipients",
        overrides={"notify_authority": {"value": True, "justification": justification}},
    )
    decision = overridden["decisions"]["notify_authority"]
    assert decision == {
        "value": True,
        "computed": False,
        "overridden": True,
        "justification": justification,
        "reasons": [*decision["reasons"][:-1], f"Overridden by an operator (yes): {justification}"],
    }
    assert overridden["clock"]["state"] == "running"
    assert overridden["open_duties"] == ["authority_notification", "california_notice"]
    notified = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification", json={"recipient": "DPC"}, headers=auth
    )
    assert notified.status_code == 201
    no_california = {"california_not_required": "The device identifiers concern EU accounts only."}
    closed = await client.post(f"/v1/breaches/{breach['id']}/close", json=no_california, headers=auth)
    assert closed.status_code == 200
    events = await audit_rows(runtime, "breach.assess")
    assert events[-1]["detail"]["overridden"] == ["notify_authority"]
    assert justification not in str(events)


async def test_art_34_3_exemptions(client: AsyncClient, auth: dict[str, str]) -> None:
    # (a) encrypted, key safe: even very sensitive data is unintelligible to the thief.
    encrypted = await create(
        client,
        auth,
        nature=["confidentiality"],
        categories=["user.financial.account_number", "user.government_id"],
        encrypted=True,
        key_compromised=False,
    )
    result = await assess(client, auth, encrypted["id"])
    subjects = result["decisions"]["notify_subjects"]
    assert result["assessment"]["severity"]["raw_band"] == "very_high"
    assert result["band"] == "low"
    assert subjects["value"] is False
    assert any("Art. 34(3)(a)" in reason for reason in subjects["reasons"])
    # ...but once the key is believed compromised the exemption is gone.
    await client.patch(f"/v1/breaches/{encrypted['id']}", json={"key_compromised": True}, headers=auth)
    stale = (await client.get(f"/v1/breaches/{encrypted['id']}", headers=auth)).json()
    assert stale["assessment_stale"]
    assert "reassessment" in stale["open_duties"]
    again = await assess(client, auth, encrypted["id"])
    assert again["decisions"]["notify_subjects"]["value"] is True

    # (b) later measures removed the high risk.
    mitigated = await create(client, auth, categories=["user.financial.account_number"])
    result = await assess(client, auth, mitigated["id"], mitigated=True)
    assert result["decisions"]["notify_authority"]["value"] is True
    assert result["decisions"]["notify_subjects"]["value"] is False
    assert "Art. 34(3)(b)" in result["decisions"]["notify_subjects"]["reasons"][-1]

    # (c) disproportionate effort: a public communication instead, which closing then requires.
    public = await create(client, auth, categories=["user.financial.account_number"])
    result = await assess(client, auth, public["id"], disproportionate_effort=True)
    assert result["decisions"]["notify_subjects"]["value"] is False
    assert result["decisions"]["public_communication"]["value"] is True
    await client.post(f"/v1/breaches/{public['id']}/authority-notification", json={"recipient": "DPC"}, headers=auth)
    refused = await client.post(f"/v1/breaches/{public['id']}/close", json={}, headers=auth)
    assert refused.json()["open_duties"] == ["public_communication"]
    published = await client.post(
        f"/v1/breaches/{public['id']}/public-communication",
        json={"channel": "Notice on the website and in the app", "url": "https://wallet.example/security-notice"},
        headers=auth,
    )
    assert published.status_code == 200
    assert (await client.post(f"/v1/breaches/{public['id']}/close", json={}, headers=auth)).status_code == 200


async def test_selector_finds_subjects_by_records(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    ids = await make_subjects(runtime, 4, domain="selector.example")
    for subject_id, category in zip(ids, ["user.financial.transaction"] * 3 + ["user.behavior"], strict=True):
        for _ in range(2):
            response = await client.post(
                f"/v1/subjects/{subject_id}/records",
                json={"kind": "transaction", "category": category, "occurred_at": "2026-01-01T00:00:00Z", "data": {}},
                headers=auth,
            )
            assert response.status_code == 201
    window = {"created_from": "2000-01-01T00:00:00Z", "created_to": "2999-01-01T00:00:00Z"}
    breach = await create(
        client,
        auth,
        categories=["user.financial.transaction"],
        affected={"selector": {"category": "user.financial.transaction", **window}},
    )
    assert breach["affected"]["kind"] == "selector"
    assert breach["affected"]["count"] == 3
    assert breach["approx_records"] == 6
    empty = await client.patch(
        f"/v1/breaches/{breach['id']}",
        json={
            "affected": {
                "selector": {"category": "user.financial.transaction", **window, "created_to": "2000-01-02T00:00:00Z"}
            }
        },
        headers=auth,
    )
    assert empty.json()["affected"]["count"] == 0
    assert empty.json()["version"] == 2
    recipients = (
        await client.get(f"/v1/breaches/{breach['id']}/subject-notifications/recipients", headers=auth)
    ).json()
    assert recipients["items"] == []


async def test_register_lists_every_incident_with_filters(client: AsyncClient, auth: dict[str, str]) -> None:
    first = await create(client, auth, title="First")
    second = await create(client, auth, title="Second", categories=["user.device"], malicious=False)
    await assess(client, auth, second["id"], confidentiality="known_recipients")
    page = (await client.get("/v1/breaches", params={"limit": 1}, headers=auth)).json()
    assert [item["title"] for item in page["items"]] == ["Second"]
    assert page["next_cursor"]
    rest = (await client.get("/v1/breaches", params={"after": page["next_cursor"]}, headers=auth)).json()
    assert [item["id"] for item in rest["items"]] == [first["id"]]
    low = (await client.get("/v1/breaches", params={"band": "low"}, headers=auth)).json()
    assert [item["id"] for item in low["items"]] == [second["id"]]
    assert (await client.get("/v1/breaches", params={"after": "nonsense"}, headers=auth)).status_code == 422

"""Issue 16 item 1, as an attacker tries it: a request filed in a victim's name must never ride on the
victim's own verification (no body applied, no token, no processing), on SQLite and PostgreSQL.

The attacker files for the victim's address; the victim then files and verifies their own request
with the code read from the real SMTP sink. Only the victim's own request may be verified and answered.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from httpx import AsyncClient

from privacy_service.config import Settings
from privacy_service.runtime import Runtime
from tests.api.dsr_support import (
    TRANSACTION,
    bearer,
    deliver,
    fresh_settings,
    make_subject,
    rows,
    submit,
    submit_and_verify,
)
from tests.conftest import MailSink

VICTIM = "vera.victim@example.com"
ATTACKER = "mallory@example.net"
IBAN = "DE89370400440532013000"
PROFILE = {"name": "Vera Victim", "iban": IBAN}
ATTACK_CHANGES = {"email": ATTACKER, "profile": {"name": "Mallory Owner", "iban": "GB33BUKB20201555555555"}}


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend)


async def request_row(runtime: Runtime, request_id: str) -> dict[str, Any]:
    wanted = uuid.UUID(request_id)
    return next(row for row in await rows(runtime, "dsr_requests") if uuid.UUID(str(row["id"])) == wanted)


async def assert_untouched(runtime: Runtime, request_id: str) -> None:
    """The attacker's request: still waiting for its own code, never verified, no token, no answer."""
    row = await request_row(runtime, request_id)
    assert row["status"] == "awaiting_verification"
    assert row["verified_at"] is None
    assert row["token_hash"] is None
    assert row["result"] in (None, "null")  # SQLite hands the JSON column back as text


async def test_a_strangers_correction_is_never_applied_by_the_victims_verification(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    subject_id = await make_subject(client, auth, email=VICTIM, profile=PROFILE, records={TRANSACTION: 1})
    attack = await submit(client, {"email": VICTIM}, "rectify", changes=ATTACK_CHANGES)
    own, verified = await submit_and_verify(
        client, runtime, mail, VICTIM, "rectify", changes={"profile": {"secondary_phone": "+447911123456"}}
    )

    subject = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
    assert subject["email"] == VICTIM
    assert subject["profile"] == {**PROFILE, "secondary_phone": "+447911123456"}  # the victim's own change only
    assert (verified["id"], verified["status"]) == (own, "completed")
    await assert_untouched(runtime, attack)
    updates = [e for e in await rows(runtime, "audit_events") if e["action"] == "subject.update"]
    assert len(updates) == 1
    assert "email" not in json.dumps(updates[0]["detail"], default=str)

    # The attacker now proves control of their own address and asks for "their" data: nothing.
    access, attacker_view = await submit_and_verify(client, runtime, mail, ATTACKER, "access")
    status = (await client.get(f"/v1/requests/{access}", headers=bearer(attacker_view["token"]))).json()
    assert status["result"] == {"data_found": False}
    assert status["export_url"] is None
    export = await client.get(f"/v1/requests/{access}/export", headers=bearer(attacker_view["token"]))
    assert export.status_code in (404, 409, 410)
    assert IBAN not in export.text
    # Nor does the attacker's token open the victim's request.
    assert (await client.get(f"/v1/requests/{own}", headers=bearer(attacker_view["token"]))).status_code == 403


async def test_a_strangers_access_request_gets_no_token_from_the_victims_verification(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    await make_subject(client, auth, email=VICTIM, profile=PROFILE, records={TRANSACTION: 1})
    attack = await submit(client, {"email": VICTIM}, "access", language="zh")
    stranger_fix = await submit(client, {"email": VICTIM}, "rectify", changes=ATTACK_CHANGES)
    own, verified = await submit_and_verify(client, runtime, mail, VICTIM, "access")
    assert (verified["id"], verified["status"]) == (own, "completed")
    await assert_untouched(runtime, attack)
    await assert_untouched(runtime, stranger_fix)

    # The victim's export lists the requests filed for their address, and nothing of their bodies.
    export = await client.get(f"/v1/requests/{own}/export", headers=bearer(verified["token"]))
    assert export.status_code == 200
    body = export.json()
    assert {r["id"] for r in body["requests"]} == {attack, stranger_fix, own}
    assert all(set(r) == {"id", "type", "status", "received_at"} for r in body["requests"])
    for planted in (ATTACKER, "Mallory", "GB33BUKB"):
        assert planted not in export.text


@pytest.mark.parametrize("victim_type", ["erase", "access"])
async def test_a_strangers_erasure_is_never_executed_by_the_victims_verification(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink, victim_type: str
) -> None:
    subject_id = await make_subject(client, auth, email=VICTIM, profile=PROFILE, records={TRANSACTION: 1})
    attack = await submit(client, {"email": VICTIM}, "erase", reason="please delete everything")
    own, verified = await submit_and_verify(client, runtime, mail, VICTIM, victim_type)
    assert verified["id"] == own
    await assert_untouched(runtime, attack)
    if victim_type == "erase":
        # The victim's own erasure waits for an operator; approving it answers that request, not the stranger's.
        assert verified["status"] == "awaiting_review"
        listed = (await client.get("/v1/requests", params={"status": "awaiting_review"}, headers=auth)).json()
        assert [item["id"] for item in listed["items"]] == [own]
    else:
        assert verified["status"] == "completed"
        assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).status_code == 200
    # The stranger's request can still only be verified with its own code, which the attacker never saw.
    await deliver(runtime)
    assert (await client.post(f"/v1/requests/{attack}/verify", json={"code": "000000"})).status_code == 422

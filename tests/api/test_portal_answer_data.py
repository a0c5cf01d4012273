"""The answer to "See my data" shows the data itself, by category, to the verified visitor only:
what each category is used for and how long it is kept, the newest records with their total, the
downloads first; audited as the subject reading their own data; nothing of it in the logs."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
import time_machine

from privacy_service.app import create_app
from privacy_service.dsr import answer
from privacy_service.runtime import Runtime, build_runtime
from tests.api.dsr_support import rows
from tests.api.test_portal import EMAIL, submit_and_verify
from tests.conftest import MailSink, make_operator_key

PROFILE = {"name": "Dora Data", "date_of_birth": "1980-02-29", "national_id": "ID-77-DATA"}
PHONE = "+353871234567"


@pytest.fixture
def backend() -> str:
    return "sqlite"


async def _subject(client: httpx.AsyncClient, auth: dict[str, str], transactions: int) -> str:
    created = await client.post("/v1/subjects", json={"email": EMAIL, "phone": PHONE, "profile": PROFILE}, headers=auth)
    assert created.status_code == 201, created.text
    subject_id = str(created.json()["id"])
    for index in range(transactions):
        record = {
            "kind": "transaction",
            "category": "user.financial.transaction",
            "occurred_at": f"2026-01-{index + 1:02d}T10:00:00Z",
            "data": {"reference": f"TX-{index:03d}", "amount": index},
        }
        response = await client.post(f"/v1/subjects/{subject_id}/records", json=record, headers=auth)
        assert response.status_code == 201, response.text
    return subject_id


def _section(html: str, category_id: str) -> str:
    found = re.search(rf'<section class="data-category" aria-labelledby="{category_id}">(.*?)</section>', html, re.S)
    assert found, category_id
    return found.group(1)


async def test_the_answer_page_shows_the_data_by_category(
    client: httpx.AsyncClient,
    runtime: Runtime,
    mail: MailSink,
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(answer, "PAGE_RECORDS", 3)
    await _subject(client, auth, transactions=5)
    request_id, _verified = await submit_and_verify(client, runtime, mail)
    page = await client.get(f"/privacy/requests/{request_id}?lang=en")
    assert page.status_code == 200
    html = page.text
    assert page.headers["cache-control"] == "no-store"

    # The downloads come first in the answer, before the data.
    assert html.index('href="/privacy/requests/' + request_id + '/export?format=json"') < html.index(
        'id="data-heading"'
    )
    email = _section(html, "data-user-contact-email")
    assert EMAIL in email
    assert "What we use it for" in email
    assert "How long we keep it" in email
    assert "6 months after your account is closed" in email
    assert PHONE in _section(html, "data-user-contact-phone_number")
    identity = _section(html, "data-user-government_id")
    assert "ID-77-DATA" in identity
    # A category under a legal duty says so, with the law.
    assert "EU AMLD4" in _section(html, "data-user-name")
    transactions = _section(html, "data-user-financial-transaction")
    # The newest three of five, newest first, and the total.
    assert re.findall(r"TX-\d{3}", transactions) == ["TX-004", "TX-003", "TX-002"]
    assert "The latest 3 of 5 records. The download holds all of them." in transactions
    assert 'datetime="2026-01-05T10:00:00+00:00"' in transactions
    assert "Transaction" in transactions
    # Shown to the subject and audited as their read of their own data (ids and counts, never values).
    events = [e for e in await rows(runtime, "audit_events") if e["actor_type"] == "subject"]
    reads = [e for e in events if e["action"] == "record.read"]
    assert reads
    assert '"count": 3' in str(reads[-1]["detail"]) or reads[-1]["detail"].get("count") == 3
    assert any(e["action"] == "subject.read" for e in events)
    # The reader is named as the request (as dsr.answer_access names it), not an anonymous subject.
    answer_reads = [e for e in events if e["action"] in ("record.read", "subject.read")]
    assert {e["actor_id"] for e in answer_reads} == {request_id}
    assert "TX-004" not in str(events)
    # No personal data in the process's output (logs).
    captured = capfd.readouterr()
    for value in (EMAIL, PHONE, "ID-77-DATA", "TX-004", "Dora Data"):
        assert value not in captured.out + captured.err

    # Another browser, without the token, sees none of it.
    client.cookies.delete("privacy_request")
    locked = await client.get(f"/privacy/requests/{request_id}")
    for value in (EMAIL, PHONE, "ID-77-DATA", "TX-004", "Dora Data"):
        assert value not in locked.text


async def test_after_the_download_period_only_the_kinds_of_data_are_named(make_settings: Any, mail: MailSink) -> None:
    # The download ends after a day; the visitor's token (7 days) still opens the request.
    runtime = build_runtime(make_settings(dsr_export_ttl_days=1, dsr_token_ttl_days=7))
    transport = httpx.ASGITransport(app=create_app(runtime=runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            operator = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
            await _subject(client, operator, transactions=1)
            request_id, _verified = await submit_and_verify(client, runtime, mail)
            with time_machine.travel(runtime.clock.now() + timedelta(days=1, hours=1), tick=True):
                page = await client.get(f"/privacy/requests/{request_id}?lang=en")
    finally:
        await runtime.close()
    assert page.status_code == 200, page.text
    assert "Completed" in page.text
    for value in ("ID-77-DATA", "TX-000", EMAIL, 'id="data-heading"', "/export?format=json"):
        assert value not in page.text
    assert "The download period has ended" in page.text
    assert "The kinds of data we hold about you" in page.text

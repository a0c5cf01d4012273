# ruff: noqa: F811 - the shared fixtures (tests.console_support) are imported by name and taken as parameters
"""The console's subjects area (issue 17, item 4): the look-up by a posted identifier (audited as the API's
POST /v1/subjects/lookup), a subject's page (decrypted, audited as the API's reads), legal holds placed and
released and an erasure run through the API's own services, and the abuse cases: a read-only session, a
missing CSRF token, no session, bad input (never echoed), a hold refusing an erasure, a release without a
reason."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import text

from privacy_service.config import Settings
from privacy_service.runtime import Runtime
from privacy_service.web.console import subjects as subjects_console
from tests.api.dsr_support import make_subject
from tests.conftest import make_operator_key, sql_statements
from tests.conftest_logcheck import register
from tests.console_support import (  # noqa: F401 - fixtures, used by name
    app,
    auth,
    browser,
    client,
    console_settings,
    csrf_token,
    runtime,
    setup,
    signed_in,
)
from tests.integration.systems_support import OffsetClock
from tests.integration.systems_support import register as register_system

READ = frozenset({"subjects:read"})
WRITE = frozenset({"subjects:read", "subjects:write"})
ERASER = WRITE | {"requests:manage"}  # erasure files a request and approves it
EMAIL = "Console.Person@Example.com"
NAME = "Quintessa Marlowe-Tabb"
HOLD_REASON = "Matter Zoltan-Briar 2031/55: preserve for the claim"


@pytest.fixture(autouse=True)
def _form_markers() -> None:
    """What these tests post as forms (the log check harvests JSON bodies only): every log line and 4xx body
    of the run is scanned for these too (tests/conftest_logcheck.py)."""
    for value in (EMAIL, NAME, HOLD_REASON, "nobody.here@example.org", "Wolfgang.Zed", "because I said so"):
        register(value)


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    # Private networks allowed so a downstream system can be registered without resolving a name.
    return await console_settings(make_settings, backend, systems_allow_private_networks=True)


@pytest.fixture
async def subject_id(client: httpx.AsyncClient, auth: dict[str, str]) -> str:
    return await make_subject(client, auth, email=EMAIL, profile={"name": NAME}, records={"user.device": 2})


async def _events(runtime: Runtime, action: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(actor id, subject id, detail) of each audit event with ``action``."""
    async with runtime.db.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT actor_id, subject_id, detail FROM audit_events WHERE action = :action ORDER BY seq"),
            {"action": action},
        )
        return [
            (
                str(r[0]),
                str(uuid.UUID(str(r[1]))) if r[1] else None,
                r[2] if isinstance(r[2], dict) else json.loads(r[2]),
            )
            for r in rows
        ]


async def _scalar(runtime: Runtime, sql: str, **params: Any) -> Any:
    async with runtime.db.engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def _operator_id(runtime: Runtime, key: str) -> str:
    found = await _scalar(runtime, "SELECT id FROM operators WHERE key_id = :kid", kid=key.split("_")[1])
    return str(uuid.UUID(str(found)))


async def _active_holds(runtime: Runtime, subject: str) -> int:
    return int(
        await _scalar(
            runtime,
            "SELECT count(*) FROM legal_holds WHERE subject_id = :s AND released_at IS NULL",
            s=uuid.UUID(subject) if runtime.db.engine.dialect.name == "postgresql" else uuid.UUID(subject).hex,
        )
    )


async def _session(client: httpx.AsyncClient, runtime: Runtime, scopes: frozenset[str]) -> str:
    key = await make_operator_key(runtime, scopes)
    await signed_in(client, key)
    return key


async def test_the_lookup_page_in_english_and_chinese(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await _session(client, runtime, READ)
    english = await client.get("/console/subjects")
    assert english.status_code == 200
    assert "Find a subject" in english.text
    assert 'method="post" action="/console/subjects/lookup"' in english.text
    assert 'aria-current="page">Subjects' in english.text
    chinese = await client.get("/console/subjects?lang=zh")
    assert chinese.status_code == 200
    assert '<html lang="zh">' in chinese.text
    assert "查找数据主体" in chinese.text


async def test_a_lookup_goes_to_the_subject_by_id_and_is_audited_as_the_api_audits_it(
    client: httpx.AsyncClient, runtime: Runtime, subject_id: str, auth: dict[str, str]
) -> None:
    key = await _session(client, runtime, READ)
    token = await csrf_token(client, "/console/subjects")
    found = await client.post(
        "/console/subjects/lookup", data={"kind": "email", "value": EMAIL.lower(), "_csrf_token": token}
    )
    assert found.status_code == 303
    assert found.headers["location"] == f"/console/subjects/{subject_id}"
    assert "example" not in found.headers["location"].lower()
    lookups = await _events(runtime, "subject.lookup")
    assert lookups[-1][:2] == (await _operator_id(runtime, key), subject_id)
    assert lookups[-1][2] == {"by": "email", "found": 1}

    unknown = await client.post(
        "/console/subjects/lookup", data={"kind": "email", "value": "nobody.here@example.org", "_csrf_token": token}
    )
    assert unknown.status_code == 200
    assert "nobody.here" not in unknown.text
    after = await _events(runtime, "subject.lookup")
    assert len(after) == len(lookups) + 1
    assert after[-1][1:] == (None, {"by": "email", "found": 0})
    api = await client.post("/v1/subjects/lookup", json={"email": "nobody.here@example.org"}, headers=auth)
    assert api.json() == {"items": []}  # the API tells the same scope no more


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"kind": "email", "value": "not-an-address <Wolfgang.Zed>"}, "value"),
        ({"kind": "phone", "value": "call Wolfgang.Zed"}, "value"),
        ({"kind": "passport", "value": "Wolfgang.Zed"}, "kind"),
        ({"kind": "email", "value": "   "}, "value"),
        ({"kind": "external_id", "value": "Wolfgang.Zed" * 40}, "value"),
    ],
)
async def test_a_bad_identifier_is_a_422_page_that_echoes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, form: dict[str, str], field: str
) -> None:
    await _session(client, runtime, READ)
    token = await csrf_token(client, "/console/subjects")
    before = len(await _events(runtime, "subject.lookup"))
    answer = await client.post("/console/subjects/lookup", data={**form, "_csrf_token": token})
    assert answer.status_code == 422
    assert "Wolfgang" not in answer.text
    assert "passport" not in answer.text
    assert f'href="#{field}"' in answer.text  # the error summary points at the field
    assert 'class="error-summary"' in answer.text
    assert len(await _events(runtime, "subject.lookup")) == before


async def test_the_subject_page_decrypts_and_is_audited_as_the_api_reads(
    client: httpx.AsyncClient, runtime: Runtime, subject_id: str
) -> None:
    key = await _session(client, runtime, READ)
    page = await client.get(f"/console/subjects/{subject_id}")
    assert page.status_code == 200, page.text
    assert EMAIL.lower() in page.text
    assert NAME in page.text
    assert 'id="records"' in page.text
    assert page.text.count("user.device-") == 2
    assert 'id="kept"' in page.text  # the name stays under the AML duty if erased now
    assert 'id="no-holds"' in page.text
    operator = await _operator_id(runtime, key)
    for action in ("subject.read", "record.read", "hold.read"):
        assert (operator, subject_id) in [event[:2] for event in await _events(runtime, action)], action
    chinese = await client.get(f"/console/subjects/{subject_id}?lang=zh")
    assert chinese.status_code == 200
    assert "身份与资料" in chinese.text
    assert NAME in chinese.text
    missing = await client.get(f"/console/subjects/{uuid.uuid4()}")
    assert missing.status_code == 404


async def test_a_read_only_session_sees_no_actions_and_is_refused_them(
    client: httpx.AsyncClient, runtime: Runtime, subject_id: str, auth: dict[str, str]
) -> None:
    placed = await client.post(f"/v1/subjects/{subject_id}/holds", json={"reason": HOLD_REASON}, headers=auth)
    hold_id = placed.json()["id"]
    await _session(client, runtime, READ)
    page = await client.get(f"/console/subjects/{subject_id}")
    assert "/holds/new" not in page.text
    assert "/erase" not in page.text
    assert "/release" not in page.text
    token = await csrf_token(client, "/console/subjects")
    base = f"/console/subjects/{subject_id}"
    attempts = [
        (f"{base}/holds", {"reason": "again"}),
        (f"{base}/holds/{hold_id}/release", {"reason": "matter_closed"}),
        (f"{base}/erase", {"confirm": subject_id, "reason": "duplicate_or_test"}),
    ]
    for path, form in attempts:
        refused = await client.post(path, data={**form, "_csrf_token": token})
        assert refused.status_code == 403, path
    for path in (f"{base}/holds/new", f"{base}/erase", f"{base}/holds/{hold_id}/release"):
        assert (await client.get(path)).status_code == 403, path
    assert await _active_holds(runtime, subject_id) == 1
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()["status"] == "active"


async def test_without_csrf_or_a_session_nothing_changes(
    setup: tuple[Runtime, Litestar, OffsetClock],
    client: httpx.AsyncClient,
    runtime: Runtime,
    subject_id: str,
    auth: dict[str, str],
) -> None:
    placed = await client.post(f"/v1/subjects/{subject_id}/holds", json={"reason": HOLD_REASON}, headers=auth)
    hold_id = placed.json()["id"]
    await _session(client, runtime, WRITE)
    base = f"/console/subjects/{subject_id}"
    forms = (  # every form of the area
        ("/console/subjects/lookup", {"kind": "email", "value": EMAIL}),
        (f"{base}/holds", {"reason": "x"}),
        (f"{base}/holds/{hold_id}/release", {"reason": "matter_closed"}),
        (f"{base}/erase", {"confirm": subject_id, "reason": "duplicate_or_test"}),
    )
    for path, form in forms:
        for token in (None, "forged"):
            data = {**form, **({"_csrf_token": token} if token else {})}
            refused = await client.post(path, data=data)
            assert refused.status_code == 403, path
            assert "The form expired" in refused.text
    assert await _active_holds(runtime, subject_id) == 1
    assert await _scalar(runtime, "SELECT count(*) FROM audit_events WHERE action = 'subject.lookup'") == 0
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()["status"] == "active"
    async with browser(setup[1]) as stranger:
        assert (await stranger.get(base)).headers["location"] == "/console/sign-in"
        assert (await stranger.get("/console/subjects")).status_code == 303
        token = await csrf_token(stranger, "/console/sign-in")
        for path, form in forms:
            assert (await stranger.post(path, data={**form, "_csrf_token": token})).status_code == 401, path
    assert await _active_holds(runtime, subject_id) == 1
    assert await _scalar(runtime, "SELECT count(*) FROM audit_events WHERE action = 'subject.lookup'") == 0
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()["status"] == "active"


async def test_place_a_hold_erasure_kept_by_it_release_with_a_reason_then_erase(
    client: httpx.AsyncClient, runtime: Runtime, subject_id: str, auth: dict[str, str]
) -> None:
    key = await _session(client, runtime, ERASER)
    operator = await _operator_id(runtime, key)
    base = f"/console/subjects/{subject_id}"
    page = await client.get(base)
    assert f'href="{base}/holds/new"' in page.text
    assert f'href="{base}/erase"' in page.text
    token = await csrf_token(client, f"{base}/holds/new")

    blank = await client.post(f"{base}/holds", data={"reason": " ", "_csrf_token": token})
    assert blank.status_code == 422
    past = await client.post(f"{base}/holds", data={"reason": HOLD_REASON, "until": "2001-01-01", "_csrf_token": token})
    assert past.status_code == 422
    assert "Zoltan" not in past.text
    assert await _active_holds(runtime, subject_id) == 0

    placed = await client.post(
        f"{base}/holds", data={"reason": HOLD_REASON, "until": "2040-06-30", "_csrf_token": token}
    )
    assert placed.status_code == 303
    assert placed.headers["location"] == f"{base}?done=hold_placed"
    listed = (await client.get(f"/v1/subjects/{subject_id}/holds", headers=auth)).json()["items"]
    assert [(h["reason"], h["active"], h["placed_by"]) for h in listed] == [(HOLD_REASON, True, operator)]
    # Through the last day given, in the policy's display zone.
    zone = runtime.policy.display_zone
    until = datetime.fromisoformat(listed[0]["until"]).astimezone(zone)
    assert (until.date().isoformat(), until.hour, until.minute) == ("2040-06-30", 23, 59)
    held_page = await client.get(f"{base}?done=hold_placed")
    assert HOLD_REASON in held_page.text
    assert 'id="held-tag"' in held_page.text

    # Erasure: the confirmation must match, a reason is chosen; under a hold the erasure request runs as a data
    # subject's does: nothing is erased, everything is kept (the hold), the request is partially completed.
    mismatch = await client.post(
        f"{base}/erase", data={"confirm": str(uuid.uuid4()), "reason": "duplicate_or_test", "_csrf_token": token}
    )
    assert mismatch.status_code == 422
    no_reason = await client.post(f"{base}/erase", data={"confirm": subject_id, "_csrf_token": token})
    assert no_reason.status_code == 422
    assert await _events(runtime, "subject.erase.held") == []
    assert await _scalar(runtime, "SELECT count(*) FROM dsr_requests") == 0
    held = await client.post(
        f"{base}/erase", data={"confirm": subject_id, "reason": "request_outside_portal", "_csrf_token": token}
    )
    assert held.status_code == 303
    held_request = (await client.get(_api_request(held), headers=auth)).json()
    assert held_request["status"] == "partially_completed"
    assert held_request["result"]["erased"] == []
    assert [e[:2] for e in await _events(runtime, "subject.erase.held")] == [(operator, subject_id)]
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()["email"] == EMAIL.lower()

    # Release: a reason is needed (a code, never free text, since it goes into the audit log).
    release = f"{base}/holds/{listed[0]['id']}/release"
    assert (await client.get(release)).status_code == 200
    for form in ({}, {"reason": "because I said so"}, {"reason": "matter_closed", "reference": "has spaces in it"}):
        answer = await client.post(release, data={**form, "_csrf_token": token})
        assert answer.status_code == 422, form
        assert "because I said so" not in answer.text
    assert await _active_holds(runtime, subject_id) == 1
    released = await client.post(
        release, data={"reason": "matter_closed", "reference": "CASE-2031/55", "_csrf_token": token}
    )
    assert released.status_code == 303
    assert released.headers["location"] == f"{base}?done=hold_released"
    assert await _active_holds(runtime, subject_id) == 0
    assert [e[:2] for e in await _events(runtime, "hold.released")] == [(operator, subject_id)]
    reasons = await _events(runtime, "console.reason")
    assert reasons[-1][2] == {
        "for": "hold.released",
        "hold_id": listed[0]["id"],
        "reason": "matter_closed",
        "reference": "CASE-2031/55",
    }
    again = await client.post(release, data={"reason": "matter_closed", "_csrf_token": token})
    assert again.status_code == 409  # already released, as the API's 409: nothing to do

    erased = await client.post(
        f"{base}/erase", data={"confirm": subject_id.upper(), "reason": "request_outside_portal", "_csrf_token": token}
    )
    assert erased.status_code == 303
    location = erased.headers["location"]
    assert re.fullmatch(r"/console/requests/[0-9a-f-]{36}\?done=erased", location)
    after = await client.get(location)
    assert after.status_code == 200
    assert 'id="done"' in after.text
    assert NAME not in after.text  # (the request names its identity, as every erasure request does)
    # The request a data subject's erasure makes, approved by this operator: its result names the recipients
    # to tell (Art. 19), shown on its page.
    filed = (await client.get(_api_request(erased), headers=auth)).json()
    assert filed["type"] == "erase"
    assert filed["status"] == "partially_completed"  # the AML duty keeps the name
    assert filed["result"]["kept"]
    assert filed["result"]["recipients_to_notify"]
    assert all(name in after.text for name in filed["result"]["recipients_to_notify"])
    # The API's answer for the same subject now: the first erasure's report, the same kept categories.
    api = (await client.delete(f"/v1/subjects/{subject_id}", headers=auth)).json()
    assert api["status"] == "restricted"
    assert api["already_erased"] is True
    assert api["kept"]
    assert [e[:2] for e in await _events(runtime, "subject.erase")] == [(operator, subject_id)]
    assert [e[2]["request"] for e in await _events(runtime, "console.reason") if e[2]["for"] == "subject.erase"] == [
        held_request["id"],
        filed["id"],
    ]

    # Erased: the form and a post are a 410, and a post records nothing.
    reasons_before = len(await _events(runtime, "console.reason"))
    assert (await client.get(f"{base}/erase")).status_code == 410
    gone = await client.post(
        f"{base}/erase", data={"confirm": subject_id, "reason": "request_outside_portal", "_csrf_token": token}
    )
    assert gone.status_code == 410
    assert len(await _events(runtime, "console.reason")) == reasons_before
    assert await _scalar(runtime, "SELECT count(*) FROM dsr_requests") == 2


def _api_request(redirect: httpx.Response) -> str:
    """The API's URL of the request a console erasure filed (from the redirect to its console page)."""
    found = re.fullmatch(r"/console/requests/([0-9a-f-]{36})\?done=erased", redirect.headers["location"])
    assert found, redirect.headers["location"]
    return f"/v1/requests/{found.group(1)}"


async def test_console_erasure_queues_the_downstream_systems_as_a_data_subjects_does(
    client: httpx.AsyncClient, runtime: Runtime, subject_id: str, auth: dict[str, str]
) -> None:
    await register_system(client, auth, "https://crm.example/privacy", name="crm")
    await _session(client, runtime, ERASER)
    token = await csrf_token(client, f"/console/subjects/{subject_id}/erase")
    erased = await client.post(
        f"/console/subjects/{subject_id}/erase",
        data={"confirm": subject_id, "reason": "request_outside_portal", "_csrf_token": token},
    )
    assert erased.status_code == 303
    filed = (await client.get(_api_request(erased), headers=auth)).json()
    # Waits for the system's answer as a data subject's erasure does (finish_after_systems completes it).
    assert filed["status"] == "processing", filed
    assert await _scalar(runtime, "SELECT count(*) FROM system_deliveries") == 1


async def test_erasure_needs_requests_manage_too(
    client: httpx.AsyncClient, runtime: Runtime, subject_id: str, auth: dict[str, str]
) -> None:
    """Erasure files and approves a request: a session with subjects:write alone sees no button, gets a 403."""
    await _session(client, runtime, WRITE)
    base = f"/console/subjects/{subject_id}"
    page = await client.get(base)
    assert 'id="place-hold"' in page.text
    assert "/erase" not in page.text
    assert (await client.get(f"{base}/erase")).status_code == 403
    token = await csrf_token(client, base)
    refused = await client.post(
        f"{base}/erase", data={"confirm": subject_id, "reason": "request_outside_portal", "_csrf_token": token}
    )
    assert refused.status_code == 403
    assert await _scalar(runtime, "SELECT count(*) FROM dsr_requests") == 0
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()["status"] == "active"


async def test_records_come_in_keyset_pages(
    client: httpx.AsyncClient, runtime: Runtime, subject_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subjects_console, "RECORDS_PER_PAGE", 1)
    await _session(client, runtime, READ)
    first = await client.get(f"/console/subjects/{subject_id}")
    assert first.text.count("user.device-") == 1
    found = re.search(r'href="(/console/subjects/[^"?]+\?after=[0-9a-f-]+)" rel="next"', first.text)
    assert found
    second = await client.get(found.group(1))
    assert second.status_code == 200
    assert second.text.count("user.device-") == 1
    assert {re.search(r"user\.device-\d", page.text).group(0) for page in (first, second)} == {  # type: ignore[union-attr]
        "user.device-0",
        "user.device-1",
    }
    assert 'rel="next"' not in second.text
    assert f'href="/console/subjects/{subject_id}">' in second.text  # back to the first page
    bad = await client.get(f"/console/subjects/{subject_id}?after=not-a-uuid")
    assert bad.status_code == 400
    assert "not-a-uuid" not in bad.text


async def test_the_subject_page_sends_the_same_statements_however_many_records_and_holds(
    client: httpx.AsyncClient, runtime: Runtime, subject_id: str, auth: dict[str, str]
) -> None:
    """Bounded queries (no statement per record or per hold): the page is one keyset page of records and
    the holds in one query, whatever the subject holds."""
    await _session(client, runtime, READ)
    page = f"/console/subjects/{subject_id}"
    # One hold to start with: the first hold's reason loads the subject's key once (then never again).
    assert (
        await client.post(f"/v1/subjects/{subject_id}/holds", json={"reason": HOLD_REASON}, headers=auth)
    ).is_success
    await client.get(page)  # warm: the session's first resume may differ from later ones
    with sql_statements(runtime) as few:
        assert (await client.get(page)).status_code == 200
    for n in range(6):
        added = await client.post(
            f"/v1/subjects/{subject_id}/records",
            json={"kind": "note", "category": "user.device", "occurred_at": "2026-01-05T09:00:00Z", "data": {"n": n}},
            headers=auth,
        )
        assert added.status_code == 201
    for _ in range(3):
        placed = await client.post(f"/v1/subjects/{subject_id}/holds", json={"reason": HOLD_REASON}, headers=auth)
        assert placed.status_code == 201
    with sql_statements(runtime) as many:
        assert (await client.get(page)).status_code == 200
    assert len(many) == len(few), (few, many)


async def test_an_erasure_kept_by_a_hold_without_an_end_date_shows_its_request(
    client: httpx.AsyncClient, runtime: Runtime, subject_id: str, auth: dict[str, str]
) -> None:
    """A hold with no end date keeps everything with no date: the request's page (the portal's status words)
    shows its basis, not a 500."""
    placed = await client.post(f"/v1/subjects/{subject_id}/holds", json={"reason": HOLD_REASON}, headers=auth)
    assert placed.status_code == 201, placed.text
    await _session(client, runtime, ERASER)
    token = await csrf_token(client, f"/console/subjects/{subject_id}/erase")
    held = await client.post(
        f"/console/subjects/{subject_id}/erase",
        data={"confirm": subject_id, "reason": "request_outside_portal", "_csrf_token": token},
    )
    assert held.status_code == 303
    page = await client.get(held.headers["location"])
    assert page.status_code == 200, page.text[-500:]
    assert "legal hold" in page.text
    assert HOLD_REASON not in page.text

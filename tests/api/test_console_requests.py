# ruff: noqa: F811 - the shared fixtures (tests.console_support) are imported by name and taken as parameters
"""The console's requests area (issue 17 item 3): the queue with its filters and keyset pages, a request's page
(history, verified identity, the customer's note, a correction's diff, the deadline, the customer's answer),
and the decisions approve / deny / extend / cancel as plain forms calling the API's own service.

Abuse first: a key without requests:manage, a post without CSRF, no session, a replayed post, a bad id, an
empty or over-long reason: each refused with nothing changed and no one else's data on the page.
On SQLite and PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from litestar import Litestar

from privacy_service.config import Settings
from privacy_service.runtime import Runtime
from privacy_service.web.console import requests as console_requests
from tests.api.dsr_support import (
    assert_no_leak,
    assert_unchanged,
    make_subject,
    rows,
    snapshot,
    submit,
    submit_and_verify,
)
from tests.conftest import MailSink, make_operator_key, sql_statements
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

MANAGE = frozenset({"requests:manage"})
MANAGE_AND_READ = frozenset({"requests:manage", "subjects:read"})
NOTE = "Please also check the loyalty card account, number LC-55821."
ALICE = "alice.console@example.com"
BOB = "bob.console@example.com"


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    # No type is answered without an operator: every verified request waits in the queue for a decision.
    return await console_settings(make_settings, backend, dsr_auto_approve=[])


async def _waiting(
    client: httpx.AsyncClient, runtime: Runtime, mail: MailSink, email: str, type_: str = "access", **extra: Any
) -> str:
    request_id, verified = await submit_and_verify(client, runtime, mail, email, type_, **extra)
    assert verified["status"] == "awaiting_review", verified
    return request_id


async def _api_view(client: httpx.AsyncClient, auth: dict[str, str], request_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/requests/{request_id}", headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@asynccontextmanager
async def _console(app: Litestar, runtime: Runtime, scopes: frozenset[str]) -> AsyncIterator[httpx.AsyncClient]:
    """A browser signed in with a key of ``scopes``."""
    async with browser(app) as opened:
        await signed_in(opened, await make_operator_key(runtime, scopes))
        yield opened


async def _post(client: httpx.AsyncClient, path: str, page: str, **data: str) -> httpx.Response:
    return await client.post(path, data={"_csrf_token": await csrf_token(client, page), **data})


async def _audit(runtime: Runtime, action: str) -> list[dict[str, Any]]:
    return [event for event in await rows(runtime, "audit_events") if event["action"] == action]


def _detail(event: dict[str, Any]) -> dict[str, Any]:
    detail = event["detail"]
    return json.loads(detail) if isinstance(detail, str) else dict(detail)


# -- abuse ------------------------------------------------------------------------------------------


async def test_a_key_without_requests_manage_sees_no_queue_and_is_refused_every_decision(
    client: httpx.AsyncClient, app: Litestar, runtime: Runtime, mail: MailSink
) -> None:
    request_id = await _waiting(client, runtime, mail, ALICE)
    before = await snapshot(runtime)
    async with _console(app, runtime, frozenset({"subjects:read", "audit:read"})) as narrow:
        dashboard = (await narrow.get("/console")).text
        assert 'href="/console/requests"' not in dashboard  # no link to the queue
        page = f"/console/requests/{request_id}"
        for path in ("/console/requests", page):
            refused = await narrow.get(path)
            assert refused.status_code == 403, path
            assert "Not allowed" in refused.text
            assert "/approve" not in refused.text  # no buttons
        token = await csrf_token(narrow, "/console")
        for action, data in (
            ("approve", {}),
            ("deny", {"reason": "No"}),
            ("extend", {"reason": "Busy"}),
            ("cancel", {}),
        ):
            response = await narrow.post(f"{page}/{action}", data={"_csrf_token": token, **data})
            assert response.status_code == 403, action
            assert_no_leak(response, ALICE)
    assert_unchanged(before, await snapshot(runtime))


async def test_posts_without_csrf_or_without_a_session_are_refused_and_change_nothing(
    client: httpx.AsyncClient, app: Litestar, runtime: Runtime, mail: MailSink
) -> None:
    request_id = await _waiting(client, runtime, mail, ALICE)
    page = f"/console/requests/{request_id}"
    before = await snapshot(runtime)
    async with _console(app, runtime, MANAGE) as operator:
        assert (await operator.get(page)).status_code == 200
        for action, data in (
            ("approve", {}),
            ("deny", {"reason": "No"}),
            ("extend", {"reason": "Busy"}),
            ("cancel", {}),
        ):
            missing = await operator.post(f"{page}/{action}", data=data)
            assert missing.status_code == 403, action
            wrong = await operator.post(f"{page}/{action}", data={"_csrf_token": "forged", **data})
            assert wrong.status_code == 403, action
    async with browser(app) as stranger:
        assert (await stranger.get(page)).headers["location"] == "/console/sign-in"
        assert (await stranger.get("/console/requests")).headers["location"] == "/console/sign-in"
        token = await csrf_token(stranger)  # a valid form token, but no session
        for action in ("approve", "deny", "extend", "cancel"):
            response = await stranger.post(f"{page}/{action}", data={"_csrf_token": token, "reason": "x"})
            assert response.status_code == 401, action
            assert_no_leak(response, ALICE)
    assert_unchanged(before, await snapshot(runtime))


async def test_a_replayed_decision_after_the_state_changed_is_a_409_page_and_changes_nothing(
    client: httpx.AsyncClient, app: Litestar, runtime: Runtime, mail: MailSink, auth: dict[str, str]
) -> None:
    request_id = await _waiting(client, runtime, mail, ALICE)
    page = f"/console/requests/{request_id}"
    async with _console(app, runtime, MANAGE) as operator:
        token = await csrf_token(operator, page)
        denied = await operator.post(f"{page}/deny", data={"_csrf_token": token, "reason": "Not our customer"})
        assert denied.status_code == 303
        before = await snapshot(runtime)
        for action, data in (
            ("approve", {}),
            ("deny", {"reason": "Again"}),
            ("extend", {"reason": "Late"}),
            ("cancel", {}),
        ):
            replay = await operator.post(f"{page}/{action}", data={"_csrf_token": token, **data})
            assert replay.status_code == 409, (action, replay.text)
            assert "The request has changed" in replay.text
            assert "Denied" in replay.text
        assert_unchanged(before, await snapshot(runtime))
    assert (await _api_view(client, auth, request_id))["decision"] == "Not our customer"


async def test_a_bad_id_is_a_404_page(client: httpx.AsyncClient, app: Litestar, runtime: Runtime) -> None:
    async with _console(app, runtime, MANAGE) as operator:
        unknown = f"/console/requests/{uuid.uuid4()}"
        missing = await operator.get(unknown)
        assert missing.status_code == 404
        assert "<html" in missing.text
        token = await csrf_token(operator, "/console/requests")
        assert (await operator.post(f"{unknown}/approve", data={"_csrf_token": token})).status_code == 404
        garbage = await operator.get("/console/requests/not-a-request")
        assert garbage.status_code == 404
        assert "<html" in garbage.text
        bad_filter = await operator.get("/console/requests?status=bogus")
        assert bad_filter.status_code == 422
        bad_cursor = await operator.get("/console/requests?after=2026-01-01_nope")
        assert bad_cursor.status_code == 422
        assert "Traceback" not in bad_cursor.text


@pytest.mark.parametrize("action", ["deny", "extend"])
async def test_an_empty_or_over_long_reason_is_a_422_page_and_changes_nothing(
    client: httpx.AsyncClient, app: Litestar, runtime: Runtime, mail: MailSink, action: str
) -> None:
    request_id = await _waiting(client, runtime, mail, ALICE)
    await _waiting(client, runtime, mail, BOB)
    page = f"/console/requests/{request_id}"
    before = await snapshot(runtime)
    async with _console(app, runtime, MANAGE) as operator:
        for reason, message in (
            ("", "Enter a reason."),
            ("   ", "Enter a reason."),
            ("x" * 2001, "The reason is too long"),
        ):
            response = await _post(operator, f"{page}/{action}", page, reason=reason)
            assert response.status_code == 422, (reason[:5], response.text)
            assert message in response.text
            assert 'class="error-summary"' in response.text
            assert_no_leak(response, ALICE, BOB)  # the page names no one (this key has no subjects:read)
        if action == "extend":
            for days in ("0", "abc", "93", "-1"):
                response = await _post(operator, f"{page}/extend", page, reason="Complex", days=days)
                assert response.status_code == 422, days
                assert "whole number of days" in response.text
    assert_unchanged(before, await snapshot(runtime))


# -- the pages --------------------------------------------------------------------------------------


async def test_the_request_page_in_english_and_chinese_with_note_identity_history_and_deadline(
    client: httpx.AsyncClient, app: Litestar, runtime: Runtime, mail: MailSink
) -> None:
    request_id = await _waiting(client, runtime, mail, ALICE, reason=NOTE)
    other = await _waiting(client, runtime, mail, BOB, reason="Bob's own note")
    page = f"/console/requests/{request_id}"
    async with _console(app, runtime, MANAGE) as operator:
        english = await operator.get(page)
        assert english.status_code == 200
        assert '<html lang="en">' in english.text
        assert "Access request" in english.text
        assert 'id="note-hidden"' in english.text  # a note exists; requests:manage alone does not open it
        assert "Awaiting review" in english.text
        assert 'id="approve-form"' in english.text
        assert 'id="deny-form"' in english.text
        assert 'id="extend-form"' in english.text
        assert 'id="cancel-form"' in english.text
        assert "E-mail address" in english.text
        assert '<dd lang="en">English</dd>' in english.text  # the customer's language by its name, not its code
        assert_no_leak(english, ALICE, BOB, NOTE, "Bob's own note")  # requests:manage alone: no identity, no note
        assert "subjects:read" in english.text
        assert "A member of our privacy team checks your request" in english.text  # the portal's words
        chinese = await operator.get(f"{page}?lang=zh")
        assert '<html lang="zh">' in chinese.text
        assert "查阅请求" in chinese.text
        assert "客户留言" in chinese.text
        assert "subjects:read" in chinese.text
        assert_no_leak(chinese, NOTE)
        queue = await operator.get("/console/requests?lang=zh")
        assert queue.status_code == 200
        assert "待审核" in queue.text
        assert request_id in queue.text
        assert other in queue.text
        assert_no_leak(queue, ALICE, BOB)
    reads_before = len(await _audit(runtime, "subject.read"))
    async with _console(app, runtime, MANAGE_AND_READ) as reader:
        shown = await reader.get(page)
        assert 'id="identity-value">' + ALICE in shown.text
        assert NOTE in shown.text  # the customer's note, stored sealed, opened for subjects:read
        assert 'id="note-hidden"' not in shown.text
        assert_no_leak(shown, BOB, "Bob's own note")  # never another subject's
    reads = await _audit(runtime, "subject.read")
    assert len(reads) == reads_before + 1  # identity and note: one read of the subject, naming both
    assert _detail(reads[-1])["dsr_id"] == request_id
    assert _detail(reads[-1])["fields"] == ["identity.email", "note"]
    assert reads[-1]["actor_type"] == "operator"


async def test_a_correction_is_shown_as_a_diff_with_values_only_for_subjects_read(
    client: httpx.AsyncClient, app: Litestar, runtime: Runtime, mail: MailSink, auth: dict[str, str]
) -> None:
    await make_subject(client, auth, email=ALICE, profile={"name": "Alice Oldname"})
    changes = {"profile": {"name": "Alice Newname"}}
    request_id = await _waiting(client, runtime, mail, ALICE, "rectify", changes=changes)
    page = f"/console/requests/{request_id}"
    async with _console(app, runtime, MANAGE_AND_READ) as reader:
        diff = (await reader.get(page)).text
        assert re.search(r"<del>Alice Oldname</del>.*<ins>Alice Newname</ins>", diff, re.S)
    async with _console(app, runtime, MANAGE) as operator:
        names_only = await operator.get(page)
        assert 'id="changes"' in names_only.text
        assert "Full name" in names_only.text or "Name" in names_only.text
        assert_no_leak(names_only, "Alice Oldname", "Alice Newname")  # as the API shows this key


async def test_approve_deny_extend_cancel_do_what_the_api_does_audited_as_the_operator(
    client: httpx.AsyncClient, app: Litestar, runtime: Runtime, mail: MailSink, auth: dict[str, str]
) -> None:
    approve_id = await _waiting(client, runtime, mail, ALICE)
    deny_id = await _waiting(client, runtime, mail, BOB)
    extend_id = await _waiting(client, runtime, mail, "carl.console@example.com")
    cancel_id = await _waiting(client, runtime, mail, "dora.console@example.com")
    name = f"dpo-{uuid.uuid4().hex[:8]}"
    key = await make_operator_key(runtime, MANAGE, name=name)
    operator_id = next(str(row["id"]) for row in await rows(runtime, "operators") if row["name"] == name)
    done_as = {"approve": "approved", "deny": "denied", "extend": "extended", "cancel": "cancelled"}
    async with browser(app) as operator:
        await signed_in(operator, key)
        before_due = (await _api_view(client, auth, extend_id))["due_at"]
        for request_id, action, data, done in (
            (approve_id, "approve", {}, "The request was approved."),
            (deny_id, "deny", {"reason": "We hold no account under this address."}, "The request was denied"),
            (extend_id, "extend", {"reason": "Many systems to search.", "days": "10"}, "The deadline was extended"),
            (cancel_id, "cancel", {}, "The request was cancelled."),
        ):
            page = f"/console/requests/{request_id}"
            response = await _post(operator, f"{page}/{action}", page, **data)
            assert response.status_code == 303, (action, response.text)
            assert response.headers["location"] == f"{page}?done={done_as[action]}"
            shown = await operator.get(response.headers["location"])
            assert done in shown.text
    assert (await _api_view(client, auth, approve_id))["status"] == "completed"
    denied = await _api_view(client, auth, deny_id)
    assert (denied["status"], denied["decision"]) == ("denied", "We hold no account under this address.")
    extended = await _api_view(client, auth, extend_id)
    assert extended["extended"] is True
    assert extended["due_at"] > before_due
    assert (await _api_view(client, auth, cancel_id))["status"] == "cancelled"
    for action, request_id in (
        ("dsr.processing", approve_id),
        ("dsr.denied", deny_id),
        ("dsr.extended", extend_id),
        ("dsr.cancelled", cancel_id),
    ):
        events = [e for e in await _audit(runtime, action) if _detail(e)["dsr_id"] == request_id]
        assert len(events) == 1, action
        assert events[0]["actor_type"] == "operator"
        assert events[0]["actor_id"].replace("-", "") == operator_id.replace("-", "")  # the console's operator
    async with _console(app, runtime, MANAGE) as later:
        extended_page = (await later.get(f"/console/requests/{extend_id}")).text
    assert "Extended once" in extended_page
    assert 'id="extend-form"' not in extended_page  # the law allows one extension


async def test_extending_past_the_legal_limit_is_refused_by_the_service(
    client: httpx.AsyncClient, app: Litestar, runtime: Runtime, mail: MailSink
) -> None:
    request_id = await _waiting(client, runtime, mail, ALICE, regime="ccpa")
    page = f"/console/requests/{request_id}"
    before = await snapshot(runtime)
    async with _console(app, runtime, MANAGE) as operator:
        response = await _post(operator, f"{page}/extend", page, reason="Complex", days="92")
        assert response.status_code == 422, response.text
        assert "The law does not allow extending this far." in response.text
    assert_unchanged(before, await snapshot(runtime))


async def test_the_queue_pages_by_keyset_with_its_filters_kept(
    client: httpx.AsyncClient,
    app: Litestar,
    runtime: Runtime,
    mail: MailSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(console_requests, "PAGE_SIZE", 2)
    access = [await submit(client, {"email": f"a{n}@example.com"}, "access", regime="gdpr") for n in range(5)]
    others = [
        await submit(client, {"email": "e0@example.com"}, "erase", regime="gdpr"),
        await submit(client, {"email": "c0@example.com"}, "access", regime="ccpa"),
    ]
    async with _console(app, runtime, MANAGE) as operator:
        with sql_statements(runtime) as sent:
            seen: list[str] = []
            href: str | None = "/console/requests?type=access&regime=gdpr"
            pages = 0
            while href:
                response = await operator.get(href.replace("&amp;", "&"))
                assert response.status_code == 200, response.text
                found = re.findall(r'href="/console/requests/([0-9a-f-]{36})"', response.text)
                assert len(found) <= 2
                seen += found
                pages += 1
                assert 'value="access" selected' in response.text
                assert 'value="gdpr" selected' in response.text
                assert ">Clear filters</a>" in response.text
                nxt = re.search(r'<a href="([^"]+)" rel="next">', response.text)
                href = nxt.group(1) if nxt else None
                if href:
                    assert "type=access" in href
                    assert "regime=gdpr" in href
                    assert "after=" in href
                    assert pages == 1 or "First page" in response.text
            assert pages == 3
            assert sorted(seen) == sorted(access)  # every one once, no other type or law
            assert not set(others) & set(seen)
            queue = [s for s in sent if "FROM dsr_requests" in s and "ORDER BY" in s]
            assert queue
            # Later pages are found by the last row's (due date, id), not by skipping rows (SQLite's dialect
            # writes "OFFSET ?" with every LIMIT, bound to 0).
            assert sum("dsr_requests.due_at >" in s for s in queue) == pages - 1
            empty = await operator.get("/console/requests?status=denied")
            assert 'id="queue-empty"' in empty.text


async def test_approving_a_reviewed_correction_needs_subjects_write_as_in_the_api(
    client: httpx.AsyncClient, app: Litestar, runtime: Runtime, mail: MailSink, auth: dict[str, str]
) -> None:
    await make_subject(client, auth, email=ALICE, profile={"name": "Alice Oldname"})
    request_id = await _waiting(client, runtime, mail, ALICE, "rectify", changes={"profile": {"name": "Alice New"}})
    page = f"/console/requests/{request_id}"
    before = await snapshot(runtime)
    async with _console(app, runtime, MANAGE_AND_READ) as reviewer:
        refused = await _post(reviewer, f"{page}/approve", page)
        assert refused.status_code == 403
        assert "Not allowed" in refused.text
        assert_no_leak(refused, ALICE, "Alice Oldname", "Alice New")
    assert_unchanged(before, await snapshot(runtime))
    async with _console(app, runtime, MANAGE_AND_READ | {"subjects:write"}) as writer:
        approved = await _post(writer, f"{page}/approve", page)
        assert approved.status_code == 303, approved.text
    assert (await _api_view(client, auth, request_id))["status"] == "completed"


async def test_the_queue_shows_open_requests_by_default_and_all_on_request(
    client: httpx.AsyncClient, app: Litestar, runtime: Runtime, mail: MailSink
) -> None:
    open_id = await _waiting(client, runtime, mail, ALICE)
    closed_id = await _waiting(client, runtime, mail, BOB)
    async with _console(app, runtime, MANAGE) as operator:
        page = f"/console/requests/{closed_id}"
        token = await csrf_token(operator, page)
        denied = await operator.post(f"{page}/deny", data={"_csrf_token": token, "reason": "Not our customer"})
        assert denied.status_code == 303
        with sql_statements(runtime) as sent:
            default = await operator.get("/console/requests")
        assert default.status_code == 200
        assert open_id in default.text
        assert closed_id not in default.text  # closed requests are not sorted into the working queue
        assert '<option value="open" selected>Open (not yet closed)</option>' in default.text
        queue = [s for s in sent if "FROM dsr_requests" in s and "ORDER BY" in s]
        assert queue
        assert all("dsr_requests.status IN" in s for s in queue)  # the open ones, by their index
        everything = await operator.get("/console/requests?status=all")
        assert everything.status_code == 200
        assert open_id in everything.text
        assert closed_id in everything.text
        assert '<option value="all" selected>' in everything.text
        denied_only = await operator.get("/console/requests?status=denied")
        assert closed_id in denied_only.text
        assert open_id not in denied_only.text
        assert (await operator.get("/console/requests?status=closed-ish")).status_code == 422
        chinese = await operator.get("/console/requests?lang=zh")
        assert "未结案" in chinese.text

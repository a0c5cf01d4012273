# ruff: noqa: F811 - the shared fixtures (tests.console_support) are imported by name and taken as parameters
"""The console's audit page (issue 17, item 7): the API's search behind a GET form, the chain check the
CLI runs (recorded in audit_verifications), and the abuse cases: no scope, no CSRF, bad filters, a
tampered chain."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import text
from sqlmodel import col, func, select

from privacy_service.audit import service as audit
from privacy_service.audit.models import AuditVerification
from privacy_service.audit.service import Actor, seal_pending
from privacy_service.runtime import Runtime
from privacy_service.web.console import audit as audit_console
from tests.conftest import make_operator_key
from tests.console_support import (  # noqa: F401 - fixtures, used by name
    app,
    browser,
    csrf_token,
    runtime,
    settings,
    setup,
    signed_in,
)

AUDIT = frozenset({"audit:read"})


async def _events(runtime: Runtime, subject: uuid.UUID, n: int) -> None:
    """``n`` events about ``subject`` (action subject.read) and ``n`` others, sealed."""
    async with runtime.db.transaction() as session:
        for i in range(n):
            at = runtime.clock.now() + timedelta(microseconds=i)
            audit.record(
                session, at=at, actor=Actor("operator", "op-reader"), action="subject.read", subject_id=subject
            )
            audit.record(session, at=at, actor=Actor("system", "retention"), action="retention.purged", detail={"n": i})
    await seal_pending(runtime.db, runtime.clock, runtime.audit_key)


async def _verifications(runtime: Runtime) -> list[AuditVerification]:
    async with runtime.db.transaction() as session:
        return list((await session.exec(select(AuditVerification).order_by(col(AuditVerification.id)))).all())


async def _event_count(runtime: Runtime) -> int:
    async with runtime.db.transaction() as session:
        return int((await session.exec(select(func.count()).select_from(audit.AuditEvent))).one())


def _seqs(page: str) -> list[int]:
    return [int(found) for found in re.findall(r'<th scope="row">(\d+)</th>', page)]


async def test_search_by_subject_action_actor_and_time_in_chain_order_with_keyset_pages(
    app: Litestar, runtime: Runtime
) -> None:
    subject = uuid.uuid4()
    start = runtime.clock.now() - timedelta(seconds=1)
    await _events(runtime, subject, 60)
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, AUDIT))
        first = await client.get("/console/audit", params={"subject": str(subject)})
        assert first.status_code == 200
        seqs = _seqs(first.text)
        assert len(seqs) == audit_console.PAGE_SIZE
        assert seqs == sorted(seqs)
        assert first.text.count(str(subject)) >= audit_console.PAGE_SIZE
        assert "retention.purged" not in first.text
        # The same events, in the same order, as the API's GET /v1/audit.
        key = await make_operator_key(runtime, AUDIT)
        api = await client.get(
            "/v1/audit", params={"subject": str(subject), "limit": 50}, headers={"Authorization": f"Bearer {key}"}
        )
        assert [item["seq"] for item in api.json()["items"]] == seqs
        after = re.search(r'href="(/console/audit\?[^"]*after=\d+)" rel="next"', first.text)
        assert after, "a next-page link that keeps the filter"
        second = await client.get(after.group(1).replace("&amp;", "&"))
        rest = _seqs(second.text)
        assert len(rest) == 10
        assert rest[0] > seqs[-1]
        assert 'rel="next"' not in second.text
        assert "First page" in second.text

        by_action = await client.get("/console/audit", params={"action": "retention.purged", "actor": "retention"})
        assert by_action.status_code == 200
        assert "<code>subject.read</code>" not in by_action.text
        assert "<code>retention.purged</code>" in by_action.text
        assert '<code class="audit-detail">{"n": 0}</code>' in by_action.text  # detail as the API gives it
        # A time range in the operator's zone (the policy's display zone) that ends before every event.
        before = await client.get("/console/audit", params={"until": "2000-01-01T00:00"})
        assert before.status_code == 200
        assert "No events match this search." in before.text
        iso = await client.get("/console/audit", params={"action": "subject.read", "since": start.isoformat()})
        assert len(_seqs(iso.text)) == audit_console.PAGE_SIZE


async def test_the_page_in_english_and_chinese(app: Litestar, runtime: Runtime) -> None:
    await _events(runtime, uuid.uuid4(), 2)
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, AUDIT))
        english = await client.get("/console/audit")
        assert english.status_code == 200
        assert "<h1>Audit log</h1>" in english.text
        assert "The audit chain has not been checked yet." in english.text
        assert 'aria-current="page">Audit log<' in english.text
        chinese = await client.get("/console/audit?lang=zh")
        assert '<html lang="zh">' in chinese.text
        assert "<h1>审计日志</h1>" in chinese.text
        assert "验证审计链" in chinese.text
        assert "retention.purged" in chinese.text


async def _operator_id(runtime: Runtime, name: str) -> str:
    async with runtime.db.engine.connect() as conn:
        found = (await conn.execute(text("SELECT id FROM operators WHERE name = :n"), {"n": name})).scalar_one()
    return str(uuid.UUID(str(found)))


async def test_verify_from_the_console_is_recorded_like_the_cli_check(app: Litestar, runtime: Runtime) -> None:
    await _events(runtime, uuid.uuid4(), 5)
    async with runtime.db.transaction() as session:  # a pending entry: the check seals it first, as the CLI does
        audit.record(session, at=runtime.clock.now(), actor=Actor("system", "test"), action="test.pending")
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, AUDIT, name="Verifying Operator"))
        operator = await _operator_id(runtime, "Verifying Operator")
        token = await csrf_token(client, "/console/audit")
        for mode, from_checkpoint in (("full", False), ("checkpoint", True)):
            done = await client.post("/console/audit/verify", data={"_csrf_token": token, "mode": mode})
            assert done.status_code == 303
            assert done.headers["location"] == "/console/audit?verify=done#verify-heading"
            [*_, latest] = await _verifications(runtime)
            # The record names the operator who ran the check, as an id (not "console", not the name).
            by = f"operator:{operator}"
            assert (latest.ok, latest.actor, latest.from_checkpoint) == (True, by, from_checkpoint)
        page = await client.get("/console/audit?verify=done")
        assert "The chain is intact" in page.text
        assert f'In the console, by the operator <span class="reference-id">{operator}</span>' in page.text
        assert re.search(r"Entries checked</dt><dd>\d+</dd>", page.text)
        full = (await _verifications(runtime))[0]
        # Five pairs, the pending entry and the sign-in's own events: all sealed, then checked.
        assert full.checked == full.head_seq >= 11
        zh = await client.get("/console/audit?lang=zh")
        assert "审计链完好" in zh.text


async def test_a_tampered_chain_shows_broken_from_the_console(app: Litestar, runtime: Runtime) -> None:
    await _events(runtime, uuid.uuid4(), 4)
    async with runtime.db.engine.begin() as conn:  # DB-only attacker: edits an entry's content
        await conn.execute(text("UPDATE audit_events SET action = 'subject.exported' WHERE seq = 3"))
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, AUDIT))
        token = await csrf_token(client, "/console/audit")
        done = await client.post("/console/audit/verify", data={"_csrf_token": token, "mode": "full"})
        assert done.status_code == 303
        page = await client.get("/console/audit")
        assert "The chain is broken" in page.text
        assert "The first bad entry is at sequence number 3." in page.text
        assert "content does not match its hash: edited" in page.text
        [verdict] = await _verifications(runtime)
        assert (verdict.ok, verdict.broken_seq) == (False, 3)
        assert verdict.actor.startswith("operator:")
        assert "审计链已损坏" in (await client.get("/console/audit?lang=zh")).text


async def test_a_long_check_is_bounded_and_carries_on(
    app: Litestar, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request waits VERIFY_WAIT at most; the check records its verdict when it ends, and a second
    post meanwhile does not start another."""
    import asyncio

    release = asyncio.Event()
    real = audit_console.verify_and_record

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await release.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(audit_console, "verify_and_record", slow)
    monkeypatch.setattr(audit_console, "VERIFY_WAIT", 0.05)
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, AUDIT))
        token = await csrf_token(client, "/console/audit")
        first = await client.post("/console/audit/verify", data={"_csrf_token": token, "mode": "full"})
        assert first.headers["location"] == "/console/audit?verify=running#verify-heading"
        page = await client.get("/console/audit?verify=running")
        assert 'id="verify-running"' in page.text
        again = await client.post("/console/audit/verify", data={"_csrf_token": token, "mode": "full"})
        assert again.headers["location"] == "/console/audit?verify=busy#verify-heading"
        assert await _verifications(runtime) == []
        release.set()
        running = app.state[audit_console.RUNNING_KEY]
        await running.task
        [verdict] = await _verifications(runtime)
        assert verdict.ok
        after = await client.get("/console/audit")
        assert 'id="verify-running"' not in after.text
        assert "The chain is intact" in after.text


async def test_without_audit_read_no_link_and_403_with_nothing_recorded(app: Litestar, runtime: Runtime) -> None:
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, frozenset({"requests:manage", "systems:manage"})))
        dashboard = await client.get("/console")
        assert 'href="/console/audit"' not in dashboard.text
        assert (await client.get("/console/audit")).status_code == 403
        token = await csrf_token(client, "/console")
        refused = await client.post("/console/audit/verify", data={"_csrf_token": token, "mode": "full"})
        assert refused.status_code == 403
        assert "Not allowed" in refused.text
    assert await _verifications(runtime) == []


async def test_verify_without_csrf_or_session_is_refused_and_nothing_recorded(app: Litestar, runtime: Runtime) -> None:
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, AUDIT))
        await client.get("/console/audit")
        missing = await client.post("/console/audit/verify", data={"mode": "full"})
        assert missing.status_code == 403
        wrong = await client.post("/console/audit/verify", data={"mode": "full", "_csrf_token": "forged"})
        assert wrong.status_code == 403
        assert "The form expired" in wrong.text
    async with browser(app) as stranger:
        token = await csrf_token(stranger)
        assert (await stranger.post("/console/audit/verify", data={"_csrf_token": token})).status_code == 401
        page = await stranger.get("/console/audit")
        assert page.status_code == 303
        assert page.headers["location"] == "/console/sign-in"
    assert await _verifications(runtime) == []


@pytest.mark.parametrize(
    ("params", "field", "refused"),
    [
        ({"subject": "not-a-uuid-<script>x</script>"}, "subject", "subject"),
        ({"since": "yesterday<b>evening</b>"}, "since", "since"),
        ({"until": "2026-13-45T99:99"}, "until", "until"),
        ({"since": "0001-01-01T00:00"}, "since", "since"),
        ({"actor": "a" * 65 + "secret@example.com"}, "actor", "actor"),
        ({"since": "2026-05-02T10:00", "until": "2026-05-01T10:30"}, "until", "until"),
        ({"after": "-12345"}, "search-heading", "after"),  # a page link has no field: led to the search
        ({"after": "99999999999999999999"}, "search-heading", "after"),
    ],
)
async def test_bad_filter_input_is_a_422_page_that_echoes_nothing(
    app: Litestar, runtime: Runtime, params: dict[str, str], field: str, refused: str
) -> None:
    await _events(runtime, uuid.uuid4(), 1)
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, AUDIT))
        before = await _event_count(runtime)
        page = await client.get("/console/audit", params=params)
        assert page.status_code == 422
        assert 'class="error-summary"' in page.text
        assert f'href="#{field}"' in page.text
        assert f'id="{field}"' in page.text  # the summary's link leads somewhere
        assert params[refused] not in page.text
        for leak in ("<script>", "secret@example.com", "<b>evening"):
            assert leak not in page.text
        assert 'id="audit-events"' not in page.text  # no results for a search that was refused
        bad_mode = await client.post(
            "/console/audit/verify", data={"_csrf_token": await csrf_token(client, "/console/audit"), "mode": "<x>"}
        )
        assert bad_mode.status_code == 422
        assert 'href="#mode-checkpoint"' in bad_mode.text
        assert "<x>" not in bad_mode.text
    assert await _event_count(runtime) == before
    assert await _verifications(runtime) == []

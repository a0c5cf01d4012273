"""The console's retention pages (issue 17, item 6) on both databases: the dry-run preview and a purge
started from the console do what the API's runs do (the same report, the same data removed, audited as
the operator); a run over the safety threshold is refused and shown so; a forced run needs a reason,
which is audited; a running run is followed through its progress route. And the abuse: a session
without ``retention:run`` sees no link and is refused (nothing run), no CSRF token (nothing run), bad
input (nothing run, nothing echoed), a second run while one is active (409), a bad run id (404 page)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import text

from privacy_service.config import DEFAULT_RATE_LIMITS, Settings
from privacy_service.retention.jobs import RunOptions, run_purge, start_run
from privacy_service.retention.locks import try_acquire
from privacy_service.retention.models import RunStatus
from privacy_service.retention.schemas import Counts, RuleReport, RunReport, RunView
from privacy_service.runtime import Runtime
from privacy_service.web.console import retention as console_retention
from privacy_service.web.console.retention_views import progress_of
from tests.api.dsr_support import OPEN_LIMITS, fresh_settings
from tests.conftest import make_operator_key
from tests.console_support import OPEN_CONSOLE_LIMITS, browser, console_app, csrf_token, signed_in
from tests.integration.systems_support import OffsetClock
from tests.retention_support import NOW, add_record, add_subject, count_rows, hold, years

RUNS = "/console/retention/runs"
REFERENCE = "DPO-2026-114"
FORCE = {"mode": "force", "reason": "policy_change_approved", "reference": REFERENCE}
LIMITS = {**DEFAULT_RATE_LIMITS, **OPEN_LIMITS, **OPEN_CONSOLE_LIMITS}
# Any share of any table trips the threshold: a purge of the seeded data is refused unless forced.
STRICT = {"retention_alert_min_rows": 0, "retention_alert_percent": 10}

Setup = tuple[Runtime, Litestar, OffsetClock]


@pytest.fixture
async def setup(make_settings: Any, backend: str) -> AsyncIterator[Setup]:
    settings: Settings = await fresh_settings(make_settings, backend, rate_limits=LIMITS)
    async with console_app(settings) as found:
        yield found


@pytest.fixture
async def strict(make_settings: Any, backend: str) -> AsyncIterator[Setup]:
    settings: Settings = await fresh_settings(make_settings, backend, rate_limits=LIMITS, **STRICT)
    async with console_app(settings) as found:
        yield found


async def _seed(runtime: Runtime) -> uuid.UUID:
    """An open account with two device records past their period, one held account with one."""
    subject = await add_subject(runtime, created_at=NOW - years(3), profile={"name": "Console Purge"})
    for hours in (0, 1):
        await add_record(runtime, subject, category="user.device", created_at=NOW - years(2) - timedelta(hours=hours))
    held = await add_subject(runtime, created_at=NOW - years(3), profile={"name": "Console Held"})
    await add_record(runtime, held, category="user.device", created_at=NOW - years(2))
    await hold(runtime, held)
    return subject


@asynccontextmanager
async def _client(
    app: Litestar, runtime: Runtime, scopes: frozenset[str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, scopes))
        yield client


async def _post(client: httpx.AsyncClient, data: dict[str, str], token: str | None = None) -> httpx.Response:
    token = token if token is not None else await csrf_token(client, "/console/retention")
    return await client.post(RUNS, data={**data, "_csrf_token": token})


def _run_location(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert re.fullmatch(r"/console/retention/runs/[0-9a-f-]{36}", location), location
    return location


async def _events(runtime: Runtime, action: str) -> list[tuple[str, str, Any]]:
    async with runtime.db.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT actor_type, actor_id, detail FROM audit_events WHERE action = :a ORDER BY at"), {"a": action}
        )
        return [(row[0], row[1], row[2]) for row in rows]


async def test_the_pages_in_english_and_chinese_before_any_run(setup: Setup) -> None:
    runtime, app, _ = setup
    async with _client(app, runtime) as client:
        english = await client.get("/console/retention")
        assert english.status_code == 200, english.text
        assert '<html lang="en">' in english.text
        assert "<h1>Retention and purge</h1>" in english.text
        assert "No dry run has been made yet" in english.text
        assert "No purge has run yet" in english.text
        assert 'aria-current="page">Retention<' in english.text
        assert "script-src 'self'" in english.headers["content-security-policy"]
        chinese = await client.get("/console/retention?lang=zh")
        assert '<html lang="zh">' in chinese.text
        assert "<h1>保存期限与清理</h1>" in chinese.text
        assert "尚未进行试运行" in chinese.text
        assert "Retention and purge" not in chinese.text


async def test_preview_and_purge_from_the_console_do_what_the_api_does(setup: Setup) -> None:
    runtime, app, _ = setup
    await _seed(runtime)
    operator_key = await make_operator_key(runtime, name="dpo-console")
    api = {"Authorization": f"Bearer {operator_key}"}
    async with browser(app) as client:
        await signed_in(client, operator_key)
        records = await count_rows(runtime, "records")

        preview = _run_location(await _post(client, {"mode": "dry_run"}))
        assert await count_rows(runtime, "records") == records  # a dry run changes nothing
        page = await client.get(preview)
        assert page.status_code == 200, page.text
        assert "<h1>Dry run" in page.text
        assert "tag--completed" in page.text
        assert "dpo-console" in page.text  # started by the signed-in operator, by name
        assert "Device and connection data" in page.text  # the category in the policy notice's words
        row = re.search(r'<tr data-rule="records:user.device">(.*?)</tr>', page.text, re.S)
        assert row, page.text
        cells = re.findall(r"<td data-label=\"([^\"]*)\">([^<]*)</td>", row.group(1))
        assert ("Due", "3") in cells
        assert ("Would be: Deleted", "2") in cells
        assert ("Held", "1") in cells
        assert "1 legal holds were in force" in page.text
        assert 'id="live"' not in page.text  # finished: nothing to follow, no script
        assert "console-retention.js" not in page.text

        # The same computation as the API's dry run.
        run_id = preview.rsplit("/", 1)[1]
        console_report = (await client.get(f"/v1/retention/runs/{run_id}", headers=api)).json()
        api_run = await client.post("/v1/retention/runs", json={"dry_run": True}, headers=api)
        api_report = (await client.get(f"/v1/retention/runs/{api_run.json()['id']}", headers=api)).json()
        assert console_report["report"] == api_report["report"]
        assert console_report["requested_by"] == api_report["requested_by"]  # the same operator as actor

        index = (await client.get("/console/retention")).text
        assert "Preview (dry run)" in index
        assert 'id="preview-rules"' in index
        assert "Would be: Deleted" in index
        assert "No purge has run yet" in index

        real = _run_location(await _post(client, {"mode": "run"}))
        assert await count_rows(runtime, "records") == records - 2  # the held account's record stays
        report = await client.get(real)
        assert "<h1>Purge run" in report.text
        assert "tag--completed" in report.text
        row = re.search(r'<tr data-rule="records:user.device">(.*?)</tr>', report.text, re.S)
        assert row
        assert ("Deleted", "2") in re.findall(r"<td data-label=\"([^\"]*)\">([^<]*)</td>", row.group(1))
        started = await _events(runtime, "retention.run.started")
        assert len(started) == 3
        console_actor = started[-1][:2]
        assert console_actor[0] == "operator"
        assert console_actor == started[0][:2]
        index = (await client.get("/console/retention")).text
        last = re.search(r'<dl class="summary-list" id="last-purge">(.*?)</dl>', index, re.S)
        assert last
        assert "tag--completed" in last.group(1)
        assert re.search(r"<dt>Deleted</dt><dd>2</dd>", last.group(1))
        assert len(re.findall(r'href="/console/retention/runs/[0-9a-f-]{36}"', index)) >= 3

        chinese = (await client.get(f"{real}?lang=zh")).text
        assert "清理运行" in chinese
        assert "设备与连接信息" in chinese
        assert "已完成" in chinese


async def test_a_refused_run_is_shown_and_a_forced_run_needs_a_reason(strict: Setup) -> None:
    runtime, app, _ = strict
    await _seed(runtime)
    async with _client(app, runtime) as client:
        records = await count_rows(runtime, "records")
        refused = _run_location(await _post(client, {"mode": "run"}))
        assert await count_rows(runtime, "records") == records
        page = (await client.get(refused)).text
        assert "tag--refused" in page
        assert "Refused by the safety threshold" in page
        assert "Nothing was deleted" in page
        assert re.search(r'<table class="cards" id="alerts">.*Records.*</table>', page, re.S)
        assert 'id="force" open' in page  # the override is offered right there, with its reason field
        assert 'name="reason"' in page
        index = (await client.get("/console/retention")).text
        assert 'id="force" open' in index

        runs = await count_rows(runtime, "retention_runs")
        # The reason is chosen, never typed: the audit log is permanent and free text could name a person.
        assert 'type="radio" id="reason-policy_change_approved" name="reason"' in page
        assert "<textarea" not in page
        for data in (
            {"mode": "force"},
            {"mode": "force", "reason": "   \n "},
            {"mode": "force", "reason": "Customer Quentin Zebulon asked to be kept"},  # free text: not a code
        ):
            missing = await _post(client, data)
            assert missing.status_code == 422, missing.text
            assert "Choose why the safety threshold may be exceeded" in missing.text
            assert 'href="#reason"' in missing.text
            assert "Zebulon" not in missing.text
        for reference in ("Quentin Zebulon", "x" * 65, "ab", "<b>Zebulon</b>"):
            bad = await _post(client, {**FORCE, "reference": reference})
            assert bad.status_code == 422, reference
            assert "A case reference is 3 to 64 letters" in bad.text
            assert 'aria-invalid="true"' in bad.text
            assert "Zebulon" not in bad.text
            assert "x" * 65 not in bad.text
        chinese = await client.post(
            f"{RUNS}?lang=zh",
            data={"mode": "force", "_csrf_token": await csrf_token(client, "/console/retention")},
        )
        assert chinese.status_code == 422
        assert "请选择允许超出安全阈值的理由" in chinese.text
        assert "已批准的政策变更使大量数据同时到期" in chinese.text
        await client.get("/console/retention?lang=en")  # back to English (the choice is remembered)
        assert await count_rows(runtime, "retention_runs") == runs
        assert await count_rows(runtime, "records") == records
        assert await _events(runtime, "console.reason") == []

        forced = _run_location(await _post(client, {**FORCE, "reference": f"  {REFERENCE} "}))
        assert await count_rows(runtime, "records") == records - 2
        page = (await client.get(forced)).text
        assert "Forced purge" in page
        assert "tag--completed" in page
        assert "forced past the safety thresholds" in page
        assert 'id="alerts"' in page  # the thresholds it went past are still shown
        run_id = forced.rsplit("/", 1)[1]
        reasons = await _events(runtime, "console.reason")
        assert len(reasons) == 1
        actor_type, actor_id, detail = reasons[0]
        detail = detail if isinstance(detail, dict) else json.loads(detail)
        assert detail == {
            "for": "retention.run.started",
            "run_id": run_id,
            "reason": "policy_change_approved",
            "reference": REFERENCE,
        }
        assert await _events(runtime, "retention.run.force_reason") == []  # no free-text event any more
        # Without a case reference: the code alone.
        again = _run_location(await _post(client, {"mode": "force", "reason": "regulator_or_court"}))
        later = await _events(runtime, "console.reason")
        detail = later[-1][2] if isinstance(later[-1][2], dict) else json.loads(later[-1][2])
        again_id = again.rsplit("/", 1)[1]
        assert detail == {"for": "retention.run.started", "run_id": again_id, "reason": "regulator_or_court"}
        started = [e for e in await _events(runtime, "retention.run.started") if run_id in str(e[2])]
        assert started
        assert started[0][:2] == (actor_type, actor_id)
        assert '"forced": true' in str(started[0][2]).replace("True", "true").replace("'", '"')


async def test_without_the_scope_no_link_and_no_run(setup: Setup) -> None:
    runtime, app, _ = setup
    await _seed(runtime)
    async with _client(app, runtime, frozenset({"audit:read", "subjects:read"})) as client:
        dashboard = (await client.get("/console")).text
        assert "/console/retention" not in dashboard
        assert (await client.get("/console/retention")).status_code == 403
        token = await csrf_token(client, "/console")
        for data in ({"mode": "dry_run"}, {"mode": "run"}, FORCE):
            refused = await client.post(RUNS, data={**data, "_csrf_token": token})
            assert refused.status_code == 403, data
            assert "Not allowed" in refused.text
        other = await run_purge(runtime, RunOptions(dry_run=True))
        for path in (f"{RUNS}/{other.run_id}", f"{RUNS}/{other.run_id}/progress"):
            assert (await client.get(path)).status_code == 403
    assert await count_rows(runtime, "retention_runs") == 1  # only the one started above
    async with browser(app) as stranger:
        assert (await stranger.get("/console/retention")).headers["location"] == "/console/sign-in"
        assert (await stranger.get(f"{RUNS}/{other.run_id}/progress")).status_code == 303
        token = await csrf_token(stranger)
        assert (await stranger.post(RUNS, data={"mode": "run", "_csrf_token": token})).status_code == 401
    assert await count_rows(runtime, "retention_runs") == 1


async def test_csrf_and_bad_input_start_nothing(setup: Setup) -> None:
    runtime, app, _ = setup
    await _seed(runtime)
    async with _client(app, runtime) as client:
        await csrf_token(client, "/console/retention")
        for data in ({"mode": "run"}, {"mode": "run", "_csrf_token": "forged"}, FORCE):
            refused = await client.post(RUNS, data=data)
            assert refused.status_code == 403, data
            assert "The form expired" in refused.text
        for mode in ("", "purge-everything", "<script>"):
            bad = await _post(client, {"mode": mode})
            assert bad.status_code == 422
            assert "This form could not be understood" in bad.text
            assert "purge-everything" not in bad.text  # the value sent is not echoed
            assert "&lt;script&gt;" not in bad.text
        assert await count_rows(runtime, "retention_runs") == 0

        for path in (f"{RUNS}/nope", f"{RUNS}/{uuid.uuid4()}", f"{RUNS}/{uuid.uuid4()}/progress", f"{RUNS}/x/progress"):
            missing = await client.get(path)
            assert missing.status_code == 404, path
            assert missing.headers["content-type"].startswith("text/html")
            assert "Page not found" in missing.text
        bad_cursor = await client.get("/console/retention?after=not-a-cursor")
        assert bad_cursor.status_code == 422
        assert "not-a-cursor" not in bad_cursor.text


async def test_a_second_run_while_one_is_active_is_a_409_page_and_a_running_run_is_followed(setup: Setup) -> None:
    runtime, app, _ = setup
    await _seed(runtime)
    async with _client(app, runtime) as client:
        lock = await try_acquire(runtime.db)  # another process's run, as far as the console can tell
        assert lock is not None
        try:
            busy = await _post(client, {"mode": "run"})
        finally:
            await lock.release()
        assert busy.status_code == 409
        assert "Another purge is running" in busy.text
        assert await count_rows(runtime, "retention_runs") == 0

        started = await start_run(runtime, RunOptions())  # recorded and locked, not yet carried out
        try:
            for mode in ("dry_run", "run"):
                again = await _post(client, {"mode": mode})
                assert again.status_code == 409
                assert f'href="{RUNS}/{started.run_id}"' in again.text  # follow the running one
            chinese = await client.post(
                f"{RUNS}?lang=zh",
                data={**FORCE, "_csrf_token": await csrf_token(client, "/console/retention")},
            )
            assert chinese.status_code == 409
            assert "另一次清理正在运行" in chinese.text
            await client.get("/console/retention?lang=en")
            assert await count_rows(runtime, "retention_runs") == 1
            assert await _events(runtime, "console.reason") == []

            page = await client.get(f"{RUNS}/{started.run_id}")
            assert "tag--running" in page.text
            assert f'data-progress-url="{RUNS}/{started.run_id}/progress"' in page.text
            assert '<script src="/static/console-retention.js" defer></script>' in page.text
            assert "Counting what is due" in page.text
            assert "Refresh this page" in page.text  # without scripts
            assert "connect-src 'self'" in page.headers["content-security-policy"]
            assert "unsafe-inline" not in page.headers["content-security-policy"]
            live = await client.get(f"{RUNS}/{started.run_id}/progress")
            assert live.status_code == 200
            assert live.headers["cache-control"] == "no-store"
            assert live.json() == {
                "status": "running",
                "running": True,
                "phase": "planning",
                "done": 0,
                "planned": 0,
                "percent": 0,
                "text": "Counting what is due…",
            }
            zh = (await client.get(f"{RUNS}/{started.run_id}/progress?lang=zh")).json()
            assert zh["text"] == "正在统计到期的数据……"
        finally:
            result = await started.execute()
        assert result.status == RunStatus.COMPLETED
        done = (await client.get(f"{RUNS}/{started.run_id}/progress")).json()
        assert done["running"] is False
        assert done["done"] == done["planned"] >= 2
        page = await client.get(f"{RUNS}/{started.run_id}")
        assert "console-retention.js" not in page.text
        assert "tag--completed" in page.text

        preview = await start_run(runtime, RunOptions(dry_run=True))
        try:
            index = (await client.get("/console/retention")).text
            assert f'id="preview-running">Counting what is due… <a href="{RUNS}/{preview.run_id}">' in index
            assert "tag--running" in index
        finally:
            await preview.execute()
        assert 'id="preview-rules"' in (await client.get("/console/retention")).text


def _view(status: str, *, dry_run: bool, counts: Counts | None) -> RunView:
    rules = [RuleReport("records:x", "records", "x", "delete", "P1Y", "collected_at", None, counts)] if counts else []
    return RunView(
        id=uuid.uuid4(),
        status=status,
        dry_run=dry_run,
        forced=False,
        as_of=NOW,
        started_at=NOW,
        finished_at=None,
        requested_by="system:cli",
        policy_version="1",
        batch_size=10,
        error=None,
        report=RunReport(rules=rules),
    )


def test_progress_counts_what_the_plan_found_less_the_held_and_the_kept() -> None:
    midway = Counts(selected=10, skipped_hold=2, skipped_legal_duty=3, purged=1, anonymised=1, errors=1)
    progress = progress_of(_view("running", dry_run=False, counts=midway))
    assert (progress.running, progress.phase, progress.done, progress.planned, progress.percent) == (
        True,
        "purging",
        3,
        5,
        60,
    )
    assert progress_of(_view("running", dry_run=False, counts=None)).phase == "planning"
    assert progress_of(_view("running", dry_run=True, counts=midway)).phase == "planning"
    finished = progress_of(_view("completed", dry_run=False, counts=Counts(selected=4, purged=4)))
    assert (finished.running, finished.phase, finished.percent) == (False, "finished", 100)


async def test_the_run_list_pages_newest_first(setup: Setup) -> None:
    runtime, app, _ = setup
    ids = []
    for _ in range(21):
        result = await run_purge(runtime, RunOptions(dry_run=True))
        ids.append(str(result.run_id))
    async with _client(app, runtime) as client:
        first = (await client.get("/console/retention")).text
        listed = re.findall(r'<a class="reference-id" href="/console/retention/runs/([0-9a-f-]{36})">', first)
        assert listed == ids[::-1][:20]
        after = re.search(r'href="(/console/retention\?after=[^"]+)" rel="next"', first)
        assert after, first
        rest = (await client.get(after.group(1).replace("&amp;", "&"))).text
        assert re.findall(r'<a class="reference-id" href="/console/retention/runs/([0-9a-f-]{36})">', rest) == ids[:1]
        assert 'rel="next"' not in rest


async def test_a_forced_run_whose_reason_could_not_be_recorded_never_runs(
    strict: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, app, _ = strict
    await _seed(runtime)

    def lost(*_: object, **__: object) -> None:
        raise ConnectionError("the database went away")  # as a dropped connection surfaces

    async with _client(app, runtime) as client:
        token = await csrf_token(client, "/console/retention")
        records = await count_rows(runtime, "records")
        monkeypatch.setattr(console_retention, "audit", SimpleNamespace(record=lost))  # the console's write only
        failed = await client.post(RUNS, data={**FORCE, "_csrf_token": token})
        monkeypatch.undo()
        assert failed.status_code == 503
        assert "Nothing was changed" in failed.text
        assert REFERENCE not in failed.text
        assert await count_rows(runtime, "records") == records  # not carried out
        assert await _events(runtime, "console.reason") == []
        lock = await try_acquire(runtime.db)  # and the run lock was given back
        assert lock is not None
        await lock.release()
        # The next run marks the one that never ran as interrupted, as for a process that died.
        after = _run_location(await _post(client, {"mode": "dry_run"}))
        assert "tag--completed" in (await client.get(after)).text
        assert len(await _events(runtime, "retention.run.interrupted")) == 1

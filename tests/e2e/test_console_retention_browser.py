"""The console's retention area in Debian's Chromium (issue 17 item 6): a privacy officer previews a purge
(dry run), runs it and reads its report, follows a running purge live (the page's script polls its progress
and shows the report when it ends, with no click), finds a purge refused by the safety threshold, forgets the
override's reason once, then forces it with a reason chosen from the list and a case reference. In
English and Chinese, at desktop (1280) and phone (390) widths, a preview, a purge followed to its report,
the refused run and the missing reason, with axe-core finding nothing serious or critical on every page of
the area.

The running and the refused runs are started by a second process's worth of runtime on the same database
(as the CLI or the worker would start them): the refused one with thresholds that any purge trips."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.async_api import Browser, Request, Route, expect

from privacy_service.retention.jobs import RunOptions, run_purge, start_run
from privacy_service.runtime import Runtime, build_runtime
from tests.e2e.conftest import LiveServer, Visitor, open_visitor

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
STRICT = {"retention_alert_min_rows": 0, "retention_alert_percent": 10}
REFERENCE = "DPO-2026-114"
WORDS = {
    "en": {
        "sign_in": "Sign in",
        "nav": "Retention",
        "title": "Retention and purge",
        "preview": "Preview what a purge would do",
        "start": "Start the purge",
        "force": "Start a forced purge",
        "completed": "completed",
        "refused": "refused",
        "running": "running",
        "refused_title": "Refused by the safety threshold",
        "reason_required": "Choose why the safety threshold may be exceeded",
        "reason": "An approved policy change makes much data due at once",
        "deleted": "Deleted",
        "would_delete": "Would be: Deleted",
        "device": "Device and connection data",
        "counting": "Counting what is due",
        "back": "Back to retention",
    },
    "zh": {
        "sign_in": "登录",
        "nav": "保存期限",
        "title": "保存期限与清理",
        "preview": "预览清理将要处理的数据",
        "start": "开始清理",
        "force": "开始强制清理",
        "completed": "已完成",
        "refused": "已拒绝",
        "running": "运行中",
        "refused_title": "被安全阈值拒绝",
        "reason_required": "请选择允许超出安全阈值的理由",
        "reason": "已批准的政策变更使大量数据同时到期",
        "deleted": "已删除",
        "would_delete": "将会\uff1a已删除",  # the catalog's full-width colon
        "device": "设备与连接信息",
        "counting": "正在统计到期的数据",
        "back": "返回保存期限",
    },
}


def _key(server: LiveServer) -> str:
    return server.operator["Authorization"].split(" ", 1)[1]


async def _seed(server: LiveServer, count: int = 3, email: str = "purge.browser@example.com") -> None:
    """A customer with device records from two years ago (past their 13 months) and one from today."""
    long_ago = (datetime.now(UTC) - timedelta(days=730)).isoformat()
    records = [
        {"kind": "sign_in", "category": "user.device", "occurred_at": long_ago, "data": {"app": "4.2"}}
        for _ in range(count)
    ]
    records.append(
        {"kind": "sign_in", "category": "user.device", "occurred_at": datetime.now(UTC).isoformat(), "data": {}}
    )
    await server.make_subject(email, {"name": "Purge Browser"}, records)


@asynccontextmanager
async def _other_process(make_settings: Any, **overrides: Any) -> AsyncIterator[Runtime]:
    """A runtime on the live server's database, as the CLI or the worker has."""
    runtime = build_runtime(make_settings(log_level="ERROR", **overrides))
    try:
        yield runtime
    finally:
        await runtime.close()


async def _sign_in(visitor: Visitor, key: str, language: str) -> None:
    page = visitor.page
    await page.goto(f"/console/sign-in?lang={language}")
    await page.locator("#key").fill(key)
    await page.get_by_role("button", name=WORDS[language]["sign_in"]).click()
    await page.wait_for_url("**/console")


async def _finished(visitor: Visitor, words: dict[str, str], status: str = "completed") -> None:
    """The run's page, once the run has ended (the page follows it by itself while it runs)."""
    await visitor.page.wait_for_url("**/console/retention/runs/*")
    await expect(visitor.page.locator("#run-status")).to_have_text(words[status], timeout=20_000)


async def test_preview_run_follow_live_refused_and_forced_in_english_at_desktop(
    browser: Browser, live_server: LiveServer, make_settings: Any
) -> None:
    await _seed(live_server)
    words = WORDS["en"]
    visitor = await open_visitor(browser, live_server, viewport=DESKTOP)
    page = visitor.page
    polls: list[str] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/progress"):
            polls.append(request.url)

    page.on("request", on_request)
    try:
        await _sign_in(visitor, _key(live_server), "en")
        await page.get_by_role("link", name=words["nav"]).click()
        await expect(page.get_by_role("heading", level=1)).to_have_text(words["title"])
        await visitor.check("console-retention-empty-en-desktop")

        # Preview: a dry run, its counts per category in the policy's words.
        await page.get_by_role("button", name=words["preview"]).click()
        await _finished(visitor, words)
        device = page.locator('tr[data-rule="records:user.device"]')
        await expect(device.locator("th")).to_contain_text(words["device"])
        await expect(device.locator(f'td[data-label="{words["would_delete"]}"]')).to_have_text("3")
        await visitor.check("console-retention-dry-run-en-desktop")
        await page.get_by_role("link", name="Back to retention").click()
        await expect(page.locator("#preview-rules")).to_contain_text(words["device"])
        await visitor.check("console-retention-preview-en-desktop")

        # The purge itself, then its report.
        await page.get_by_role("button", name=words["start"]).click()
        await _finished(visitor, words)
        await expect(device.locator(f'td[data-label="{words["deleted"]}"]')).to_have_text("3")
        await visitor.check("console-retention-report-en-desktop")

        # A purge started elsewhere, followed live: the page shows its progress as the script polls it (a
        # purge midway is shown through a stand-in answer: this one's plan finds nothing left to do), then
        # its report when it ends, with no click.
        midway = {"status": "running", "running": True, "phase": "purging", "done": 2, "planned": 5, "percent": 40}
        stand_in = {"on": True}

        async def progress(route: Route) -> None:
            if stand_in["on"]:
                await route.fulfill(json={**midway, "text": "2 of 5 rows done"})
            else:
                await route.continue_()

        await page.route("**/progress", progress)
        async with _other_process(make_settings) as runtime:
            started = await start_run(runtime, RunOptions())
            try:
                await page.goto(f"/console/retention/runs/{started.run_id}")
                await expect(page.locator("#run-status")).to_have_text(words["running"])
                await expect(page.locator(".retention-refresh")).to_be_hidden()  # the script follows it
                await expect(page.locator("#run-progress-text")).to_have_text("2 of 5 rows done", timeout=10_000)
                await expect(page.locator("#run-progress")).to_have_js_property("value", 2)
                await expect(page.locator("#run-progress")).to_have_js_property("max", 5)
                assert page.url.endswith(f"/console/retention/runs/{started.run_id}")  # no reload
                await visitor.check("console-retention-running-en-desktop")
                stand_in["on"] = False
                await expect(page.locator("#run-progress-text")).to_contain_text(words["counting"], timeout=10_000)
            finally:
                await started.execute()
        await expect(page.locator("#run-status")).to_have_text(words["completed"], timeout=15_000)
        await expect(page.locator("#report")).to_be_visible()
        assert page.url.endswith(f"/console/retention/runs/{started.run_id}")
        assert polls, "the page polled the run's progress"
        await page.unroute("**/progress")

        # Refused by the safety threshold (thresholds any purge trips), then forced with a reason.
        await _seed(live_server, count=2, email="purge.forced@example.com")
        async with _other_process(make_settings, **STRICT) as runtime:
            refused = await run_purge(runtime, RunOptions())
        assert refused.status == "refused"
        await page.goto(f"/console/retention/runs/{refused.run_id}")
        await expect(page.locator("#run-status")).to_have_text(words["refused"])
        await expect(page.get_by_role("heading", name=words["refused_title"])).to_be_visible()
        await expect(page.locator("#alerts")).to_be_visible()
        await visitor.check("console-retention-refused-en-desktop")
        await page.get_by_role("button", name=words["force"]).click()  # no reason given
        await expect(page.locator(".error-summary")).to_contain_text(words["reason_required"])
        await visitor.check("console-retention-reason-missing-en-desktop")
        await page.get_by_label(words["reason"]).check()
        await page.locator("#reference").fill(REFERENCE)
        await page.get_by_role("button", name=words["force"]).click()
        await _finished(visitor, words)
        await expect(page.locator("#forced-note")).to_be_visible()
        await expect(device.locator(f'td[data-label="{words["deleted"]}"]')).to_have_text("2")
        await visitor.check("console-retention-forced-en-desktop")
    finally:
        await visitor.context.close()


async def test_the_retention_pages_pass_axe_in_both_languages_at_desktop_and_phone_widths(
    browser: Browser, live_server: LiveServer, make_settings: Any
) -> None:
    await _seed(live_server)
    async with _other_process(make_settings, **STRICT) as runtime:
        refused = await run_purge(runtime, RunOptions())
    assert refused.status == "refused"
    async with _other_process(make_settings) as runtime:  # the refused run's records, purged elsewhere
        assert (await run_purge(runtime, RunOptions(force=True))).status == "completed"
    key = _key(live_server)
    for language in ("en", "zh"):
        words = WORDS[language]
        for width_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            name = f"{language}-{width_name}"
            await _seed(live_server, count=1, email=f"purge.{name}@example.com")  # one record due for each purge
            visitor = await open_visitor(browser, live_server, viewport=viewport)
            try:
                page = visitor.page
                await _sign_in(visitor, key, language)
                await page.goto("/console/retention")
                await expect(page.locator("html")).to_have_attribute("lang", language)
                await expect(page.get_by_role("heading", level=1)).to_have_text(words["title"])
                await visitor.check(f"console-retention-index-{name}")
                await page.get_by_role("button", name=words["preview"]).click()
                await _finished(visitor, words)
                await expect(page.locator('tr[data-rule="records:user.device"] th')).to_contain_text(words["device"])
                await visitor.check(f"console-retention-dry-run-{name}")
                await page.get_by_role("link", name=words["back"]).click()
                await expect(page.locator("#preview-rules")).to_contain_text(words["device"])
                await visitor.check(f"console-retention-preview-{name}")
                await page.get_by_role("button", name=words["start"], exact=True).click()
                await _finished(visitor, words)
                await expect(
                    page.locator(f'tr[data-rule="records:user.device"] td[data-label="{words["deleted"]}"]')
                ).to_have_text("1")
                await visitor.check(f"console-retention-report-{name}")
                await page.goto(f"/console/retention/runs/{refused.run_id}")
                await expect(page.get_by_role("heading", name=words["refused_title"])).to_be_visible()
                await visitor.check(f"console-retention-refused-{name}")
                await page.get_by_role("button", name=words["force"]).click()
                await expect(page.locator(".error-summary")).to_contain_text(words["reason_required"])
                await visitor.check(f"console-retention-reason-missing-{name}")
            finally:
                await visitor.context.close()

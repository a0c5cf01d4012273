"""A privacy officer's whole day in the console, in Debian's Chromium (issue 17, "Must show"): sign in; approve
an access request; deny one with a reason; extend one; look up a subject and place a legal hold; run a breach
from detection to the Art. 33 document (monitoring's draft opened from the register and confirmed, its facts
recorded, assessed with a decision and its reason, the notification to the authority recorded, its document
opened); preview and run a purge and follow it to its report; verify the audit chain (and find the day's hold
in the log); sign out, after which the old session cookie opens no page.

Only the UI is used: links, buttons and forms. Before the day starts the world holds only what customers and
the backend create: requests filed on the public intake and confirmed with their mailed code, subjects written
by the wallet backend through the API, and the draft incident the worker's breach monitor opens after a wrong
operator key. In English and Chinese, at desktop (1280) and phone (390)
widths; axe-core (no serious or critical violation), no sideways scrolling and no script/CSP error on every
console page visited; every request leaving 127.0.0.1 is aborted, and none may have been attempted."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from privacy_service.breaches.jobs import MonitorResult, scheduled_jobs
from privacy_service.runtime import build_runtime
from tests.e2e.conftest import LiveServer, Visitor, open_visitor
from tests.e2e.console_support import (
    DESKTOP,
    PHONE,
    confirmed_request,
    keep_on_this_machine,
    operator_key,
    sign_in,
)
from tests.e2e.test_console_audit_browser import WORDS as AUDIT
from tests.e2e.test_console_breaches_browser import HEADINGS as BREACHES
from tests.e2e.test_console_requests_browser import WORDS as REQUESTS
from tests.e2e.test_console_retention_browser import WORDS as RETENTION
from tests.e2e.test_console_subjects_browser import WORDS as SUBJECTS

DASHBOARD = {"en": "Dashboard", "zh": "概览"}
HOLD_REASON = "Matter 2031/77: tax audit, preserve everything"
DENY_REASON = {"en": "No account is held under this address.", "zh": "此地址下没有账户。"}
EXTEND_REASON = {"en": "Several systems hold this customer's data.", "zh": "多个系统保存了该客户的数据。"}
JUSTIFICATION = "Only e-mail addresses were read: no password, no message content."
RECIPIENT = "breach-notification@authority.example"
TITLE = "Operator key guessed: support e-mail addresses read"
WRONG_KEY = "psk_000000000000_" + "x" * 43


@pytest.fixture
def make_settings(make_settings: Any) -> Any:
    """The shared settings, with no request type answered without an operator's decision."""

    def factory(**overrides: Any) -> Any:
        return make_settings(**{"dsr_auto_approve": [], **overrides})

    return factory


async def _monitoring_finds_a_key_guesser(server: LiveServer, make_settings: Any) -> None:
    """Someone presents a wrong operator key; the worker's breach monitor (here with a threshold of one
    rejected key, on the live server's database) opens a draft incident for the team to review."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as stranger:
        refused = await stranger.get("/v1/requests", headers={"Authorization": f"Bearer {WRONG_KEY}"})
        assert refused.status_code == 401
    runtime = build_runtime(make_settings(log_level="ERROR", breach_monitor_auth_failures=1))
    try:
        jobs = {name: job for name, job, _ in scheduled_jobs(runtime)}
        found = await jobs["breach-monitor"]()
    finally:
        await runtime.close()
    assert isinstance(found, MonitorResult)
    assert len(found.opened) == 1, found


async def _morning(server: LiveServer, make_settings: Any) -> dict[str, str]:
    """What customers and the backend did before the officer signs in."""
    await _monitoring_finds_a_key_guesser(server, make_settings)
    long_ago = (datetime.now(UTC) - timedelta(days=730)).isoformat()
    today = datetime.now(UTC).isoformat()
    # The wallet backend writes two customers: one with device data long past its 13 months, one current.
    await server.make_subject(
        "old.device@example.com",
        {"name": "Old Device"},
        [{"kind": "sign_in", "category": "user.device", "occurred_at": long_ago, "data": {"app": "4.2"}}] * 2,
    )
    held = await server.make_subject(
        "held.customer@example.com",
        {"name": "Held Customer"},
        [{"kind": "sign_in", "category": "user.device", "occurred_at": today, "data": {"app": "5.0"}}],
    )
    return {
        "held": held,
        "approve": await confirmed_request(server, "access", "held.customer@example.com"),
        "deny": await confirmed_request(server, "access", "no.account@example.com"),
        "extend": await confirmed_request(server, "access", "slow.case@example.com"),
    }


async def _nav(page: Page, area: str) -> None:
    """Follow the console's main navigation to ``area`` (the dashboard for "")."""
    path = f"/console/{area}" if area else "/console"
    await page.locator(f".console-nav a[href='{path}']").click()
    await page.wait_for_url(f"**{path}")


async def _requests(visitor: Visitor, language: str, tag: str, ids: dict[str, str]) -> None:
    page, words = visitor.page, REQUESTS[language]
    await _nav(page, "requests")
    await expect(page.get_by_role("heading", level=1)).to_have_text(words["queue"])
    await visitor.check(f"day-requests-{tag}")
    await page.locator("#filter-type").select_option("access")
    await page.locator("#filter-status").select_option("awaiting_review")
    await page.get_by_role("button", name=words["show"]).click()
    await page.wait_for_url("**/console/requests?*status=awaiting_review*")
    for waiting in ("approve", "deny", "extend"):
        await expect(page.locator(f'#request-queue a[href="/console/requests/{ids[waiting]}"]')).to_have_count(1)
    await visitor.check(f"day-requests-queue-{tag}")

    await page.locator(f'a[href="/console/requests/{ids["approve"]}"]').click()
    await page.wait_for_url(f"**/console/requests/{ids['approve']}")
    await visitor.check(f"day-request-{tag}")
    await page.locator("#approve-form").get_by_role("button", name=words["approve"]).click()
    await page.wait_for_url(f"**/console/requests/{ids['approve']}?done=approved")
    await expect(page.locator("#request-status")).to_have_text(words["completed"])
    await visitor.check(f"day-request-approved-{tag}")

    # Back to the queue through its link, then the next request: denied, with the reason the customer reads.
    await _nav(page, "requests")
    await page.locator(f'a[href="/console/requests/{ids["deny"]}"]').click()
    await page.wait_for_url(f"**/console/requests/{ids['deny']}")
    await page.locator("#deny-reason").fill(DENY_REASON[language])
    await page.locator("#deny-form").get_by_role("button", name=words["deny"]).click()
    await page.wait_for_url(f"**/console/requests/{ids['deny']}?done=denied")
    await expect(page.locator("#request-status")).to_have_text(words["denied"])
    await expect(page.locator("#answer-decision")).to_have_text(DENY_REASON[language])
    await visitor.check(f"day-request-denied-{tag}")

    await _nav(page, "requests")
    await page.locator(f'a[href="/console/requests/{ids["extend"]}"]').click()
    await page.wait_for_url(f"**/console/requests/{ids['extend']}")
    await page.locator("#extend-reason").fill(EXTEND_REASON[language])
    await page.locator("#extend-form").get_by_role("button", name=words["extend"]).click()
    await page.wait_for_url(f"**/console/requests/{ids['extend']}?done=extended")
    await expect(page.locator("#extended")).to_contain_text(words["extended"])
    await expect(page.locator("#extend-form")).to_have_count(0)
    await visitor.check(f"day-request-extended-{tag}")


async def _subject(visitor: Visitor, language: str, tag: str, subject_id: str) -> None:
    page, words = visitor.page, SUBJECTS[language]
    await _nav(page, "subjects")
    await visitor.check(f"day-subjects-lookup-{tag}")
    await page.locator("#kind").select_option("email")
    await page.locator("#value").fill("held.customer@example.com")
    await page.locator("form.portal-form button[type=submit]").click()
    await page.wait_for_url(f"**/console/subjects/{subject_id}")
    await expect(page.locator("#identifiers")).to_contain_text("held.customer@example.com")
    await expect(page.locator("#no-holds")).to_be_visible()
    await visitor.check(f"day-subject-{tag}")

    await page.locator("#place-hold").click()
    await page.wait_for_url(f"**/console/subjects/{subject_id}/holds/new")
    await visitor.check(f"day-subject-hold-form-{tag}")
    await page.locator("#reason").fill(HOLD_REASON)
    await page.locator("#until").fill("2031-12-31")
    await page.locator("form.portal-form button[type=submit]").click()
    await page.wait_for_url(f"**/console/subjects/{subject_id}?done=hold_placed")
    await expect(page.locator("#done")).to_have_text(words["placed"])
    await expect(page.locator("#holds")).to_contain_text(HOLD_REASON)
    await expect(page.locator("#holds")).to_contain_text(words["active"])
    await expect(page.locator("#held-tag")).to_be_visible()
    await visitor.check(f"day-subject-held-{tag}")


async def _breach(visitor: Visitor, language: str, tag: str) -> None:
    page = visitor.page
    await _nav(page, "breaches")
    await expect(page.get_by_role("heading", level=1)).to_have_text(BREACHES[language][0])
    await visitor.check(f"day-breaches-{tag}")

    # Detection: monitoring's draft (someone guessing operator keys) is reviewed and confirmed; the clock starts.
    await page.get_by_role("link", name=re.compile("rejected operator keys")).click()
    await page.wait_for_url(re.compile(r".*/console/breaches/[0-9a-f-]{36}$"))
    await expect(page.locator("#breach-status")).to_have_class(re.compile("tag--draft"))
    await visitor.check(f"day-breach-draft-{tag}")
    await page.locator("#confirm-note").fill("A guessed key read support e-mail addresses.")
    await page.locator("form#confirm button[type=submit]").click()
    await page.wait_for_url(re.compile(r".*/console/breaches/[0-9a-f-]{36}#confirm$"))
    await expect(page.locator("#breach-status")).to_have_class(re.compile("tag--open"))
    await expect(page.locator("#clock-left")).to_contain_text("7")  # 72 h (71 once a minute has gone)
    await visitor.check(f"day-breach-confirmed-{tag}")

    # What is known is recorded in the incident's facts.
    await page.locator("details.breach-edit summary").first.click()
    facts = page.locator("form[action$='/facts']")
    await facts.locator("#facts-title").fill(TITLE)
    await facts.locator("#facts-description").fill(
        "A guessed operator key listed support tickets and read the customers' e-mail addresses."
    )
    await facts.locator("#facts-categories input[value='user.contact.email']").check()
    await facts.locator("#facts-estimated_count").fill("40")
    await facts.locator("input[name=exfiltration_known]").check()
    await facts.locator("button[type=submit]").click()
    await page.wait_for_url(re.compile(r".*/console/breaches/[0-9a-f-]{36}#facts$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text(TITLE)
    await expect(page.locator("#affected-count")).to_contain_text("40")
    await visitor.check(f"day-breach-recorded-{tag}")

    # Assessment (ENISA) and a decision of the officer's own, with its reason.
    await page.locator("#assessment-ease_of_identification").select_option("maximum")
    await page.locator("#override-notify_subjects").select_option("no")
    await page.locator("#justification-notify_subjects").fill(JUSTIFICATION)
    await page.locator("form[action$='/assessment'] button[type=submit]").click()
    await page.wait_for_url(re.compile(r".*/console/breaches/[0-9a-f-]{36}#assessment$"))
    await expect(page.locator("#breach-status")).to_have_class(re.compile("tag--assessed"))
    await expect(page.locator("#decisions")).to_contain_text(JUSTIFICATION)
    await visitor.check(f"day-breach-assessed-{tag}")

    # Art. 33: the notification to the authority is recorded, then its document opened in the officer's language.
    await page.locator("#authority-recipient").fill(RECIPIENT)
    await page.locator("form[action$='/authority-notification'] button[type=submit]").click()
    await page.wait_for_url(re.compile(r".*#authority$"))
    await expect(page.locator("#breach-status")).to_have_class(re.compile("tag--notifying"))
    await visitor.check(f"day-breach-notified-{tag}")
    await page.locator(f"#authority-notices a[hreflang={language}]").click()
    await page.wait_for_url(f"**/authority-notifications/1?lang={language}")
    await expect(page.locator("html")).to_have_attribute("lang", language)
    await expect(page.get_by_role("heading", level=1)).to_be_visible()
    await expect(page.locator("body")).to_contain_text(RECIPIENT)
    await expect(page.locator("body")).to_contain_text(TITLE)
    await visitor.check(f"day-breach-art33-{tag}")
    # The document is the authority's page, without the console's navigation: the browser's Back returns.
    await page.go_back()
    await page.wait_for_url(re.compile(r".*/console/breaches/[0-9a-f-]{36}#authority$"))


async def _purge(visitor: Visitor, language: str, tag: str) -> None:
    page, words = visitor.page, RETENTION[language]
    await _nav(page, "retention")
    await expect(page.get_by_role("heading", level=1)).to_have_text(words["title"])
    await visitor.check(f"day-retention-{tag}")
    device = page.locator('tr[data-rule="records:user.device"]')

    await page.get_by_role("button", name=words["preview"]).click()
    await page.wait_for_url("**/console/retention/runs/*")
    await expect(page.locator("#run-status")).to_have_text(words["completed"], timeout=20_000)
    await expect(device.locator("th")).to_contain_text(words["device"])
    await expect(device.locator(f'td[data-label="{words["would_delete"]}"]')).to_have_text("2")
    await visitor.check(f"day-retention-dry-run-{tag}")
    await page.get_by_role("link", name=words["back"]).click()
    await page.wait_for_url("**/console/retention")
    await expect(page.locator("#preview-rules")).to_contain_text(words["device"])
    await visitor.check(f"day-retention-preview-{tag}")

    await page.get_by_role("button", name=words["start"], exact=True).click()
    await page.wait_for_url("**/console/retention/runs/*")
    await expect(page.locator("#run-status")).to_have_text(words["completed"], timeout=20_000)
    await expect(page.locator("#report")).to_be_visible()
    await expect(device.locator(f'td[data-label="{words["deleted"]}"]')).to_have_text("2")
    await visitor.check(f"day-retention-report-{tag}")


async def _audit(visitor: Visitor, language: str, tag: str, subject_id: str) -> None:
    page, words = visitor.page, AUDIT[language]
    await _nav(page, "audit")
    await expect(page.get_by_role("heading", level=1)).to_have_text(words["audit"])
    await visitor.check(f"day-audit-{tag}")
    await page.get_by_role("button", name=words["verify"]).click()
    await page.wait_for_url("**/console/audit?verify=done*")
    await expect(page.locator("#verify-outcome")).to_contain_text(words["intact"])
    await visitor.check(f"day-audit-verified-{tag}")
    # The day's hold is in the log under its subject.
    await page.locator("#subject").fill(subject_id)
    await page.get_by_role("button", name=words["search"], exact=True).click()
    await page.wait_for_url(f"**/console/audit?*subject={subject_id}*")
    await expect(page.locator("#audit-events code", has_text="hold.placed")).not_to_have_count(0)
    await visitor.check(f"day-audit-subject-{tag}")


async def _evening(visitor: Visitor, tag: str) -> None:
    """The dashboard at the end of the day shows what the day left: the extended request still open, no
    breach clock running (the authority was notified), the purge just run, the chain just checked."""
    page = visitor.page
    await _nav(page, "")
    await expect(page.locator("#open-total")).to_have_text("1")
    await expect(page.locator("#breaches-heading")).to_be_visible()
    await expect(page.locator("#breach-clocks")).to_have_count(0)
    await expect(page.locator("#last-purge a[href^='/console/retention/runs/']")).to_have_count(1)
    await expect(page.locator("#audit-status")).to_have_class(re.compile(r"^notice$"))
    await visitor.check(f"day-dashboard-evening-{tag}")


async def _opens_with(browser: Browser, server: LiveServer, cookies: list[Any], paths: tuple[str, ...]) -> list[str]:
    """Where each path ends in a browser of its own holding only ``cookies`` (a copied session cookie)."""
    thief = await open_visitor(browser, server, viewport=DESKTOP)
    try:
        await thief.context.add_cookies(cookies)
        left = await keep_on_this_machine(thief.context)
        ended = []
        for path in paths:
            await thief.page.goto(path)
            await thief.page.wait_for_load_state("load")
            ended.append(urlsplit(thief.page.url).path)
        assert left == []
        return ended
    finally:
        await thief.context.close()


async def _sign_out(browser: Browser, visitor: Visitor, server: LiveServer, tag: str) -> None:
    page = visitor.page
    stolen = [c for c in await visitor.context.cookies() if c["name"] == "privacy_console"]
    assert len(stolen) == 1
    pages = ("/console", "/console/requests", "/console/subjects", "/console/breaches")
    # Copied before signing out, the cookie opens the console in another browser (so the check below can fail).
    assert await _opens_with(browser, server, stolen, pages) == list(pages)

    await page.locator("form.sign-out button[type=submit]").click()
    await page.wait_for_url("**/console/sign-in?signed_out=1")
    await visitor.check(f"day-signed-out-{tag}")
    await page.goto("/console/requests")
    await page.wait_for_url("**/console/sign-in")
    # After signing out, the same cookie opens nothing: every page sends its holder to sign in.
    assert await _opens_with(browser, server, stolen, pages) == ["/console/sign-in"] * len(pages)


DAYS = [
    pytest.param("en", DESKTOP, id="en-desktop"),
    pytest.param("en", PHONE, id="en-phone"),
    pytest.param("zh", DESKTOP, id="zh-desktop"),
    pytest.param("zh", PHONE, id="zh-phone"),
]


@pytest.mark.parametrize(("language", "viewport"), DAYS)
async def test_a_privacy_officers_day(
    browser: Browser, live_server: LiveServer, make_settings: Any, language: str, viewport: dict[str, int]
) -> None:
    ids = await _morning(live_server, make_settings)
    tag = f"{language}-{'phone' if viewport == PHONE else 'desktop'}"
    visitor = await open_visitor(browser, live_server, viewport=viewport)
    left = await keep_on_this_machine(visitor.context)
    try:
        page = visitor.page
        await page.goto("/console")
        await page.wait_for_url("**/console/sign-in")  # no session yet
        await sign_in(visitor, operator_key(live_server), language, check_as=f"day-sign-in-{tag}")
        await expect(page.locator("html")).to_have_attribute("lang", language)
        await expect(page.get_by_role("heading", level=1)).to_have_text(DASHBOARD[language])
        await visitor.check(f"day-dashboard-{tag}")

        await _requests(visitor, language, tag, ids)
        await _subject(visitor, language, tag, ids["held"])
        await _breach(visitor, language, tag)
        await _purge(visitor, language, tag)
        await _audit(visitor, language, tag, ids["held"])
        await _evening(visitor, tag)
        await _sign_out(browser, visitor, live_server, tag)
        assert left == [], f"requests left 127.0.0.1: {left}"
    finally:
        await visitor.context.close()

    # What the console did is what the API sees.
    approved = (await live_server.api("GET", f"/v1/requests/{ids['approve']}")).json()
    denied = (await live_server.api("GET", f"/v1/requests/{ids['deny']}")).json()
    extended = (await live_server.api("GET", f"/v1/requests/{ids['extend']}")).json()
    assert (approved["status"], denied["status"], extended["extended"]) == ("completed", "denied", True)
    holds = (await live_server.api("GET", f"/v1/subjects/{ids['held']}/holds")).json()["items"]
    assert [(hold["active"], hold["reason"]) for hold in holds] == [(True, HOLD_REASON)]
    breaches = (await live_server.api("GET", "/v1/breaches")).json()["items"]
    assert [breach["status"] for breach in breaches] == ["notifying"]

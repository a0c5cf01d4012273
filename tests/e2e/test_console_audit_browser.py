"""The console's audit and systems areas in Debian's Chromium (issue 17, items 7 and 8): the privacy
officer verifies the audit chain and searches the log by action; sees a downstream system's delivery
health and retries a dead delivery. In English and Chinese, at desktop and phone (390 px) widths, with
axe-core (no serious or critical violation) on every page of both areas."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from playwright.async_api import Browser, expect

from privacy_service.audit.service import Actor
from privacy_service.runtime import Runtime, build_runtime
from privacy_service.systems import schemas
from privacy_service.systems.jobs import TransportError, deliver_webhooks
from privacy_service.systems.service import SystemService
from tests.e2e.conftest import LiveServer, Visitor, open_visitor
from tests.integration.systems_support import CUSTOMER_EMAIL, PROFILE, OffsetClock

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
VIEWS = [
    ("en", "desktop", DESKTOP),
    ("zh", "phone", PHONE),
    ("en", "phone", PHONE),
    ("zh", "desktop", DESKTOP),
]
WORDS = {
    "en": {
        "sign_in": "Sign in",
        "audit": "Audit log",
        "systems": "Systems",
        "verify": "Verify the chain",
        "intact": "The chain is intact",
        "search": "Search",
        "action": "Action",
        "retry": "Retry",
        "retried": "queued again",
    },
    "zh": {
        "sign_in": "登录",
        "audit": "审计日志",
        "systems": "下游系统",
        "verify": "验证审计链",
        "intact": "审计链完好",
        "search": "搜索",
        "action": "操作",
        "retry": "重试",
        "retried": "重新排队",
    },
}


class Unreachable:
    """The receiver is down: every POST fails as a refused connection would."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        raise TransportError("network_error")


def _key(server: LiveServer) -> str:
    return server.operator["Authorization"].split(" ", 1)[1]


@asynccontextmanager
async def _beside(make_settings: Any) -> AsyncIterator[Runtime]:
    """A runtime on the live server's database (the worker's view of it)."""
    runtime = build_runtime(make_settings(systems_allow_private_networks=True))
    try:
        yield runtime
    finally:
        await runtime.close()


async def _register(runtime: Runtime) -> None:
    """A system registered as the API registers one (SystemService.add), listening on this machine."""
    async with runtime.db.transaction() as session:
        service = SystemService(
            session=session,
            keys=runtime.keys,
            policy=runtime.policy,
            clock=runtime.clock,
            settings=runtime.settings,
            actor=Actor.system("e2e"),
            resolver=runtime.resolver,
        )
        await service.add(
            schemas.SystemCreate(
                name="billing",
                callback_url="http://127.0.0.1:9/hooks",
                request_types=["access"],
                categories=["user.name"],
                identities=["email"],
            )
        )


async def _access_request(server: LiveServer) -> None:
    """A customer's verified access request: it fans out to the registered system."""
    await server.make_subject(CUSTOMER_EMAIL, PROFILE, [])
    before = len(server.mail.to(CUSTOMER_EMAIL))
    filed = await server.api("POST", "/v1/requests", {"type": "access", "identity": {"email": CUSTOMER_EMAIL}})
    assert filed.status_code == 202, filed.text
    code = await server.code_for(CUSTOMER_EMAIL, before)
    verified = await server.api("POST", f"/v1/requests/{filed.json()['id']}/verify", {"code": code})
    assert verified.status_code == 200, verified.text


async def _give_up(runtime: Runtime, hours: int) -> None:
    """The sender's next attempt fails and, at the last allowed attempt, dead-letters the delivery."""
    clock = OffsetClock(timedelta(hours=hours))
    result = await deliver_webhooks(runtime.db, runtime.keys, clock, transport=Unreachable(), max_attempts=1)
    assert result.dead == 1, result


async def _sign_in(visitor: Visitor, key: str, language: str) -> None:
    page = visitor.page
    await page.goto(f"/console/sign-in?lang={language}")
    await page.locator("#key").fill(key)
    await page.get_by_role("button", name=WORDS[language]["sign_in"]).click()
    await page.wait_for_url("**/console")


async def test_verify_the_chain_and_search_by_action(browser: Browser, live_server: LiveServer) -> None:
    filed = await live_server.api("POST", "/v1/requests", {"type": "access", "identity": {"email": "a@example.com"}})
    assert filed.status_code == 202
    for language, width, viewport in VIEWS:
        words = WORDS[language]
        visitor = await open_visitor(browser, live_server, viewport=viewport)
        try:
            page = visitor.page
            await _sign_in(visitor, _key(live_server), language)
            if width == "phone":
                await page.goto("/console/audit")
            else:
                await page.get_by_role("link", name=words["audit"], exact=True).click()
            await page.wait_for_url("**/console/audit")
            await expect(page.get_by_role("heading", level=1)).to_have_text(words["audit"])
            await visitor.check(f"console-audit-{language}-{width}")

            await page.get_by_role("button", name=words["verify"]).click()
            await page.wait_for_url("**/console/audit?verify=done*")
            await expect(page.locator("#verify-outcome")).to_contain_text(words["intact"])
            await visitor.check(f"console-audit-verified-{language}-{width}")

            await page.get_by_label(words["action"], exact=True).fill("console.sign_in")
            await page.get_by_role("button", name=words["search"], exact=True).click()
            await page.wait_for_url("**/console/audit?*action=console.sign_in*")
            rows = page.locator("#audit-events tbody tr")
            await expect(rows.first).to_be_visible()
            assert await rows.count() >= 1
            assert await page.locator("#audit-events code", has_text="dsr.").count() == 0
            await visitor.check(f"console-audit-search-{language}-{width}")

            await page.goto("/console/audit?subject=not-a-subject")  # a bad filter: the error state
            await expect(page.locator(".error-summary")).to_be_visible()
            await visitor.check(f"console-audit-error-{language}-{width}")
        finally:
            await visitor.context.close()


async def test_see_a_systems_health_and_retry_a_dead_delivery(
    browser: Browser, live_server: LiveServer, make_settings: Any
) -> None:
    async with _beside(make_settings) as runtime:
        await _register(runtime)
        await _access_request(live_server)
        for turn, (language, width, viewport) in enumerate(VIEWS):
            await _give_up(runtime, hours=turn + 1)
            words = WORDS[language]
            visitor = await open_visitor(browser, live_server, viewport=viewport)
            try:
                page = visitor.page
                await _sign_in(visitor, _key(live_server), language)
                if width == "phone":
                    await page.goto("/console/systems")
                else:
                    await page.get_by_role("link", name=words["systems"], exact=True).click()
                await page.wait_for_url("**/console/systems")
                card = page.locator(".systems-card", has_text="billing")
                await expect(card.locator('[data-figure="dead"]')).to_have_text("1")
                await visitor.check(f"console-systems-{language}-{width}")

                await card.get_by_role("link", name="billing").click()
                await page.wait_for_url("**/console/systems/*")
                await expect(page.get_by_role("heading", level=1)).to_have_text("billing")
                await expect(page.locator("#system-health [data-figure='dead']")).to_have_text("1")
                await visitor.check(f"console-system-{language}-{width}")

                await page.locator("#deliveries").get_by_role("button", name=words["retry"]).click()
                await page.wait_for_url("**/console/systems/*?retried=*")
                await expect(page.locator("#retried")).to_contain_text(words["retried"])
                await expect(page.locator("#system-health [data-figure='dead']")).to_have_text("0")
                await expect(page.locator("#deliveries").get_by_role("button", name=words["retry"])).to_have_count(0)
                await visitor.check(f"console-system-retried-{language}-{width}")
            finally:
                await visitor.context.close()

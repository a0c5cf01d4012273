"""The operator console in Debian's Chromium (issue 17): sign in, the dashboard, the API reference with
no request leaving 127.0.0.1, sign out; axe-core on the sign-in and dashboard pages in English and
Chinese at desktop and phone (390 px) widths."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from tests.breach_support import incident
from tests.e2e.conftest import LiveServer, Visitor, open_visitor
from tests.e2e.console_support import DESKTOP, PHONE, keep_on_this_machine, operator_key


async def _seed(server: LiveServer) -> None:
    filed = await server.api("POST", "/v1/requests", {"type": "access", "identity": {"email": "dpo.test@example.com"}})
    assert filed.status_code == 202, filed.text
    created = await server.api("POST", "/v1/breaches", incident(title="Lost laptop with support exports"))
    assert created.status_code == 201, created.text


async def _sign_in(visitor: Visitor, key: str, button: str = "Sign in") -> None:
    page = visitor.page
    await page.locator("#key").fill(key)
    await page.get_by_role("button", name=button).click()
    await page.wait_for_url("**/console")


async def test_sign_in_dashboard_offline_api_reference_and_sign_out(
    browser: Browser, visitor: Visitor, live_server: LiveServer
) -> None:
    await _seed(live_server)
    left = await keep_on_this_machine(visitor.context)
    page = visitor.page
    await page.set_viewport_size(DESKTOP)
    await page.goto("/console")
    await page.wait_for_url("**/console/sign-in")  # no session: sent to sign in
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to the privacy console")
    await _sign_in(visitor, operator_key(live_server))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    await expect(page.locator("#open-total")).to_have_text("1")
    await expect(page.locator("#breach-clocks")).to_contain_text("Lost laptop with support exports")
    session = [c for c in await visitor.context.cookies() if c["name"] == "privacy_console"]
    assert len(session) == 1
    assert session[0]["httpOnly"] is True
    assert session[0]["sameSite"] == "Strict"
    await visitor.check("console-dashboard-signed-in")

    await page.get_by_role("link", name="API reference").click()
    await page.wait_for_url("**/console/api")
    # Swagger UI, from the package's own files, rendered this service's document.
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("privacy-service", timeout=15_000)
    await expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    assert await page.locator(".swagger-ui .opblock").count() > 20
    assert not visitor.problems, visitor.problems  # no CSP violation, no broken file, no script error
    assert left == []
    await page.goto("/schema/swagger")  # Litestar's own page uses the same vendored files
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("privacy-service", timeout=15_000)
    assert await page.locator(".swagger-ui .opblock").count() > 20
    assert left == []
    await page.goto("/console")

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/console/sign-in?signed_out=1")
    await expect(page.get_by_role("status")).to_contain_text("You have signed out")
    await page.goto("/console")
    await page.wait_for_url("**/console/sign-in")
    assert left == []


async def test_sign_in_and_dashboard_pass_axe_in_both_languages_at_desktop_and_phone_widths(
    browser: Browser, live_server: LiveServer
) -> None:
    await _seed(live_server)
    key = operator_key(live_server)
    for language, button, heading in (("en", "Sign in", "Dashboard"), ("zh", "登录", "概览")):
        for width_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            visitor = await open_visitor(browser, live_server, viewport=viewport)
            try:
                page = visitor.page
                await page.goto(f"/console/sign-in?lang={language}")
                await expect(page.locator("html")).to_have_attribute("lang", language)
                await visitor.check(f"console-sign-in-{language}-{width_name}")
                await page.locator("#key").fill("psk_000000000000_" + "x" * 43)  # a wrong key: the error state
                await page.get_by_role("button", name=button).click()
                await expect(page.locator("#key-error")).to_be_visible()
                await visitor.check(f"console-sign-in-error-{language}-{width_name}")
                await _sign_in(visitor, key, button)
                await expect(page.get_by_role("heading", level=1)).to_have_text(heading)
                await visitor.check(f"console-dashboard-{language}-{width_name}")
            finally:
                await visitor.context.close()

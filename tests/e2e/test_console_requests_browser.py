"""The console's requests area in Debian's Chromium (issue 17 item 3): a privacy officer filters the queue, opens
an access request and approves it, denies another with a reason (after forgetting the reason once), and extends a
third; in English and Chinese, at desktop (1280) and phone (390) widths, with axe-core finding nothing serious or
critical on the queue and the request page. The service answers no type on its own here (``dsr_auto_approve``
empty), so every confirmed request waits in the queue."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.conftest import LiveServer, Visitor, open_visitor

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
WORDS = {
    "en": {
        "sign_in": "Sign in",
        "queue": "Requests",
        "show": "Show",
        "approve": "Approve",
        "deny": "Deny",
        "extend": "Extend the deadline",
        "completed": "Completed",
        "denied": "Denied",
        "extended": "Extended once",
        "reason_required": "Enter a reason.",
    },
    "zh": {
        "sign_in": "登录",
        "queue": "请求",
        "show": "显示",
        "approve": "批准",
        "deny": "拒绝",
        "extend": "延长截止期限",
        "completed": "已完成",
        "denied": "已拒绝",
        "extended": "已延期一次",
        "reason_required": "请填写理由。",
    },
}


@pytest.fixture
def make_settings(make_settings: Any) -> Any:
    """The shared settings, with no request type answered without an operator's decision."""

    def factory(**overrides: Any) -> Any:
        return make_settings(**{"dsr_auto_approve": [], **overrides})

    return factory


async def _waiting_request(server: LiveServer, email: str) -> str:
    """An access request its customer confirmed with the mailed code: it waits for review."""
    filed = await server.api("POST", "/v1/requests", {"type": "access", "identity": {"email": email}})
    assert filed.status_code == 202, filed.text
    request_id = str(filed.json()["id"])
    code = await server.code_for(email)
    verified = await server.api("POST", f"/v1/requests/{request_id}/verify", {"code": code})
    assert verified.status_code == 200, verified.text
    assert verified.json()["status"] == "awaiting_review"
    return request_id


async def _sign_in(visitor: Visitor, key: str, language: str) -> None:
    page = visitor.page
    await page.goto(f"/console/sign-in?lang={language}")
    await page.locator("#key").fill(key)
    await page.get_by_role("button", name=WORDS[language]["sign_in"]).click()
    await page.wait_for_url("**/console")


async def test_a_privacy_officer_approves_denies_and_extends_in_both_languages_at_both_widths(
    browser: Browser, live_server: LiveServer
) -> None:
    key = live_server.operator["Authorization"].split(" ", 1)[1]
    for language in ("en", "zh"):
        words = WORDS[language]
        for width_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            tag = f"{language}-{width_name}"
            approve_id = await _waiting_request(live_server, f"approve.{tag}@example.com")
            deny_id = await _waiting_request(live_server, f"deny.{tag}@example.com")
            extend_id = await _waiting_request(live_server, f"extend.{tag}@example.com")
            visitor = await open_visitor(browser, live_server, viewport=viewport)
            try:
                page = visitor.page
                await _sign_in(visitor, key, language)
                await page.locator(".console-nav").get_by_role("link", name=words["queue"], exact=True).click()
                await page.wait_for_url("**/console/requests")
                await expect(page.get_by_role("heading", level=1)).to_have_text(words["queue"])
                await page.locator("#filter-type").select_option("access")
                await page.locator("#filter-status").select_option("awaiting_review")
                await page.get_by_role("button", name=words["show"]).click()
                await page.wait_for_url("**/console/requests?status=awaiting_review&type=access&*")
                await expect(page.locator("#request-queue")).to_contain_text(approve_id)
                await visitor.check(f"console-requests-queue-{tag}")

                # Approve: the access request is answered at once.
                await page.locator(f'a[href="/console/requests/{approve_id}"]').click()
                await page.wait_for_url(f"**/console/requests/{approve_id}")
                await visitor.check(f"console-request-page-{tag}")
                await page.locator("#approve-form").get_by_role("button", name=words["approve"]).click()
                await page.wait_for_url(f"**/console/requests/{approve_id}?done=approved")
                await expect(page.locator("#done")).to_be_visible()
                await expect(page.locator("#request-status")).to_have_text(words["completed"])

                # Deny: without a reason the form comes back (422) and says so; then with one.
                await page.goto(f"/console/requests/{deny_id}")
                await page.locator("#deny-form").get_by_role("button", name=words["deny"]).click()
                await expect(page.locator(".error-summary")).to_contain_text(words["reason_required"])
                await visitor.check(f"console-request-deny-error-{tag}")
                reason = "No account is held under this address." if language == "en" else "此地址下没有账户。"
                await page.locator("#deny-reason").fill(reason)
                await page.locator("#deny-form").get_by_role("button", name=words["deny"]).click()
                await page.wait_for_url(f"**/console/requests/{deny_id}?done=denied")
                await expect(page.locator("#request-status")).to_have_text(words["denied"])
                await expect(page.locator("#answer-decision")).to_have_text(reason)  # what the customer reads

                # Extend, with a reason the customer is sent.
                await page.goto(f"/console/requests/{extend_id}")
                await page.locator("#extend-reason").fill("Several systems hold this customer's data.")
                await page.locator("#extend-form").get_by_role("button", name=words["extend"]).click()
                await page.wait_for_url(f"**/console/requests/{extend_id}?done=extended")
                await expect(page.locator("#extended")).to_contain_text(words["extended"])
                await expect(page.locator("#extend-form")).to_have_count(0)  # one extension only
                await visitor.check(f"console-request-extended-{tag}")
            finally:
                await visitor.context.close()
            extended = await live_server.api("GET", f"/v1/requests/{extend_id}")
            assert extended.json()["extended"] is True
            denied = await live_server.api("GET", f"/v1/requests/{deny_id}")
            assert denied.json()["status"] == "denied"

"""The request portal and the privacy notice in a real browser, as a customer uses them.

Every page visited is checked with axe-core (no serious or critical violation), for CSP violations
and broken files, for sideways scrolling, and saved as a screenshot under tests/e2e/artifacts/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from playwright.async_api import Browser, expect

from tests.e2e.conftest import MOBILE, LiveServer, Visitor, open_visitor

EMAIL = "carol.customer@example.com"
PROFILE = {"name": "Carol Customer", "date_of_birth": "1985-05-05"}
TRANSACTION = {
    "kind": "transaction",
    "category": "user.financial.transaction",
    "occurred_at": "2026-01-01T00:00:00Z",
    "data": {"reference": "TX-1001", "amount": 42},
}
ACTIVITY = {"kind": "app_event", "category": "user.behavior", "occurred_at": "2026-01-02T00:00:00Z", "data": {"n": 1}}
STATUS_URL = re.compile(r"/privacy/requests/([0-9a-f-]{36})$")
VERIFY_URL = re.compile(r"/privacy/requests/([0-9a-f-]{36})/verify$")


async def submit_request(visitor: Visitor, kind_label: str, email: str, name: str) -> str:
    """Fill in the request form (already open) and send it; returns the request id from the code page."""
    page = visitor.page
    await page.get_by_label(kind_label).check()
    await page.get_by_label("E-mail address", exact=True).fill(email)
    await visitor.check(name)
    await page.get_by_role("button", name="Send request").click()
    await expect(page).to_have_url(VERIFY_URL)
    match = VERIFY_URL.search(page.url)
    assert match
    return match.group(1)


async def enter_code(visitor: Visitor, code: str) -> None:
    await visitor.page.get_by_label("6-digit code").fill(code)
    await visitor.page.get_by_role("button", name="Confirm").click()


async def test_access_request_from_form_to_download(
    browser: Browser, visitor: Visitor, live_server: LiveServer
) -> None:
    await live_server.make_subject(EMAIL, PROFILE, [TRANSACTION])
    page = visitor.page
    await page.goto("/privacy/request")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Make a privacy request")
    request_id = await submit_request(visitor, "See my data", EMAIL, "request-form")
    assert EMAIL not in page.url
    await visitor.check("verify")

    await enter_code(visitor, await live_server.code_for(EMAIL))
    await expect(page).to_have_url(STATUS_URL)
    assert page.url.endswith(f"/privacy/requests/{request_id}")
    await expect(page.locator(".tag")).to_have_text("Completed")
    await expect(page.get_by_role("heading", name="Download your data")).to_be_visible()
    await visitor.check("status-access-completed")

    # The request token lives in a cookie that scripts cannot read, sent only to this request's pages.
    [token] = [c for c in await visitor.context.cookies() if c["name"] == "privacy_request"]
    assert token["value"].startswith("psr_")
    assert token["httpOnly"] is True
    assert token["sameSite"] == "Strict"
    assert token["path"] == f"/privacy/requests/{request_id}"
    assert token["secure"] is False  # plain http here; https base URLs get Secure (tests/api/test_portal.py)
    assert token["value"] not in page.url

    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download as JSON").click()
    download = await download_info.value
    assert download.suggested_filename == f"privacy-export-{request_id}.json"
    path = await download.path()
    export = json.loads(Path(path).read_text(encoding="utf-8"))
    assert export["subject"]["email"] == EMAIL
    assert export["subject"]["profile"] == PROFILE
    assert [r["data"]["reference"] for r in export["records"]] == ["TX-1001"]
    assert {c["category"] for c in export["processing"]["categories"]} >= {"user.financial.transaction"}

    # Another browser (or the mail link on another device) is offered a new code and sees nothing else
    # (the whole way from a second browser: tests/e2e/test_cross_device.py).
    stranger = await open_visitor(browser, live_server)
    try:
        await stranger.page.goto(f"/privacy/requests/{request_id}")
        await expect(stranger.page.get_by_role("button", name="Send me a code")).to_be_visible()
        await expect(stranger.page.locator(".tag")).to_have_count(0)
        await stranger.check("status-locked")
        response = await stranger.page.request.get(f"/privacy/requests/{request_id}/export")
        assert response.status == 403
    finally:
        await stranger.context.close()


async def test_erasure_shows_what_was_deleted_and_the_aml_record_kept(
    visitor: Visitor, live_server: LiveServer
) -> None:
    subject_id = await live_server.make_subject(EMAIL, PROFILE, [TRANSACTION, ACTIVITY])
    page = visitor.page
    await page.goto("/privacy/request")
    request_id = await submit_request(visitor, "Delete my data", EMAIL, "request-form-erase")
    await enter_code(visitor, await live_server.code_for(EMAIL))
    await expect(page.locator(".tag")).to_have_text("Being reviewed by our privacy team")
    await expect(page.locator("[aria-current=step]")).to_contain_text("Checked by our privacy team")
    await visitor.check("status-erase-review")

    approved = await live_server.api("POST", f"/v1/requests/{request_id}/approve", {})
    assert approved.status_code == 200, approved.text
    await page.reload()
    await expect(page.locator(".tag")).to_have_text("Completed; some data had to be kept")
    deleted = page.locator("h3:text-is('What we deleted') + p + ul")
    await expect(deleted).to_contain_text("App activity")
    await expect(deleted).to_contain_text("E-mail address")
    kept = page.get_by_role("table", name="Data we keep, why, and until when")
    # Identity data and transactions fall under the anti-money-laundering duty (policies/policy.yaml).
    await expect(kept.get_by_role("row", name=re.compile("^Name"))).to_contain_text("EU AMLD4")
    row = kept.get_by_role("row", name=re.compile("Transactions"))
    await expect(row).to_contain_text("EU AMLD4")
    until = await row.locator("td").last.inner_text()
    assert int(re.search(r"\d{4}", until).group(0)) >= 2031, until  # type: ignore[union-attr]
    await visitor.check("status-erase-kept")
    assert (await live_server.api("GET", f"/v1/subjects/{subject_id}")).status_code == 410


async def test_correction(visitor: Visitor, live_server: LiveServer) -> None:
    subject_id = await live_server.make_subject(EMAIL, PROFILE, [])
    page = visitor.page
    await page.goto("/privacy/request")
    await page.get_by_label("Correct my data").check()
    # The corrections appear once "Correct my data" is chosen (without JavaScript they are always shown).
    changes = page.get_by_role("group", name=re.compile("The corrections"))
    await expect(changes).to_be_visible()
    await changes.locator("summary", has_text="Name").first.click()
    await page.get_by_label("Full name").fill("Carol Q. Customer")
    request_id = await submit_request(visitor, "Correct my data", EMAIL, "request-form-correction")
    await enter_code(visitor, await live_server.code_for(EMAIL))
    # A name is identity data: the code alone does not change it, an operator reviews it first.
    await expect(page.locator(".tag")).to_have_text("Being reviewed by our privacy team")
    unchanged = (await live_server.api("GET", f"/v1/subjects/{subject_id}")).json()
    assert unchanged["profile"] == PROFILE
    approved = await live_server.api("POST", f"/v1/requests/{request_id}/approve", {})
    assert approved.status_code == 200, approved.text
    await page.reload()
    await expect(page.locator(".tag")).to_have_text("Completed")
    await expect(page.get_by_role("heading", name="What we corrected")).to_be_visible()
    await expect(page.locator("h3:text-is('What we corrected') + ul")).to_have_text("Full name")
    await visitor.check("status-correction")
    subject = (await live_server.api("GET", f"/v1/subjects/{subject_id}")).json()
    assert subject["profile"]["name"] == "Carol Q. Customer"
    assert request_id in page.url


async def test_wrong_code_is_shown_next_to_the_field(visitor: Visitor, live_server: LiveServer) -> None:
    page = visitor.page
    await page.goto("/privacy/request")
    await submit_request(visitor, "See my data", EMAIL, "request-form-before-wrong-code")
    code = await live_server.code_for(EMAIL)
    wrong = "000000" if code != "000000" else "111111"
    await enter_code(visitor, wrong)
    error = page.locator("#code-error")
    await expect(error).to_have_text("Error: The code is not correct. Attempts left: 4")
    field = page.get_by_label("6-digit code")
    await expect(field).to_have_attribute("aria-invalid", "true")
    described = await field.get_attribute("aria-describedby")
    assert described is not None
    assert "code-error" in described.split()
    # The summary takes the focus (it is announced), and links to the field.
    assert await page.evaluate("() => document.activeElement.className") == "error-summary"
    await expect(page).to_have_title(re.compile("^Error: "))
    await visitor.check("verify-wrong-code")
    await page.get_by_role("link", name="The code is not correct. Attempts left: 4").click()
    await expect(field).to_be_focused()
    await enter_code(visitor, code)
    await expect(page).to_have_url(STATUS_URL)


async def test_validation_errors_without_javascript(browser: Browser, live_server: LiveServer) -> None:
    visitor = await open_visitor(browser, live_server, java_script_enabled=False)
    try:
        page = visitor.page
        await page.goto("/privacy/request")
        # Without the script every part of the form is shown, the corrections included.
        await expect(page.get_by_label("Full name")).to_be_attached()
        await page.get_by_role("button", name="Send request").click()
        await expect(page.locator("#type-error")).to_have_text("Error: Choose what you would like us to do")
        await page.get_by_label("See my data").check()
        await page.get_by_label("E-mail address", exact=True).fill("carol@@example")
        await page.get_by_role("button", name="Send request").click()
        await expect(page.locator("#email-error")).to_contain_text("Enter an e-mail address in the right format")
        await expect(page.get_by_label("E-mail address", exact=True)).to_have_value("carol@@example")
        await page.screenshot(path=str(Path(__file__).parent / "artifacts" / "request-form-errors-no-js.png"))
        await page.get_by_label("E-mail address", exact=True).fill(EMAIL)
        await page.get_by_role("button", name="Send request").click()
        await expect(page).to_have_url(VERIFY_URL)
        await enter_code(visitor, await live_server.code_for(EMAIL))
        await expect(page.locator(".tag")).to_have_text("Completed")
    finally:
        await visitor.context.close()


async def test_language_switch_is_remembered(visitor: Visitor, live_server: LiveServer) -> None:
    page = visitor.page
    await page.goto("/privacy/request")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await page.get_by_role("navigation", name="Language").get_by_role("link", name="中文").click()
    await expect(page.locator("html")).to_have_attribute("lang", "zh")
    await expect(page.get_by_role("heading", level=1)).to_have_text("提交隐私请求")
    await visitor.check("request-form-zh")
    # Remembered for the next pages, without ?lang=.
    await page.goto("/privacy/request")
    await expect(page.locator("html")).to_have_attribute("lang", "zh")
    await page.get_by_label("查阅我的数据").check()
    await page.get_by_label("电子邮箱", exact=True).fill(EMAIL)
    await page.get_by_role("button", name="提交请求").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("输入验证码")
    await page.get_by_label("6 位验证码").fill(await live_server.code_for(EMAIL))
    await page.get_by_role("button", name="确认").click()
    await expect(page.locator(".tag")).to_have_text("已完成")
    # Dates in the visitor's language (Babel): 2026年3月1日, not March 1, 2026.
    await expect(page.locator(".summary-list")).to_contain_text(re.compile(r"\d{4}年\d{1,2}月\d{1,2}日"))
    await visitor.check("status-zh")
    # The request itself remembers its language: the mail was written in Chinese.
    assert str(live_server.mail.to(EMAIL)[0]["Subject"]).startswith("您的验证码")


async def test_mobile_width(browser: Browser, live_server: LiveServer) -> None:
    await live_server.make_subject(EMAIL, PROFILE, [TRANSACTION])
    visitor = await open_visitor(browser, live_server, viewport=MOBILE, is_mobile=True, has_touch=True)
    try:
        page = visitor.page
        await page.goto("/privacy")
        await visitor.check("mobile-policy")
        await page.goto("/privacy/request")
        await page.get_by_label("Correct my data").check()
        await page.locator("summary", has_text="Name").first.click()
        await visitor.check("mobile-request-form")
        await page.get_by_label("See my data").check()
        await submit_request(visitor, "See my data", EMAIL, "mobile-request-form-filled")
        await visitor.check("mobile-verify")
        await enter_code(visitor, await live_server.code_for(EMAIL))
        await expect(page.locator(".tag")).to_have_text("Completed")
        await visitor.check("mobile-status")
    finally:
        await visitor.context.close()


async def test_privacy_notice_page(visitor: Visitor) -> None:
    page = visitor.page
    await page.goto("/privacy")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Privacy notice")
    await visitor.check("policy-en")
    await page.get_by_role("link", name="中文").click()
    await expect(page.locator("html")).to_have_attribute("lang", "zh")
    await expect(page.get_by_role("heading", level=1)).to_have_text("隐私政策")
    await visitor.check("policy-zh")
    # The notice leads to the portal in the same language.
    await page.get_by_role("link", name="提交隐私请求").first.click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("提交隐私请求")
    await expect(page.locator("html")).to_have_attribute("lang", "zh")

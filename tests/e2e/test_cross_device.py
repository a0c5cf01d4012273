"""Issue 20 item 1 in a real browser: the request is made and confirmed in one browser, and its
answer is reached from a second browser context with no cookies (the completion mail opened on a
phone), download included, in English and in Chinese.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.conftest import MOBILE, LiveServer, open_visitor

EMAIL = "carol.crossdevice@example.com"
PROFILE = {"name": "Carol Crossdevice", "date_of_birth": "1985-05-05"}
TRANSACTION = {
    "kind": "transaction",
    "category": "user.financial.transaction",
    "occurred_at": "2026-01-01T00:00:00Z",
    "data": {"reference": "TX-2002", "amount": 42},
}
CODE = re.compile(r"\b(\d{6})\b")
LINK = re.compile(r"http://\S+/privacy/requests/[0-9a-f-]{36}")
# What each language's pages say, as the customer reads them.
WORDS = {
    "en": {
        "form": "/privacy/request?lang=en",
        "type": "See my data",
        "email": "E-mail address",
        "send_request": "Send request",
        "code": "6-digit code",
        "confirm": "Confirm",
        "completed": "Completed",
        "open_title": "Open your request",
        "send_code": "Send me a code",
        "open": "Open the request",
        "download": "Download as JSON",
        "done_subject": "Your privacy request is complete",
        "open_subject": "Your code to open your request",
    },
    "zh": {
        "form": "/privacy/request?lang=zh",
        "type": "查阅我的数据",
        "email": "电子邮箱",
        "send_request": "提交请求",
        "code": "6 位验证码",
        "confirm": "确认",
        "completed": "已完成",
        "open_title": "打开您的请求",
        "send_code": "向我发送验证码",
        "open": "打开请求",
        "download": "下载 JSON 文件",
        "done_subject": "您的隐私请求已完成",
        "open_subject": "打开您请求的验证码",
    },
}


async def mailed(server: LiveServer, subject: str, after: int = 0) -> str:
    """The body of the newest mail to the customer with this subject, once more than ``after`` came."""
    import asyncio

    for _ in range(200):
        found = [m for m in server.mail.to(EMAIL) if str(m["Subject"]) == subject]
        if len(found) > after:
            return str(found[-1].get_content())
        await asyncio.sleep(0.05)
    raise AssertionError(f"no mail {subject!r} reached {EMAIL}")


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_the_answer_is_reached_from_a_second_browser_with_its_download(
    browser: Browser, live_server: LiveServer, language: str
) -> None:
    words = WORDS[language]
    await live_server.make_subject(EMAIL, PROFILE, [TRANSACTION])

    # The laptop: the request is made and confirmed.
    laptop = await open_visitor(browser, live_server)
    try:
        page = laptop.page
        await page.goto(words["form"])
        await page.get_by_label(words["type"]).check()
        await page.get_by_label(words["email"], exact=True).fill(EMAIL)
        await page.get_by_role("button", name=words["send_request"]).click()
        code = CODE.search(await mailed(live_server, "Your verification code" if language == "en" else "您的验证码"))
        assert code
        await page.get_by_label(words["code"]).fill(code.group(1))
        await page.get_by_role("button", name=words["confirm"]).click()
        await expect(page.locator(".tag")).to_have_text(words["completed"])
    finally:
        await laptop.context.close()

    # The phone: a new context, no cookies, opens the completion mail's link.
    link = LINK.search(await mailed(live_server, words["done_subject"]))
    assert link
    phone = await open_visitor(browser, live_server, viewport=MOBILE, is_mobile=True, has_touch=True)
    try:
        page = phone.page
        assert await phone.context.cookies() == []
        await page.goto(link.group(0))
        await expect(page.get_by_role("heading", level=1)).to_have_text(words["open_title"])
        await expect(page.locator("html")).to_have_attribute("lang", language)
        await expect(page.locator(".tag")).to_have_count(0)  # nothing of the request before the code
        await phone.check(f"cross-device-open-{language}")
        await page.get_by_role("button", name=words["send_code"]).click()
        await expect(page.locator(".notice")).to_be_visible()
        await phone.check(f"cross-device-code-sent-{language}")
        opening = CODE.search(await mailed(live_server, words["open_subject"]))
        assert opening
        await page.get_by_label(words["code"]).fill(opening.group(1))
        await page.get_by_role("button", name=words["open"]).click()
        await expect(page.locator(".tag")).to_have_text(words["completed"])
        await phone.check(f"cross-device-answer-{language}")

        async with page.expect_download() as download_info:
            await page.get_by_role("link", name=words["download"]).click()
        download = await download_info.value
        export = json.loads(Path(await download.path()).read_text(encoding="utf-8"))
        assert export["subject"]["email"] == EMAIL
        assert [r["data"]["reference"] for r in export["records"]] == ["TX-2002"]
        [cookie] = [c for c in await phone.context.cookies() if c["name"] == "privacy_request"]
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
    finally:
        await phone.context.close()

"""What a customer reads, measured in a real browser: the policy's tables wrap whole words (desktop
and phone, English and Chinese), times are local to the visitor's browser, and the answer to "See my
data" shows the data itself. Each page is also checked with axe-core (see ``Visitor.check``)."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.conftest import LiveServer, Visitor, open_visitor
from tests.e2e.test_portal_browser import PROFILE, STATUS_URL, VERIFY_URL

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Every word of every cell of the page's tables, as the browser laid it out: a word drawn on more
# than one line is a word broken inside. A "word" is a run of letters, digits and the punctuation
# that sits inside one (Art. 40(1)(a); EU's); a line may still end after a space, a hyphen or a slash,
# and between two CJK characters, where Chinese text wraps by its own rules.
BROKEN_WORDS = """() => {
    const token = /[\\p{L}\\p{N}][\\p{L}\\p{N}.,;:()'\\u2019§]*/gu;
    const cjk = /[\\p{Script=Han}\\p{Script=Hiragana}\\p{Script=Katakana}\\u3000-\\u303f\\uff00-\\uffef]/u;
    const broken = [];
    let words = 0;
    for (const cell of document.querySelectorAll("main table th, main table td")) {
        const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            for (const match of node.data.matchAll(token)) {
                let offset = 0;
                for (const part of match[0].split(cjk)) {
                    const start = match.index + match[0].indexOf(part, offset);
                    offset = start - match.index + part.length;
                    if (!part) continue;
                    const range = document.createRange();
                    range.setStart(node, start);
                    range.setEnd(node, start + part.length);
                    const rects = [...range.getClientRects()].filter(r => r.width > 0);
                    const lines = new Set(rects.map(r => Math.round(r.top)));
                    words += 1;
                    if (lines.size > 1) broken.push(part);
                }
            }
        }
    }
    return {words, broken};
}"""


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize(("width", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
async def test_the_retention_table_breaks_no_word(
    browser: Browser, live_server: LiveServer, language: str, width: str, viewport: dict[str, int]
) -> None:
    visitor = await open_visitor(browser, live_server, viewport=viewport, is_mobile=width == "phone")
    try:
        page = visitor.page
        await page.goto(f"/privacy?lang={language}")
        table = page.locator("table.retention")
        await expect(table).to_be_visible()
        result = await page.evaluate(BROKEN_WORDS)
        assert result["words"] > 50, result  # the measurement saw the table's text
        assert result["broken"] == [], f"{language} at {viewport['width']} px: words broken inside: {result['broken']}"
        display = await table.evaluate("t => getComputedStyle(t).display")
        # On a phone each row is a card that names its columns; on a desktop it is a table.
        assert display == ("block" if width == "phone" else "table")
        if width == "phone":
            cell = table.locator("td").first
            label = await cell.evaluate("td => getComputedStyle(td, '::before').content")
            assert label.strip('"') == await cell.get_attribute("data-label")
        await visitor.check(f"policy-retention-{language}-{width}")
    finally:
        await visitor.context.close()


async def _answered_access_request(visitor: Visitor, server: LiveServer, email: str, language: str) -> None:
    """Make a "See my data" request in ``language`` from the form and confirm it with the mailed code."""
    page = visitor.page
    words = {
        "en": ("See my data", "E-mail address", "Send request", "6-digit code", "Confirm"),
        "zh": ("查阅我的数据", "电子邮箱", "提交请求", "6 位验证码", "确认"),
    }[language]
    await page.goto(f"/privacy/request?lang={language}")
    await page.get_by_label(words[0]).check()
    await page.get_by_label(words[1], exact=True).fill(email)
    await page.get_by_role("button", name=words[2]).click()
    await expect(page).to_have_url(VERIFY_URL)
    await page.get_by_label(words[3]).fill(await server.code_for(email))
    await page.get_by_role("button", name=words[4]).click()
    await expect(page).to_have_url(STATUS_URL)


def _clock(iso: str, zone: str) -> str:
    """The hour and minute of a moment on the wall clocks of ``zone`` (what the page must show)."""
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(zone)).strftime("%H:%M")


@pytest.mark.parametrize(
    ("zone", "language"), [("Asia/Shanghai", "zh"), ("Europe/Dublin", "en"), ("Asia/Shanghai", "en")]
)
async def test_times_are_shown_in_the_browsers_time_zone_and_locale(
    browser: Browser, live_server: LiveServer, zone: str, language: str
) -> None:
    email = f"tz.{zone.split('/')[1].lower()}.{language}@example.com"
    await live_server.make_subject(email, PROFILE, [])
    visitor = await open_visitor(browser, live_server, timezone_id=zone)
    try:
        await _answered_access_request(visitor, live_server, email, language)
        page = visitor.page
        times = page.locator("time[data-local-time]")
        assert await times.count() >= 4  # received, the steps, the history
        for index in range(await times.count()):
            time = times.nth(index)
            iso = await time.get_attribute("datetime")
            assert iso
            text = await time.inner_text()
            assert _clock(iso, zone) in text, (zone, iso, text)
            assert "UTC" not in text
            assert not re.search(r"\b(AM|PM)\b", text)  # neither Irish nor Chinese readers write 7:57 AM
            if language == "zh":
                assert re.search(r"\d{4}年\d{1,2}月\d{1,2}日", text), text
            else:
                # The browser's English (en-GB here) writes the day first: 3 December 2026.
                assert re.match(r"\d{1,2} [A-Z][a-z]+ \d{4}", text), text
        note = page.locator(".time-zone-note")
        await expect(note).to_contain_text(zone)
        await visitor.check(f"status-times-{zone.replace('/', '-')}-{language}")
    finally:
        await visitor.context.close()


async def test_without_javascript_times_are_in_the_policys_zone(browser: Browser, live_server: LiveServer) -> None:
    email = "tz.nojs@example.com"
    await live_server.make_subject(email, PROFILE, [])
    visitor = await open_visitor(browser, live_server, timezone_id="Asia/Shanghai", java_script_enabled=False)
    try:
        await _answered_access_request(visitor, live_server, email, "en")
        time = visitor.page.locator("time[data-local-time]").first
        iso = await time.get_attribute("datetime")
        assert iso
        # policies/policy.yaml: display_time_zone: Europe/Dublin, written the Irish way.
        assert re.fullmatch(r"\d{1,2} [A-Z][a-z]+ \d{4}, " + _clock(iso, "Europe/Dublin"), await time.inner_text())
        await expect(visitor.page.locator(".time-zone-note")).to_have_text("Times are shown in Europe/Dublin time.")
    finally:
        await visitor.context.close()


TRANSACTIONS = [
    {
        "kind": "transaction",
        "category": "user.financial.transaction",
        "occurred_at": f"2026-0{month}-15T09:30:00Z",
        "data": {"reference": f"TX-20{month}", "amount": 10 * month},
    }
    for month in (1, 2, 3)
]


@pytest.mark.parametrize(("width", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
async def test_see_my_data_shows_the_data_itself(
    browser: Browser, live_server: LiveServer, width: str, viewport: dict[str, int]
) -> None:
    email = f"data.{width}@example.com"
    await live_server.make_subject(email, {**PROFILE, "national_id": "IE-1234567T"}, TRANSACTIONS)
    visitor = await open_visitor(browser, live_server, viewport=viewport, is_mobile=width == "phone")
    try:
        await _answered_access_request(visitor, live_server, email, "en")
        page = visitor.page
        data = page.get_by_role("heading", name="Your data", exact=True)
        await expect(data).to_be_visible()
        contact = page.get_by_role("region", name="E-mail address")
        await expect(contact).to_contain_text(email)
        await expect(contact).to_contain_text("What we use it for")
        await expect(contact).to_contain_text("6 months after your account is closed")
        name = page.get_by_role("region", name="Name", exact=True)
        await expect(name).to_contain_text("Carol Customer")
        await expect(name).to_contain_text("EU AMLD4")
        await expect(page.get_by_role("region", name="Identity documents")).to_contain_text("IE-1234567T")
        records = page.get_by_role("table", name="Transactions: records")
        await expect(records.locator("tbody tr")).to_have_count(3)
        # Newest first.
        await expect(records.locator("tbody tr").first).to_contain_text("TX-203")
        await expect(records.locator("tbody tr").last).to_contain_text("TX-201")
        # The downloads come before the data, and on a phone they are on the first screen.
        download = page.get_by_role("link", name="Download as JSON")
        box = await download.bounding_box()
        heading = await data.bounding_box()
        assert box is not None
        assert heading is not None
        assert box["y"] < heading["y"]
        if width == "phone":
            assert box["y"] + box["height"] <= viewport["height"] * 1.5, box  # within a short scroll of the top
            display = await records.evaluate("t => getComputedStyle(t).display")
            assert display == "block"  # records as cards
        await visitor.check(f"status-access-data-{width}")
    finally:
        await visitor.context.close()


async def test_see_my_data_in_chinese_on_a_phone(browser: Browser, live_server: LiveServer) -> None:
    email = "data.zh@example.com"
    await live_server.make_subject(email, {**PROFILE, "national_id": "IE-7654321A"}, TRANSACTIONS)
    visitor = await open_visitor(browser, live_server, viewport=PHONE, is_mobile=True, timezone_id="Asia/Shanghai")
    try:
        await _answered_access_request(visitor, live_server, email, "zh")
        page = visitor.page
        await expect(page.get_by_role("heading", name="您的数据", exact=True)).to_be_visible()
        contact = page.get_by_role("region", name="电子邮件地址")
        await expect(contact).to_contain_text(email)
        await expect(contact).to_contain_text("用途")
        await expect(contact).to_contain_text("保存期限")
        await expect(page.get_by_role("region", name="身份证件")).to_contain_text("IE-7654321A")
        records = page.get_by_role("table", name=re.compile("\\uff1a记录$"))
        await expect(records.locator("tbody tr")).to_have_count(3)
        # 15 March 2026 09:30 UTC is 17:30 in Shanghai, written the Chinese way.
        await expect(records.locator("tbody tr").first).to_contain_text("2026年3月15日 17:30")
        await visitor.check("status-access-data-zh-phone")
    finally:
        await visitor.context.close()

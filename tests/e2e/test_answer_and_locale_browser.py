"""What a customer reads, measured in a real browser: the policy's tables wrap whole words (desktop
and phone, English and Chinese), times are local to the visitor's browser, and the answer to "See my
data" shows the data itself. Each page is also checked with axe-core (see ``Visitor.check``)."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.conftest import LiveServer, open_visitor

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

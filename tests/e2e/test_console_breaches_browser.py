"""The breaches area in Debian's Chromium (issue 17 item 5): a privacy officer runs a breach from detection to
the Art. 33 document (record, assess, decide with a reason, record the authority notification, open the
document in English and Chinese), in English and Chinese, at desktop and phone widths, with axe-core on every
page of the area (register, workspace, the document). A draft from monitoring is confirmed in the API tests
(the console records incidents as open, as the API does)."""

from __future__ import annotations

import re

from playwright.async_api import Browser, expect

from tests.breach_support import incident
from tests.e2e.conftest import LiveServer, Visitor, open_visitor

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
HEADINGS = {"en": ("Breaches", "Notification to the supervisory authority"), "zh": ("数据泄露", "向监管机构的通知")}


def _key(server: LiveServer) -> str:
    return server.operator["Authorization"].split(" ", 1)[1]


async def _sign_in(visitor: Visitor, key: str, language: str) -> None:
    page = visitor.page
    await page.goto(f"/console/sign-in?lang={language}")
    await page.locator("#key").fill(key)
    await page.locator("form[action='/console/sign-in'] button[type=submit]").click()
    await page.wait_for_url("**/console")


async def _run_a_breach(visitor: Visitor, language: str, width: str) -> None:
    page = visitor.page
    title = f"Lost laptop with support exports ({language}, {width})"
    await page.goto("/console")
    await page.locator("nav.console-nav a[href='/console/breaches']").click()
    await page.wait_for_url("**/console/breaches")
    await expect(page.get_by_role("heading", level=1)).to_have_text(HEADINGS[language][0])
    await visitor.check(f"console-breaches-register-{language}-{width}")

    # detection: record what is known
    await page.locator("#record-title").fill(title)
    await page.locator("#record-description").fill("A laptop holding support exports was left on a train.")
    await page.locator("#record-nature input[value=confidentiality]").check()
    await page.locator("#record-categories input[value='user.contact.email']").check()
    await page.locator("#record-estimated_count").fill("40")
    await page.locator("input[name=malicious]").check()
    await page.locator("input[name=exfiltration_known]").check()
    await page.locator("form.breach-form[action='/console/breaches'] button[type=submit]").click()
    await page.wait_for_url(re.compile(r".*/console/breaches/[0-9a-f-]{36}$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text(title)
    await expect(page.locator("#clock-left")).to_contain_text("7")
    await visitor.check(f"console-breaches-workspace-{language}-{width}")

    # assessment and decisions (a decision of our own, with its reason)
    await page.locator("#assessment-ease_of_identification").select_option("maximum")
    await page.locator("#override-notify_subjects").select_option("no")
    await page.locator("#justification-notify_subjects").fill("The exports were encrypted at rest; see the note.")
    await page.locator("form[action$='/assessment'] button[type=submit]").click()
    await page.wait_for_url(re.compile(r".*/console/breaches/[0-9a-f-]{36}#assessment$"))
    await expect(page.locator("#breach-status")).to_have_class(re.compile("tag--assessed"))
    await expect(page.locator("#decisions")).to_contain_text("The exports were encrypted at rest")
    await visitor.check(f"console-breaches-assessed-{language}-{width}")

    # Art. 33: record the notification to the authority, then open its document in both languages
    await page.locator("#authority-recipient").fill("breach-notification@authority.example")
    await page.locator("form[action$='/authority-notification'] button[type=submit]").click()
    await page.wait_for_url(re.compile(r".*#authority$"))
    await expect(page.locator("#breach-status")).to_have_class(re.compile("tag--notifying"))
    await expect(page.locator("#authority-notices")).to_be_visible()
    await visitor.check(f"console-breaches-notified-{language}-{width}")
    workspace = page.url.split("#", 1)[0]
    for document_language in ("en", "zh"):
        await page.locator(f"#authority-notices a[hreflang={document_language}]").click()
        await page.wait_for_url(f"**/authority-notifications/1?lang={document_language}")
        await expect(page.locator("html")).to_have_attribute("lang", document_language)
        await expect(page.locator("h1")).to_be_visible()
        assert "breach-notification@authority.example" in await page.content()
        # the document's own style applies (allowed by its hash under the CSP) and prints with ours
        margin = await page.evaluate("() => getComputedStyle(document.body).maxWidth")
        assert margin != "none", "the document's style was blocked"
        await visitor.check(f"console-breaches-document-{document_language}-{language}-{width}")
        await page.goto(workspace)


async def test_a_breach_from_detection_to_the_art_33_document_in_both_languages_and_widths(
    browser: Browser, live_server: LiveServer
) -> None:
    key = _key(live_server)
    for language in ("en", "zh"):
        for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            visitor = await open_visitor(browser, live_server, viewport=viewport)
            try:
                await _sign_in(visitor, key, language)
                await _run_a_breach(visitor, language, width)
            finally:
                await visitor.context.close()


async def test_the_document_is_not_reachable_without_a_session(browser: Browser, live_server: LiveServer) -> None:
    created = await live_server.api("GET", "/v1/breaches")
    assert created.status_code == 200
    visitor = await open_visitor(browser, live_server, viewport=DESKTOP)
    try:
        page = visitor.page
        await page.goto("/console/breaches/00000000-0000-0000-0000-000000000000/authority-notifications/1?lang=en")
        await page.wait_for_url("**/console/sign-in")
    finally:
        await visitor.context.close()


async def test_the_forms_work_with_javascript_off(browser: Browser, live_server: LiveServer) -> None:
    visitor = await open_visitor(browser, live_server, viewport=PHONE, java_script_enabled=False)
    try:
        page = visitor.page
        await _sign_in(visitor, _key(live_server), "en")
        await page.goto("/console/breaches")
        await page.locator("#record-title").fill("Printer queue exposed")
        await page.locator("#record-description").fill("Scanned forms were readable on an open share.")
        await page.locator("#record-nature input[value=confidentiality]").check()
        await page.locator("#record-categories input[value='user.name']").check()
        await page.locator("#record-estimated_count").fill("12")
        await page.locator("form.breach-form[action='/console/breaches'] button[type=submit]").click()
        await page.wait_for_url(re.compile(r".*/console/breaches/[0-9a-f-]{36}$"))
        await page.locator("#assessment-ease_of_identification").select_option("significant")
        await page.locator("form[action$='/assessment'] button[type=submit]").click()
        await expect(page.locator("#breach-status")).to_have_class(re.compile("tag--assessed"))
        await expect(page.locator("#decisions")).to_be_visible()
        assert not visitor.problems, visitor.problems
    finally:
        await visitor.context.close()


async def test_each_persons_notice_passes_axe_in_both_languages_and_widths(
    browser: Browser, live_server: LiveServer
) -> None:
    ids = [await live_server.make_subject(f"reader{n}@example.com", {"name": f"Reader {n}"}, []) for n in range(2)]
    created = await live_server.api("POST", "/v1/breaches", incident(affected={"subject_ids": ids}))
    assert created.status_code == 201, created.text
    breach_id = created.json()["id"]
    justification = {"value": True, "justification": "Two customers: we tell both of them."}
    assessed = await live_server.api(
        "POST",
        f"/v1/breaches/{breach_id}/assessment",
        {"ease_of_identification": "maximum", "overrides": {"notify_subjects": justification}},
    )
    assert assessed.status_code == 200, assessed.text
    started = await live_server.api("POST", f"/v1/breaches/{breach_id}/subject-notifications", {})
    assert started.status_code == 202, started.text
    for language in ("en", "zh"):
        for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            visitor = await open_visitor(browser, live_server, viewport=viewport)
            try:
                await _sign_in(visitor, _key(live_server), language)
                page = visitor.page
                await page.goto(f"/console/breaches/{breach_id}")
                await expect(page.locator("#count-total")).to_have_text("2")
                await visitor.check(f"console-breaches-notifying-{language}-{width}")
                await page.locator(f"a[href='/console/breaches/{breach_id}/recipients']").click()
                await page.wait_for_url("**/recipients")
                await expect(page.locator("#recipients tbody tr")).to_have_count(2)
                assert "reader0@example.com" not in await page.content()
                await visitor.check(f"console-breaches-recipients-{language}-{width}")
            finally:
                await visitor.context.close()

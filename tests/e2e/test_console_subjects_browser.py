"""The console's subjects area in Debian's Chromium (issue 17, item 4): the privacy officer's part of the day:
look a subject up, place a legal hold, release it with a reason; in English and Chinese at desktop and phone
(390 px) widths, with axe-core (no serious or critical violation) on every page of the area: the look-up (and
its error state), the subject's page, the hold form, the release form, the erasure confirmation."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from tests.e2e.conftest import LiveServer, Visitor, open_visitor

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
WORDS = {
    "en": {
        "sign_in": "Sign in",
        "nav": "Subjects",
        "placed": "The legal hold has been placed.",
        "released": "The legal hold has been released.",
        "active": "Active",
    },
    "zh": {
        "sign_in": "登录",
        "nav": "数据主体",
        "placed": "已设置法律保全。",
        "released": "已解除法律保全。",
        "active": "生效中",
    },
}


def _key(server: LiveServer) -> str:
    return server.operator["Authorization"].split(" ", 1)[1]


async def _submit(visitor: Visitor) -> None:
    await visitor.page.locator("form.portal-form button[type=submit]").click()


async def _day(visitor: Visitor, server: LiveServer, language: str, width: str, email: str, subject_id: str) -> None:
    page, words = visitor.page, WORDS[language]
    name = f"{language}-{width}"
    await page.goto(f"/console/sign-in?lang={language}")
    await page.locator("#key").fill(_key(server))
    await page.get_by_role("button", name=words["sign_in"]).click()
    await page.wait_for_url("**/console")
    await page.locator(".console-nav").get_by_role("link", name=words["nav"], exact=True).click()
    await page.wait_for_url("**/console/subjects")
    await expect(page.locator("html")).to_have_attribute("lang", language)
    await visitor.check(f"console-subjects-lookup-{name}")

    # A mistyped address: the error summary, the field emptied (nothing typed is shown back).
    await page.locator("#kind").select_option("email")
    await page.locator("#value").fill("not-an-address")
    await _submit(visitor)
    await expect(page.locator(".error-summary")).to_be_visible()
    await expect(page.locator("#value")).to_have_value("")
    assert "not-an-address" not in await page.content()
    await visitor.check(f"console-subjects-lookup-error-{name}")

    await page.locator("#value").fill(email.upper())
    await _submit(visitor)
    await page.wait_for_url(f"**/console/subjects/{subject_id}")
    assert email not in page.url
    await expect(page.locator("#identifiers")).to_contain_text(email)
    await expect(page.locator("#no-holds")).to_be_visible()
    await visitor.check(f"console-subjects-subject-{name}")

    await page.locator("#erase-subject").click()
    await page.wait_for_url(f"**/console/subjects/{subject_id}/erase")
    await visitor.check(f"console-subjects-erase-{name}")
    await page.go_back()

    await page.locator("#place-hold").click()
    await page.wait_for_url(f"**/console/subjects/{subject_id}/holds/new")
    await visitor.check(f"console-subjects-hold-{name}")
    await page.locator("#reason").fill("Matter 2031/77: tax audit, preserve everything")
    await page.locator("#until").fill("2031-12-31")
    await _submit(visitor)
    await page.wait_for_url("**?done=hold_placed")
    await expect(page.locator("#done")).to_have_text(words["placed"])
    await expect(page.locator("#holds")).to_contain_text("Matter 2031/77")
    await expect(page.locator("#holds")).to_contain_text(words["active"])
    await expect(page.locator("#held-tag")).to_be_visible()
    await visitor.check(f"console-subjects-held-{name}")

    await page.locator("#holds a[href$='/release']").click()
    await page.wait_for_url("**/release")
    await _submit(visitor)  # no reason chosen: refused, the hold stays
    await expect(page.locator(".error-summary")).to_be_visible()
    await visitor.check(f"console-subjects-release-{name}")
    await page.locator("#reason-matter_closed").check()
    await page.locator("#reference").fill("CASE-2031/77")
    await _submit(visitor)
    await page.wait_for_url("**?done=hold_released")
    await expect(page.locator("#done")).to_have_text(words["released"])
    await expect(page.locator("#held-tag")).to_have_count(0)
    await expect(page.locator("#holds a[href$='/release']")).to_have_count(0)
    await visitor.check(f"console-subjects-released-{name}")
    holds = await server.api("GET", f"/v1/subjects/{subject_id}/holds")
    assert [item["active"] for item in holds.json()["items"]] == [False]


async def test_look_up_a_subject_place_a_hold_and_release_it_in_both_languages_at_both_widths(
    browser: Browser, live_server: LiveServer
) -> None:
    record = {
        "kind": "note",
        "category": "user.device",
        "occurred_at": "2026-01-05T09:00:00Z",
        "data": {"model": "Pixel"},
    }
    n = 0
    for language in ("en", "zh"):
        for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            n += 1
            email = f"held.subject{n}@example.com"
            subject_id = await live_server.make_subject(email, {"name": f"Held Subject {n}"}, [record])
            visitor = await open_visitor(browser, live_server, viewport=viewport)
            try:
                await _day(visitor, live_server, language, width, email, subject_id)
            finally:
                await visitor.context.close()


async def _erasure(visitor: Visitor, server: LiveServer, language: str, width: str, subject_id: str) -> None:
    """No subject for an unknown address; erasure refused under a hold (409 page), then done once released."""
    page, words = visitor.page, WORDS[language]
    name = f"{language}-{width}"
    await page.goto(f"/console/sign-in?lang={language}")
    await page.locator("#key").fill(_key(server))
    await page.get_by_role("button", name=words["sign_in"]).click()
    await page.wait_for_url("**/console")
    await page.goto("/console/subjects")
    await page.locator("#value").fill("nobody.at.all@example.org")
    await _submit(visitor)
    await expect(page.locator("#no-subject")).to_be_visible()
    assert "nobody.at.all" not in await page.content()
    await visitor.check(f"console-subjects-none-{name}")

    hold = await server.api("POST", f"/v1/subjects/{subject_id}/holds", {"reason": "Audit 2031/9"})
    assert hold.status_code == 201, hold.text
    await page.goto(f"/console/subjects/{subject_id}/erase")
    await page.locator("#confirm").fill(subject_id)
    await page.locator("#reason-duplicate_or_test").check()
    await _submit(visitor)
    # Filed as an erasure request and approved at once: the hold keeps everything (partially completed).
    await page.wait_for_url("**/console/requests/*?done=erased")
    await expect(page.locator("#done")).to_be_visible()
    await visitor.check(f"console-subjects-held-request-{name}")
    still = await server.api("GET", f"/v1/subjects/{subject_id}")
    assert still.status_code == 200, still.text

    released = await server.api("DELETE", f"/v1/subjects/{subject_id}/holds/{hold.json()['id']}")
    assert released.status_code == 200, released.text
    await page.goto(f"/console/subjects/{subject_id}/erase")
    await page.locator("#confirm").fill(subject_id)
    await page.locator("#reason-duplicate_or_test").check()
    await _submit(visitor)
    await page.wait_for_url("**/console/requests/*?done=erased")
    await expect(page.locator("#done")).to_be_visible()
    await visitor.check(f"console-subjects-erased-request-{name}")
    await page.goto(f"/console/subjects/{subject_id}")
    await expect(page.locator("#subject-status")).not_to_have_text(words["active"])
    await expect(page.locator("#kept")).to_be_visible()  # the name stays under the AML duty, with its end date
    await visitor.check(f"console-subjects-erased-{name}")
    after = await server.api("GET", f"/v1/subjects/{subject_id}")
    assert after.status_code == 410


async def test_erasure_kept_under_a_hold_then_done_in_both_languages_at_both_widths(
    browser: Browser, live_server: LiveServer
) -> None:
    n = 0
    for language in ("en", "zh"):
        for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            n += 1
            subject_id = await live_server.make_subject(f"erased.subject{n}@example.com", {"name": f"Erased {n}"}, [])
            visitor = await open_visitor(browser, live_server, viewport=viewport)
            try:
                await _erasure(visitor, live_server, language, width, subject_id)
            finally:
                await visitor.context.close()

"""The portal in the visitor's language beyond its words: the law preselected for Chinese readers,
a Chinese phone example, full-width brackets, and the code's validity as the mail states it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from privacy_service.app import create_app
from privacy_service.runtime import build_runtime
from tests.api.test_portal import FORM_EMAIL, open_form, submit
from tests.portal_support import parse


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _selected_regime(html: str) -> str:
    [option] = [
        o
        for o in parse(html).find("option")
        if "selected" in o.attrs and o.attrs.get("value") in {"gdpr", "ccpa", "pipl"}
    ]
    return str(option.attrs["value"])


async def test_the_chinese_form_preselects_pipl_and_writes_like_a_chinese_form(client: httpx.AsyncClient) -> None:
    english = await client.get("/privacy/request?lang=en")
    assert _selected_regime(english.text) == "gdpr"
    assert "(optional)" in english.text
    chinese = await client.get("/privacy/request?lang=zh")
    assert _selected_regime(chinese.text) == "pipl"
    page = parse(chinese.text)
    assert "+86" in page.by_id("phone-hint").text
    assert "+44" not in chinese.text
    optional = [s.text for s in page.find("span", **{"class": "optional"})]
    assert optional
    # Full-width brackets around a Chinese word, as Chinese text writes them.
    assert all(text == "\uff08选填\uff09" for text in optional)
    assert "(选填)" not in chinese.text


async def test_a_chinese_request_without_a_law_chosen_is_filed_under_pipl(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    token = await open_form(client, "/privacy/request?lang=zh")
    response = await client.post(
        "/privacy/request",
        data={"_csrf_token": token, "type": "access", "identity_kind": "email", "email": FORM_EMAIL},
    )
    assert response.status_code == 303, response.text
    request_id = response.headers["location"].split("/")[3]
    view = await client.get(f"/v1/requests/{request_id}", headers=auth)
    assert view.json()["regime"] == "pipl"


async def test_the_configured_default_by_language_is_used_and_an_unknown_law_ignored(make_settings: Any) -> None:
    runtime = build_runtime(make_settings(dsr_default_regime_by_language={"en": "ccpa", "zh": "gdpr"}))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime=runtime)), base_url="http://t"
    ) as c:
        assert _selected_regime((await c.get("/privacy/request?lang=en")).text) == "ccpa"
        assert _selected_regime((await c.get("/privacy/request?lang=zh")).text) == "gdpr"
    await runtime.close()


@pytest.mark.parametrize(("language", "expected"), [("en", "valid for 9 minutes"), ("zh", "在 9 分钟内有效")])
async def test_the_code_page_states_the_validity_the_mail_states(
    make_settings: Any, language: str, expected: str
) -> None:
    runtime = build_runtime(make_settings(dsr_code_ttl_minutes=9))
    transport = httpx.ASGITransport(app=create_app(runtime=runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get(f"/privacy/request?lang={language}")
        response = await submit(client, type="access", identity_kind="email", email=FORM_EMAIL)
        assert response.status_code == 303, response.text
        page = await client.get(response.headers["location"])
        lead = parse(page.text).find("p", **{"class": "lead"})[0].text
        assert expected in lead
        assert "{minutes}" not in page.text
    await runtime.close()

"""The request portal's HTML routes without a browser: CSRF, validation shown at the fields, rate-limit
and error pages, the request-token cookie, languages. The browser tests are in tests/e2e/."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from privacy_service.app import create_app
from privacy_service.runtime import Runtime, build_runtime
from privacy_service.web import i18n
from tests.api.test_requests_flow import code_from, deliver
from tests.conftest import MailSink
from tests.portal_support import csrf_token, parse

EMAIL = "dora.portal@example.com"
# Typed only into forms: a page that shows a form again gives the visitor back what they typed, in
# their own fields, which tests/conftest_logcheck.py would flag for an address some JSON body carried.
FORM_EMAIL = "form.visitor@example.com"
HTML = "text/html; charset=utf-8"


async def open_form(client: httpx.AsyncClient, path: str = "/privacy/request") -> str:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == HTML
    return csrf_token(response)


async def submit(client: httpx.AsyncClient, **fields: str) -> httpx.Response:
    token = await open_form(client)
    return await client.post("/privacy/request", data={"_csrf_token": token, **fields})


async def submit_and_verify(client: httpx.AsyncClient, runtime: Runtime, mail: MailSink) -> tuple[str, httpx.Response]:
    response = await submit(client, type="access", identity_kind="email", email=EMAIL)
    assert response.status_code == 303, response.text
    verify_path = response.headers["location"]
    request_id = verify_path.split("/")[3]
    await deliver(runtime)
    token = await open_form(client, verify_path)
    verified = await client.post(verify_path, data={"_csrf_token": token, "code": code_from(mail, EMAIL)})
    assert verified.status_code == 303, verified.text
    return request_id, verified


@pytest.fixture
def backend() -> str:
    # The pages call DsrService, whose database work is tested on both backends elsewhere.
    return "sqlite"


def assert_error_at(html: str, field: str, message: str) -> None:
    """The message is next to the field, and the field names it in aria-describedby."""
    page = parse(html)
    error = page.by_id(f"{field}-error")
    assert message in error.text
    control = page.by_id(field)
    described = (control.attrs.get("aria-describedby") or "").split()
    assert f"{field}-error" in described


@pytest.fixture
async def https_client(make_settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    runtime = build_runtime(make_settings(base_url="https://privacy.example"))
    transport = httpx.ASGITransport(app=create_app(runtime=runtime))
    async with httpx.AsyncClient(transport=transport, base_url="https://privacy.example") as client:
        yield client, runtime
    await runtime.close()


async def test_a_form_post_without_the_csrf_token_is_refused_as_a_page(client: httpx.AsyncClient) -> None:
    await open_form(client)  # the CSRF cookie is set, but the form field is missing
    response = await client.post("/privacy/request", data={"type": "access", "identity_kind": "email", "email": EMAIL})
    assert response.status_code == 403
    assert response.headers["content-type"] == HTML
    assert "The form has expired" in response.text
    forged = await client.post("/privacy/request", data={"_csrf_token": "0" * 128, "type": "access"})
    assert forged.status_code == 403
    client.cookies.clear()
    stolen_token = await open_form(client)
    client.cookies.clear()  # another site's form: it may know a token, but not the visitor's cookie
    cross_site = await client.post("/privacy/request", data={"_csrf_token": stolen_token, "type": "access"})
    assert cross_site.status_code == 403
    verify = await client.post(f"/privacy/requests/{'0' * 8}-0000-4000-8000-{'0' * 12}/verify", data={"code": "1"})
    assert verify.status_code == 403


async def test_the_json_api_stays_free_of_csrf(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/requests", json={"type": "access", "identity": {"email": EMAIL}})
    assert response.status_code == 202, response.text
    assert "privacy_csrf" not in response.headers.get("set-cookie", "")


async def test_the_form_sets_a_strict_httponly_csrf_cookie(client: httpx.AsyncClient) -> None:
    response = await client.get("/privacy/request")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("privacy_csrf=")
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Path=/privacy" in cookie
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "default-src 'none'" in csp


async def test_choices_not_made_are_shown_at_their_fields(client: httpx.AsyncClient) -> None:
    response = await submit(client, identity_kind="email")
    assert response.status_code == 422
    assert response.headers["content-type"] == HTML
    page = parse(response.text)
    assert page.by_id("type-error").text.endswith("Choose what you would like us to do")
    assert "type-error" in (page.by_id("type").attrs.get("aria-describedby") or "")
    assert_error_at(response.text, "email", "Enter your e-mail address")
    summary = page.find("div", **{"class": "error-summary"})
    assert summary
    assert "autofocus" in summary[0].attrs
    assert page.find("title")[0].text.startswith("Error: ")


async def test_the_services_validation_is_shown_at_the_field_without_echoing_more(
    client: httpx.AsyncClient, mail: MailSink
) -> None:
    response = await submit(client, type="access", identity_kind="email", email="dora@@example")
    assert response.status_code == 422
    assert_error_at(response.text, "email", "Enter an e-mail address in the right format")
    page = parse(response.text)
    # What the visitor typed is given back in their own field, and nowhere else.
    assert page.by_id("email").attrs["value"] == "dora@@example"
    assert response.text.count("dora@@example") == 1
    assert "identity.email" not in response.text  # the API's wording stays out of the page
    assert not response.text.lstrip().startswith("{")
    assert mail.messages == []

    rectify = await submit(client, type="rectify", identity_kind="email", email=FORM_EMAIL)
    assert rectify.status_code == 422
    assert "Enter at least one correction" in parse(rectify.text).by_id("changes-error").text
    assert parse(rectify.text).by_id("email").attrs["value"] == FORM_EMAIL
    bad_new = await submit(client, type="rectify", identity_kind="email", email=FORM_EMAIL, new_phone="not a phone")
    assert_error_at(bad_new.text, "new-phone", "Enter the new phone number in international format")
    too_long = await submit(client, type="access", identity_kind="phone", phone="+44" + "1" * 400)
    assert_error_at(too_long.text, "phone", "at most 320 characters")


async def test_a_phone_identity_is_checked_like_the_api(client: httpx.AsyncClient) -> None:
    response = await submit(client, type="erase", identity_kind="phone", phone="12")
    assert response.status_code == 422
    assert_error_at(response.text, "phone", "Enter a phone number in international format")
    accepted = await submit(client, type="erase", identity_kind="phone", phone="+44 7911 123456")
    assert accepted.status_code == 303
    assert "7911" not in accepted.headers["location"]


async def test_access_flow_sets_the_token_cookie_for_this_request_only(
    client: httpx.AsyncClient, runtime: Runtime, mail: MailSink, auth: dict[str, str]
) -> None:
    created = await client.post("/v1/subjects", json={"email": EMAIL, "profile": {"name": "Dora"}}, headers=auth)
    assert created.status_code == 201
    request_id, verified = await submit_and_verify(client, runtime, mail)
    assert verified.headers["location"] == f"/privacy/requests/{request_id}"
    cookie = verified.headers["set-cookie"]
    assert re.match(r"privacy_request=psr_[\w-]+;", cookie)
    assert f"Path=/privacy/requests/{request_id}" in cookie
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    assert "psr_" not in verified.headers["location"]

    status = await client.get(f"/privacy/requests/{request_id}")
    assert status.status_code == 200
    page = parse(status.text)
    assert page.find("strong", **{"class": "tag tag--completed"})[0].text == "Completed"
    assert page.find("a", href=f"/privacy/requests/{request_id}/export?format=json")
    export = await client.get(f"/privacy/requests/{request_id}/export")
    assert export.status_code == 200
    assert export.json()["subject"]["profile"] == {"name": "Dora"}
    assert export.headers["content-disposition"] == f'attachment; filename="privacy-export-{request_id}.json"'

    # Without the cookie the page offers a new code and shows nothing of the request
    # (the rest of that way: tests/api/test_portal_answer_access.py).
    client.cookies.delete("privacy_request")
    locked = await client.get(f"/privacy/requests/{request_id}")
    assert locked.status_code == 200
    assert "Completed" not in locked.text
    assert parse(locked.text).by_id("send").text == "Send me a code"
    refused = await client.get(f"/privacy/requests/{request_id}/export")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == HTML


async def test_a_token_opens_only_its_own_request(client: httpx.AsyncClient, runtime: Runtime, mail: MailSink) -> None:
    request_id, _verified = await submit_and_verify(client, runtime, mail)
    token = client.cookies.get("privacy_request")
    assert token
    other = await submit(client, type="erase", identity_kind="email", email="someone.else@example.com")
    other_id = other.headers["location"].split("/")[3]
    response = await client.get(f"/privacy/requests/{other_id}", headers={"Cookie": f"privacy_request={token}"})
    assert response.status_code == 200
    assert "tag--" not in response.text  # the code form, not the other request's status
    assert request_id != other_id


async def test_token_cookie_is_secure_behind_https(
    https_client: tuple[httpx.AsyncClient, Runtime], mail: MailSink
) -> None:
    client, runtime = https_client
    form = await client.get("/privacy/request")
    assert "Secure" in form.headers["set-cookie"]
    _, verified = await submit_and_verify(client, runtime, mail)
    assert "Secure" in verified.headers["set-cookie"]
    assert "HttpOnly" in verified.headers["set-cookie"]


async def test_wrong_code_is_counted_and_shown_at_the_field(
    client: httpx.AsyncClient, runtime: Runtime, mail: MailSink
) -> None:
    response = await submit(client, type="access", identity_kind="email", email=EMAIL)
    verify_path = response.headers["location"]
    await deliver(runtime)
    code = code_from(mail, EMAIL)
    wrong = "000000" if code != "000000" else "111111"
    token = await open_form(client, verify_path)
    first = await client.post(verify_path, data={"_csrf_token": token, "code": wrong})
    assert first.status_code == 422
    assert_error_at(first.text, "code", "Attempts left: 4")
    # The failed attempt was committed: the next one counts down from there.
    second = await client.post(verify_path, data={"_csrf_token": token, "code": wrong})
    assert_error_at(second.text, "code", "Attempts left: 3")
    malformed = await client.post(verify_path, data={"_csrf_token": token, "code": "12ab"})
    assert_error_at(malformed.text, "code", "Enter the 6 digits of the code")
    assert wrong not in parse(second.text).by_id("code-error").text
    right = await client.post(verify_path, data={"_csrf_token": token, "code": code})
    assert right.status_code == 303
    again = await client.post(verify_path, data={"_csrf_token": token, "code": code})
    assert again.status_code == 409
    assert "This request no longer needs a code" in again.text


async def test_resend_and_its_cooldown(client: httpx.AsyncClient, runtime: Runtime, mail: MailSink) -> None:
    response = await submit(client, type="access", identity_kind="email", email=EMAIL)
    request_path = response.headers["location"].removesuffix("/verify")
    token = await open_form(client, request_path + "/verify")
    cooldown = await client.post(request_path + "/resend", data={"_csrf_token": token})
    assert cooldown.status_code == 429
    assert int(cooldown.headers["retry-after"]) > 0
    page = parse(cooldown.text)
    assert "You can ask for another one in" in page.by_id("resend-error").text
    assert "resend-error" in (page.by_id("resend").attrs.get("aria-describedby") or "")


async def test_resends_past_the_cap_say_so_on_the_code_page(make_settings: Any, mail: MailSink) -> None:
    runtime = build_runtime(make_settings(dsr_resend_cooldown_seconds=0, dsr_resend_max_per_request=1))
    transport = httpx.ASGITransport(app=create_app(runtime=runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await submit(client, type="access", identity_kind="email", email=EMAIL)
            request_path = response.headers["location"].removesuffix("/verify")
            token = await open_form(client, request_path + "/verify")
            assert (await client.post(request_path + "/resend", data={"_csrf_token": token})).status_code == 303
            refused = await client.post(request_path + "/resend", data={"_csrf_token": token})
            assert refused.status_code == 429
            assert refused.headers["content-type"] == HTML
            assert_error_at(refused.text, "resend", "We cannot send more codes for this request now")
            await deliver(runtime)
            assert len(mail.to(EMAIL)) == 2
    finally:
        await runtime.close()


async def test_too_many_requests_is_a_friendly_page(make_settings: Any) -> None:
    runtime = build_runtime(make_settings(rate_limits={"intake": "1/hour burst 1"}))
    transport = httpx.ASGITransport(app=create_app(runtime=runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            first = await submit(client, type="access", identity_kind="email", email=EMAIL)
            assert first.status_code == 303
            second = await submit(client, type="access", identity_kind="email", email=EMAIL)
            assert second.status_code == 429
            assert second.headers["content-type"] == HTML
            assert int(second.headers["retry-after"]) > 3500
            assert "Too many attempts" in second.text
            assert "Please wait about 60 minutes" in second.text
            zh = await client.post(
                "/privacy/request?lang=zh", data={"_csrf_token": await open_form(client), "type": "access"}
            )
            assert zh.status_code == 429
            assert 'lang="zh"' in zh.text
            assert "尝试次数过多" in zh.text
    finally:
        await runtime.close()


async def test_unknown_and_malformed_request_ids_are_pages(client: httpx.AsyncClient) -> None:
    malformed = await client.get("/privacy/requests/not-a-uuid/verify")
    assert malformed.status_code == 404
    assert malformed.headers["content-type"] == HTML
    assert "Page not found" in malformed.text
    token = await open_form(client)
    unknown = await client.post(
        "/privacy/requests/6f1c1f7e-2d7e-4a47-9d7c-000000000000/verify", data={"_csrf_token": token, "code": "123456"}
    )
    assert unknown.status_code == 404
    assert "Page not found" in unknown.text
    bad_format = await client.get("/privacy/requests/6f1c1f7e-2d7e-4a47-9d7c-000000000000/export?format=pdf")
    assert bad_format.status_code == 400
    assert bad_format.headers["content-type"] == HTML


async def test_language_is_chosen_remembered_and_used_for_the_request(
    client: httpx.AsyncClient, runtime: Runtime, mail: MailSink
) -> None:
    chosen = await client.get("/privacy/request?lang=zh")
    assert 'lang="zh"' in chosen.text
    assert "privacy_lang=zh" in chosen.headers.get("set-cookie", "")
    remembered = await client.get("/privacy/request")
    assert 'lang="zh"' in remembered.text
    assert remembered.headers["content-language"] == "zh"
    ignored = await client.get("/privacy/request?lang=xx")
    assert 'lang="zh"' in ignored.text  # an unsupported choice changes nothing
    client.cookies.delete("privacy_lang")
    by_header = await client.get("/privacy/request", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert 'lang="zh"' in by_header.text

    response = await submit(client, type="access", identity_kind="email", email=EMAIL, language="zh")
    verify_path = response.headers["location"]
    await deliver(runtime)
    assert str(mail.to(EMAIL)[-1]["Subject"]).startswith("您的验证码")
    token = await open_form(client, verify_path)
    await client.post(verify_path, data={"_csrf_token": token, "code": code_from(mail, EMAIL)})
    # A visitor without a language of their own sees the request in its language, dates by Babel.
    status = await client.get(verify_path.removesuffix("/verify"))
    assert 'lang="zh"' in status.text
    assert re.search(r"\d{4}年\d{1,2}月\d{1,2}日", status.text)
    english = await client.get(verify_path.removesuffix("/verify") + "?lang=en")
    assert 'lang="en"' in english.text
    assert "Completed" in english.text


def test_every_language_has_every_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    i18n.check_catalogs(["en", "zh"])
    for language in ("en", "zh"):
        (tmp_path / f"{language}.yaml").write_bytes((i18n.MESSAGES / f"{language}.yaml").read_bytes())
    zh = yaml.safe_load((tmp_path / "zh.yaml").read_text(encoding="utf-8"))
    del zh["status"]["kept_until"]
    (tmp_path / "zh.yaml").write_text(yaml.safe_dump(zh, allow_unicode=True), encoding="utf-8")
    monkeypatch.setattr(i18n, "MESSAGES", tmp_path)
    i18n.messages.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"messages/zh.yaml: missing status.kept_until"):
            i18n.check_catalogs(["en", "zh"])
    finally:
        i18n.messages.cache_clear()

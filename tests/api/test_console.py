# ruff: noqa: F811 - the shared fixtures (tests.console_support) are imported by name and taken as parameters
"""The operator console's pages (issue 17): sign-in in both languages, the dashboard's figures from
the same data the API and /metrics read, what a narrow key sees, and the API reference served offline."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, Response, get
from litestar.exceptions import HTTPException

from privacy_service.audit.jobs import verify_and_record
from privacy_service.errors import DomainError
from privacy_service.runtime import Runtime
from privacy_service.web.console import access
from privacy_service.web.console.access import Page, console_guard
from privacy_service.web.console.routes import console_error_page
from privacy_service.web.i18n import messages
from privacy_service.web.pages import STATIC
from tests.breach_support import create as create_breach
from tests.conftest import ROOT, make_operator_key
from tests.console_support import (  # noqa: F401 - fixtures, used by name
    browser,
    client,
    runtime,
    settings,
    setup,
    signed_in,
)
from tests.integration.systems_support import OffsetClock

VENDOR = STATIC / "vendor" / "swagger-ui"


def _links(page: str) -> set[str]:
    return set(re.findall(r'<a href="([^"?]*)', page))


async def test_the_sign_in_page_in_english_and_chinese(client: httpx.AsyncClient) -> None:
    english = await client.get("/console/sign-in")
    assert english.status_code == 200
    assert '<html lang="en">' in english.text
    assert "Sign in to the privacy console" in english.text
    assert 'type="password"' in english.text
    csp = english.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "http" not in csp
    chinese = await client.get("/console/sign-in?lang=zh")
    assert '<html lang="zh">' in chinese.text
    assert "登录隐私控制台" in chinese.text
    remembered = chinese.headers["set-cookie"]
    assert "privacy_lang=zh" in remembered
    assert "Path=/console" in remembered
    assert '<html lang="zh">' in (await client.get("/console/sign-in")).text  # the choice is remembered


async def test_console_pages_without_a_session_send_the_browser_to_sign_in(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    key = await make_operator_key(runtime)
    for path in ("/console", "/console/api"):
        for headers in ({}, {"Authorization": f"Bearer {key}"}):  # an operator key is not a session
            response = await client.get(path, headers=headers)
            assert response.status_code == 303, (path, headers)
            assert response.headers["location"] == "/console/sign-in"


async def test_the_sign_in_page_sends_a_signed_in_browser_to_the_dashboard(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await signed_in(client, await make_operator_key(runtime, frozenset({"audit:read"})))
    again = await client.get("/console/sign-in")
    assert again.status_code == 303
    assert again.headers["location"] == "/console"
    client.cookies.set("privacy_console", "not-a-session", path="/console")
    assert (await client.get("/console/sign-in")).status_code == 200


async def test_the_dashboard_shows_requests_breach_clocks_purges_audit_and_delivery(
    setup: tuple[Runtime, Litestar, OffsetClock], client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _, app, clock = setup
    key = await make_operator_key(runtime)
    auth = {"Authorization": f"Bearer {key}"}
    for n in range(3):
        filed = await client.post(
            "/v1/requests", json={"type": "access", "identity": {"email": f"dash{n}@example.com"}, "regime": "gdpr"}
        )
        assert filed.status_code == 202, filed.text
    breach = await create_breach(client, auth, title="Console dashboard test incident")
    await signed_in(client, key)
    page = (await client.get("/console")).text
    assert re.search(r'id="open-total">3<', page)
    assert re.search(r'id="overdue-count">0<', page)
    assert re.search(r'id="due-week-count">0<', page)
    assert page.count('class="reference-id">') >= 3
    # each open request links to its page
    assert len(re.findall(r'<a href="/console/requests/[0-9a-f-]{36}" class="reference-id">', page)) == 3
    assert "Console dashboard test incident" in page
    assert str(breach["id"])[:8] in page
    assert re.search(r"<td data-label=\"Hours left\">7[12]\.\d h</td>", page), "72 h clock shown"
    assert "No purge has run yet" in page
    assert "The audit chain has not been checked yet" in page
    assert re.search(r"Waiting</th><td>3</td>", page), "three code mails wait in the outbox"
    assert "dash0@example.com" not in page  # counts and ids, no identities
    chinese = (await client.get("/console?lang=zh")).text
    words = messages("zh")["console"]["requests"]
    assert chinese.count(f">{words['types']['access']}</td>") == 3  # the request's type and status in Chinese
    assert ">access</td>" not in chinese
    assert not re.search(r'data-label="[^"]*">[a-z_]+</td>', chinese), "no raw status code left on the page"
    await client.get("/console?lang=en")

    await verify_and_record(runtime, actor="cli")
    assert "The latest check passed." in (await client.get("/console")).text

    clock.travel(timedelta(days=25))  # the month's deadline is now within the week
    async with browser(app) as later:
        await signed_in(later, key)
        page = (await later.get("/console")).text
        assert re.search(r'id="due-week-count">3<', page)
        assert re.search(r'id="overdue-count">0<', page)
        assert "h overdue" in page  # the breach's 72 hours have long passed
    clock.travel(timedelta(days=10))
    async with browser(app) as overdue:
        await signed_in(overdue, key)
        page = (await overdue.get("/console")).text
        assert re.search(r'id="overdue-count">3<', page)
        assert page.count("tag--denied") >= 4  # three overdue requests, one overdue clock


async def test_a_narrow_key_sees_only_its_panels_and_links(
    setup: tuple[Runtime, Litestar, OffsetClock], runtime: Runtime
) -> None:
    app = setup[1]
    expectations = {
        "subjects:read": (set(), True),
        "requests:manage": ({"requests"}, False),
        "breaches:manage": ({"breaches"}, False),
        "audit:read": ({"audit"}, False),
        "systems:manage": ({"delivery"}, False),
        "retention:run": ({"retention"}, False),
    }
    for scope, (panels, nothing) in expectations.items():
        async with browser(app) as client:
            await signed_in(client, await make_operator_key(runtime, frozenset({scope})))
            page = (await client.get("/console")).text
            shown = {
                name
                for name in ("requests", "breaches", "retention", "audit", "delivery")
                if f'id="{name}-heading"' in page
            }
            assert shown == panels, scope
            assert ("do not include any of the dashboard" in page) is nothing
            assert {"/console", "/console/api"} <= _links(page)


async def test_a_page_its_scopes_do_not_allow_is_not_linked_and_answers_403(
    setup: tuple[Runtime, Litestar, OffsetClock], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pages the next pieces of issue 17 add are declared in access.PAGES: a link is shown only for
    a session whose scopes the page needs, and the page refuses any other (403) whatever was shown."""
    page = Page("api", "/console/breach-workspace", frozenset({"breaches:manage"}))
    monkeypatch.setitem(access.PAGES, "breach-workspace", page)

    @get(
        page.path,
        guards=[console_guard],
        opt=page.opt,
        exception_handlers={DomainError: console_error_page, HTTPException: console_error_page},
    )
    async def workspace(request: Request[Any, Any, Any]) -> Response[str]:
        return Response("workspace")

    app = setup[1]
    app.register(workspace)
    async with browser(app) as narrow:
        await signed_in(narrow, await make_operator_key(runtime, frozenset({"requests:manage"})))
        assert page.path not in _links((await narrow.get("/console")).text)
        refused = await narrow.get(page.path)
        assert refused.status_code == 403
        assert "Not allowed" in refused.text
    async with browser(app) as allowed:
        await signed_in(allowed, await make_operator_key(runtime, frozenset({"breaches:manage"})))
        assert page.path in _links((await allowed.get("/console")).text)
        assert (await allowed.get(page.path)).text == "workspace"


async def test_the_api_reference_is_served_from_the_package_under_a_strict_csp(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await signed_in(client, await make_operator_key(runtime, frozenset({"audit:read"})))
    response = await client.get("/console/api")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe" not in csp
    assert "http" not in csp
    assets = [
        found for found in re.findall(r'(?:src|href)="([^"]+)"', response.text) if not found.startswith(("#", "?"))
    ]
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in assets
    assert "/static/vendor/swagger-ui/swagger-ui.css" in assets
    assert all(asset.startswith("/") and not asset.startswith("//") for asset in assets)  # this origin only
    for asset in (
        "/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "/static/vendor/swagger-ui/swagger-ui.css",
        "/static/console-api.js",
    ):
        served = await client.get(asset)
        assert served.status_code == 200, asset
    document = await client.get("/schema/openapi.json")
    assert document.status_code == 200
    assert document.json()["info"]["title"] == "privacy-service"


async def test_schema_swagger_loads_the_vendored_files_too(client: httpx.AsyncClient) -> None:
    """Issue 17: /schema/swagger (and /schema) were blank offline, loading Swagger UI from a CDN."""
    for path in ("/schema/swagger", "/schema"):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in page.text
        assert "/static/vendor/swagger-ui/swagger-ui-standalone-preset.js" in page.text
        assert "cdn.jsdelivr.net" not in page.text
        assert "https://" not in page.text.split("spec:")[0]  # the page's own files: this origin only
    preset = await client.get("/static/vendor/swagger-ui/swagger-ui-standalone-preset.js")
    assert preset.status_code == 200


def test_the_vendored_swagger_ui_is_the_pinned_version_with_its_licence() -> None:
    pinned = re.search(r"^SWAGGER_UI_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert pinned
    assert (VENDOR / "VERSION").read_text().split()[1] == pinned.group(1)
    assert "Apache License" in (VENDOR / "LICENSE").read_text()
    bundle = (VENDOR / "swagger-ui-bundle.js").read_text()
    assert "sourceMappingURL" not in bundle[-200:]
    assert not Path(VENDOR / "index.html").exists()  # only the files the page loads

"""Issue 17 item 9: the API reference and every console page work offline, under the strict CSP.

Every GET page under ``/schema`` and ``/console`` is found in the app's routes (so pages added later are
checked too), opened with a session holding every scope, and its HTML parsed: each resource it makes the
browser load (script, stylesheet, image, frame, media, form target, refresh) must be of this origin and
served; no inline event handler or style attribute, and an inline ``<script>`` or ``<style>`` only if the
page's policy allows it by its hash; the Content-Security-Policy names no outside host, nothing
``unsafe-*``, and scripts from this origin (or by hash) only.
Links (``<a href>``) are navigation, not loads, and are not checked. Redoc, Elements and RapiDoc, which
load from CDNs, are not served: their paths redirect to the offline Swagger UI.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

from privacy_service.config import DEFAULT_RATE_LIMITS, Settings
from privacy_service.runtime import Runtime
from tests.api.dsr_support import OPEN_LIMITS, fresh_settings
from tests.breach_support import assess
from tests.breach_support import create as create_breach
from tests.conftest import make_operator_key
from tests.console_support import OPEN_CONSOLE_LIMITS, browser, console_app, signed_in

# Attributes through which a page makes the browser fetch something (tag, attribute).
_LOADS = {
    ("script", "src"),
    ("link", "href"),
    ("img", "src"),
    ("img", "srcset"),
    ("source", "src"),
    ("source", "srcset"),
    ("iframe", "src"),
    ("frame", "src"),
    ("embed", "src"),
    ("object", "data"),
    ("video", "src"),
    ("video", "poster"),
    ("audio", "src"),
    ("track", "src"),
    ("input", "src"),
    ("form", "action"),
    ("button", "formaction"),
    ("input", "formaction"),
    ("use", "href"),
    ("image", "href"),
}
_PARAM = re.compile(r"\{([a-z_]+)(?::[a-z]+)?\}")


@pytest.fixture
def backend() -> str:
    """What is checked is markup and headers, the same on either database: SQLite only."""
    return "sqlite"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.loads: list[tuple[str, str, str]] = []
        self.inline: list[str] = []
        self.bodies: list[tuple[str, str]] = []  # each <script> and <style> element's text
        self._tag: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        if tag in ("script", "style"):
            self.bodies.append((tag, ""))
        for name, value in attrs:
            if name.startswith("on"):
                self.inline.append(f"<{tag} {name}=...>")
            if name == "style":
                self.inline.append(f"<{tag} style=...>")
            if value is not None and (tag, name) in _LOADS:
                urls = [part.strip().split(" ")[0] for part in value.split(",")] if name == "srcset" else [value]
                self.loads.extend((tag, name, url) for url in urls if url)
            if tag == "meta" and name == "content" and value and "url=" in value.lower():
                self.loads.append((tag, name, value.lower().split("url=", 1)[1].strip()))

    def handle_data(self, data: str) -> None:
        if self._tag in ("script", "style") and self.bodies:
            tag, text = self.bodies[-1]
            self.bodies[-1] = (tag, text + data)

    def handle_endtag(self, tag: str) -> None:
        self._tag = None


def _directives(csp: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            found[words[0]] = words[1:]
    return found


def _csp_problems(csp: str, bodies: list[tuple[str, str]]) -> list[str]:
    """Why this policy lets in more than this origin, or refuses the page's own inline code (empty: fine)."""
    problems = [word for word in csp.split() if "http" in word or "*" in word or "unsafe-" in word]
    directives = _directives(csp)
    default = directives.get("default-src", [])
    if default != ["'none'"]:
        problems.append(f"default-src {default}")
    for source in directives.get("script-src", []):
        if source != "'self'" and not source.startswith("'sha256-"):
            problems.append(f"script-src {source}")
    for tag, text in bodies:
        if not text.strip():
            continue
        digest = "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"
        if digest not in directives.get(f"{tag}-src", default):
            problems.append(f"an inline <{tag}> the policy refuses")
    return problems


def _outside(url: str) -> bool:
    """True for a URL that leaves this origin (another host, or any scheme but data:)."""
    parts = urlsplit(url)
    if parts.scheme == "data":
        return False
    return bool(parts.scheme or parts.netloc or url.startswith("//"))


def get_pages(app: Litestar) -> list[str]:
    """Every GET route under /console and /schema, as written (path parameters unfilled)."""
    found = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "GET" not in route.methods:
            continue
        if route.path == "/console" or route.path.startswith(("/console/", "/schema")):
            found.add(route.path)
    return sorted(found)


def fill(path: str, ids: dict[str, str]) -> str:
    """A path parameter named like a seeded row (``request_id``, ``subject_id``, ``breach_id``) gets its
    id; any other a fresh UUID (the page answers its 404 page, which is checked too)."""
    return _PARAM.sub(lambda match: ids.get(match.group(1), str(uuid.uuid4())), path)


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    limits = {**DEFAULT_RATE_LIMITS, **OPEN_LIMITS, **OPEN_CONSOLE_LIMITS}
    return await fresh_settings(make_settings, backend, rate_limits=limits)


@pytest.fixture
async def setup(settings: Settings) -> AsyncIterator[tuple[Runtime, Litestar]]:
    async with console_app(settings) as (runtime, app, _clock):
        yield runtime, app


async def _seed(client: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, str]:
    filed = await client.post("/v1/requests", json={"type": "access", "identity": {"email": "offline@example.com"}})
    assert filed.status_code == 202, filed.text
    subject = await client.post("/v1/subjects", json={"email": "kept@example.com"}, headers=auth)
    assert subject.status_code == 201, subject.text
    breach = await create_breach(
        client, auth, categories=["user.name", "user.contact.email", "user.financial.transaction"]
    )
    await assess(client, auth, breach["id"])
    notice = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification", json={"recipient": "DPC form"}, headers=auth
    )
    assert notice.status_code == 201, notice.text
    return {
        "request_id": filed.json()["id"],
        "ref": filed.json()["id"],
        "subject_id": subject.json()["id"],
        "breach_id": breach["id"],
        "seq": str(notice.json()["seq"]),
    }


async def test_no_console_or_schema_page_loads_anything_from_outside_this_origin(
    setup: tuple[Runtime, Litestar],
) -> None:
    runtime, app = setup
    key = await make_operator_key(runtime)  # every scope: every page and every button shown
    async with browser(app) as client:
        ids = await _seed(client, {"Authorization": f"Bearer {key}"})
        await signed_in(client, key)
        pages = get_pages(app)
        assert {"/console", "/console/api", "/schema", "/schema/swagger"} <= set(pages)
        checked: dict[str, int] = {}
        served: dict[str, int] = {}
        problems: list[tuple[str, str, Any]] = []  # every page's findings, reported together
        for template in pages:
            path = fill(template, ids)
            response = await client.get(path, follow_redirects=True)
            if response.status_code >= 500:
                problems.append((path, "status", response.status_code))
                continue
            if not response.headers.get("content-type", "").startswith("text/html"):
                continue
            checked[template] = response.status_code
            page = _Page()
            page.feed(response.text)
            refused = _csp_problems(response.headers["content-security-policy"], page.bodies)
            if refused:
                problems.append((path, "csp", refused))
            if page.inline:
                problems.append((path, "inline", page.inline))
            outside = [load for load in page.loads if _outside(load[2])]
            if outside:
                problems.append((path, "outside", outside))
            for tag, _, url in page.loads:
                if tag in {"script", "link", "img"} and not url.startswith("data:") and url not in served:
                    served[url] = (await client.get(url)).status_code
        assert problems == []
        assert {url: status for url, status in served.items() if status != 200} == {}
        # The pages that matter rendered for real (not as error pages) and loaded the vendored files.
        assert checked["/console"] == checked["/console/api"] == checked["/schema/swagger"] == 200
        assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in served


async def test_the_cdn_viewers_redirect_to_the_offline_swagger_ui(setup: tuple[Runtime, Litestar]) -> None:
    _, app = setup
    async with browser(app) as client:
        for viewer in ("/schema/redoc", "/schema/elements", "/schema/rapidoc"):
            moved = await client.get(viewer)
            assert moved.status_code == 301, viewer
            assert moved.headers["location"] == "/schema/swagger"
            assert "cdn" not in moved.text
        swagger = await client.get("/schema/swagger")
        assert swagger.status_code == 200
        assert 'data-openapi-url="/schema/openapi.json"' in swagger.text
        assert '<script src="/static/console-api.js" defer></script>' in swagger.text
        # Litestar's OAuth2 redirect page (an inline script) is not served: no OAuth2 flow is offered.
        assert (await client.get("/schema/oauth2-redirect.html")).status_code == 404
        document = await client.get("/schema/openapi.json")
        assert document.status_code == 200
        assert all(not path.startswith(("/schema", "/console")) for path in document.json()["paths"])

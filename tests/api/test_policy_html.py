"""GET /privacy: an automated accessibility check of structure (html.parser), CSP and content."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from html.parser import HTMLParser

import httpx
import pytest

from privacy_service.policy.document import SECTION_IDS
from privacy_service.runtime import Runtime

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])
HTML_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
LANDMARKS = {"header", "main", "footer", "nav"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    text: str = ""


class Page(HTMLParser):
    """Everything the checks need, collected in one pass."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.headings: list[Element] = []
        self.open_headings: list[Element] = []
        self.table_stack: list[dict[str, list[Element]]] = []
        self.tables: list[dict[str, list[Element]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.elements.append(element)
        if tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
            self.headings.append(element)
            self.open_headings.append(element)
        if tag == "table":
            self.table_stack.append({"caption": [], "th": [], "tr": []})
        elif self.table_stack and tag in {"caption", "th", "tr"}:
            self.table_stack[-1][tag].append(element)

    def handle_endtag(self, tag: str) -> None:
        if self.open_headings and tag == self.open_headings[-1].tag:
            self.open_headings.pop()
        if tag == "table" and self.table_stack:
            self.tables.append(self.table_stack.pop())

    def handle_data(self, data: str) -> None:
        for heading in self.open_headings:
            heading.text += data

    def tagged(self, tag: str) -> list[Element]:
        return [element for element in self.elements if element.tag == tag]


async def fetch(client: httpx.AsyncClient, url: str, **headers: str) -> tuple[httpx.Response, Page]:
    response = await client.get(url, headers=headers)
    assert response.status_code == 200
    page = Page()
    page.feed(response.text)
    page.close()
    return response, page


@pytest.mark.parametrize(("query", "language", "title"), [("", "en", "Privacy notice"), ("?lang=zh", "zh", "隐私政策")])
async def test_structure_is_accessible(client: httpx.AsyncClient, query: str, language: str, title: str) -> None:
    response, page = await fetch(client, f"/privacy{query}")
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-language"] == language

    html = page.tagged("html")
    assert len(html) == 1
    assert html[0].attrs.get("lang") == language

    h1 = page.tagged("h1")
    assert len(h1) == 1
    assert h1[0].text.strip() == title
    assert page.headings[0].tag == "h1"
    levels = [int(heading.tag[1]) for heading in page.headings]
    for before, after in itertools.pairwise(levels):
        assert after <= before + 1, f"heading level skipped: h{before} -> h{after}"
    assert all(heading.text.strip() for heading in page.headings)

    present = {element.tag for element in page.elements}
    assert present >= LANDMARKS
    assert len(page.tagged("main")) == 1
    navs = page.tagged("nav")
    names = [nav.attrs.get("aria-label") or nav.attrs.get("aria-labelledby") for nav in navs]
    assert all(names), "each nav needs an accessible name"
    assert len(set(names)) == len(names), "each nav needs its own accessible name"

    ids = [element.attrs["id"] for element in page.elements if element.attrs.get("id")]
    assert len(ids) == len(set(ids))
    for element in page.elements:
        if element.attrs.get("aria-labelledby"):
            assert element.attrs["aria-labelledby"] in ids
        if element.tag == "a" and str(element.attrs.get("href", "")).startswith("#"):
            assert str(element.attrs["href"])[1:] in ids
        if element.tag == "img":
            assert element.attrs.get("alt") is not None


async def test_headings_follow_the_gdpr_items(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _, page = await fetch(client, "/privacy")
    notice = runtime.policy.notices["en"]
    h2 = [heading.text.strip() for heading in page.headings if heading.tag == "h2"]
    assert h2[0] == notice.labels.contents
    assert h2[1:] == [notice.sections[section].heading for section in SECTION_IDS]


async def test_retention_table_has_caption_and_scoped_headers(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _, page = await fetch(client, "/privacy")
    assert len(page.tables) == 1
    table = page.tables[0]
    assert len(table["caption"]) == 1
    assert table["th"], "the table has header cells"
    assert all(th.attrs.get("scope") in {"col", "row"} for th in table["th"])
    assert sum(th.attrs.get("scope") == "row" for th in table["th"]) == len(runtime.policy.data_categories)
    assert len(table["tr"]) == len(runtime.policy.data_categories) + 1


async def test_language_switch_and_request_portal_link(client: httpx.AsyncClient) -> None:
    _, page = await fetch(client, "/privacy")
    links = page.tagged("a")
    switch = [a for a in links if a.attrs.get("hreflang") == "zh"]
    assert switch, "a link to the Chinese version"
    assert switch[0].attrs["href"] == "/privacy?lang=zh"
    assert switch[0].attrs.get("lang") == "zh"
    current = [e for e in page.elements if e.attrs.get("aria-current") == "page"]
    assert len(current) == 1
    assert current[0].attrs.get("lang") == "en"
    # The portal link carries the page's language, which the portal then remembers.
    assert any(a.attrs.get("href") == "/privacy/request?lang=en" for a in links)
    alternates = {(e.attrs.get("rel"), e.attrs.get("type")) for e in page.tagged("link")}
    assert ("alternate", "application/ld+json") in alternates


async def test_no_inline_script_or_style_and_a_strict_csp(client: httpx.AsyncClient) -> None:
    response, page = await fetch(client, "/privacy?lang=zh")
    assert response.headers["content-security-policy"] == HTML_CSP
    assert not page.tagged("script")
    assert not page.tagged("style")
    for element in page.elements:
        assert "style" not in element.attrs
        assert not any(name.startswith("on") for name in element.attrs)
    stylesheets = [e for e in page.tagged("link") if e.attrs.get("rel") == "stylesheet"]
    assert [e.attrs["href"] for e in stylesheets] == ["/static/site.css"]
    css = await client.get("/static/site.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")


async def test_html_is_cached_and_conditional(client: httpx.AsyncClient) -> None:
    first = await client.get("/privacy", headers={"Accept-Language": "zh-TW,zh;q=0.9"})
    assert first.headers["content-language"] == "zh"
    assert first.headers["cache-control"] == "public, max-age=300"
    assert first.headers["vary"] == "Accept-Language"
    again = await client.get("/privacy?lang=zh", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    unsupported = await client.get("/privacy", headers={"Accept-Language": "es"})
    assert unsupported.headers["content-language"] == "en"

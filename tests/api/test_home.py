"""``GET /`` sends people to the portal and the privacy notice, and clients to the API's links."""

from __future__ import annotations

import httpx
import pytest

from tests.portal_support import parse


@pytest.fixture
def backend() -> str:
    return "sqlite"  # no database work on this page


async def test_a_browser_gets_a_page_with_the_portal_and_the_notice(client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-language"] == "en"
    assert "Accept" in response.headers["vary"]
    page = parse(response.text)
    hrefs = [link.attrs.get("href") or "" for link in page.find("a")]
    assert "/privacy/request?lang=en" in hrefs
    assert "/privacy?lang=en" in hrefs
    # Every link on the page answers.
    for href in {h for h in hrefs if h.startswith("/")}:
        assert (await client.get(href)).status_code == 200, href


async def test_the_page_is_in_the_visitors_language(client: httpx.AsyncClient) -> None:
    by_header = await client.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert by_header.headers["content-language"] == "zh"
    assert "/privacy/request?lang=zh" in by_header.text
    assert "提交隐私请求" in by_header.text
    chosen = await client.get("/?lang=zh", headers={"Accept-Language": "en"})
    assert chosen.headers["content-language"] == "zh"


async def test_a_json_client_gets_an_index_of_links(client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    links = response.json()["links"]
    assert links["portal"] == "/privacy/request"
    assert links["privacy_notice"] == "/privacy"
    for path in links.values():
        assert (await client.get(path)).status_code == 200, path


async def test_the_root_needs_no_credential_and_other_methods_are_refused(client: httpx.AsyncClient) -> None:
    assert (await client.get("/", headers={"Authorization": "Bearer psk_not_a_key"})).status_code == 200
    refused = await client.post("/", json={})
    assert refused.status_code == 405


async def test_the_openapi_document_names_both_answers(client: httpx.AsyncClient) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    content = document["paths"]["/"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"text/html", "application/json"}
    assert set(content["application/json"]["schema"]["required"]) == {"service", "controller", "links"}


@pytest.mark.parametrize(
    "accept",
    ["text/html;q=1e999", "application/json;q=1e999, text/html", "text/html;q=abc", "*/*;q=-1", ";;;,,,", "a" * 4000],
)
async def test_a_hostile_accept_header_gets_the_page_not_an_error(client: httpx.AsyncClient, accept: str) -> None:
    response = await client.get("/", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")

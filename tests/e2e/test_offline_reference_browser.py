"""Issue 17 item 9 in Debian's Chromium: /schema's Swagger UI renders this service's document from the
package's own files under the strict CSP (a refused script or style would be a console error), no request
leaves 127.0.0.1, and the retired CDN viewers land on it."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.async_api import expect

from tests.e2e.conftest import LiveServer, Visitor
from tests.e2e.console_support import keep_on_this_machine


async def test_schema_reference_renders_offline_under_the_strict_csp(visitor: Visitor, live_server: LiveServer) -> None:
    left = await keep_on_this_machine(visitor.context)
    page = visitor.page
    for path in ("/schema", "/schema/swagger", "/schema/redoc", "/schema/elements", "/schema/rapidoc"):
        response = await page.goto(path)
        assert response is not None, path
        assert response.ok, path
        csp = await response.header_value("content-security-policy") or ""
        assert "script-src 'self'" in csp, (path, csp)
        assert "unsafe-inline" not in csp, (path, csp)
        assert urlsplit(page.url).path in {"/schema", "/schema/swagger"}, (path, page.url)
        await expect(page.locator(".swagger-ui .info .title")).to_contain_text("privacy-service", timeout=15_000)
        assert await page.locator(".swagger-ui .opblock").count() > 20, path
        assert not visitor.problems, (path, visitor.problems)  # no CSP refusal, no broken file, no script error
    assert left == []

"""Browser tests: Playwright driving Debian's Chromium against a real uvicorn server.

The server runs in a thread of the test process on 127.0.0.1 (a free port, SQLite), sends its mail
over SMTP to the aiosmtpd fixture, and is reached by the browser and by the operator API over real
HTTP. Without /usr/bin/chromium or axe-core (``make e2e-deps``) the tests skip with the reason,
except under CI, where they fail.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Response, async_playwright

from privacy_service.app import create_app
from privacy_service.runtime import build_runtime
from tests.conftest import IN_CI, MailSink, make_operator_key

E2E = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (make chromium); never a downloaded browser
AXE = E2E / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = E2E / "artifacts"
# The flags this machine's Chromium needs: no sandbox as root, and no background traffic to a closed network.
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The browser tests click through many pages from one address; the limits themselves are tested elsewhere.
RELAXED_LIMITS = {
    name: "600/min burst 200" for name in ("intake", "intake_identity", "verify", "resend", "download", "default")
}
MOBILE = {"width": 375, "height": 812}
CODE = re.compile(r"\b(\d{6})\b")


def _require(path: Path, what: str) -> None:
    if path.exists():
        return
    message = f"{what} not found at {path} (run `make e2e-deps`)"
    if IN_CI:
        pytest.fail(message + "; CI must run the browser tests")
    pytest.skip(message)


@pytest.fixture
def backend() -> str:
    # One database is enough here: the browser exercises the pages, the API tests cover both backends.
    return "sqlite"


@dataclass
class LiveServer:
    url: str
    mail: MailSink
    operator: dict[str, str]

    async def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """The operator API over real HTTP (the same server the browser uses)."""
        async with httpx.AsyncClient(base_url=self.url, headers=self.operator, timeout=30) as client:
            return await client.request(method, path, json=body)

    async def make_subject(self, email: str, profile: dict[str, Any], records: list[dict[str, Any]]) -> str:
        created = await self.api("POST", "/v1/subjects", {"email": email, "profile": profile})
        assert created.status_code == 201, created.text
        subject_id = str(created.json()["id"])
        for record in records:
            response = await self.api("POST", f"/v1/subjects/{subject_id}/records", record)
            assert response.status_code == 201, response.text
        return subject_id

    async def code_for(self, address: str, after: int = 0) -> str:
        """The newest code mailed to ``address`` once more than ``after`` codes have arrived."""
        for _ in range(200):
            codes = [m for m in self.mail.to(address) if CODE.search(m.get_content())]
            if len(codes) > after:
                found = CODE.search(codes[-1].get_content())
                assert found
                return found.group(1)
            await asyncio.sleep(0.05)
        raise AssertionError(f"no code mailed to {address}")


@pytest.fixture
async def live_server(make_settings: Any, mail: MailSink) -> AsyncIterator[LiveServer]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    settings = make_settings(base_url=url, rate_limits=RELAXED_LIMITS, log_level="ERROR")
    setup = build_runtime(settings)  # creates the keyring the server then opens
    try:
        operator = {"Authorization": f"Bearer {await make_operator_key(setup)}"}
    finally:
        await setup.close()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), loop="asyncio", lifespan="on", log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    for _ in range(300):
        if server.started or not thread.is_alive():
            break
        await asyncio.sleep(0.05)
    assert server.started, "the server did not start"
    try:
        yield LiveServer(url=url, mail=mail, operator=operator)
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)
        listener.close()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    _require(CHROMIUM, "Debian's Chromium")
    _require(AXE, "axe-core")
    async with async_playwright() as playwright:
        # Playwright gives every launch a new, empty user-data directory.
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Visitor:
    """A browser tab with the checks every page gets: accessibility, CSP, layout width, a screenshot."""

    page: Page
    context: BrowserContext
    base_url: str
    problems: list[str] = field(default_factory=list)

    async def check(self, name: str) -> None:
        await self.page.wait_for_load_state("load")
        result = await self.page.evaluate(
            """async () => {
                const result = await axe.run(document, {
                    runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]},
                });
                return result.violations.map(v => ({
                    id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(" ")),
                }));
            }"""
        )
        serious = [v for v in result if v["impact"] in ("serious", "critical")]
        assert not serious, f"{name}: accessibility violations:\n{json.dumps(serious, indent=1)}"
        width = await self.page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{name}: the page scrolls sideways ({width[0]} px content in {width[1]} px)"
        assert not self.problems, f"{name}: {self.problems}"
        ARTIFACTS.mkdir(exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def open_visitor(browser: Browser, server: LiveServer, **options: Any) -> Visitor:
    context = await browser.new_context(base_url=server.url, locale="en-GB", **options)
    if options.get("java_script_enabled", True):
        await context.add_init_script(path=str(AXE))
    page = await context.new_page()
    visitor = Visitor(page=page, context=context, base_url=server.url)

    def on_console(message: ConsoleMessage) -> None:
        # A page answered with 4xx logs "Failed to load resource"; broken files are caught by on_response.
        if message.type == "error" and "Failed to load resource" not in message.text:
            visitor.problems.append(f"console error: {message.text}")

    def on_response(response: Response) -> None:
        if response.request.resource_type in {"stylesheet", "script", "image", "font"} and response.status >= 400:
            visitor.problems.append(f"{response.url} answered {response.status}")

    page.on("console", on_console)
    page.on("response", on_response)
    page.on("pageerror", lambda error: visitor.problems.append(f"script error: {error}"))
    return visitor


@pytest.fixture
async def visitor(browser: Browser, live_server: LiveServer) -> AsyncIterator[Visitor]:
    opened = await open_visitor(browser, live_server)
    try:
        yield opened
    finally:
        await opened.context.close()

"""Helpers the console's browser tests share: signing in through the form, keeping the browser on this
machine, and the data customers and the backend create before an operator opens the console (a request
filed on the public intake and confirmed with its mailed code; a subject written by the wallet backend)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from playwright.async_api import BrowserContext, Route

from tests.e2e.conftest import LiveServer, Visitor

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def operator_key(server: LiveServer) -> str:
    """The live server's operator key, as an operator would paste it into the sign-in form."""
    return server.operator["Authorization"].split(" ", 1)[1]


async def sign_in(visitor: Visitor, key: str, language: str, check_as: str | None = None) -> None:
    """The sign-in form in ``language`` (the button is found by the form, not by its words); with ``check_as``
    the form first gets the visitor's page checks (axe-core, width, errors) under that name."""
    page = visitor.page
    await page.goto(f"/console/sign-in?lang={language}")
    if check_as:
        await visitor.check(check_as)
    await page.locator("#key").fill(key)
    await page.locator("form[action='/console/sign-in'] button[type=submit]").click()
    await page.wait_for_url("**/console")


async def keep_on_this_machine(context: BrowserContext) -> list[str]:
    """Abort every request of ``context`` that leaves 127.0.0.1; the returned list collects their URLs."""
    left: list[str] = []

    async def only_this_machine(route: Route) -> None:
        if urlsplit(route.request.url).hostname != "127.0.0.1":
            left.append(route.request.url)
            await route.abort()
        else:
            await route.continue_()

    await context.route("**/*", only_this_machine)
    return left


async def confirmed_request(server: LiveServer, kind: str, email: str) -> str:
    """A request filed on the public intake (no operator key) and confirmed with the code mailed to ``email``."""
    before = len(server.mail.to(email))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as customer:
        filed = await customer.post("/v1/requests", json={"type": kind, "identity": {"email": email}})
        assert filed.status_code == 202, filed.text
        request_id = str(filed.json()["id"])
        code = await server.code_for(email, before)
        verified = await customer.post(f"/v1/requests/{request_id}/verify", json={"code": code})
        assert verified.status_code == 200, verified.text
    return request_id

"""Helpers for the operator console's tests: the CSRF cookie, signing in, the app on a movable clock."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from litestar import Litestar

from privacy_service.app import create_app
from privacy_service.config import DEFAULT_RATE_LIMITS, Settings
from privacy_service.runtime import Runtime, build_runtime
from privacy_service.web.console.routes import CSRF_COOKIE
from privacy_service.web.console.sessions import SESSION_COOKIE
from tests.api.dsr_support import OPEN_LIMITS, fresh_settings
from tests.conftest import make_operator_key
from tests.integration.systems_support import OffsetClock

OPEN_CONSOLE_LIMITS = {"console_sign_in": "100000/min burst 100000"}
_CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]*)"')


async def csrf_token(client: httpx.AsyncClient, page: str = "/console/sign-in") -> str:
    """The token a console form carries (read from the page, as a browser submits it)."""
    response = await client.get(page)
    found = _CSRF_FIELD.search(response.text)
    assert found, f"no CSRF field on {page} ({response.status_code})"
    assert client.cookies.get(CSRF_COOKIE)
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    token = await csrf_token(client)
    return await client.post("/console/sign-in", data={"key": key, "_csrf_token": token})


async def signed_in(client: httpx.AsyncClient, key: str) -> str:
    """Sign in and return the session cookie's value."""
    response = await sign_in(client, key)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console"
    token = client.cookies.get(SESSION_COOKIE)
    assert token
    return token


def browser(app: Litestar) -> httpx.AsyncClient:
    """Another browser (its own cookie jar) on the same app."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@asynccontextmanager
async def console_app(settings: Settings) -> AsyncIterator[tuple[Runtime, Litestar, OffsetClock]]:
    clock = OffsetClock()
    runtime = build_runtime(settings, clock=clock)
    try:
        yield runtime, create_app(runtime=runtime), clock
    finally:
        await runtime.close()


# The console areas' tests share these fixtures (import them by name: ``from tests.console_support import app,
# runtime, settings, setup, clock``); a file that needs other settings defines its own ``settings`` with
# :func:`console_settings` and imports the rest.
Setup = tuple[Runtime, Litestar, OffsetClock]


async def console_settings(make_settings: Any, backend: str, **overrides: Any) -> Settings:
    """A fresh database on ``backend`` (sqlite or postgres) with the API's and the console's rate limits open."""
    limits = {**DEFAULT_RATE_LIMITS, **OPEN_LIMITS, **OPEN_CONSOLE_LIMITS}
    return await fresh_settings(make_settings, backend, rate_limits=limits, **overrides)


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await console_settings(make_settings, backend)


@pytest.fixture
async def setup(settings: Settings) -> AsyncIterator[Setup]:
    async with console_app(settings) as found:
        yield found


@pytest.fixture
def runtime(setup: Setup) -> Runtime:
    return setup[0]


@pytest.fixture
def app(setup: Setup) -> Litestar:
    return setup[1]


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """A browser with no session yet."""
    async with browser(app) as opened:
        yield opened


@pytest.fixture
def clock(setup: Setup) -> OffsetClock:
    """The app's movable clock (``clock.travel``)."""
    return setup[2]


@pytest.fixture
async def auth(runtime: Runtime) -> dict[str, str]:
    """The API's headers with a key of every scope (to set up data as a client of the API would)."""
    return {"Authorization": f"Bearer {await make_operator_key(runtime)}"}

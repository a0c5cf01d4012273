"""Abuse case: the failed-key lock-outs under concurrent guesses (reviewer item 8), as an attacker would try it.

The console's sign-in and the API's bearer keys used to look at the address's budget, check the key, and
only then count the failure: wrong keys sent at once all passed the look before any was counted, so "5 an
hour" let a burst of 20 guesses through (and as many again per refill). Now the attempt is taken from the
budget first, atomically, and given back when the key is right: however many arrive at once, at most the
limit are checked, in memory and with the counts in Redis, and a right key costs nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from litestar import Litestar

import privacy_service.operators.guards as guards
import privacy_service.web.console.routes as console_routes
from privacy_service.config import DEFAULT_RATE_LIMITS, Settings
from privacy_service.runtime import Runtime
from tests.api.dsr_support import fresh_settings
from tests.conftest import make_operator_key
from tests.console_support import OPEN_CONSOLE_LIMITS, browser, console_app, csrf_token
from tests.redis_support import REDIS_URL, redis_client, redis_prefix

__all__ = ["redis_client", "redis_prefix"]  # fixtures

CONSOLE_FAILURES = 5  # "console_sign_in_failed"
API_FAILURES = 10  # "auth_failed": the shipped "10/min burst 10"
CONCURRENT = 20
ATTACKER = ("203.0.113.66", 40000)


def _wrong(i: int) -> str:
    return f"psk_{i:012d}_" + "W" * 43


@pytest.fixture(params=["memory", "redis"])
def counted_in(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for where the lock-out counts: this process, or Redis under a prefix of the test's own."""
    if request.param == "memory":
        return {}
    return {"redis_url": REDIS_URL, "redis_prefix": request.getfixturevalue("redis_prefix")}


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every key actually looked up (by the console or the API), in order."""
    seen: list[str] = []

    def counting(real: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def authenticate(session: Any, key: str, now: Any) -> Any:
            seen.append(key)
            await asyncio.sleep(0)  # let the other attempts run in between, as a slow database would
            return await real(session, key, now)

        return authenticate

    monkeypatch.setattr(console_routes, "authenticate", counting(console_routes.authenticate))
    monkeypatch.setattr(guards, "authenticate", counting(guards.authenticate))
    return seen


# -- the console's sign-in ---------------------------------------------------------------------------


@pytest.fixture
async def console(
    make_settings: Any, backend: str, counted_in: dict[str, Any]
) -> AsyncIterator[tuple[Runtime, Litestar]]:
    limits = {**DEFAULT_RATE_LIMITS, **OPEN_CONSOLE_LIMITS, "console_sign_in_failed": f"{CONSOLE_FAILURES}/hour"}
    settings = await fresh_settings(make_settings, backend, rate_limits=limits, **counted_in)
    async with console_app(settings) as (runtime, app, _):
        yield runtime, app


async def _sign_in_at_once(client: httpx.AsyncClient, keys: list[str]) -> list[int]:
    token = await csrf_token(client)
    responses = await asyncio.gather(
        *(client.post("/console/sign-in", data={"key": key, "_csrf_token": token}) for key in keys)
    )
    return [response.status_code for response in responses]


async def test_concurrent_wrong_sign_ins_check_at_most_the_limit(
    console: tuple[Runtime, Litestar], checked: list[str]
) -> None:
    runtime, app = console
    async with browser(app) as client:
        statuses = await _sign_in_at_once(client, [_wrong(i) for i in range(CONCURRENT)])
    assert sorted(statuses) == [401] * CONSOLE_FAILURES + [429] * (CONCURRENT - CONSOLE_FAILURES)
    assert len(checked) == CONSOLE_FAILURES  # the others were refused before their key was looked at
    key = await make_operator_key(runtime, frozenset({"audit:read"}))
    async with browser(app) as client:
        assert await _sign_in_at_once(client, [key]) == [429]  # locked out, even with the right key


async def test_a_right_key_costs_no_sign_in_failure(console: tuple[Runtime, Litestar], checked: list[str]) -> None:
    runtime, app = console
    key = await make_operator_key(runtime, frozenset({"audit:read"}))
    async with browser(app) as client:
        assert await _sign_in_at_once(client, [_wrong(i) for i in range(2)]) == [401, 401]
        # At once, as many as the budget left (an attempt in flight holds its share): all taken, all given back.
        assert await _sign_in_at_once(client, [key] * 3) == [303] * 3
    async with browser(app) as client:  # signed out (the same address)
        statuses = await _sign_in_at_once(client, [_wrong(i) for i in range(CONCURRENT)])
    assert sorted(statuses) == [401] * (CONSOLE_FAILURES - 2) + [429] * (CONCURRENT - CONSOLE_FAILURES + 2)
    assert len(checked) == 2 + 3 + CONSOLE_FAILURES - 2


# -- the API's bearer keys ---------------------------------------------------------------------------


@pytest.fixture
async def api(make_settings: Any, backend: str, counted_in: dict[str, Any]) -> AsyncIterator[tuple[Runtime, Litestar]]:
    settings: Settings = await fresh_settings(make_settings, backend, rate_limits=DEFAULT_RATE_LIMITS, **counted_in)
    async with console_app(settings) as (runtime, app, _):
        yield runtime, app


def _attacker(app: Litestar) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=ATTACKER), base_url="http://testserver")


async def _call_at_once(client: httpx.AsyncClient, keys: list[str]) -> list[int]:
    responses = await asyncio.gather(
        *(
            client.get("/v1/subjects", params={"email": "nobody@example.com"}, headers={"Authorization": f"Bearer {k}"})
            for k in keys
        )
    )
    return [response.status_code for response in responses]


async def test_concurrent_wrong_bearer_keys_check_at_most_the_limit(
    api: tuple[Runtime, Litestar], checked: list[str]
) -> None:
    runtime, app = api
    async with _attacker(app) as client:
        statuses = await _call_at_once(client, [_wrong(i) for i in range(CONCURRENT + API_FAILURES)])
        assert sorted(statuses) == [401] * API_FAILURES + [429] * CONCURRENT
        assert len(checked) == API_FAILURES
        valid = await make_operator_key(runtime)
        assert await _call_at_once(client, [valid]) == [429]  # locked out, even with the right key
    assert len(checked) == API_FAILURES


async def test_a_right_bearer_key_costs_no_failure(api: tuple[Runtime, Litestar], checked: list[str]) -> None:
    runtime, app = api
    valid = await make_operator_key(runtime)
    async with _attacker(app) as client:
        assert await _call_at_once(client, [_wrong(i) for i in range(3)]) == [401] * 3
        answered = await _call_at_once(client, [valid] * 5)  # at once: none cached yet, all looked up
        assert set(answered) <= {200, 404}, answered
        statuses = await _call_at_once(client, [_wrong(i) for i in range(CONCURRENT)])
        assert sorted(statuses) == [401] * (API_FAILURES - 3) + [429] * (CONCURRENT - API_FAILURES + 3)
        assert set(await _call_at_once(client, [valid])) == {429}
    assert checked.count(valid) >= 1
    assert len([key for key in checked if key != valid]) == API_FAILURES

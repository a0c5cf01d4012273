"""The log-hygiene check (tests/conftest_logcheck.py) itself: it sees PII planted in each channel."""

from __future__ import annotations

import logging

import httpx
import pytest
import structlog
from litestar import Litestar, Response, post
from litestar.params import JSONBody

from tests.conftest_logcheck import _WATCH, MARKERS, leaks

EMAIL = "Leaky.Person@Example.com"
NAME = "Leaky McLeakface"


@post("/echo")
async def echo(data: JSONBody[dict[str, str]]) -> Response[dict[str, str]]:
    return Response({"detail": f"bad e-mail {data['email']}"}, status_code=422)


async def test_planted_leaks_are_found_in_every_channel(
    client: httpx.AsyncClient, auth: dict[str, str], request: pytest.FixtureRequest
) -> None:
    watch = request.node.stash[_WATCH]
    created = await client.post("/v1/subjects", json={"email": EMAIL, "profile": {"name": NAME}}, headers=auth)
    assert created.status_code == 201
    assert {EMAIL, "leaky.person@example.com", NAME} <= MARKERS
    assert leaks(watch, MARKERS) == []  # the real service said nothing personal

    structlog.get_logger("privacy_service.planted").info("planted", who="leaky.person@example.com")
    logging.getLogger("privacy_service.planted").info("planted %s", NAME)
    transport = httpx.ASGITransport(app=Litestar([echo]))
    async with httpx.AsyncClient(transport=transport, base_url="http://echo") as echoing:
        assert (await echoing.post("/echo", json={"email": EMAIL})).status_code == 422

    found = leaks(watch, MARKERS)
    assert len(found) == 3, found
    assert [line.split(":", 1)[0] for line in found] == ["structlog", "logging", "422 body of POST /echo"]
    watch.lines.clear()  # planted on purpose: the check after teardown must not fail this test

"""The pool survives the server closing its connections (a restart, a failover, an admin's kill).

Pooled connections are checked for liveness without a round trip (asyncpg notices a closed socket
as it happens); a dead one is replaced at checkout, so the next request succeeds instead of failing.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text

from privacy_service.app import create_app
from privacy_service.runtime import Runtime, build_runtime
from privacy_service.subjects.service import SubjectService
from privacy_service.web.portal import TOKEN_COOKIE
from tests.conftest import _dsn

pytestmark = pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])


async def _terminate_service_connections(runtime: Runtime) -> int:
    """What a server restart does to the service: every backend it holds is closed by the server."""
    admin = await asyncpg.connect(_dsn(runtime.settings.database_url))
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'privacy-service' AND datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await admin.close()


async def test_requests_succeed_after_the_server_closed_every_pooled_connection(
    runtime: Runtime, client: AsyncClient, auth: dict[str, str]
) -> None:
    # Several concurrent requests leave several idle connections in the pool.
    created = await asyncio.gather(
        *(client.post("/v1/subjects", json={"email": f"reconnect{i}@example.com"}, headers=auth) for i in range(4))
    )
    assert {response.status_code for response in created} == {201}
    pooled_before = runtime.db.engine.pool.checkedin()  # type: ignore[attr-defined]
    assert pooled_before >= 1

    assert await _terminate_service_connections(runtime) >= pooled_before
    await asyncio.sleep(0.2)  # the close reaches the idle sockets

    answers = await asyncio.gather(
        *(client.get(f"/v1/subjects/{response.json()['id']}", headers=auth) for response in created)
    )
    assert [answer.status_code for answer in answers] == [200] * 4
    assert [answer.json()["email"] for answer in answers] == [f"reconnect{i}@example.com" for i in range(4)]


async def test_an_unreachable_database_answers_503_with_retry_after(runtime: Runtime, auth: dict[str, str]) -> None:
    # The same service, its database gone (a port nothing listens on): retryable, not an internal error.
    gone = build_runtime(
        runtime.settings.model_copy(update={"database_url": "postgresql+asyncpg://postgres@127.0.0.1:1/test"})
    )
    try:
        transport = ASGITransport(app=create_app(runtime=gone))
        async with AsyncClient(transport=transport, base_url="http://testserver") as client:
            answers = [
                await client.post("/v1/requests", json={"type": "access", "identity": {"email": "down@example.com"}}),
                await client.get("/v1/subjects/00000000-0000-0000-0000-000000000000", headers=auth),
            ]
            # A portal page says so as a page, in the visitor's language, never as JSON.
            client.cookies.set(TOKEN_COOKIE, "psr_" + "x" * 40, path="/privacy")
            page = await client.get(f"/privacy/requests/{uuid.uuid4()}", headers={"Accept-Language": "zh"})
    finally:
        await gone.close()
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "2"
        assert answer.headers["content-type"].startswith("application/problem+json")
        body = answer.json()
        assert body["type"] == "/problems/unavailable"
        assert "down@example.com" not in answer.text
        assert "127.0.0.1" not in answer.text
        assert "Traceback" not in answer.text
    assert page.status_code == 503, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["retry-after"] == "2"
    assert "抱歉" in page.text


async def test_a_connection_lost_mid_request_answers_503_and_the_next_request_succeeds(
    runtime: Runtime, client: AsyncClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await client.post("/v1/subjects", json={"email": "midway@example.com"}, headers=auth)
    assert created.status_code == 201, created.text
    original = SubjectService.read

    async def read_then_lose_the_connection(self: SubjectService, *args: Any, **kwargs: Any) -> Any:
        # What a server restart does in the middle of a transaction: the backend goes away.
        await self.session.exec(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SubjectService, "read", read_then_lose_the_connection)
    lost = await client.get(f"/v1/subjects/{created.json()['id']}", headers=auth)
    assert lost.status_code == 503, lost.text
    assert lost.headers["retry-after"] == "2"
    assert lost.json()["type"] == "/problems/unavailable"
    assert "midway@example.com" not in lost.text
    monkeypatch.setattr(SubjectService, "read", original)
    again = await client.get(f"/v1/subjects/{created.json()['id']}", headers=auth)
    assert again.status_code == 200, again.text

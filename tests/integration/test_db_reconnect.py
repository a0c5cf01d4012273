"""The pool survives the server closing its connections (a restart, a failover, an admin's kill).

Pooled connections are checked for liveness without a round trip (asyncpg notices a closed socket
as it happens); a dead one is replaced at checkout, so the next request succeeds instead of failing.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from httpx import AsyncClient

from privacy_service.runtime import Runtime
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

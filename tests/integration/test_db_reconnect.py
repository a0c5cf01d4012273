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
from sqlalchemy import event, text

from privacy_service.app import create_app
from privacy_service.runtime import Runtime, build_runtime
from privacy_service.subjects.service import SubjectService
from privacy_service.web.portal import TOKEN_COOKIE
from tests.conftest import _dsn, table_counts

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


async def _on_request_insert(runtime: Runtime, body: str | None) -> None:
    """Install (or with None remove) a trigger running ``body`` before each INSERT into dsr_requests."""
    admin = await asyncpg.connect(_dsn(runtime.settings.database_url))
    try:
        if body is None:
            await admin.execute("DROP TRIGGER test_on_insert ON dsr_requests; DROP FUNCTION test_on_insert()")
            return
        await admin.execute(
            f"CREATE FUNCTION test_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body}; RETURN NEW; END $$;"
            "CREATE TRIGGER test_on_insert BEFORE INSERT ON dsr_requests "
            "FOR EACH ROW EXECUTE FUNCTION test_on_insert()"
        )
    finally:
        await admin.close()


async def _stored(runtime: Runtime) -> dict[str, int]:
    """What an intake writes: the request, its transitions, its code mail, its audit event and its key."""
    return await table_counts(
        runtime, ["dsr_requests", "dsr_transitions", "outbox_messages", "audit_events", "keystore.data_keys"]
    )


INTAKE = {"type": "access", "identity": {"email": "lost.midway@example.com"}}


async def test_an_intake_whose_connection_is_lost_mid_write_answers_503_and_stores_nothing(
    runtime: Runtime, client: AsyncClient
) -> None:
    # Intake's one statement runs on the driver directly (Database._run_on_driver). The server going
    # away in the middle of it is the same 503 as anywhere else, not an internal error; the statement
    # dies with the connection (autocommit: all of it or nothing), the dead connection is not handed
    # out again, and the next intake succeeds.
    before = await _stored(runtime)
    await _on_request_insert(runtime, "PERFORM pg_terminate_backend(pg_backend_pid())")
    try:
        lost = await client.post("/v1/requests", json=INTAKE)
    finally:
        await _on_request_insert(runtime, None)
    assert lost.status_code == 503, lost.text
    assert lost.headers["retry-after"] == "2"
    assert lost.json()["type"] == "/problems/unavailable"
    assert "lost.midway" not in lost.text
    assert await _stored(runtime) == before
    assert runtime.db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    again = await client.post("/v1/requests", json=INTAKE)
    assert again.status_code == 202, again.text


async def test_an_intake_cancelled_mid_write_leaves_no_connection_behind(runtime: Runtime, client: AsyncClient) -> None:
    # A client gone or a shutdown cancels the handler while its statement runs: the connection, in
    # an unknown state, is discarded (not returned to the pool for the next request to trip on), and
    # the statement is all or nothing.
    before = await _stored(runtime)
    discarded: list[BaseException | None] = []

    def invalidated(_dbapi: Any, _record: Any, exc: BaseException | None) -> None:
        discarded.append(exc)

    pool = runtime.db.engine.sync_engine.pool
    event.listen(pool, "invalidate", invalidated)
    await _on_request_insert(runtime, "PERFORM pg_sleep(1)")
    try:
        task = asyncio.ensure_future(client.post("/v1/requests", json=INTAKE))
        admin = await asyncpg.connect(_dsn(runtime.settings.database_url))
        try:
            for _ in range(100):  # until the INSERT is running on the server (in its trigger's sleep)
                running = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'privacy-service' "
                    "AND state = 'active' AND wait_event = 'PgSleep'"
                )
                if running:
                    break
                await asyncio.sleep(0.02)
            assert running == 1
        finally:
            await admin.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
        assert discarded == [None]  # closed, not handed back (asyncpg would still be cancelling on it)
        # At once, on the pool the cancelled statement's connection would have gone back to.
        again = await client.post("/v1/requests", json={"type": "erase", "identity": {"email": "next@example.com"}})
        assert again.status_code == 202, again.text
        await asyncio.sleep(1.2)  # whatever the server still does with the cancelled statement, it is done
    finally:
        event.remove(pool, "invalidate", invalidated)
        await _on_request_insert(runtime, None)
    after = await _stored(runtime)
    grown = {name: after[name] - before[name] for name in before}
    one = {"dsr_requests": 1, "dsr_transitions": 2, "outbox_messages": 1, "audit_events": 1, "keystore.data_keys": 1}
    # The next request's rows, and the cancelled one's all or not at all (with its two transitions,
    # its code mail, its audit event and its key).
    assert grown in (one, {name: 2 * count for name, count in one.items()}), grown

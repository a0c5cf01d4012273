"""A connection may not reach the service's own database, nor a link-local / cloud metadata address.

Abuse as a ``systems:manage`` key holder tries it (the review's bypasses): the service's own PostgreSQL
database named through another spelling of its host (``localhost``, ``127.0.0.1``, ``[::1]``,
``localhost.``, ``127.0.0.2``, ``[::ffff:127.0.0.1]``), through another port (a TCP relay to the same
server: only the server's identity gives it away, at test time and on the worker's first connection),
a metadata address, a control character hidden behind percent-encoding; and the optional
``connections_allowed_networks``. Each is a 422 problem that echoes nothing and stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from privacy_service.audit.service import Actor
from privacy_service.config import Settings
from privacy_service.connections.runner import run_connection_tasks
from privacy_service.connections.schemas import ConnectionCreate
from privacy_service.connections.service import ConnectionService
from privacy_service.connections.targets import TargetRefused
from privacy_service.runtime import Runtime
from tests.api.connections_support import CANARY_PASSWORD, make_tables, mariadb_target, policy_dir, postgres_target
from tests.api.dsr_support import assert_no_leak, assert_problem, fresh_settings, submit_and_verify
from tests.conftest import MailSink
from tests.connections import fixture_db
from tests.connections.execution_support import DATASETS, add_connection, make_customer_a, tasks

__all__ = ["mariadb_target", "postgres_target"]  # fixtures, used by name below
pytestmark = pytest.mark.postgres


@pytest.fixture
def backend() -> str:
    return "postgres"  # the service's own database is on the same server as the targets: 127.0.0.1:5432


@pytest.fixture
async def settings(make_settings: Any, backend: str, tmp_path: Path) -> Settings:
    policies = policy_dir(tmp_path)  # c2_shop, and the execution tests' wallet_ops for the runner
    shutil.copy(DATASETS / "wallet_ops.yml", policies / "datasets" / "wallet_ops.yml")
    return await fresh_settings(make_settings, backend, policy_dir=policies, connections_test_timeout_seconds=2.0)


def body(url: str, name: str = "shop") -> dict[str, Any]:
    return {"name": name, "dataset": "c2_shop", "url": url}


def own_url(settings: Settings, host: str, port: int | None = None) -> str:
    """The service's own database, reached under another host spelling (or port), with the canary password."""
    url = make_url(settings.database_url)
    return (
        url.set(drivername="postgresql", host=host, port=port or url.port or 5432, password=CANARY_PASSWORD)
        .render_as_string(hide_password=False)
        .replace(f"@{host}:", f"@[{host}]:" if ":" in host else f"@{host}:")
    )


async def refused(client: httpx.AsyncClient, auth: dict[str, str], url: str, says: str) -> None:
    answer = await client.post("/v1/connections", json=body(url), headers=auth)
    problem = assert_problem(answer, 422, "invalid-input")
    assert says in problem["detail"], problem
    assert_no_leak(answer, CANARY_PASSWORD, url)
    assert (await client.get("/v1/connections", headers=auth)).json()["items"] == []


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "LOCALHOST", "localhost.", "::1", "127.0.0.2", "::ffff:127.0.0.1", "0.0.0.0"],  # noqa: S104
)
async def test_the_own_database_under_another_host_name_is_refused(
    client: httpx.AsyncClient, settings: Settings, auth: dict[str, str], host: str
) -> None:
    assert make_url(settings.database_url).host == "127.0.0.1"  # the scenario: the vault is on loopback
    await refused(client, auth, own_url(settings, host), "service's own database")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://u:Canary-Pw-4417-zq@169.254.169.254:5432/x", "link-local or cloud metadata"),
        ("postgresql://u:Canary-Pw-4417-zq@169.254.10.1/x", "link-local or cloud metadata"),
        ("mysql://u:Canary-Pw-4417-zq@[fe80::1]:3306/x", "link-local or cloud metadata"),
        ("mysql://u:Canary-Pw-4417-zq@[::ffff:169.254.169.254]:3306/x", "link-local or cloud metadata"),
        ("postgresql://u:Canary-Pw-4417-zq@metadata.google.internal/x", "link-local or cloud metadata"),
        ("postgresql://u:Canary-Pw-4417-zq@127.0.0.1/db%00x", "must be a database URL"),
        ("postgresql://u:Canary-Pw-4417-zq@127.0.0.1/db%0Ax", "must be a database URL"),
        ("postgresql://u%00x:Canary-Pw-4417-zq@127.0.0.1/db", "must be a database URL"),
        ("mysql://u:Canary-Pw-4417-zq@127.0.0.1/te%1Bst", "must be a database URL"),
    ],
)
async def test_metadata_addresses_and_decoded_control_characters_are_refused(
    client: httpx.AsyncClient, auth: dict[str, str], url: str, says: str
) -> None:
    await refused(client, auth, url, says)


@contextlib.asynccontextmanager
async def relay(port: int) -> AsyncIterator[int]:
    """A TCP relay on a new loopback port to 127.0.0.1:``port``: the same server under another address."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    tasks: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        for task in (pipe(reader, up_writer), pipe(up_reader, writer)):
            tasks.add(asyncio.create_task(task))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_own_database_behind_another_port_is_refused_at_test_time_and_on_connect(
    client: httpx.AsyncClient, runtime: Runtime, settings: Settings, auth: dict[str, str]
) -> None:
    """Registration cannot tell (another port); the server's identity does, before any statement runs."""
    own = make_url(settings.database_url)
    async with relay(own.port or 5432) as port:
        url = own_url(settings, "127.0.0.1", port)
        created = await client.post("/v1/connections", json=body(url), headers=auth)
        assert created.status_code == 201, created.text
        connection_id = created.json()["id"]
        answer = await client.post(f"/v1/connections/{connection_id}/test", headers=auth)
        assert "service's own database" in assert_problem(answer, 422, "invalid-input")["detail"]
        assert_no_leak(answer, CANARY_PASSWORD, url)
        # The worker's engine: every new connection is checked the same way.
        async with runtime.db.transaction() as session:
            service = ConnectionService(session, runtime.keys, runtime.clock, runtime.settings, Actor("operator", "t"))
            engine = await service.engine_for(await service.row(connection_id))
        with pytest.raises(TargetRefused) as caught:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        assert caught.value.reason == "own_database"
        await engine.dispose()


async def test_the_worker_marks_a_task_on_the_own_database_needs_operator_at_once(
    client: httpx.AsyncClient, runtime: Runtime, settings: Settings, auth: dict[str, str], mail: MailSink
) -> None:
    """A connection registered before these checks (or through a relay): its task is never run there."""
    await make_customer_a(client, auth)
    own = make_url(settings.database_url)
    async with relay(own.port or 5432) as port:
        url = own_url(settings, "127.0.0.1", port)
        await add_connection(runtime, url)
        request_id, verified = await submit_and_verify(client, runtime, mail, fixture_db.A_EMAIL, "access")
        assert verified["status"] == "processing"
        result = await run_connection_tasks(runtime)
    assert (result.done, result.retried, result.needs_operator) == (0, 0, 1)
    [task] = await tasks(runtime)
    assert task["status"] == "needs_operator"
    assert task["attempts"] == 1  # permanent: no retry against the vault
    assert task["last_problem"].startswith("the connection reaches the service's own database")
    for value in (CANARY_PASSWORD, url, fixture_db.A_EMAIL):
        assert value not in repr(task)
    view = await client.get(f"/v1/requests/{request_id}", headers=auth)
    assert view.json()["status"] == "processing"
    assert_no_leak(view, CANARY_PASSWORD, url)


async def test_another_database_on_the_same_server_is_accepted_and_tested(
    client: httpx.AsyncClient, settings: Settings, auth: dict[str, str], postgres_target: str
) -> None:
    """Same server, same host spelling, another database name: a connection like any other."""
    await make_tables(postgres_target)
    created = await client.post("/v1/connections", json=body(postgres_target), headers=auth)
    assert created.status_code == 201, created.text
    answer = await client.post(f"/v1/connections/{created.json()['id']}/test", headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True, answer.text


async def test_the_allow_list_is_honoured(make_settings: Any, tmp_path: Path, postgres_target: str) -> None:
    await make_tables(postgres_target)
    for networks, allowed in ((["10.0.0.0/8", "fd00::/8"], False), (["127.0.0.0/8"], True)):
        settings = await fresh_settings(
            make_settings, "postgres", policy_dir=policy_dir(tmp_path), connections_allowed_networks=networks
        )
        from privacy_service.runtime import build_runtime

        runtime = build_runtime(settings)
        try:
            async with runtime.db.transaction() as session:
                service = ConnectionService(session, runtime.keys, runtime.clock, settings, Actor("operator", "t"))
                create = ConnectionCreate(name="shop", dataset="c2_shop", url=postgres_target)
                if not allowed:
                    with pytest.raises(TargetRefused) as caught:
                        await service.add(create)
                    assert "connections_allowed_networks" in str(caught.value)
                    assert CANARY_PASSWORD not in str(caught.value)
                    continue
                created = await service.add(create)
                assert (await service.test(created.id)).ok
        finally:
            await runtime.close()


@pytest.mark.parametrize("url_fixture", ["postgres_target", "mariadb_target"])
async def test_each_connection_is_checked_where_it_really_went(
    url_fixture: str, request: pytest.FixtureRequest
) -> None:
    """The address a connection's socket reached goes through the address check (a name resolving
    elsewhere by then, DNS rebinding, changes nothing): here 127.0.0.1 outside the allowed networks."""
    import ipaddress

    from privacy_service.connections.engines import create_engine
    from privacy_service.connections.targets import guard

    url = request.getfixturevalue(url_fixture)
    for networks, allowed in (
        ([ipaddress.ip_network("10.0.0.0/8")], False),
        ([ipaddress.ip_network("127.0.0.0/8")], True),
    ):
        engine = create_engine(url, pool_size=1, timeout=2.0)
        guard(engine, None, networks)
        try:
            if allowed:
                async with engine.connect() as connection:
                    assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
                continue
            with pytest.raises(TargetRefused) as caught:
                async with engine.connect():
                    pass
            assert caught.value.reason == "target_address"
            assert "127.0.0.1" not in str(caught.value)
        finally:
            await engine.dispose()


def test_server_identity_without_pg_control_system_falls_back_to_start_time_and_port() -> None:
    """A user who may not call pg_control_system(): the postmaster's start time and port identify it."""
    from privacy_service.connections.targets import ServerIdentity

    own = ServerIdentity("vault", "7715483713684412556", "2026-12-04 16:17:19.707297+00", "5432")
    assert ServerIdentity("vault", None, own.started, own.port).same_as(own)
    assert own.same_as(ServerIdentity("vault", None, own.started, own.port))
    assert not ServerIdentity("other", None, own.started, own.port).same_as(own)  # another database
    assert not ServerIdentity("vault", None, "2026-12-01 08:00:00+00", own.port).same_as(own)  # another server
    assert ServerIdentity("vault", own.system_id, "2026-12-05 00:00:00+00", "6432").same_as(own)  # a replica
    assert not ServerIdentity("vault", "1", own.started, own.port).same_as(own)  # another cluster

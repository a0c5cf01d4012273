"""The connection registry over HTTP (/v1/connections, scope systems:manage), on SQLite and PostgreSQL.

Abuse first: a key without systems:manage is refused on every route before its body is read; bad
URLs, unknown fields, unknown datasets and duplicate names are problem+json 4xx that change nothing;
a database that is missing, a directory or does not answer is a recorded failed test, never a 500;
the URL and its password appear in no response, log line, audit entry or stored column.
Then the real thing: `test` against SQLite, PostgreSQL and MariaDB tables, and a missing column found.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from privacy_service.config import Settings
from privacy_service.operators.service import SCOPES
from privacy_service.runtime import Runtime
from tests.api.connections_support import (
    CANARY_PASSWORD,
    CANARY_USER,
    make_tables,
    mariadb_target,
    policy_dir,
    postgres_target,
    sqlite_target,
)
from tests.api.dsr_support import assert_no_leak, assert_problem, fresh_settings
from tests.conftest import make_operator_key
from tests.conftest_logcheck import _WATCH, leaks, register

__all__ = ["mariadb_target", "postgres_target"]  # fixtures used by name below

# A blackhole address (TEST-NET-1 is never routed): the connection attempt hangs or fails fast.
SILENT_HOST = "192.0.2.1"
SECRETS = (CANARY_PASSWORD, f"{CANARY_USER}:{CANARY_PASSWORD}")
# The URL is no personal-data member the log check harvests by itself: every test here (and every API test
# after them) fails if the password shows up in a log line or an error body.
register(CANARY_PASSWORD)


@pytest.fixture
async def settings(make_settings: Any, backend: str, tmp_path: Path) -> Settings:
    return await fresh_settings(
        make_settings, backend, policy_dir=policy_dir(tmp_path), connections_test_timeout_seconds=1.0
    )


def body(url: str, name: str = "shop", **extra: Any) -> dict[str, Any]:
    return {"name": name, "dataset": "c2_shop", "url": url, **extra}


async def add(client: httpx.AsyncClient, auth: dict[str, str], url: str, name: str = "shop") -> dict[str, Any]:
    created = await client.post("/v1/connections", json=body(url, name), headers=auth)
    assert created.status_code == 201, created.text
    assert_no_leak(created, *SECRETS)
    result: dict[str, Any] = created.json()
    return result


async def stored(runtime: Runtime) -> list[str]:
    """Every stored column of connections and audit_events, as text: the secrets must be in none."""
    async with runtime.db.engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM connections"))).all()
        audit = (await connection.execute(text("SELECT action, detail FROM audit_events"))).all()
    return [repr(tuple(row)) for row in [*rows, *audit]]


# -- abuse -----------------------------------------------------------------------------------------


async def test_every_route_refuses_a_key_without_systems_manage(
    client: httpx.AsyncClient, runtime: Runtime, auth: dict[str, str], tmp_path: Path
) -> None:
    existing = await add(client, auth, f"sqlite:///{sqlite_target(tmp_path)}")
    target = f"/v1/connections/{existing['id']}"
    routes = [
        ("GET", "/v1/connections", None),
        ("POST", "/v1/connections", body("sqlite:////tmp/none.db", "other")),
        ("POST", "/v1/connections", {"not": "a connection"}),  # a bad body is still a 403, not a 400
        ("GET", target, None),
        ("DELETE", target, None),
        ("POST", f"{target}/test", None),
    ]
    for scope in (s for s in SCOPES if s != "systems:manage"):
        narrow = {"Authorization": f"Bearer {await make_operator_key(runtime, frozenset({scope}))}"}
        for method, path, payload in routes:
            answer = await client.request(method, path, json=payload, headers=narrow)
            assert_problem(answer, 403, "forbidden")
    for method, path, payload in routes:
        assert (await client.request(method, path, json=payload)).status_code == 401
    listed = (await client.get("/v1/connections", headers=auth)).json()["items"]
    assert [item["name"] for item in listed] == ["shop"]
    assert listed[0]["last_test_at"] is None  # nobody without the scope ran a test


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("oracle://scott:Canary-Pw-4417-zq@db.example/orcl", "unsupported database"),
        ("mysql+pymysql://root:Canary-Pw-4417-zq@127.0.0.1/test", "unsupported database"),
        ("https://user:Canary-Pw-4417-zq@example.com/db", "unsupported database"),
        ("not a url at all, Canary-Pw-4417-zq", "must be a database URL"),
        ("postgresql://u:Canary-Pw-4417-zq@h:notaport/db", "must be a database URL"),
        ("postgresql://u:Canary-Pw-4417-zq@127.0.0.1:5432/", "names a host and a database"),
        ("postgresql://u:Canary-Pw-4417-zq@/db?host=/var/run/postgresql", "query options"),
        ("mysql://u:Canary-Pw-4417-zq@127.0.0.1/test?local_infile=1", "query options"),
        ("sqlite:///relative/shop.db", "absolute path"),
        ("sqlite:///:memory:", "absolute path"),
        ("sqlite:////etc/../etc/passwd", "absolute path"),
        ("sqlite:////tmp", "directory"),
        ("sqlite:////tmp/" + "a" * 300 + "/shop.db", "cannot name a file"),
        ("sqlite:////tmp/sh\x00op.db", "must be a database URL"),
        ("postgresql://u:Canary-Pw-4417-zq@db\x00.example/shop", "must be a database URL"),
        ("postgresql://u:Canary-Pw-4417-zq@db.example:99999/shop", "must be a database URL"),
        ("postgresql://u:Canary-Pw-4417-zq@db.example/shop?ssl=nonsense", "ssl is one of"),
        ("postgresql://u:Canary-Pw-4417-zq@db.example/shop?ssl=require&ssl=disable", "one short value"),
        ("mysql://u:Canary-Pw-4417-zq@127.0.0.1/test?charset=nonsense", "charset"),
    ],
)
async def test_a_refused_url_is_422_without_echo_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, auth: dict[str, str], url: str, says: str
) -> None:
    answer = await client.post("/v1/connections", json=body(url), headers=auth)
    problem = assert_problem(answer, 422, "invalid-input")
    assert says in problem["detail"]
    assert_no_leak(answer, CANARY_PASSWORD, url)
    assert (await client.get("/v1/connections", headers=auth)).json()["items"] == []
    assert not any(CANARY_PASSWORD in line for line in await stored(runtime))


async def test_the_service_own_database_and_key_files_are_refused(
    client: httpx.AsyncClient, settings: Settings, auth: dict[str, str]
) -> None:
    """An erasure run against the vault itself would mask the service's own tables."""
    own = [settings.keyring_path.resolve(), settings.resolved_keystore_path.resolve()]
    if settings.sqlite_path is not None:
        own.append(settings.sqlite_path.resolve())
        urls = [f"sqlite:///{path}" for path in own]
    else:
        urls = [f"sqlite:///{path}" for path in own] + [settings.database_url]
    for url in urls:
        answer = await client.post("/v1/connections", json=body(url), headers=auth)
        assert "own" in assert_problem(answer, 422, "invalid-input")["detail"], url
    assert (await client.get("/v1/connections", headers=auth)).json()["items"] == []


async def test_unknown_fields_bad_names_unknown_datasets_and_duplicates(
    client: httpx.AsyncClient, auth: dict[str, str], tmp_path: Path
) -> None:
    url = f"sqlite:///{sqlite_target(tmp_path)}"
    unknown_field = await client.post("/v1/connections", json=body(url, password=CANARY_PASSWORD), headers=auth)
    assert_problem(unknown_field, 400, "validation-error")
    too_long = await client.post("/v1/connections", json=body(f"{url}?x={CANARY_PASSWORD}{'x' * 2000}"), headers=auth)
    assert_problem(too_long, 400, "validation-error")
    assert_no_leak(unknown_field, CANARY_PASSWORD)
    assert_no_leak(too_long, CANARY_PASSWORD)
    for name in ("Shop", "-shop", "a" * 65, "shop;drop", ""):
        answer = await client.post("/v1/connections", json=body(url, name), headers=auth)
        assert answer.status_code == 400, (name, answer.text)
    for concurrency in (0, 33, 2.5, None):
        answer = await client.post("/v1/connections", json=body(url, max_concurrency=concurrency), headers=auth)
        assert answer.status_code == 400, answer.text
    unknown = await client.post("/v1/connections", json={**body(url), "dataset": "no_such_dataset"}, headers=auth)
    assert "dataset" in assert_problem(unknown, 422, "invalid-input")["detail"]
    await add(client, auth, url)
    duplicate = await client.post("/v1/connections", json=body(url), headers=auth)
    assert_problem(duplicate, 409, "conflict")
    assert len((await client.get("/v1/connections", headers=auth)).json()["items"]) == 1
    assert_problem(
        await client.get(f"/v1/connections/{'0' * 8}-0000-4000-8000-{'0' * 12}", headers=auth), 404, "not-found"
    )


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word (a hung server, a stuck proxy)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://{auth}@127.0.0.1:{silent}/shop", "timeout: the database did not answer within 1 s"),
        ("mysql://{auth}@127.0.0.1:{silent}/shop", "timeout: the database did not answer within 1 s"),
        ("postgresql://{auth}@" + SILENT_HOST + ":5432/shop", ("timeout", "unreachable")),
        ("postgresql://{auth}@127.0.0.1:1/shop", "unreachable: the connection was refused"),
        ("mysql://{auth}@host.invalid:3306/shop", "unreachable: the host name does not resolve"),
    ],
)
async def test_a_database_that_does_not_answer_is_a_quick_recorded_failure(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    request: pytest.FixtureRequest,
    url: str,
    says: str | tuple[str, ...],
) -> None:
    async with silent_server() as silent:
        target = url.format(auth=f"{CANARY_USER}:{CANARY_PASSWORD}", silent=silent)
        created = await add(client, auth, target)
        started = time.perf_counter()
        answer = await client.post(f"/v1/connections/{created['id']}/test", headers=auth)
        assert time.perf_counter() - started < 3  # the 1 s budget, plus the service's own work
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["ok"] is False
    assert result["problem"].startswith(says), result
    assert_no_leak(answer, *SECRETS, CANARY_USER)
    shown = (await client.get(f"/v1/connections/{created['id']}", headers=auth)).json()
    assert (shown["last_test_ok"], shown["last_test_problem"]) == (False, result["problem"])
    assert leaks(request.node.stash[_WATCH], set(SECRETS)) == []


async def test_a_missing_database_on_a_live_server_is_named(
    client: httpx.AsyncClient, auth: dict[str, str], postgres_target: str
) -> None:
    missing = postgres_target.rsplit("/", 1)[0] + "/c2_no_such_database"
    created = await add(client, auth, missing)
    result = (await client.post(f"/v1/connections/{created['id']}/test", headers=auth)).json()
    assert (result["ok"], result["problem"]) == (False, "the database named in the URL does not exist")


async def test_a_missing_file_or_a_directory_at_test_time_is_a_recorded_failure(
    client: httpx.AsyncClient, auth: dict[str, str], tmp_path: Path
) -> None:
    path = sqlite_target(tmp_path)
    created = await add(client, auth, f"sqlite:///{path}")
    path.unlink()
    missing = (await client.post(f"/v1/connections/{created['id']}/test", headers=auth)).json()
    assert (missing["ok"], missing["problem"]) == (False, "the sqlite database file cannot be opened "
                                                           "(missing, a directory or not readable)")  # fmt: skip
    assert not path.exists()  # the test never creates an empty database in its place
    path.mkdir()
    directory = (await client.post(f"/v1/connections/{created['id']}/test", headers=auth)).json()
    assert (directory["ok"], directory["problem"]) == (False, missing["problem"])


# -- the registry on real databases ---------------------------------------------------------------


async def _lifecycle(
    client: httpx.AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    url: str,
    request: pytest.FixtureRequest,
    *,
    drop_total: Any,
) -> None:
    created = await add(client, auth, url)
    assert set(created) >= {"id", "name", "dataset", "dialect", "host", "port", "database", "max_concurrency"}
    assert created["max_concurrency"] == 2
    tested = await client.post(f"/v1/connections/{created['id']}/test", headers=auth)
    assert tested.status_code == 200, tested.text
    result = tested.json()
    assert (result["ok"], result["problem"], result["missing"], result["collections"]) == (True, None, [], 2), result

    await drop_total()
    failed = (await client.post(f"/v1/connections/{created['id']}/test", headers=auth)).json()
    assert (failed["ok"], failed["missing"]) == (False, ["c2_orders.total"]), failed
    listed = await client.get("/v1/connections", headers=auth)
    assert listed.json()["items"][0]["last_test_problem"].endswith(": c2_orders.total")

    removed = await client.delete(f"/v1/connections/{created['id']}", headers=auth)
    assert removed.status_code == 200, removed.text
    assert_problem(await client.post(f"/v1/connections/{created['id']}/test", headers=auth), 410, "gone")
    assert_problem(await client.delete(f"/v1/connections/{created['id']}", headers=auth), 410, "gone")
    assert (await client.get("/v1/connections", headers=auth)).json()["items"] == []
    shown = (await client.get("/v1/connections?include_removed=true", headers=auth)).json()["items"]
    assert [(item["name"], item["host"], item["removed_at"] is not None) for item in shown] == [("shop", None, True)]
    again = await add(client, auth, url)  # the name is free once removed
    assert again["id"] != created["id"]

    for answer in (tested, listed, removed):
        assert_no_leak(answer, *SECRETS)
    assert not any(secret in line for line in await stored(runtime) for secret in SECRETS)
    query = text("SELECT action, outcome FROM audit_events WHERE action LIKE 'connections.%' ORDER BY id")
    async with runtime.db.engine.connect() as connection:
        actions = (await connection.execute(query)).all()
    assert [tuple(row) for row in actions] == [
        ("connections.added", "ok"),
        ("connections.tested", "ok"),
        ("connections.tested", "failed"),
        ("connections.removed", "ok"),
        ("connections.added", "ok"),
    ]
    assert leaks(request.node.stash[_WATCH], set(SECRETS)) == []


async def test_sqlite_target(
    client: httpx.AsyncClient, runtime: Runtime, auth: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path = sqlite_target(tmp_path)

    async def drop_total() -> None:
        await make_tables(f"sqlite+aiosqlite:///{path}", with_total=False)

    created_url = f"sqlite:///{path}"
    await _lifecycle(client, runtime, auth, created_url, request, drop_total=drop_total)


async def test_postgres_target(
    client: httpx.AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    postgres_target: str,
    request: pytest.FixtureRequest,
) -> None:
    await make_tables(postgres_target)

    async def drop_total() -> None:
        await make_tables(postgres_target, with_total=False)

    plain = postgres_target.replace("postgresql+asyncpg://", "postgresql://", 1)
    await _lifecycle(client, runtime, auth, plain, request, drop_total=drop_total)


async def test_mariadb_target(
    client: httpx.AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mariadb_target: str,
    request: pytest.FixtureRequest,
) -> None:
    await make_tables(mariadb_target)

    async def drop_total() -> None:
        await make_tables(mariadb_target, with_total=False)

    try:
        await _lifecycle(client, runtime, auth, mariadb_target, request, drop_total=drop_total)
        # The password really is used: a wrong one is refused by the server, and said so without echo.
        wrong = mariadb_target.replace(CANARY_PASSWORD, "Wrong-Pw-0000")
        created = await add(client, auth, wrong, name="wrong-password")
        answer = await client.post(f"/v1/connections/{created['id']}/test", headers=auth)
        assert answer.json()["problem"].startswith("authentication failed"), answer.text
        assert_no_leak(answer, "Wrong-Pw-0000", CANARY_USER)
    finally:
        await asyncio.wait_for(_drop(mariadb_target), 10)


async def _drop(url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from tests.api.connections_support import tables

    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(tables().drop_all)
    finally:
        await engine.dispose()


# -- what the execution side (tasks, worker) uses --------------------------------------------------


async def test_engine_for_is_one_engine_per_connection_and_ends_with_removal(
    runtime: Runtime, postgres_target: str
) -> None:
    from privacy_service.audit.service import Actor
    from privacy_service.connections.schemas import ConnectionCreate
    from privacy_service.connections.service import ConnectionService
    from privacy_service.errors import Gone

    await make_tables(postgres_target)
    async with runtime.db.transaction() as session:
        service = ConnectionService(session, runtime.keys, runtime.clock, runtime.settings, Actor("operator", "t"))
        created = await service.add(ConnectionCreate(name="shop", dataset="c2_shop", url=postgres_target))
        row = await service.row(created.id)
        assert CANARY_PASSWORD.encode() not in row.url_ct
        assert await service.open_url(row) == postgres_target
        engine = await service.engine_for(row)
        assert await service.engine_for(row) is engine
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM c2_orders"))).scalar_one() == 0
        await service.remove(created.id)
        with pytest.raises(Gone):
            await service.engine_for(row)
        with pytest.raises(Gone):
            await service.open_url(row)


async def test_closing_the_runtime_closes_the_connected_databases_pools(runtime: Runtime, tmp_path: Path) -> None:
    from privacy_service.audit.service import Actor
    from privacy_service.connections.engines import engines
    from privacy_service.connections.schemas import ConnectionCreate
    from privacy_service.connections.service import ConnectionService
    from privacy_service.runtime import build_runtime

    path = sqlite_target(tmp_path)
    own = build_runtime(runtime.settings)
    try:
        async with own.db.transaction() as session:
            service = ConnectionService(session, own.keys, own.clock, own.settings, Actor("operator", "t"))
            created = await service.add(ConnectionCreate(name="shop", dataset="c2_shop", url=f"sqlite:///{path}"))
            engine = await service.engine_for(await service.row(created.id))
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM c2_customers"))).scalar_one() == 0
        assert engines.get(created.id) is engine
    finally:
        await own.close()
    assert engines.get(created.id) is None

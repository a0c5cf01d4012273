"""Fixtures of the connection tests: the fixture database on SQLite, PostgreSQL and MariaDB.

Each test session creates its own database on each server (``conn_fx_<pid>_<hex>``), so the fixture
tables never meet the service's own tables in ``test`` nor a parallel test run, and drops it at the
end. Without a server the cases of that server skip, except under ``CI``, where they fail.

MariaDB: ``PRIVACY_TEST_MARIADB_URL`` (default ``mysql+aiomysql://root@127.0.0.1:3306/test``) names
the server and an existing database to connect to first. PostgreSQL: ``PRIVACY_TEST_POSTGRES_URL``
(see tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomysql
import asyncpg
import pytest
from fideslang.models import Dataset
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from privacy_service.connections.datasets import load_dataset_file
from tests.conftest import IN_CI, _dsn, _with_database, isolated
from tests.connections import fixture_db

DATASETS = Path(__file__).resolve().parent / "datasets"
MARIADB_URL = os.environ.get("PRIVACY_TEST_MARIADB_URL", "mysql+aiomysql://root@127.0.0.1:3306/test")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "mariadb"]


def session_database_name() -> str:
    return f"conn_fx_{os.getpid()}_{secrets.token_hex(3)}"


async def _mariadb_admin(url: str, sql: str) -> None:
    parsed = make_url(url)
    conn = await aiomysql.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        password=parsed.password or "",
        db=parsed.database or "test",
        connect_timeout=5,
    )
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql)
    finally:
        conn.close()


async def _postgres_admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(_dsn(url), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def mariadb_admin_url() -> str:
    try:
        isolated(asyncio.run, _mariadb_admin(MARIADB_URL, "SELECT 1"))
    except (OSError, aiomysql.Error, TimeoutError) as exc:
        message = f"MariaDB not reachable at PRIVACY_TEST_MARIADB_URL ({type(exc).__name__})"
        if IN_CI:
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    return MARIADB_URL


@pytest.fixture(scope="session")
def fixture_postgres_url(postgres_admin_url: str) -> Iterator[str]:
    name = session_database_name()
    isolated(asyncio.run, _postgres_admin(postgres_admin_url, f'CREATE DATABASE "{name}"'))
    yield _with_database(postgres_admin_url, name)
    isolated(asyncio.run, _postgres_admin(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def fixture_mariadb_url(mariadb_admin_url: str) -> Iterator[str]:
    name = session_database_name()
    isolated(asyncio.run, _mariadb_admin(mariadb_admin_url, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    yield _with_database(mariadb_admin_url, name)
    isolated(asyncio.run, _mariadb_admin(mariadb_admin_url, f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.fixture(scope="session")
def fixture_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('conn-fixture') / 'wallet_ops.db'}"


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> str:
    """Which database the fixture database lives on."""
    return str(request.param)


@pytest.fixture
def fixture_url(store: str, request: pytest.FixtureRequest) -> str:
    """The URL of this session's fixture database on ``store`` (not yet reset)."""
    return str(request.getfixturevalue(f"fixture_{store}_url"))


_engines: dict[str, AsyncEngine] = {}


@pytest.fixture(scope="session")
async def _engine_pool() -> AsyncIterator[dict[str, AsyncEngine]]:
    yield _engines
    for engine in _engines.values():
        await engine.dispose()
    _engines.clear()


@pytest.fixture
async def fixture_engine(fixture_url: str, _engine_pool: dict[str, AsyncEngine]) -> AsyncEngine:
    """An engine on the fixture database, its tables recreated with the fixture rows."""
    engine = _engine_pool.get(fixture_url)
    if engine is None:
        engine = _engine_pool[fixture_url] = create_async_engine(fixture_url)
    await fixture_db.reset(engine)
    return engine


@pytest.fixture(scope="session")
def wallet_ops() -> Dataset:
    (dataset,) = load_dataset_file(DATASETS / "wallet_ops.yml")
    return dataset


@pytest.fixture
async def fixture_sqlite(tmp_path: Path) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A fixture database of the test's own on SQLite (its URL for a connection, and an engine on it)."""
    path = tmp_path / "wallet_ops.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    await fixture_db.reset(engine)
    yield f"sqlite:///{path}", engine
    await engine.dispose()

"""Shared fixtures. Every database test runs on SQLite and on the real PostgreSQL server.

PostgreSQL: one database per test session (``ps_test_<pid>_<n>``), migrated once, emptied between
tests. Without a server the PostgreSQL cases skip with the reason shown, except under ``CI``, where
they fail: CI must exercise both databases.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller as SmtpController
from litestar import Litestar
from sqlalchemy import event, text

from privacy_service.app import create_app
from privacy_service.config import Settings
from privacy_service.crypto.keys import LocalKeyring
from privacy_service.migrations.runner import upgrade
from privacy_service.operators.service import SCOPES, create_operator
from privacy_service.runtime import Runtime, build_runtime

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.conftest_logcheck"]  # no test PII in logs or error bodies (tests/api)
POSTGRES_URL = os.environ.get("PRIVACY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
IN_CI = bool(os.environ.get("CI"))


def isolated(fn: Any, *args: Any) -> Any:
    """Run blocking set-up (which may call asyncio.run) in its own thread, outside the test loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


class MailSink:
    """A real SMTP server (aiosmtpd) in this process; tests read what the service really sent."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content or envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    def clear(self) -> None:
        self.messages.clear()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[MailSink, int]]:
    sink = MailSink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = SmtpController(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


@pytest.fixture
def mail(smtp_server: tuple[MailSink, int]) -> MailSink:
    sink, _ = smtp_server
    sink.clear()
    return sink


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    async def probe() -> None:
        conn = await asyncpg.connect(_dsn(POSTGRES_URL), timeout=5)
        await conn.close()

    try:
        isolated(asyncio.run, probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL not reachable at PRIVACY_TEST_POSTGRES_URL ({type(exc).__name__})"
        if IN_CI:
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def postgres_database(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test session; dropped afterwards."""
    name = f"ps_test_{os.getpid()}_{secrets.token_hex(3)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(_dsn(postgres_admin_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    isolated(asyncio.run, admin(f'CREATE DATABASE "{name}"'))
    url = _with_database(postgres_admin_url, name)
    isolated(upgrade, Settings(database_url=url, policy_dir=ROOT / "policies"))
    yield url
    isolated(asyncio.run, admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Migrated SQLite data + key-store files, copied for each test (migrating is the slow part)."""
    folder = tmp_path_factory.mktemp("sqlite-template")
    data, keys = folder / "privacy.db", folder / "privacy-keys.db"
    isolated(
        upgrade, Settings(database_url=f"sqlite+aiosqlite:///{data}", keystore_path=keys, policy_dir=ROOT / "policies")
    )
    return data, keys


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _empty_postgres(url: str) -> None:
    conn = await asyncpg.connect(_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN ('public', 'keystore') "
            "AND tablename NOT IN ('alembic_version', 'audit_head')"
        )
        if rows:
            tables = ", ".join(f'"{r["schemaname"]}"."{r["tablename"]}"' for r in rows)
            await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        await conn.execute("UPDATE audit_head SET seq = 0, hash = $1 WHERE id = 1", bytes(32))
    finally:
        await conn.close()


@pytest.fixture
def make_settings(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Settings for an empty, migrated database of the current backend; keyword overrides allowed."""

    def factory(**overrides: Any) -> Settings:
        _, smtp_port = request.getfixturevalue("smtp_server")
        base: dict[str, Any] = {
            "smtp_port": smtp_port,
            "keyring_path": tmp_path / "keyring.json",
            "policy_dir": ROOT / "policies",
            "log_level": "WARNING",
        }
        if backend == "sqlite":
            data, keys = request.getfixturevalue("sqlite_template")
            target = tmp_path / "privacy.db"
            if not target.exists():
                shutil.copy(data, target)
                shutil.copy(keys, tmp_path / "privacy-keys.db")
            base.update(database_url=f"sqlite+aiosqlite:///{target}", keystore_path=tmp_path / "privacy-keys.db")
        else:
            url = request.getfixturevalue("postgres_database")
            base.update(database_url=url)
        base.update(overrides)
        return Settings(**base)

    return factory


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    result: Settings = make_settings()
    if backend == "postgres":
        await _empty_postgres(result.database_url)
    return result


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = build_runtime(settings)
    yield rt
    await rt.close()


@pytest.fixture
def keyring(runtime: Runtime) -> LocalKeyring:
    assert isinstance(runtime.provider, LocalKeyring)
    return runtime.provider


@pytest.fixture
async def app(runtime: Runtime) -> Litestar:
    return create_app(runtime=runtime)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client running the app in the test's own event loop (shares the connection pool)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as test_client:
        yield test_client


async def make_operator_key(runtime: Runtime, scopes: frozenset[str] | None = None, name: str | None = None) -> str:
    async with runtime.db.transaction() as session:
        _, key = await create_operator(
            session,
            name=name or f"op-{uuid.uuid4().hex[:8]}",
            scopes=scopes if scopes is not None else frozenset(SCOPES),
            now=runtime.clock.now(),
        )
    return key


@pytest.fixture
async def operator_key(runtime: Runtime) -> str:
    return await make_operator_key(runtime)


@pytest.fixture
def auth(operator_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {operator_key}"}


@contextmanager
def sql_statements(runtime: Runtime) -> Iterator[list[str]]:
    """The SQL statements the runtime's engine sends while the block runs: through SQLAlchemy, and
    straight to the driver (a unit of work's last write run alone, ``Database._run_on_driver``)."""
    sent: list[str] = []

    def record_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    def record_driver_statement(statement: str, _values: Any) -> None:
        sent.append(statement)

    engine = runtime.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record_statement)
    runtime.db.driver_listeners.append(record_driver_statement)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record_statement)
        runtime.db.driver_listeners.remove(record_driver_statement)


async def table_counts(
    runtime: Runtime, names: Sequence[str] = ("subjects", "records", "operators", "keystore.data_keys")
) -> dict[str, int]:
    """Row counts of tables: 'changes nothing' assertions compare these before and after."""
    counts: dict[str, int] = {}
    async with runtime.db.engine.connect() as conn:
        for name in names:
            counts[name] = int((await conn.execute(text(f"SELECT count(*) FROM {name}"))).scalar_one())  # noqa: S608
    return counts

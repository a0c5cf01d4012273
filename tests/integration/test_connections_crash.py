"""A worker killed mid-erasure across two connected databases, then run again, converges.

The service's database is SQLite; the fixture database lives on PostgreSQL and on MariaDB, each
registered as a connection. A ``privacy-service`` child process runs the connection tasks and is
SIGKILLed right after its second UPDATE on PostgreSQL (inside that connection's transaction; the
MariaDB task runs at the same time and may or may not have committed). Whatever it left, a rerun
after the lease brings both databases to exactly the state a clean erasure gives: A's erasable
fields masked, everything else (A's kept fields, every other customer's rows) unchanged.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from privacy_service.config import Settings
from privacy_service.connections.runner import run_connection_tasks
from privacy_service.runtime import Runtime
from tests.api.dsr_support import fresh_settings, submit_and_verify
from tests.conftest import ROOT, MailSink
from tests.connections import fixture_db
from tests.connections.conftest import (  # noqa: F401 - fixtures
    fixture_mariadb_url,
    fixture_postgres_url,
    mariadb_admin_url,
)
from tests.connections.execution_support import add_connection, make_customer_a, policy_dir_with_dataset, tasks
from tests.integration.test_erasure_resume import child_env

CHILD = """
import asyncio, os, signal, sys

from sqlalchemy import event
from sqlalchemy.engine import Engine

from privacy_service.config import load_settings
from privacy_service.connections.runner import run_connection_tasks
from privacy_service.runtime import build_runtime

updates = 0


@event.listens_for(Engine, "after_cursor_execute")
def die_mid_erasure(conn, cursor, statement, parameters, context, executemany):
    global updates
    if conn.dialect.name == "postgresql" and statement.lstrip().upper().startswith("UPDATE"):
        updates += 1
        if updates == 2:
            print("killed inside the PostgreSQL transaction", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


async def main() -> None:
    runtime = build_runtime(load_settings(), create_keyring=False)
    print(await run_connection_tasks(runtime), flush=True)


asyncio.run(main())
"""


class Later:
    """The system clock moved past the runner's lease (a crashed worker's claim has expired)."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
async def settings(make_settings: Any, backend: str, tmp_path: Path) -> Settings:
    return await fresh_settings(make_settings, backend, policy_dir=policy_dir_with_dataset(tmp_path))


async def _reset(url: str) -> AsyncEngine:
    engine = create_async_engine(url)
    await fixture_db.reset(engine)
    return engine


async def _snapshot(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    async with engine.connect() as conn:
        return await fixture_db.snapshot(conn)


def _expected(before: dict[str, list[tuple[Any, ...]]], targets: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    """A clean erasure of A: the targeted fields of A's rows nulled (every strategy the shipped policy
    names is null_rewrite), every other value as it was."""
    expected: dict[str, list[tuple[Any, ...]]] = {}
    for table, rows in before.items():
        columns = [c.name for c in fixture_db.TABLES[table].columns]
        key = columns.index(fixture_db.primary_key_name(fixture_db.TABLES[table]))
        fields = targets.get(table, {})
        assert all(spec["strategy"] == "null_rewrite" for spec in fields.values())
        expected[table] = [
            tuple(
                None if row[key] in fixture_db.A_KEYS.get(table, set()) and name in fields else value
                for name, value in zip(columns, row, strict=True)
            )
            for row in rows
        ]
    return expected


async def _run_child(settings: Settings) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        cwd=ROOT,
        env=child_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


async def test_a_worker_killed_mid_erasure_across_two_connections_reruns_to_the_clean_end_state(
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_postgres_url: str,  # noqa: F811 - the fixture imported above
    fixture_mariadb_url: str,  # noqa: F811
) -> None:
    postgres, mariadb = await _reset(fixture_postgres_url), await _reset(fixture_mariadb_url)
    try:
        before = {"pg": await _snapshot(postgres), "maria": await _snapshot(mariadb)}
        await make_customer_a(client, auth)
        await add_connection(runtime, fixture_postgres_url, name="ops-postgres")
        await add_connection(runtime, fixture_mariadb_url, name="ops-mariadb")
        request_id, _ = await submit_and_verify(client, runtime, mail, fixture_db.A_EMAIL, "erase")
        approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
        assert approved.json()["status"] == "processing"
        planned = await tasks(runtime)
        assert len(planned) == 2
        targets = planned[0]["targets"]
        targets = json.loads(targets) if isinstance(targets, str) else targets

        returncode, output = await _run_child(runtime.settings)
        assert returncode == -signal.SIGKILL, output
        assert "killed inside the PostgreSQL transaction" in output
        # PostgreSQL rolled the killed transaction back: nothing there is half masked.
        assert await _snapshot(postgres) == before["pg"]
        assert {t["status"] for t in await tasks(runtime)} <= {"running", "done"}

        # The rerun, once the dead worker's lease has expired.
        runtime.clock = Later(timedelta(minutes=11))
        result = await run_connection_tasks(runtime)
        assert result.completed_requests == 1
        assert {t["status"] for t in await tasks(runtime)} == {"done"}
        assert _expected(before["pg"], targets) != before["pg"]  # the erasure does change A's rows
        assert await _snapshot(postgres) == _expected(before["pg"], targets)
        assert await _snapshot(mariadb) == _expected(before["maria"], targets)
        view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
        assert view["status"] == "partially_completed"  # AML keeps the name and more
        async with runtime.db.engine.connect() as conn:
            statuses = (await conn.execute(text("SELECT status FROM dsr_requests"))).scalars().all()
        assert statuses == ["partially_completed"]
    finally:
        await postgres.dispose()
        await mariadb.dispose()

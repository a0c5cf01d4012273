"""An erasure run again after its connected database committed but before the task was recorded (the
worker killed there, or its lease taken over): the rerun finds nothing left to mask (A's identity
columns are NULL), yet the task reports what the first run found and masked, and the answer keeps
listing the categories kept (AML) where A's rows were found (fixture on SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from privacy_service.config import Settings
from privacy_service.connections import runner
from privacy_service.connections.runner import run_connection_tasks
from privacy_service.runtime import Runtime
from tests.api.dsr_support import fresh_settings
from tests.conftest import MailSink
from tests.connections import fixture_db
from tests.connections.execution_support import (
    add_connection,
    approved_erasure,
    make_customer_a,
    policy_dir_with_dataset,
    tasks,
)


class Later:
    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """The service's own database (the task's stored counts); the connected one varies (store)."""
    value: str = request.param
    return value


@pytest.fixture
async def settings(make_settings: Any, backend: str, tmp_path: Path) -> Settings:
    return await fresh_settings(make_settings, backend, policy_dir=policy_dir_with_dataset(tmp_path))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def test_a_rerun_after_the_connected_commit_reports_what_the_first_run_found_and_kept(
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_url: str,
    fixture_engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await make_customer_a(client, auth)
    await add_connection(runtime, fixture_url)
    request_id = await approved_erasure(client, runtime, mail, auth)

    # Run 1: the connected database commits, then the worker dies before recording the task.
    real_record = runner._record

    async def killed(*args: Any, **kwargs: Any) -> tuple[str, bool]:
        return "stale", False

    monkeypatch.setattr(runner, "_record", killed)
    await run_connection_tasks(runtime)
    async with fixture_engine.connect() as conn:
        masked = await fixture_db.snapshot(conn)
    [task] = await tasks(runtime)
    assert task["status"] == "running"
    found = {name: p.get("found") for name, p in _json(task["collections"]).items()}
    assert found.get("customers") == 1, found  # stored before the connected database committed

    # Run 2, once the lease has expired: nothing left to find by A's (now NULL) e-mail and phone.
    monkeypatch.setattr(runner, "_record", real_record)
    runtime.clock = Later(runner.lease(runtime.settings) + timedelta(minutes=1))
    result = await run_connection_tasks(runtime)
    assert (result.done, result.completed_requests) == (1, 1)
    async with fixture_engine.connect() as conn:
        assert await fixture_db.snapshot(conn) == masked  # the rerun wrote nothing
    [task] = await tasks(runtime)
    collections = _json(task["collections"])
    assert collections["customers"]["rows"] == 1  # what run 1 masked, not the rerun's 0
    assert task["rows"] > 0
    kept_by_task = {k["category"] for k in _json(task["kept"])}
    assert "user.name" in kept_by_task
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["status"] == "partially_completed"
    kept = {item["category"] for item in view["result"]["kept"]}
    assert "user.name" in kept
    assert view["result"]["connections"][0]["rows"] == task["rows"]

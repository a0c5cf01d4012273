"""Claiming connection tasks: a connection's ``max_concurrency`` holds across workers (two claimers at
once on the service's PostgreSQL), a connection with a backlog does not starve the others, and a
claim's lease outlasts the longest task the settings allow."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from privacy_service.config import Settings
from privacy_service.connections import runner
from privacy_service.connections.runner import run_connection_tasks
from privacy_service.runtime import Runtime
from tests.api.dsr_support import fresh_settings, submit_and_verify
from tests.conftest import MailSink
from tests.connections import fixture_db
from tests.connections.execution_support import add_connection, make_customer_a, policy_dir_with_dataset, tasks


@pytest.fixture
async def settings(make_settings: Any, backend: str, tmp_path: Path) -> Settings:
    return await fresh_settings(
        make_settings, backend, policy_dir=policy_dir_with_dataset(tmp_path), connections_task_timeout_seconds=3600
    )


async def _two_access_requests(client: AsyncClient, runtime: Runtime, auth: dict[str, str], mail: MailSink) -> None:
    await make_customer_a(client, auth)
    created = await client.post("/v1/subjects", json={"email": fixture_db.B_EMAIL, "profile": {}}, headers=auth)
    assert created.status_code == 201, created.text
    for email in (fixture_db.A_EMAIL, fixture_db.B_EMAIL):
        _, verified = await submit_and_verify(client, runtime, mail, email, "access")
        assert verified["status"] == "processing"


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
async def test_two_workers_claiming_at_once_respect_the_connection_limit(
    backend: str,
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_sqlite: tuple[str, AsyncEngine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, engine = fixture_sqlite
    await add_connection(runtime, url, max_concurrency=1)
    await _two_access_requests(client, runtime, auth, mail)
    # Each claim stays open a while after counting the running tasks (as a slow one would): two
    # workers' claims overlap, as they do under load.
    service = type(runtime.keys)
    load_key = service.load_key

    async def slow(self: Any, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)
        return await load_key(self, *args, **kwargs)

    monkeypatch.setattr(service, "load_key", slow)
    first, second = await asyncio.gather(runner._claim(runtime, 1, 6), runner._claim(runtime, 1, 6))
    assert len(first) + len(second) == 1, (first, second)
    assert sorted(t["status"] for t in await tasks(runtime)) == ["pending", "running"]
    await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_connection_with_a_backlog_does_not_starve_another(
    backend: str,
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_sqlite: tuple[str, AsyncEngine],
) -> None:
    url, engine = fixture_sqlite
    await add_connection(runtime, url, name="busy", max_concurrency=1)
    await add_connection(runtime, url, name="other", max_concurrency=1)
    await _two_access_requests(client, runtime, auth, mail)
    # The busy connection's tasks waited longest: the oldest due tasks are all its own.
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE connection_tasks SET next_attempt_at = :old WHERE connection_name = 'busy'"),
            {"old": runtime.clock.now() - timedelta(hours=1)},
        )
    result = await run_connection_tasks(runtime, batch=2)
    assert result.done == 2, result
    done = sorted(t["connection_name"] for t in await tasks(runtime) if t["status"] == "done")
    assert done == ["busy", "other"]
    await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_claim_lasts_longer_than_the_longest_task_allowed(
    backend: str,
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_sqlite: tuple[str, AsyncEngine],
) -> None:
    url, engine = fixture_sqlite
    await add_connection(runtime, url)
    await make_customer_a(client, auth)
    await submit_and_verify(client, runtime, mail, fixture_db.A_EMAIL, "access")
    before = runtime.clock.now()
    [claimed] = await runner._claim(runtime, 20, 6)
    [task] = await tasks(runtime)
    until = datetime.fromisoformat(str(task["next_attempt_at"]))
    until = until if until.tzinfo else until.replace(tzinfo=UTC)
    timeout = timedelta(seconds=runtime.settings.connections_task_timeout_seconds)
    assert timeout == timedelta(hours=1)
    # Another worker may take the task over only after the task's own timeout has passed, with a margin.
    assert until - before > timeout + timedelta(minutes=1)
    assert claimed.attempt == 1
    await engine.dispose()

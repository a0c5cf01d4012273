"""Connection tasks where something is wrong: a customer under a legal hold (nothing written, all
kept), a connection removed while its task waits (an operator at once, the reason named), and the
dry run's bad input (a one-line error, no traceback, nothing echoed)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from privacy_service.audit.service import Actor
from privacy_service.config import Settings
from privacy_service.connections.runner import run_connection_tasks
from privacy_service.connections.service import ConnectionService
from privacy_service.runtime import Runtime
from privacy_service.subjects.service import LEGAL_HOLD_BASIS
from tests.api.dsr_support import fresh_settings, submit_and_verify
from tests.conftest import ROOT, MailSink
from tests.connections import fixture_db
from tests.connections.execution_support import (
    add_connection,
    approved_erasure,
    make_customer_a,
    policy_dir_with_dataset,
    tasks,
)
from tests.integration.test_erasure_resume import child_env


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
async def settings(make_settings: Any, backend: str, tmp_path: Path) -> Settings:
    return await fresh_settings(make_settings, backend, policy_dir=policy_dir_with_dataset(tmp_path))


async def test_a_customer_under_a_legal_hold_is_not_touched_in_a_connected_database(
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_sqlite: tuple[str, AsyncEngine],
) -> None:
    url, engine = fixture_sqlite
    async with engine.connect() as conn:
        before = await fixture_db.snapshot(conn)
    subject_id = await make_customer_a(client, auth)
    held = await client.post(f"/v1/subjects/{subject_id}/holds", json={"reason": "litigation 2026-17"}, headers=auth)
    assert held.status_code == 201, held.text
    await add_connection(runtime, url)
    request_id = await approved_erasure(client, runtime, mail, auth)
    [task] = await tasks(runtime)
    assert task["targets"] in ({}, "{}")  # nothing to write
    await run_connection_tasks(runtime)
    async with engine.connect() as conn:
        assert await fixture_db.snapshot(conn) == before
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    kept = {item["category"]: item for item in view["result"]["kept"]}
    assert "user.contact.email" in kept  # found in the connected database, kept by the hold
    assert kept["user.contact.email"]["until"] is None
    assert kept["user.contact.email"]["basis"] == LEGAL_HOLD_BASIS  # the vault's words, one line per category
    assert len(view["result"]["kept"]) == len(kept)
    await engine.dispose()


async def test_a_connection_removed_while_its_erasure_waits_cancels_the_task_and_the_request_is_partial(
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_sqlite: tuple[str, AsyncEngine],
) -> None:
    url, engine = fixture_sqlite
    async with engine.connect() as conn:
        before = await fixture_db.snapshot(conn)
    await make_customer_a(client, auth)
    connection_id = await add_connection(runtime, url)
    request_id = await approved_erasure(client, runtime, mail, auth)
    async with runtime.db.transaction() as session:
        service = ConnectionService(session, runtime.keys, runtime.clock, runtime.settings, Actor.system("test"))
        await service.remove(uuid.UUID(connection_id))
    result = await run_connection_tasks(runtime)
    assert (result.cancelled, result.retried, result.completed_requests) == (1, 0, 1)  # no retry brings it back
    [task] = await tasks(runtime)
    assert task["status"] == "cancelled"
    assert task["last_problem"] == "the connection was removed"
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    # Not silently complete: the data there was not erased.
    assert view["status"] == "partially_completed"
    assert view["result"]["connections"][0]["task"] == "cancelled"
    async with engine.connect() as conn:
        assert await fixture_db.snapshot(conn) == before
    await engine.dispose()


@pytest.mark.parametrize(
    "bad", ["not-a-uuid", "'; DROP TABLE connection_tasks; --", "00000000-0000-4000-8000-000000000000"]
)
async def test_the_dry_run_refuses_bad_input_in_one_line(runtime: Runtime, bad: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "privacy_service",
        "connections",
        "dry-run",
        "--request",
        bad,
        cwd=ROOT,
        env=child_env(runtime.settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    text = out.decode() + err.decode()
    assert process.returncode != 0
    assert "Traceback" not in text
    assert "DROP TABLE" not in text
    assert "request" in text


async def test_a_task_whose_worker_died_every_time_needs_an_operator_instead_of_a_new_run(
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_sqlite: tuple[str, AsyncEngine],
) -> None:
    url, engine = fixture_sqlite
    await make_customer_a(client, auth)
    await add_connection(runtime, url)
    await submit_and_verify(client, runtime, mail, fixture_db.A_EMAIL, "access")
    # As a worker leaves it each time it is killed mid-task: running, its lease expired, attempts used up.
    attempts = runtime.settings.connections_max_attempts
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE connection_tasks SET status = 'running', attempts = :n, next_attempt_at = created_at"),
            {"n": attempts},
        )
    result = await run_connection_tasks(runtime)
    assert result.done == 0
    [task] = await tasks(runtime)
    assert task["status"] == "needs_operator"
    assert task["attempts"] == attempts  # not run once more
    assert task["last_problem"].startswith("the worker stopped during this task")
    await engine.dispose()

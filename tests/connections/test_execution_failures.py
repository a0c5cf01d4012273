"""A connection that cannot be reached: the task retries with backoff, then needs an operator, who
sees the connection, the collection and a reason without data; the request waits meanwhile. Nothing
secret or personal (the URL, its password, an identity, a row value) reaches a log line, an error,
the audit trail, the task row or the metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from privacy_service.config import Settings
from privacy_service.connections import runner
from privacy_service.connections.runner import run_connection_tasks
from privacy_service.runtime import Runtime
from privacy_service.systems import events
from tests.api.dsr_support import bearer, fresh_settings, submit_and_verify
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
from tests.log_support import Recorder

PASSWORD = "Pw-9f3kQ-secret"
USER = "wallet_reader"
# Nothing listens on port 1: the connection is refused at once.
HARNESS = ("mail.log", "httpx", "httpcore")
UNREACHABLE = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:1/wallet_ops"


async def _cli(runtime: Runtime, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "privacy_service",
        "connections",
        *args,
        cwd=ROOT,
        env=child_env(runtime.settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    return out.decode() + err.decode()


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
async def settings(make_settings: Any, backend: str, tmp_path: Path) -> Settings:
    return await fresh_settings(
        make_settings,
        backend,
        policy_dir=policy_dir_with_dataset(tmp_path),
        connections_max_attempts=2,
        connections_retry_base_seconds=0.05,
    )


async def test_unreachable_connection_retries_then_needs_an_operator_without_leaking(
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = Recorder()
    # The runner's and the SIEM events' loggers, recorded whatever structlog's configuration cached.
    monkeypatch.setattr(runner, "log", recorded)
    monkeypatch.setattr(events, "log", recorded)
    await make_customer_a(client, auth)
    await add_connection(runtime, UNREACHABLE)
    request_id, verified = await submit_and_verify(client, runtime, mail, fixture_db.A_EMAIL, "access")
    assert verified["status"] == "processing"
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as lines:
        first = await run_connection_tasks(runtime)
        assert (first.retried, first.needs_operator) == (1, 0)
        [task] = await tasks(runtime)
        assert task["status"] == "pending"
        assert task["attempts"] == 1
        assert task["last_problem"].startswith("unreachable")
        await asyncio.sleep(0.3)  # past the backoff (0.05 s base, jitter)
        second = await run_connection_tasks(runtime)
        assert (second.retried, second.needs_operator) == (0, 1)
    [task] = await tasks(runtime)
    assert task["status"] == "needs_operator"
    assert task["attempts"] == 2
    # Which collections did not run and why, as a class of failure.
    collections = task["collections"] if isinstance(task["collections"], dict) else json.loads(task["collections"])
    assert {p["status"] for p in collections.values()} == {"failed"}
    assert all(p["problem"].startswith("unreachable") for p in collections.values())
    # The request waits for the operator: it is not completed, nor silently partial.
    view = await client.get(f"/v1/requests/{request_id}", headers=auth)
    assert view.json()["status"] == "processing"
    # The operator's view of the request names the connection, each collection and the reason.
    [shown] = view.json()["connections"]
    assert shown["connection"] == "wallet-ops"
    assert shown["status"] == "needs_operator"
    assert shown["collections"]["customers"]["status"] == "failed"
    assert shown["collections"]["customers"]["problem"].startswith("unreachable")
    # The subject's own view does not show the service's databases.
    subject_view = await client.get(f"/v1/requests/{request_id}", headers=bearer(verified["token"]))
    assert subject_view.status_code == 200
    assert subject_view.json()["connections"] is None
    # Another run leaves it alone: it waits for an operator.
    assert await run_connection_tasks(runtime) == runner.RunResult()
    # The command line shows the same, and retry queues the task again (audited).
    listed = await _cli(runtime, "tasks", "--request", request_id)
    assert "needs_operator" in listed
    assert "unreachable" in listed
    assert "customers" in listed
    retried = await _cli(runtime, "retry", "--request", request_id)
    assert "1 task(s) queued again" in retried
    [task_after] = await tasks(runtime)
    assert task_after["status"] == "pending"
    async with runtime.db.engine.connect() as conn:
        audit_rows = [
            dict(row._mapping)
            for row in await conn.execute(text("SELECT action, detail FROM audit_events ORDER BY id"))
        ]
    alerts = [row for row in audit_rows if row["action"] == "connections.task.needs_operator"]
    assert len(alerts) == 1
    assert "unreachable" in str(alerts[0]["detail"])
    # The alert line: captured as structlog events, or printed (a logger configured and cached earlier).
    out, err = capfd.readouterr()
    printed = out + err
    assert "connection_task_needs_operator" in {event for _, event, _ in recorded.lines}
    assert ("error", "connection_task_needs_operator") in {(level, event) for level, event, _ in recorded.lines}
    metrics = await client.get("/metrics", headers=auth)
    assert 'privacy_connection_tasks{connection="wallet-ops",kind="access",status="pending"} 1' in metrics.text
    haystack = "\n".join(
        [
            repr(lines),
            repr(recorded.lines),
            printed,
            # The service's records (the test's own mail server and HTTP client log the addresses they handle).
            "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(HARNESS)),
            repr(audit_rows),
            repr({k: v for k, v in task.items() if not k.endswith("_ct")}),
            view.text,
            listed,
            retried,
            metrics.text,
        ]
    )
    for secret in (PASSWORD, USER, "127.0.0.1:1", "'127.0.0.1', 1)", fixture_db.A_EMAIL, fixture_db.A_PHONE, "Alice"):
        assert secret not in haystack, f"{secret!r} leaked"


async def test_a_successful_access_and_erasure_log_and_audit_no_row_value_nor_the_url(
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    recorded = Recorder()
    monkeypatch.setattr(runner, "log", recorded)
    monkeypatch.setattr(events, "log", recorded)
    path = tmp_path / "wallet_ops.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    await fixture_db.reset(engine)
    await engine.dispose()
    await make_customer_a(client, auth)
    await add_connection(runtime, f"sqlite:///{path}")
    caplog.set_level(logging.DEBUG)
    access_id, _ = await submit_and_verify(client, runtime, mail, fixture_db.A_EMAIL, "access")
    assert (await run_connection_tasks(runtime)).done == 1
    erase_id = await approved_erasure(client, runtime, mail, auth)
    assert (await run_connection_tasks(runtime)).done == 1
    assert {event for _, event, _ in recorded.lines} >= {"connection_task_done", "connection_tasks_planned"}
    async with runtime.db.engine.connect() as conn:
        audit_rows = [dict(r._mapping) for r in await conn.execute(text("SELECT action, detail FROM audit_events"))]
        task_rows = [
            {k: v for k, v in dict(r._mapping).items() if not k.endswith("_ct")}
            for r in await conn.execute(text("SELECT * FROM connection_tasks"))
        ]
    views = [(await client.get(f"/v1/requests/{rid}", headers=auth)).text for rid in (access_id, erase_id)]
    haystack = "\n".join(
        [
            repr(recorded.lines),
            "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(HARNESS)),
            repr(audit_rows),
            repr(task_rows),
            *views,
            (await client.get("/metrics", headers=auth)).text,
        ]
    )
    secrets = [str(path), fixture_db.A_EMAIL, fixture_db.A_PHONE, "Alice", "4111111111111111", "1 Alice Street"]
    for secret in secrets:
        assert secret not in haystack, f"{secret!r} leaked"

"""The dry run of an erasure: per collection, rows found and rows the erasure would touch, before the
operator approves it (from the vault's identities) and after (from the request's own tasks); nothing
is written, and the command line prints names and counts, never a value."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from privacy_service.config import Settings
from privacy_service.connections.dryrun import dry_run
from privacy_service.runtime import Runtime
from tests.api.dsr_support import fresh_settings, submit_and_verify
from tests.conftest import ROOT, MailSink
from tests.connections import fixture_db
from tests.connections.execution_support import add_connection, make_customer_a, policy_dir_with_dataset
from tests.integration.test_erasure_resume import child_env


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def store() -> str:
    return "postgres"


@pytest.fixture
async def settings(make_settings: Any, backend: str, tmp_path: Path) -> Settings:
    return await fresh_settings(make_settings, backend, policy_dir=policy_dir_with_dataset(tmp_path))


def _by_collection(lines: list[Any]) -> dict[str, tuple[int, int]]:
    return {line.collection: (line.rows, line.touched) for line in lines}


async def test_the_dry_run_counts_what_the_erasure_would_touch_and_writes_nothing(
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_url: str,
    fixture_engine: AsyncEngine,
) -> None:
    async with fixture_engine.connect() as conn:
        before = await fixture_db.snapshot(conn)
    await make_customer_a(client, auth)
    await add_connection(runtime, fixture_url)
    request_id, verified = await submit_and_verify(client, runtime, mail, fixture_db.A_EMAIL, "erase")
    assert verified["status"] == "awaiting_review"
    # Before approval: from the customer's identities in the vault.
    pending = await dry_run(runtime, uuid.UUID(request_id))
    counted = _by_collection(pending)
    assert counted["customers"] == (1, 1)  # e-mail and phone masked
    assert counted["logins"] == (12, 12)  # ip address and user agent masked
    assert counted["addresses"] == (2, 0)  # kept for AML: not touched
    assert counted["orders"] == (2, 0)
    customers = next(line for line in pending if line.collection == "customers")
    assert customers.action == "mask email (null_rewrite), phone (null_rewrite)"
    # After approval: the same numbers, from the request's own task.
    approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
    assert approved.json()["status"] == "processing"
    assert _by_collection(await dry_run(runtime, uuid.UUID(request_id))) == counted
    async with fixture_engine.connect() as conn:
        assert await fixture_db.snapshot(conn) == before

    # The command line, as an operator runs it.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "privacy_service",
        "connections",
        "dry-run",
        "--request",
        request_id,
        "--json",
        cwd=ROOT,
        env=child_env(runtime.settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    printed = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert {p["collection"]: (p["rows"], p["touched"]) for p in printed} == counted
    for value in (fixture_db.A_EMAIL, fixture_db.A_PHONE, "Alice", "127.0.0.1:"):
        assert value not in out.decode() + err.decode()

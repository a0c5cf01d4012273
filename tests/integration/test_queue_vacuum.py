"""The worker vacuums a queue table whose dead rows piled up (privacy_service.vacuum), on PostgreSQL.

Every mail updates its outbox row twice; without a vacuum the claims walk the dead index entries and
delivery falls behind. PostgreSQL's autovacuum is off on this machine's server, so the tests see the
job alone at work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from privacy_service.runtime import Runtime
from privacy_service.vacuum import vacuum_queue_tables
from privacy_service.worker import build_scheduler
from tests.conftest import _dsn

pytestmark = pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])

MESSAGES = 1500


async def _admin(runtime: Runtime) -> asyncpg.Connection:
    return await asyncpg.connect(_dsn(runtime.settings.database_url))


async def _stats(conn: asyncpg.Connection, table: str) -> asyncpg.Record:
    return await conn.fetchrow(
        "SELECT n_dead_tup, vacuum_count FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = $1",
        table,
    )


async def _churn(runtime: Runtime, table: str, write: Callable[[asyncpg.Connection], Awaitable[object]]) -> None:
    """Run ``write`` (rows written, then updated twice), and wait for its dead rows to show."""
    conn = await _admin(runtime)
    try:
        await write(conn)
        await conn.execute("SELECT pg_stat_force_next_flush()")
    finally:
        await conn.close()
    await _until(runtime, lambda stats: stats["n_dead_tup"] >= 2 * MESSAGES, table)


async def _churn_the_outbox(runtime: Runtime) -> None:
    """What delivering MESSAGES mails does to the outbox: each row inserted, claimed, then sent."""

    async def deliver(conn: asyncpg.Connection) -> None:
        await conn.executemany(
            "INSERT INTO outbox_messages (id, template, status, attempts, next_attempt_at, created_at) "
            "VALUES ($1, 'verification_code', 'pending', 0, now(), now())",
            [(uuid.uuid4(),) for _ in range(MESSAGES)],
        )
        await conn.execute("UPDATE outbox_messages SET status = 'sending', next_attempt_at = now() + interval '2 min'")
        await conn.execute("UPDATE outbox_messages SET status = 'done', sent_at = now(), payload = NULL")

    await _churn(runtime, "outbox_messages", deliver)


async def _churn_the_audit_log(runtime: Runtime) -> None:
    """What sealing MESSAGES audit events does: each one inserted, then updated (twice, as the outbox's)."""

    async def seal(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "INSERT INTO audit_events (at, actor_type, actor_id, action, outcome, detail) "
            "SELECT now(), 'system', 'vacuum-test', 'test.churn', 'ok', '{}' FROM generate_series(1, $1)",
            MESSAGES,
        )
        for _ in range(2):
            await conn.execute("UPDATE audit_events SET outcome = 'ok' WHERE actor_id = 'vacuum-test'")

    await _churn(runtime, "audit_events", seal)


async def _until(runtime: Runtime, check: Any, table: str = "outbox_messages") -> asyncpg.Record:
    """The table's statistics once ``check`` holds (they reach pg_stat_user_tables a moment late)."""
    conn = await _admin(runtime)
    try:
        deadline = time.monotonic() + 10
        while True:
            stats = await _stats(conn, table)
            if check(stats) or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def test_a_queue_table_past_its_dead_rows_threshold_is_vacuumed(runtime: Runtime, backend: str) -> None:
    await _churn_the_outbox(runtime)
    before = await _until(runtime, lambda _stats: True)
    settings = runtime.settings.model_copy(update={"queue_vacuum_dead_rows": MESSAGES})
    result = await vacuum_queue_tables(runtime.db, settings)
    assert result.vacuumed.keys() == {"outbox_messages"}  # the audit log's few dead rows are under it
    assert result.vacuumed["outbox_messages"] >= 2 * MESSAGES
    assert result.skipped == []
    after = await _until(runtime, lambda stats: stats["vacuum_count"] > before["vacuum_count"])
    assert after["vacuum_count"] == before["vacuum_count"] + 1
    assert after["n_dead_tup"] < MESSAGES // 10


async def test_a_table_under_the_threshold_is_left_alone(runtime: Runtime, backend: str) -> None:
    await _churn_the_outbox(runtime)
    before = await _until(runtime, lambda _stats: True)
    settings = runtime.settings.model_copy(update={"queue_vacuum_dead_rows": 100 * MESSAGES})
    result = await vacuum_queue_tables(runtime.db, settings)
    assert result.vacuumed == {}
    assert result.skipped == []
    await asyncio.sleep(0.5)
    assert (await _until(runtime, lambda _stats: True))["vacuum_count"] == before["vacuum_count"]


async def test_a_table_a_vacuum_holds_already_is_skipped_not_waited_for(runtime: Runtime, backend: str) -> None:
    # Autovacuum (or another worker) on the outbox: this run leaves it at once (SKIP_LOCKED: no wait,
    # and no cancelling the vacuum that holds it) and goes on with the next table; the next run
    # vacuums the outbox.
    await _churn_the_outbox(runtime)
    await _churn_the_audit_log(runtime)
    holder = await _admin(runtime)
    settings = runtime.settings.model_copy(update={"queue_vacuum_dead_rows": MESSAGES})
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE outbox_messages IN SHARE UPDATE EXCLUSIVE MODE")  # as VACUUM takes it
        started = time.monotonic()
        # Bounded: a vacuum that waited for the lock would wait for this very test.
        result = await asyncio.wait_for(vacuum_queue_tables(runtime.db, settings), timeout=10)
        waited = time.monotonic() - started
        await transaction.rollback()
    finally:
        await holder.close()
    assert result.skipped == ["outbox_messages"]
    assert result.vacuumed.keys() == {"audit_events"}
    assert waited < 2
    after = await vacuum_queue_tables(runtime.db, settings)
    assert after.vacuumed.keys() == {"outbox_messages"}
    assert after.skipped == []
    # Nothing of the run is left on the pooled connection it used.
    async with runtime.db.engine.connect() as conn:
        assert (await conn.exec_driver_sql("SHOW lock_timeout")).scalar_one() == "0"


async def test_the_worker_runs_the_job_unless_it_is_turned_off(runtime: Runtime, backend: str) -> None:
    assert build_scheduler(runtime).get_job("queue-vacuum") is not None
    off = runtime.settings.model_copy(update={"queue_vacuum_seconds": 0})
    assert build_scheduler(dataclasses.replace(runtime, settings=off)).get_job("queue-vacuum") is None

"""Purge runs as processes: the CLI (output, exit codes, thresholds), single-flight between runs,
the API serving during a purge, a run killed with SIGKILL and rerun, the worker's schedule, and a
changed retention period in the policy files changing what is purged."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from httpx import AsyncClient
from sqlalchemy import Table, delete, insert, text
from sqlalchemy import select as core_select
from sqlmodel import col, select

from privacy_service.audit.models import AuditEvent
from privacy_service.audit.service import seal_pending
from privacy_service.config import Settings
from privacy_service.crypto.models import DataKeyRow
from privacy_service.retention import jobs
from privacy_service.retention.jobs import RunOptions, RunResult, run_purge
from privacy_service.retention.models import LegalHold, RetentionAggregate, RetentionRun
from privacy_service.retention.service import RetentionEngine
from privacy_service.runtime import Runtime, build_runtime
from privacy_service.subjects.models import Record, Subject
from privacy_service.subjects.service import Retention
from privacy_service.worker import build_scheduler
from tests.policy_files import copy_policies, edit_yaml
from tests.retention_support import (
    NOW,
    TEST_ACTOR,
    add_record,
    add_subject,
    building,
    count_rows,
    counts,
    entry,
    purge,
    record_ids,
    state,
    years,
)

# Parents before children (restore order); reversed to empty.
TABLES: list[Table] = [
    Subject.__table__,  # type: ignore[list-item]
    Record.__table__,  # type: ignore[list-item]
    DataKeyRow.__table__,  # type: ignore[list-item]
    LegalHold.__table__,  # type: ignore[list-item]
    RetentionAggregate.__table__,  # type: ignore[list-item]
    RetentionRun.__table__,  # type: ignore[list-item]
]


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PRIVACY_")}
    env.update(
        PRIVACY_DATABASE_URL=settings.database_url,
        PRIVACY_KEYRING_PATH=str(settings.keyring_path),
        PRIVACY_POLICY_DIR=str(settings.policy_dir),
        PRIVACY_LOG_LEVEL="WARNING",
        **extra,
    )
    if settings.keystore_path is not None:
        env["PRIVACY_KEYSTORE_PATH"] = str(settings.keystore_path)
    return env


def start(settings: Settings, *args: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter running this package
        [sys.executable, "-m", "privacy_service", *args],
        env=_env(settings, **extra),
        cwd=settings.keyring_path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def cli(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return finish(start(settings, *args, **extra))


async def scenario(runtime: Runtime, subjects: int = 3, records: int = 2, tag: str = "") -> None:
    """Open accounts with due device records, anonymised app activity, one held subject; closed
    accounts (erased) and closed-a-year-ago accounts (restricted); data kept after erasure that ends."""
    async with building(runtime) as vault:
        for index in range(subjects):
            subject = await vault.subject(
                created_at=NOW - years(4), profile={"name": f"Open {index}"}, email=f"open{index}{tag}@example.com"
            )
            for n in range(records):
                created = NOW - years(2) - timedelta(hours=n)
                await vault.record(subject, category="user.device", created_at=created)
                await vault.record(
                    subject, category="user.behavior", kind="tap", created_at=created, data={"amount": n}
                )
            if index == 0:
                await vault.hold(subject)
            closed = await vault.subject(
                created_at=NOW - years(9), profile={"name": f"Gone {index}"}, closed_at=NOW - years(6)
            )
            await vault.record(closed, category="user.financial.transaction", created_at=NOW - years(7))
            kept = await vault.subject(
                created_at=NOW - years(5),
                profile={"name": f"Kept {index}", "secondary_email": f"k{index}@example.org"},
                closed_at=NOW - years(1),
            )
            await vault.record(kept, category="user.financial.transaction", created_at=NOW - years(3))
            ended = await vault.subject(created_at=NOW - years(8), profile={"name": f"Ended {index}"})
            await vault.restrict(ended, {"user.name": Retention("duty", NOW - timedelta(days=1))}, NOW - years(1))


# -- the CLI -----------------------------------------------------------------------------------


async def test_purge_cli_dry_run_then_real(settings: Settings, runtime: Runtime) -> None:
    await scenario(runtime, subjects=2)
    before = await state(runtime)
    dry = cli(settings, "purge", "--dry-run", "--json", "--now", NOW.isoformat())
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["status"] == "completed"
    assert planned["report"]["totals"]["purged"] > 0
    assert await state(runtime) == before

    real = cli(settings, "purge", "--now", NOW.isoformat(), "--batch-size", "3")
    assert real.returncode == 0, real.stderr
    assert "records:user.device" in real.stdout
    assert "purge completed" in real.stderr
    assert "Traceback" not in real.stderr
    async with runtime.db.transaction() as session:
        runs = (await session.exec(select(RetentionRun).order_by(col(RetentionRun.started_at)))).all()
    assert [(r.status, r.dry_run, r.actor_id) for r in runs] == [
        ("completed", True, "cli"),
        ("completed", False, "cli"),
    ]
    done = runs[1].report["totals"]
    assert {k: v for k, v in done.items() if k != "deferred"} == {
        k: v for k, v in planned["report"]["totals"].items() if k != "deferred"
    }


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # argument handling: same on both
async def test_purge_cli_rejects_bad_now(settings: Settings, runtime: Runtime) -> None:
    for value, expected in (
        ("2999-01-01T00:00:00Z", "in the future"),
        ("yesterday", "ISO 8601"),
        ("2025-01-01T00:00", "offset"),
    ):
        result = cli(settings, "purge", "--now", value)
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        assert expected in lines[0], result.stderr


async def test_purge_cli_refuses_over_threshold_unless_forced(settings: Settings, runtime: Runtime) -> None:
    await scenario(runtime, subjects=2)
    before = await state(runtime)
    strict = {"PRIVACY_RETENTION_ALERT_MIN_ROWS": "0", "PRIVACY_RETENTION_ALERT_PERCENT": "10"}
    refused = cli(settings, "purge", "--now", NOW.isoformat(), "--json", **strict)
    assert refused.returncode == 3, refused.stderr
    assert json.loads(refused.stdout)["status"] == "refused"
    # What the plan would have done is reported as refused, not deferred (nothing was attempted).
    refused_report = json.loads(refused.stdout)["report"]
    assert refused_report["totals"]["deferred"] == 0
    assert refused_report["totals"]["purged"] == refused_report["totals"]["anonymised"] == 0
    devices = next(r["counts"] for r in refused_report["rules"] if r["key"] == "records:user.device")
    assert devices["refused"] == devices["selected"] - devices["skipped_hold"] > 0
    assert {a["table"] for a in json.loads(refused.stdout)["report"]["alerts"]} >= {"records", "subjects"}
    assert await state(runtime) == before
    async with runtime.db.engine.connect() as conn:
        events = [row[0] for row in await conn.execute(text("SELECT action FROM audit_events"))]
    assert "retention.run.refused" in events

    forced = cli(settings, "purge", "--now", NOW.isoformat(), "--force", **strict)
    assert forced.returncode == 0, forced.stderr
    assert "alert:" in forced.stderr
    assert await state(runtime) != before


# -- single flight ---------------------------------------------------------------------------


async def test_two_runs_started_together_one_does_the_work(settings: Settings, runtime: Runtime) -> None:
    await scenario(runtime, subjects=12, records=40)
    # Small batches make the run long enough for the two processes to overlap.
    argv = ("purge", "--now", NOW.isoformat(), "--batch-size", "2", "--json", "--force")
    first, second = (start(settings, *argv) for _ in "ab")
    results = [finish(first), finish(second)]
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    statuses = sorted(json.loads(r.stdout)["status"] for r in results)
    assert statuses == ["completed", "skipped"], results
    skipped = next(r for r in results if json.loads(r.stdout)["status"] == "skipped")
    assert "another retention run is active" in skipped.stderr
    assert await count_rows(runtime, "retention_runs") == 1

    # In one process too: two runs on two connections/descriptors, one skips.
    await scenario(runtime, subjects=1, tag="-again")
    outcomes = await asyncio.gather(*(run_purge(runtime, RunOptions(now=NOW, force=True)) for _ in range(2)))
    assert sorted(o.status for o in outcomes) == ["completed", "skipped"]


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_api_serves_reads_and_writes_during_a_purge(
    runtime: Runtime, client: AsyncClient, auth: dict[str, str]
) -> None:
    await scenario(runtime, subjects=20, records=30)
    target = await add_subject(runtime, created_at=NOW, profile={"name": "Busy Reader"}, email="busy@example.com")
    run = asyncio.create_task(run_purge(runtime, RunOptions(now=NOW, batch_size=3, force=True)))
    calls, during = 0, 0
    while not run.done():
        created = await client.post("/v1/subjects", json={"profile": {"name": f"New {calls}"}}, headers=auth)
        assert created.status_code == 201, created.text
        record = await client.post(
            f"/v1/subjects/{target}/records",
            json={"kind": "note", "category": "user.device", "occurred_at": NOW.isoformat(), "data": {"n": calls}},
            headers=auth,
        )
        assert record.status_code == 201, record.text
        read = await client.get(f"/v1/subjects/{target}", headers=auth)
        assert read.status_code == 200, read.text
        calls += 1
        during += not run.done()
    result = await run
    assert result.status == "completed", result
    assert during >= 3, "the purge finished before the API was exercised alongside it"
    assert entry(result, "records:user.device").purged == 20 * 30 - 30  # the held subject's stay


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_batches_commit_without_waiting_for_the_wal_and_the_pool_gets_the_setting_back(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await scenario(runtime, subjects=4, records=5)
    seen: list[str] = []
    original = RetentionEngine.purge_record_range

    async def spying(self: RetentionEngine, session: Any, *args: Any) -> Any:
        seen.append((await session.exec(text("SHOW synchronous_commit"))).one()[0])
        return await original(self, session, *args)

    monkeypatch.setattr(RetentionEngine, "purge_record_range", spying)
    result = await run_purge(runtime, RunOptions(now=NOW, batch_size=3, force=True))
    assert result.status == "completed", result
    assert seen, "no batch ran"
    assert set(seen) == {"off"}
    # Every pooled connection (all checked out at once) is back to the server's default.
    pool = runtime.settings.db_pool_size
    connections = [await runtime.db.engine.connect() for _ in range(pool)]
    try:
        settings = {(await c.exec_driver_sql("SHOW synchronous_commit")).scalar_one() for c in connections}
    finally:
        for connection in connections:
            await connection.close()
    assert settings == {"on"}


# -- crash and rerun -------------------------------------------------------------------------


async def dump(runtime: Runtime) -> dict[str, list[dict[str, Any]]]:
    async with runtime.db.engine.connect() as conn:
        return {t.fullname: [dict(r._mapping) for r in await conn.execute(core_select(t))] for t in TABLES}


async def restore(runtime: Runtime, rows: dict[str, list[dict[str, Any]]]) -> None:
    async with runtime.db.engine.begin() as conn:
        for table in reversed(TABLES):
            await conn.execute(delete(table))
        for table in TABLES:
            if rows[table.fullname]:
                await conn.execute(insert(table), rows[table.fullname])


async def progress_of(runtime: Runtime) -> tuple[str | None, int]:
    async with runtime.db.transaction() as session:
        run = (await session.exec(select(RetentionRun).order_by(col(RetentionRun.started_at).desc()))).first()
    if run is None:
        return None, 0
    totals = run.report.get("totals", {})
    return run.status, sum(totals.get(k, 0) for k in ("purged", "anonymised", "restricted"))


async def records_reported_and_audited(runtime: Runtime, status: str = "running") -> tuple[int, int]:
    """(records purged or anonymised according to the run's report, and according to its audit events)."""
    async with runtime.db.transaction() as session:
        run = (await session.exec(select(RetentionRun).where(col(RetentionRun.status) == status))).one()
        events = (
            await session.exec(select(AuditEvent).where(col(AuditEvent.action) == "retention.records.purged"))
        ).all()
    reported = sum(
        rule["counts"]["purged"] + rule["counts"]["anonymised"]
        for rule in run.report.get("rules", [])
        if rule["key"].startswith("records:")
    )
    audited = sum(sum(e.detail["rules"].values()) for e in events if e.detail.get("run_id") == str(run.id))
    return reported, audited


async def test_a_killed_run_is_finished_by_the_next_one(settings: Settings, runtime: Runtime) -> None:
    await scenario(runtime, subjects=10, records=150)
    dataset = await dump(runtime)
    total = await count_rows(runtime, "records")
    uninterrupted = await purge(runtime, force=True)
    assert uninterrupted.status == "completed"
    expected = await state(runtime)
    remaining = await count_rows(runtime, "records")

    await restore(runtime, dataset)
    assert await state(runtime) != expected
    victim = start(settings, "purge", "--now", NOW.isoformat(), "--batch-size", "1", "--force")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if total - await count_rows(runtime, "records") >= 50:  # some batches committed
            break
        await asyncio.sleep(0.01)
    assert victim.poll() is None, finish(victim).stderr
    victim.send_signal(signal.SIGKILL)
    finish(victim)
    left = await count_rows(runtime, "records")
    assert remaining < left < total, (remaining, left, total)  # killed mid-run, part of it committed
    status, _ = await progress_of(runtime)
    assert status == "running"
    assert await state(runtime) != expected
    # The killed run's row reports exactly what its committed batches did, as their audit events say.
    reported, audited = await records_reported_and_audited(runtime)
    assert audited > 0
    assert reported == audited

    rerun = cli(settings, "purge", "--now", NOW.isoformat(), "--force")
    assert rerun.returncode == 0, rerun.stderr
    assert await state(runtime) == expected
    async with runtime.db.transaction() as session:
        runs = (await session.exec(select(RetentionRun.status).order_by(col(RetentionRun.started_at)))).all()
    assert list(runs)[-2:] == ["interrupted", "completed"]
    # Marked interrupted, the dead run still reports what it did (not "purged: 0").
    assert await records_reported_and_audited(runtime, status="interrupted") == (reported, audited)


async def test_a_purge_on_a_rewritten_audit_chain_completes_and_raises_the_alarm(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The purge commits before it signs a checkpoint: a head that no longer verifies (someone rewrote
    the chain in the database) is refused and logged, and the run still reports what it did."""
    await scenario(runtime, subjects=2, records=3)
    assert (await seal_pending(runtime.db, runtime.clock, runtime.audit_key)).head_seq > 0
    async with runtime.db.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_head SET mac = :mac WHERE id = 1"), {"mac": bytes(32)})
    alarms: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(jobs.log, "critical", lambda event, **fields: alarms.append((event, fields)))
    result = await purge(runtime, force=True)
    assert result.status == "completed"
    assert result.report is not None
    assert result.report.totals.purged > 0
    assert [(event, fields["error"]) for event, fields in alarms] == [
        ("retention_audit_checkpoint_refused", "audit_head_invalid")
    ]


# -- the worker's schedule ---------------------------------------------------------------------


async def test_the_worker_schedule_runs_and_records_a_purge(runtime: Runtime) -> None:
    now = runtime.clock.now()
    subject = await add_subject(runtime, created_at=now - years(3), profile={"name": "Scheduled"})
    due = await add_record(runtime, subject, category="user.device", created_at=now - years(2))
    fresh = await add_record(runtime, subject, category="user.device", created_at=now - timedelta(days=1))
    scheduler = build_scheduler(runtime)
    assert scheduler.get_job("retention-purge") is not None
    for job in scheduler.get_jobs():
        if job.id != "retention-purge":
            job.remove()
    scheduler.reschedule_job("retention-purge", trigger=IntervalTrigger(seconds=0.2))
    scheduler.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (await progress_of(runtime))[0] != "completed":
            await asyncio.sleep(0.1)
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0.3)  # let a run that started just now finish with the lock released
    async with runtime.db.transaction() as session:
        run = (await session.exec(select(RetentionRun).where(col(RetentionRun.status) == "completed"))).first()
    assert run is not None, "the scheduled job recorded no completed run"
    assert (run.actor_type, run.actor_id, run.dry_run) == ("system", "scheduler", False)
    remaining = await record_ids(runtime)
    assert due not in remaining
    assert fresh in remaining


# -- the policy files decide -------------------------------------------------------------------


async def test_a_shorter_period_in_the_policy_files_purges_more(
    make_settings: Any, settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    subject = await add_subject(runtime, created_at=NOW - years(1), profile={"name": "Policy Edit"})
    record = await add_record(runtime, subject, category="user.device", created_at=NOW - timedelta(days=60))
    shipped = await purge(runtime)
    assert record in await record_ids(runtime), "P13M: a 60-day-old device record stays"

    folder = copy_policies(tmp_path)
    edit_yaml(
        folder / "policy.yaml",
        lambda data: data["data_categories"]["user.device"]["retention"].update(period="P1M"),
    )
    edited_runtime = build_runtime(make_settings(policy_dir=folder))
    try:
        assert str(edited_runtime.policy.retention_rule("user.device").period) == "P1M"
        edited = await purge(edited_runtime)
    finally:
        await edited_runtime.close()
    assert record not in await record_ids(runtime)
    assert entry(shipped, "records:user.device").purged == 0
    assert entry(edited, "records:user.device").purged == 1


# -- the plan's steps ---------------------------------------------------------------------------


class StepFailed(Exception):
    """A plan step's own error, as a run must report it."""


@pytest.mark.parametrize("step", ["plan_records", "holds_summary"])
async def test_a_failing_plan_step_fails_the_run_with_its_own_error(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """On PostgreSQL the records' scan runs beside the other plan steps: the run row, the result and
    the log name the step's error, not the group that carried it out of the concurrent plan."""
    await scenario(runtime, subjects=2, records=2)

    async def failing_step(self: RetentionEngine, *args: Any) -> Any:
        raise StepFailed

    logged: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(RetentionEngine, step, failing_step)
    monkeypatch.setattr(jobs.log, "error", lambda event, **fields: logged.append((event, fields)))
    result = await run_purge(runtime, RunOptions(now=NOW, force=True, actor=TEST_ACTOR))
    assert (result.status, result.error) == ("failed", "StepFailed")
    async with runtime.db.transaction() as session:
        run = (await session.exec(select(RetentionRun).where(col(RetentionRun.id) == result.run_id))).one()
    assert (run.status, run.error) == ("failed", "StepFailed")
    [(event, fields)] = logged
    assert (event, fields["error"]) == ("retention_run_failed", "StepFailed")
    assert fields["frames"][-1].endswith(":failing_step"), fields["frames"]


async def _plan_sessions(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> tuple[RunResult, bool]:
    """A real purge; and whether the records' scan ran in the session of the plan's other steps."""
    sessions: dict[str, Any] = {}
    scan, holds = RetentionEngine.plan_records, RetentionEngine.holds_summary

    async def spying_scan(self: RetentionEngine, session: Any, *args: Any) -> Any:
        sessions["scan"] = session
        return await scan(self, session, *args)

    async def spying_holds(self: RetentionEngine, session: Any) -> Any:
        sessions["rest"] = session
        return await holds(self, session)

    with monkeypatch.context() as patch:
        patch.setattr(RetentionEngine, "plan_records", spying_scan)
        patch.setattr(RetentionEngine, "holds_summary", spying_holds)
        result = await purge(runtime, force=True)
    return result, sessions["scan"] is sessions["rest"]


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_a_pool_of_one_plans_in_sequence_and_purges_the_same(
    settings: Settings, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PRIVACY_DB_POOL_SIZE=1 opens two connections at most (size plus overflow), one of them the run
    lock's: the scan runs in the plan's session, not in a third connection the plan would wait for."""
    await scenario(runtime, subjects=4, records=3)
    dataset = await dump(runtime)
    default, scan_in_plan = await _plan_sessions(runtime, monkeypatch)
    assert default.status == "completed", default
    assert not scan_in_plan, "the default pool runs the scan beside the plan"
    expected = await state(runtime)

    await restore(runtime, dataset)
    small = build_runtime(settings.model_copy(update={"db_pool_size": 1}))
    try:
        assert small.db.max_connections == 2
        result, scan_in_plan = await _plan_sessions(small, monkeypatch)
    finally:
        await small.close()
    assert result.status == "completed", result
    assert scan_in_plan, "a pool of two connections ran the scan beside the plan"
    assert counts(result) == counts(default)
    assert await state(runtime) == expected

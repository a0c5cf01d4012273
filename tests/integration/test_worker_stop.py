"""A stopping worker and its job runs: no run is reported as having raised, none outlives the runtime.

APScheduler logs anything a job raises, a CancelledError included, as "Job ... raised an exception";
its shutdown cancels the runs still going. The worker (run in-process here, stopped with a real
SIGTERM) lets a run in flight end first, and ``guarded`` reports a job's own failures itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from privacy_service import worker
from privacy_service.audit.service import SealResult, seal_pending
from privacy_service.config import Settings
from privacy_service.runtime import Runtime, build_runtime
from privacy_service.worker import Heartbeat, build_scheduler, check_heartbeat, guarded
from tests.log_support import Recorder

WAIT = 60  # seconds: a bound on waiting for what must happen, never a measured duration


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    lines = Recorder()
    monkeypatch.setattr(worker, "log", lines)
    return lines


@pytest.fixture
def fast(settings: Settings, tmp_path: Path) -> Settings:
    """The sealer every 0.1 s, the heartbeat in the test's folder."""
    return settings.model_copy(
        update={"audit_seal_interval_seconds": 0.1, "worker_heartbeat_path": tmp_path / "heartbeat.json"}
    )


async def until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), WAIT)


def scheduler_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """APScheduler's "Job ... raised an exception" and "Error running job" lines, with their exception."""
    return [
        f"{record.getMessage()} {record.exc_info[0] if record.exc_info else ''}"
        for record in caplog.records
        if record.name.startswith("apscheduler") and record.levelno >= logging.ERROR
    ]


async def stopped_mid_run(runtime: Runtime, release: asyncio.Event | None) -> asyncio.Task[None]:
    """Start the worker, SIGTERM it while a seal runs, and (with ``release``) let that run go on once
    the worker is stopping (its heartbeat is gone). The worker's task, done or not."""
    running = await stopped_during(runtime, (release or asyncio.Event()).wait)
    if release is not None:
        release.set()
    return running


async def stopped_during(runtime: Runtime, hold: Callable[[], Awaitable[object]]) -> asyncio.Task[None]:
    """Start the worker and SIGTERM it while a seal awaits ``hold`` (before sealing); return once the
    worker is stopping (its heartbeat is gone). The worker's task, done or not."""
    started = asyncio.Event()

    async def held(*args: Any) -> SealResult:
        started.set()
        await hold()
        return await seal_pending(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worker, "seal_pending", held)
        running = asyncio.create_task(worker.run_worker(runtime))
        await asyncio.wait_for(started.wait(), WAIT)
    os.kill(os.getpid(), signal.SIGTERM)  # the worker's handler takes it (installed before any job runs)
    await until(lambda: not runtime.settings.worker_heartbeat_path.exists())
    return running


async def test_a_run_in_flight_when_the_worker_is_told_to_stop_ends_before_the_worker_does(
    fast: Settings, recorded: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = build_runtime(fast)
    try:
        running = await stopped_mid_run(runtime, release=asyncio.Event())
        await asyncio.wait_for(running, WAIT)
        said = recorded.events()
    finally:
        await runtime.close()
    assert scheduler_errors(caplog) == []
    # The held seal went on after the stop, to the end, on the open database: its job_done came
    # before worker_stopped.
    seals = [members for _, event, members in recorded.lines if event == "job_done" and members["job"] == "audit-seal"]
    assert len(seals) == 1, recorded.lines  # the held run (max_instances=1: no other seal ran meanwhile)
    assert said.index("worker_started") < said.index("job_done") < said.index("worker_stopped") == len(said) - 1
    assert "job_failed" not in said
    assert "job_cancelled" not in said
    assert not fast.worker_heartbeat_path.exists()  # and no beat queued before the stop wrote it again


async def test_a_run_that_outlasts_the_grace_is_cancelled_as_a_stop_and_ends_before_the_worker_does(
    fast: Settings, recorded: Recorder, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "STOP_GRACE_SECONDS", 0.0)
    runtime = build_runtime(fast)
    try:
        running = await stopped_mid_run(runtime, release=None)  # a seal that never ends by itself
        await asyncio.wait_for(running, WAIT)
        in_flight = [task for task in worker._RUNNING if not task.done()]
        said = recorded.lines
    finally:
        await runtime.close()
    assert scheduler_errors(caplog) == []
    assert in_flight == []  # nothing left to run against the runtime once the worker returned
    assert ("info", "job_cancelled", {"job": "audit-seal"}) in said
    assert "job_failed" not in recorded.events()
    assert recorded.events()[-1] == "worker_stopped"


async def test_a_cancelled_run_whose_cleanup_hangs_does_not_hold_up_the_stop(
    fast: Settings, recorded: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run cancelled at the grace's end whose cleanup awaits something that does not answer (a dead
    database) is reported and left behind after STOP_CLEANUP_SECONDS: the worker stops without it."""
    monkeypatch.setattr(worker, "STOP_GRACE_SECONDS", 0.0)
    monkeypatch.setattr(worker, "STOP_CLEANUP_SECONDS", 0.1)
    cleaned = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(WAIT / 4)  # well within the test's cap, far beyond the cleanup bound
            cleaned.set()
            raise

    runtime = build_runtime(fast)
    try:
        running = await stopped_during(runtime, stubborn)
        await asyncio.wait_for(running, WAIT)
        cleaned_first = cleaned.is_set()
        said = list(recorded.lines)
        # The run left behind: APScheduler's shutdown cancelled it again; it ends before the runtime closes.
        await until(lambda: all(task.done() for task in worker._RUNNING))
    finally:
        await runtime.close()
    assert not cleaned_first, "the stop waited for the run's whole cleanup"
    assert ("warning", "job_not_stopped", {"job": "audit-seal"}) in said
    events = [event for _, event, _ in said]
    assert events.index("job_not_stopped") < events.index("worker_stopped")


async def test_a_second_signal_during_the_grace_cancels_the_runs_in_flight_at_once(
    fast: Settings, recorded: Recorder, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "STOP_GRACE_SECONDS", 3600.0)  # far beyond WAIT: only the second signal ends it
    runtime = build_runtime(fast)
    try:
        running = await stopped_during(runtime, asyncio.Event().wait)  # a seal that never ends by itself
        assert not running.done()
        os.kill(os.getpid(), signal.SIGINT)  # the second signal (SIGTERM first): Ctrl-C after a stop
        await asyncio.wait_for(running, WAIT)
        said = recorded.lines
    finally:
        await runtime.close()
    assert scheduler_errors(caplog) == []
    assert ("info", "job_cancelled", {"job": "audit-seal"}) in said
    assert "job_not_stopped" not in recorded.events()
    assert said[-1][1] == "worker_stopped"


async def test_an_unexpected_error_in_a_job_is_reported_with_its_type_and_the_next_run_goes_on(
    tmp_path: Path, recorded: Recorder
) -> None:
    heartbeat = Heartbeat(tmp_path / "heartbeat.json")
    runs: list[str] = []

    async def fragile() -> int:
        runs.append("run")
        if len(runs) == 1:
            raise LookupError("a bug, not an outage")
        return 0

    run = guarded("fragile", fragile, heartbeat)
    await run()  # does not raise: APScheduler would log it as "raised an exception"
    [(level, event, members)] = recorded.lines
    assert (level, event, members["job"], members["error"]) == ("error", "job_failed", "fragile", "LookupError")
    assert "test_worker_stop.py" in members["at"]
    assert "a bug" not in repr(recorded.lines)  # the type and the place, not the message
    heartbeat.beat()
    assert check_heartbeat(heartbeat.path, interval=10).failing_jobs == ("fragile",)

    await run()  # its next slot
    assert recorded.lines[-1] == ("debug", "job_done", {"job": "fragile", "count": 0})
    heartbeat.beat()
    assert check_heartbeat(heartbeat.path, interval=10).failing_jobs == ()


async def test_a_cancellation_under_a_job_that_nobody_asked_for_is_a_failure(
    tmp_path: Path, recorded: Recorder
) -> None:
    """A future cancelled beneath a job (a pool closing its connections) is not the worker stopping."""
    heartbeat = Heartbeat(tmp_path / "heartbeat.json")

    async def abandoned() -> None:
        gone = asyncio.get_running_loop().create_future()
        gone.cancel()
        await gone

    await guarded("abandoned", abandoned, heartbeat)()
    [(level, event, members)] = recorded.lines
    assert (level, event, members["error"]) == ("error", "job_failed", "CancelledError")
    assert heartbeat.jobs["abandoned"].keys() == {"failed_at"}


async def test_a_run_whose_time_passed_while_the_loop_was_busy_runs_late_rather_than_not_at_all(
    fast: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """APScheduler's default skips a run more than 1 s late ("was missed by"), e.g. on a loaded machine;
    a daily purge or digest would then wait a day. Here the heartbeat's time passed 10 s ago."""
    slow_beats = fast.model_copy(update={"worker_heartbeat_seconds": 300})  # its next slot is far away
    runtime = build_runtime(slow_beats)
    heartbeat = Heartbeat(slow_beats.worker_heartbeat_path)
    scheduler = build_scheduler(runtime, heartbeat)
    scheduler.start(paused=True)
    try:
        scheduler.modify_job("heartbeat", next_run_time=datetime.now(UTC) - timedelta(seconds=10))
        scheduler.resume()
        await until(heartbeat.path.exists)
    finally:
        await worker.stop_scheduler(scheduler, heartbeat)
        await runtime.close()
    assert [record.getMessage() for record in caplog.records if "was missed" in record.getMessage()] == []

"""The worker's heartbeat and ``worker --check`` (the compose healthcheck), and what its job lines say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from privacy_service.audit.service import SealResult
from privacy_service.notify.jobs import DeliveryResult
from privacy_service.worker import Heartbeat, check_heartbeat, outcome


def test_a_fresh_heartbeat_of_a_live_worker_is_healthy(tmp_path: Path) -> None:
    heartbeat = Heartbeat(tmp_path / "beat.json")
    heartbeat.job_ran("outbox", ok=True)
    heartbeat.job_ran("webhooks", ok=False)
    heartbeat.beat()
    status = check_heartbeat(heartbeat.path, interval=10)
    assert status.ok
    assert status.pid == os.getpid()
    assert status.failing_jobs == ("webhooks",)  # reported, but a failing job is not a dead worker
    heartbeat.remove()
    assert not check_heartbeat(heartbeat.path, interval=10).ok


def test_a_stale_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    heartbeat = Heartbeat(tmp_path / "beat.json")
    heartbeat.beat()
    later = time.time() + 31
    status = check_heartbeat(heartbeat.path, interval=10, now=later)
    assert not status.ok
    assert "stuck" in status.reason
    assert check_heartbeat(heartbeat.path, interval=10, now=time.time() + 29).ok


def test_a_heartbeat_left_by_a_dead_process_is_unhealthy(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import os; print(os.getpid())"]
    gone = subprocess.run(argv, capture_output=True, text=True, check=True)  # noqa: S603 - this interpreter
    path = tmp_path / "beat.json"
    path.write_text(json.dumps({"pid": int(gone.stdout), "at": time.time(), "jobs": {}}))
    status = check_heartbeat(path, interval=10)
    assert not status.ok
    assert "gone" in status.reason


def test_a_missing_or_garbled_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    assert "no heartbeat" in check_heartbeat(tmp_path / "none.json", interval=10).reason
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{not json")
    assert "cannot be read" in check_heartbeat(garbled, interval=10).reason


def test_an_idle_run_is_told_apart_from_one_that_did_something() -> None:
    assert outcome(None) == (False, {})
    assert outcome(0) == (False, {"count": 0})
    assert outcome(3) == (True, {"count": 3})
    # The chain's position is not work: an idle seal on a long chain is still idle.
    idle_seal = SealResult(sealed=0, head_seq=1234, checkpoint=None)
    assert outcome(idle_seal) == (False, {"sealed": 0, "head_seq": 1234, "checkpoint": None, "refused": False})
    assert outcome(SealResult(sealed=2, head_seq=1236, checkpoint=None))[0]
    assert outcome(SealResult(sealed=0, head_seq=1234, checkpoint=None, refused=True))[0]
    assert not outcome(DeliveryResult())[0]
    assert outcome(DeliveryResult(dead=1)) == (True, {"sent": 0, "retried": 0, "dead": 1, "dropped": 0})

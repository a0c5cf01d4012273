"""benchmarks/peer.py: the server CPU it counts, and the endpoint mappings it sends."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from benchmarks.peer import TARGETS, cpu_seconds, parse_args, with_descendants


def test_a_server_pid_counts_the_processes_below_it() -> None:
    # A supervisor with a worker below it, as serve --workers N starts them.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = with_descendants([os.getpid()])
        assert found[0] == os.getpid()
        assert child.pid in found
    finally:
        child.kill()
        child.wait()


def test_cpu_seconds_grows_with_work_done() -> None:
    before = cpu_seconds([os.getpid()])
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert cpu_seconds([os.getpid()]) - before >= 0.1


def test_a_vanished_server_is_an_error_not_a_zero() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with pytest.raises(SystemExit, match="gone"):
        cpu_seconds([gone.pid])


def test_mappings() -> None:
    args = parse_args(["--base-url", "http://x", "--target", "fides", "--fides-policy", "p"])
    assert args.clients == [16, 1]
    fides = TARGETS["fides"]
    assert fides.intake_body("a@example.com", args) == [{"identity": {"email": "a@example.com"}, "policy_key": "p"}]
    assert fides.intake_id({"succeeded": [{"id": "pri_1"}], "failed": []}) == "pri_1"
    # Fides answers 200 to a batch it filed nothing of (an unknown policy key): not a request to read.
    assert fides.intake_id({"succeeded": [], "failed": [{"message": "Policy with key p does not exist"}]}) is None
    assert fides.status_path("pri_1") == "/api/v1/privacy-request?request_id=pri_1"
    ours = TARGETS["privacy-service"]
    assert ours.intake_body("a@example.com", args) == {"type": "access", "identity": {"email": "a@example.com"}}
    assert (ours.intake_ok, ours.status_path("r1")) == (202, "/v1/requests/r1")

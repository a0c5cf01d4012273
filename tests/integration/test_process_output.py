"""What the processes print (issue 20 items 10 and 11), run as real subprocesses on a fresh SQLite file.

* ``serve`` and ``worker`` with PRIVACY_LOG_JSON=true print JSON lines only (uvicorn's start-up and
  shutdown included), on stderr; an idle worker says nothing at info, its idle runs are at debug.
* Every command keeps stdout for its result: ``KEY=$(privacy-service systems add ...)`` is the key.
* ``worker --check`` is healthy while a worker's scheduler runs, and unhealthy once it stopped.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from privacy_service.config import Settings
from privacy_service.crypto.service import PRIMARY, key_counts_by_kek
from privacy_service.runtime import Runtime, build_runtime
from tests.integration.test_retention_runs import NOW, scenario
from tests.integration.test_retention_runs import cli as purge_cli

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90  # a loaded CI machine imports slowly


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A migrated SQLite database and keyring in a folder of their own (no stray .env is read)."""
    result = run(tmp_path, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    return tmp_path


def env(home: Path, **extra: str) -> dict[str, str]:
    values = {name: value for name, value in os.environ.items() if not name.startswith("PRIVACY_")}
    values.update(
        PRIVACY_DATABASE_URL=f"sqlite+aiosqlite:///{home}/privacy.db",
        PRIVACY_KEYRING_PATH=str(home / "keyring.json"),
        PRIVACY_POLICY_DIR=str(ROOT / "policies"),
        PRIVACY_WORKER_HEARTBEAT_PATH=str(home / "worker-heartbeat.json"),
        PRIVACY_LOG_JSON="true",
        PRIVACY_LOG_LEVEL="INFO",
    )
    values.update(extra)
    return values


def argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "privacy_service", *args]


def run(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv: this interpreter running this package
        argv(*args), env=env(home, **extra), cwd=home, capture_output=True, text=True, timeout=180, check=False
    )


@contextmanager
def started(home: Path, *args: str, **extra: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(  # noqa: S603 - fixed argv
        argv(*args), env=env(home, **extra), cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


class Lines:
    """A process's stderr read on a thread, so the test can wait for a line while it runs."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        assert process.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"no line with {text!r} in {timeout} s: {self.lines}"
                self._changed.wait(left)

    def wait_until(self, wanted: Callable[[dict[str, Any]], bool], timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """The first JSON line for which ``wanted`` is true."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if line.startswith("{") and wanted(json.loads(line)):
                        event: dict[str, Any] = json.loads(line)
                        return event
                left = deadline - time.monotonic()
                assert left > 0, f"no such line in {timeout} s: {self.lines}"
                self._changed.wait(left)

    def finish(self) -> list[str]:
        self._thread.join(timeout=60)
        return self.lines


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Every line is one JSON object with an event, a level and a timestamp; else the test fails."""
    events = []
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(event, dict), line
        assert {"event", "level", "timestamp"} <= set(event), line
        events.append(event)
    return events


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_serve_and_worker_print_only_json_lines_and_an_idle_worker_is_quiet(home: Path) -> None:
    port = free_port()
    fast = {
        "PRIVACY_AUDIT_SEAL_INTERVAL_SECONDS": "0.5",
        "PRIVACY_OUTBOX_INTERVAL_SECONDS": "0.5",
        "PRIVACY_WORKER_HEARTBEAT_SECONDS": "1",
    }
    debug_home = home / "debug"
    debug_home.mkdir()
    chatty_env = {"PRIVACY_LOG_LEVEL": "DEBUG", "PRIVACY_WORKER_HEARTBEAT_PATH": str(debug_home / "heartbeat.json")}
    with (
        started(home, "serve", "--port", str(port)) as server,
        started(home, "worker", **fast) as worker,
        started(home, "worker", **fast | chatty_env) as chatty,
    ):
        server_lines, worker_lines, chatty_lines = Lines(server), Lines(worker), Lines(chatty)
        server_lines.wait_for("Application startup complete")
        worker_lines.wait_for("worker_started")
        chatty_lines.wait_for("worker_started")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
        assert (
            httpx.get(f"http://127.0.0.1:{port}/no-such-page?email=someone@example.org", timeout=30).status_code == 404
        )
        server_lines.wait_for('"http_request"')
        chatty_lines.wait_for('"job_done"')  # idle runs, logged at debug
        time.sleep(3)  # some six idle runs of the outbox and sealer in each worker

        healthy = run(home, "worker", "--check", **fast)
        assert healthy.returncode == 0, healthy.stderr
        assert json.loads(healthy.stdout)["ok"] is True
    for process in (server, worker, chatty):
        assert process.stdout is not None
        assert process.stdout.read() == "", "logs go to stderr; stdout carries results only"

    served = json_lines(server_lines.finish())
    uvicorn = [event["event"] for event in served if event.get("logger", "").startswith("uvicorn")]
    assert any("Uvicorn running on" in text for text in uvicorn), served
    assert any("Finished server process" in text for text in uvicorn), served
    assert 200 in {event["status"] for event in served if event["event"] == "http_request"}
    assert "someone@example.org" not in json.dumps(served)

    quiet = json_lines(worker_lines.finish())
    said = [event["event"] for event in quiet]
    assert said[0] == "worker_started"
    assert said[-1] == "worker_stopped"
    # Idle at info: nothing but start and stop (no job_done, no scheduler chatter).
    assert said == ["worker_started", "worker_stopped"], quiet

    detailed = json_lines(chatty_lines.finish())
    idle_runs = [event for event in detailed if event["event"] == "job_done"]
    assert idle_runs
    assert {event["level"] for event in idle_runs} == {"debug"}
    assert {"job": "audit-seal", "sealed": 0} in [{k: e[k] for k in ("job", "sealed") if k in e} for e in idle_runs]

    stopped = run(home, "worker", "--check", **fast)
    assert stopped.returncode == 1
    assert json.loads(stopped.stdout)["ok"] is False
    assert stopped.stderr.strip().startswith("error: worker unhealthy: no heartbeat")


def test_console_format_and_level_are_honoured(home: Path) -> None:
    """PRIVACY_LOG_JSON=false gives console lines; PRIVACY_LOG_LEVEL=WARNING hides info lines."""
    fresh = home / "fresh"
    fresh.mkdir()
    as_json = run(fresh, "db", "upgrade")
    assert as_json.returncode == 0, as_json.stderr
    migrations = [line for line in as_json.stderr.splitlines() if line.startswith("{")]
    assert migrations
    assert {json.loads(line)["logger"] for line in migrations} == {"alembic.runtime.migration"}

    again = home / "again"
    again.mkdir()
    console = run(again, "db", "upgrade", PRIVACY_LOG_JSON="false")
    assert console.returncode == 0, console.stderr
    assert not any(line.startswith("{") for line in console.stderr.splitlines())
    assert "Running upgrade" in console.stderr
    assert "[info" in console.stderr

    third = home / "third"
    third.mkdir()
    quiet = run(third, "db", "upgrade", PRIVACY_LOG_LEVEL="WARNING")
    assert quiet.returncode == 0, quiet.stderr
    assert "Running upgrade" not in quiet.stderr


def test_results_on_stdout_logs_on_stderr(home: Path) -> None:
    """``KEY=$(privacy-service systems add ...)`` captures the key and nothing else, logs at INFO."""
    shell = (
        'KEY=$("$@" systems add --name crm --url https://93.184.215.14/hooks --types erase --categories user.name)'
        ' && printf "%s" "$KEY"'
    )
    added = subprocess.run(  # noqa: S603 - fixed argv
        ["bash", "-c", shell, "bash", sys.executable, "-m", "privacy_service"],  # noqa: S607 - bash from PATH
        env=env(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    assert re.fullmatch(r"pss_[A-Za-z0-9_-]{43}", added.stdout), added.stdout  # the key, alone
    assert "system_added" in added.stderr  # the log line is there, on stderr, as JSON
    logged = [json.loads(line) for line in added.stderr.splitlines() if line.startswith("{")]
    assert "system_added" in [event["event"] for event in logged]

    created = run(home, "operators", "create", "--name", "ops", "--scopes", "metrics:read")
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("\n") == 1
    assert created.stdout.startswith("psk_")

    # Commands whose result is a table or a document: no log line among it.
    for args in (
        ("operators", "list"),
        ("systems", "list"),
        ("keys", "status"),
        ("audit", "verify"),
        ("audit", "checkpoint"),
        ("policy", "check"),
        ("purge", "--dry-run", "--json"),
    ):
        result = run(home, *args)
        assert result.returncode == 0, (args, result.stderr)
        for line in result.stdout.splitlines():
            assert '"level"' not in line, (args, line)
        for line in result.stderr.splitlines():
            if line.startswith("{"):
                assert {"event", "level", "timestamp"} <= set(json.loads(line)), (args, line)


# -- progress of long runs (issue 20 item 12) --------------------------------------------------


async def _seed_data_keys(home: Path, count: int) -> int:
    """Extra data keys (wrapped like a subject's) so that a re-wrap takes many batches."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{home}/privacy.db",
        keyring_path=home / "keyring.json",
        policy_dir=ROOT / "policies",
    )
    runtime = build_runtime(settings)
    try:
        async with runtime.db.transaction() as session:
            for _ in range(count):
                await runtime.keys.create_key(session, uuid.uuid4(), PRIMARY)
        async with runtime.db.transaction() as session:
            return sum((await key_counts_by_kek(session)).values())
    finally:
        await runtime.close()


async def test_keys_rotate_off_a_terminal_prints_json_progress_while_it_runs(home: Path) -> None:
    total = await _seed_data_keys(home, 600)
    with started(home, "keys", "rotate", "--batch-size", "1") as rotation:
        lines = Lines(rotation)
        line = lines.wait_until(lambda event: event.get("event") == "progress" and 0 < event["done"] < event["total"])
        running = rotation.poll() is None
        assert running, "the first progress line came only once the rotation had ended"
        assert rotation.wait(timeout=300) == 0
    said = json_lines([text for text in lines.finish() if not text.startswith("done:")])
    assert line["total"] == total
    assert line["unit"] == "keys"
    assert line["rate_per_second"] > 0
    assert line["seconds_left"] > 0
    progress = [event for event in said if event["event"] == "progress"]
    assert progress[0]["done"] == 0
    assert progress[-1]["done"] == total
    assert len(progress) <= 2 + 10 + 300 // 5  # the start, each tenth, one per 5 s at most (and the end)
    assert said[0] == {**said[0], "event": "stage", "message": "new KEK version 2"}


async def test_keys_rotate_on_a_terminal_draws_a_bar(home: Path) -> None:
    await _seed_data_keys(home, 150)
    leader, follower = pty.openpty()
    process = subprocess.Popen(  # noqa: S603 - fixed argv
        argv("keys", "rotate", "--batch-size", "5"),
        env=env(home, COLUMNS="160", TERM="xterm"),
        cwd=home,
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other end closed: the process is done with it
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0
    text = screen.decode("utf-8", "replace")
    assert "━" in text  # the bar
    assert "keys/s" in text
    assert "elapsed," in text
    assert "left" in text
    assert "done: " in text
    assert '"event"' not in text  # no JSON lines on a terminal


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # output, not storage: one backend
async def test_purge_off_a_terminal_prints_json_progress_per_rule(settings: Settings, runtime: Runtime) -> None:
    await scenario(runtime, subjects=3, records=20)
    result = purge_cli(settings, "purge", "--now", NOW.isoformat(), "--batch-size", "5", "--force")
    assert result.returncode == 0, result.stderr
    said = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    stages = [event["message"] for event in said if event["event"] == "stage"]
    assert "planning: records" in stages
    assert "purging: records" in stages
    progress = [event for event in said if event["event"] == "progress"]
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for event in progress:
        by_rule.setdefault(event["task"], []).append(event)
    assert "records:user.device" in by_rule
    for events in by_rule.values():
        assert events[0]["done"] == 0
        assert events[-1]["done"] == events[-1]["total"] > 0
        assert events[-1]["unit"] == "rows"
    assert "records:user.device" in result.stdout  # the summary table, on stdout alone
    assert '"event"' not in result.stdout

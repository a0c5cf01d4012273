"""Every shell example of the operator guide (and of the API walkthrough and the README) runs, as written.

The ```sh blocks of a page become one bash script (``set -euo pipefail``), so the variables one block
sets (a key, a subject id) carry into the next, exactly as in a reader's terminal. A block marked
``<!-- docs-test: background-server -->`` (``privacy-service serve``) is started in the background
and the script waits for its ``/readyz``; ``background-smtp`` (a mail sink) waits until the mail port
accepts connections. Background blocks run in their own session and are killed with their children
when the script ends. A page that assumes a running service (the API walkthrough, the README) gets
``db upgrade`` and ``serve`` from the harness first; there, a block marked ``setup`` (the README's
``make run``) is the reader's way to the same state and is not run again.

The script runs in a temporary folder laid out like the repository root (``policies/``,
``examples/``, ``.venv``), with every ``PRIVACY_*`` setting at its default except the HTTP and mail
ports, which are free ones (and the base URL, which follows the port). A command that fails (a
wrong flag, a renamed route, a missing field, an error answer under ``curl --fail-with-body``)
fails the test and names the block and its line.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

BASH = shutil.which("bash") or "/bin/bash"
ROOT = Path(__file__).resolve().parents[2]
OPERATOR_GUIDE = "docs/guides/operator.md"
# page (from the repository root) -> whether the harness starts the service first (the page does not),
# and the settings the page says that service runs with
PAGES: dict[str, tuple[bool, dict[str, str]]] = {
    OPERATOR_GUIDE: (False, {}),
    "docs/api/requests.md": (True, {}),
    "docs/guides/downstream-systems.md": (True, {"PRIVACY_SYSTEMS_ALLOW_PRIVATE_NETWORKS": "true"}),
    "README.md": (True, {}),
}
SHELL_FENCES = ("sh", "console", "bash", "shell")
BACKGROUND = ("background-server", "background-smtp", "background-receiver")
SETUP = "setup"
_BLOCK = re.compile(
    r"(?:<!--\s*docs-test:\s*(?P<directive>[\w-]+)\s*-->\s*\n)?^```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```\s*$",
    re.M | re.S,
)
MARK = "::docs-block::"
PAGE_TIMEOUT_SECONDS = 300
PIDS = ".background-pids"  # for finish(): a script killed on timeout runs no trap
_WAIT = {
    "background-server": 'curl -sf "http://127.0.0.1:$PRIVACY_PORT/readyz" >/dev/null',
    "background-smtp": '(exec 3<>"/dev/tcp/127.0.0.1/$PRIVACY_SMTP_PORT") 2>/dev/null',
    "background-receiver": '(exec 3<>"/dev/tcp/127.0.0.1/$RECEIVER_PORT") 2>/dev/null',
}


@dataclass(frozen=True)
class Block:
    number: int
    line: int
    code: str
    directive: str | None = None


def shell_blocks(markdown: str) -> list[Block]:
    blocks = []
    for match in _BLOCK.finditer(markdown):
        if match["lang"] not in SHELL_FENCES:
            continue
        if match["directive"] not in (None, SETUP, *BACKGROUND):
            raise ValueError(f"unknown docs-test directive {match['directive']!r}")
        line = markdown.count("\n", 0, match.start("code"))
        blocks.append(Block(len(blocks) + 1, line, match["code"], match["directive"]))
    return blocks


def script_for(blocks: list[Block]) -> str:
    parts = [
        "set -euo pipefail",
        "BACKGROUND_PIDS=()",
        # Each background block leads its own session: kill the whole group (the shell and its children).
        'stop_background() { for pid in "${BACKGROUND_PIDS[@]}"; do kill -- "-$pid" 2>/dev/null || true; done; }',
        "trap stop_background EXIT",
    ]
    for block in blocks:
        parts.append(f'echo "{MARK}{block.number}:{block.line}" >&2')
        if block.directive is None:
            parts.append(block.code)
            continue
        name = f"background-{block.number}"
        wait = _WAIT[block.directive]
        parts += [
            f"cat > {name}.sh <<'DOCS_BLOCK_EOF'\n{block.code}DOCS_BLOCK_EOF",
            f"setsid {BASH} {name}.sh > {name}.log 2>&1 &",
            f"BACKGROUND_PIDS+=($!); echo $! >> {PIDS}",
            f"for _ in $(seq 150); do {wait} && break; "
            f'kill -0 "$!" || {{ cat {name}.log >&2; exit 1; }}; sleep 0.2; done',
            wait,
        ]
    return "\n".join(parts) + "\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_page(page: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    for name in ("policies", "examples"):
        (workdir / name).symlink_to(ROOT / name)
    (workdir / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {name: value for name, value in os.environ.items() if not name.startswith("PRIVACY_")}
    port = _free_port()
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
        PRIVACY_PORT=str(port),
        # The defaults agree (port 8000, base URL on 8000); with another port, the links and callback
        # URLs the service hands out must follow it.
        PRIVACY_BASE_URL=f"http://127.0.0.1:{port}",
        # The API walkthrough runs a mail sink here; elsewhere nothing listens and mail stays queued.
        PRIVACY_SMTP_PORT=str(_free_port()),
        PRIVACY_LOG_LEVEL="WARNING",
        # The downstream-systems page runs the reference receiver here.
        RECEIVER_PORT=str(_free_port()),
    )
    starts_service, settings = PAGES[page]
    env.update(settings)
    blocks = shell_blocks((ROOT / page).read_text())
    if any(block.directive == SETUP for block in blocks):
        # Only where the harness does the set-up itself, and only for blocks that do set-up.
        assert starts_service, f"{page}: a setup block on a page that starts its own service"
        assert all("make run" in b.code for b in blocks if b.directive == SETUP), f"{page}: setup is make run"
        blocks = [block for block in blocks if block.directive != SETUP]
    if starts_service:
        blocks = [
            Block(0, 0, "mkdir -p var\nprivacy-service db upgrade\n"),
            Block(0, 0, "privacy-service serve\n", "background-server"),
            *blocks,
        ]
    process = subprocess.Popen(  # noqa: S603 - bash running the page's own examples
        [BASH, "-c", script_for(blocks)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return finish(process, workdir, PAGE_TIMEOUT_SECONDS)


def finish(process: subprocess.Popen[str], workdir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Wait for the script; past the timeout, stop it and every background block it started."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pids = workdir / PIDS
        for pid in pids.read_text().split() if pids.exists() else ():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)  # each block leads its own session (setsid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the script and its foreground commands (start_new_session)
        stdout, stderr = process.communicate(timeout=30)
        stderr += f"\n(the page did not finish within {timeout} s)"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_the_operator_guide_has_examples_and_starts_one_server() -> None:
    blocks = shell_blocks((ROOT / OPERATOR_GUIDE).read_text())
    assert len(blocks) >= 10
    assert [(b.code.strip(), b.directive) for b in blocks if b.directive] == [
        ("privacy-service serve", "background-server")
    ]


def test_the_extractor_finds_every_fence_and_its_directive() -> None:
    page = "text\n<!-- docs-test: background-smtp -->\n```sh\nrun me\n```\n\n```json\n{}\n```\n```console\nls\n```\n"
    assert [(b.code, b.directive) for b in shell_blocks(page)] == [("run me\n", "background-smtp"), ("ls\n", None)]
    with pytest.raises(ValueError, match="unknown"):
        shell_blocks("<!-- docs-test: skip -->\n```sh\nx\n```\n")


def test_a_wrong_command_fails_the_script(tmp_path: Path) -> None:
    """The harness itself must not hide a failure: a failing command, or a pipeline that fails, stops it."""
    missing_field = "echo '{}' | python3 -c 'import json, sys; print(json.load(sys.stdin)[\"id\"])'\n"
    for code in ("false\necho never\n", "false | cat\necho never\n", missing_field + "echo never\n"):
        script = script_for([Block(1, 1, "true\n"), Block(2, 5, code)])
        result = subprocess.run(  # noqa: S603 - bash running the harness's own script
            [BASH, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert result.returncode != 0
        assert "never" not in result.stdout
        assert f"{MARK}2:5" in result.stderr


def test_a_script_past_its_time_is_stopped_with_its_background_blocks(tmp_path: Path) -> None:
    script = script_for(
        [Block(1, 1, "echo $$ > inner.pid; exec sleep 300\n", "background-smtp"), Block(2, 3, "sleep 300\n")]
    )
    with socket.socket() as listener:  # the "mail sink" port is open, so the script goes on to block 2
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        process = subprocess.Popen(  # noqa: S603 - bash running the harness's own script
            [BASH, "-c", script],
            cwd=tmp_path,
            env={**os.environ, "PRIVACY_SMTP_PORT": str(port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        result = finish(process, tmp_path, timeout=5)
    assert result.returncode != 0
    assert "did not finish within 5 s" in result.stderr
    inner = int((tmp_path / "inner.pid").read_text())
    for _ in range(50):
        if not Path(f"/proc/{inner}").exists():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{inner}").exists(), "the background block outlived its script"


def test_a_background_block_that_dies_fails_the_script_and_shows_its_output(tmp_path: Path) -> None:
    script = script_for([Block(1, 3, "echo the server could not start >&2\nexit 3\n", "background-server")])
    result = subprocess.run(  # noqa: S603 - bash running the harness's own script
        [BASH, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PRIVACY_PORT": str(_free_port())},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "the server could not start" in result.stderr


def test_the_readme_only_skips_make_run() -> None:
    blocks = shell_blocks((ROOT / "README.md").read_text())
    assert [b.code.split()[:2] for b in blocks if b.directive == SETUP] == [["make", "run"]]
    assert any("operators create" in b.code for b in blocks if b.directive is None)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_shell_example_runs(page: str, tmp_path: Path) -> None:
    result = run_page(page, tmp_path)
    if result.returncode != 0:
        blocks = [line for line in result.stderr.splitlines() if line.startswith(MARK)]
        number, _, line = (blocks[-1].removeprefix(MARK) if blocks else "?:?").partition(":")
        where = "the harness's set-up" if number == "0" else f"block {number} ({page} line {line})"
        pytest.fail(
            f"{where} failed with exit {result.returncode}\n--- stdout ---\n{result.stdout[-4000:]}\n"
            f"--- stderr ---\n{result.stderr[-6000:]}"
        )

"""Every shell example of the operator guide runs, in order, as written, against a real set-up.

The ```sh blocks of docs/guides/operator.md become one bash script (``set -euo pipefail``), so the
variables one block sets (a key, a subject id) carry into the next, exactly as in a reader's
terminal. A block marked ``<!-- docs-test: background -->`` (``privacy-service serve``) is started in
the background and the script waits for its ``/readyz``. The script runs in a temporary folder
laid out like the repository root (``policies/``, ``.venv`` on the path), with every ``PRIVACY_*``
setting the guide relies on left at its default except the port, which is a free one. A command that
fails (a wrong flag, a renamed route, a missing field, an error answer under ``curl --fail-with-body``)
fails the test and names the block.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

BASH = shutil.which("bash") or "/bin/bash"
ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guides" / "operator.md"
SHELL_FENCES = ("sh", "console", "bash", "shell")
_BLOCK = re.compile(
    r"(?:<!--\s*docs-test:\s*(?P<directive>[\w-]+)\s*-->\s*\n)?^```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```\s*$",
    re.M | re.S,
)
MARK = "::docs-block::"


@dataclass(frozen=True)
class Block:
    number: int
    line: int
    code: str
    background: bool


def shell_blocks(markdown: str) -> list[Block]:
    blocks = []
    for match in _BLOCK.finditer(markdown):
        if match["lang"] not in SHELL_FENCES:
            continue
        if match["directive"] not in (None, "background"):
            raise ValueError(f"unknown docs-test directive {match['directive']!r}")
        line = markdown.count("\n", 0, match.start("code"))
        blocks.append(Block(len(blocks) + 1, line, match["code"], match["directive"] == "background"))
    return blocks


def script_for(blocks: list[Block]) -> str:
    parts = [
        "set -euo pipefail",
        "BACKGROUND_PIDS=()",
        'trap \'for pid in "${BACKGROUND_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done\' EXIT',
    ]
    for block in blocks:
        parts.append(f'echo "{MARK}{block.number}:{block.line}" >&2')
        if block.background:
            parts += [
                f"( {block.code.strip()} ) > background-{block.number}.log 2>&1 &",
                "BACKGROUND_PIDS+=($!)",
                # The only background process the guide starts is the API: wait until it is ready.
                'for _ in $(seq 150); do curl -sf "http://127.0.0.1:$PRIVACY_PORT/readyz" >/dev/null && break; '
                f'kill -0 "$!" || {{ cat background-{block.number}.log >&2; exit 1; }}; sleep 0.2; done',
                'curl -sf "http://127.0.0.1:$PRIVACY_PORT/readyz" >/dev/null',
            ]
        else:
            parts.append(block.code)
    return "\n".join(parts) + "\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_guide_has_examples_and_one_server() -> None:
    blocks = shell_blocks(GUIDE.read_text())
    assert len(blocks) >= 10
    assert [block.code.strip() for block in blocks if block.background] == ["privacy-service serve"]


def test_the_extractor_finds_every_fence_and_its_directive() -> None:
    page = "text\n<!-- docs-test: background -->\n```sh\nrun me\n```\n\n```json\n{}\n```\n```console\nls\n```\n"
    assert [(b.code, b.background) for b in shell_blocks(page)] == [("run me\n", True), ("ls\n", False)]
    with pytest.raises(ValueError, match="unknown"):
        shell_blocks("<!-- docs-test: skip -->\n```sh\nx\n```\n")


def test_a_wrong_command_fails_the_script(tmp_path: Path) -> None:
    """The harness itself must not hide a failure: a failing command, or a pipeline that fails, stops it."""
    missing_field = "echo '{}' | python3 -c 'import json, sys; print(json.load(sys.stdin)[\"id\"])'\n"
    for code in ("false\necho never\n", "false | cat\necho never\n", missing_field + "echo never\n"):
        script = script_for([Block(1, 1, "true\n", False), Block(2, 5, code, False)])
        result = subprocess.run(  # noqa: S603 - bash running the harness's own script
            [BASH, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert result.returncode != 0
        assert "never" not in result.stdout
        assert f"{MARK}2:5" in result.stderr


def test_every_operator_guide_example_runs(tmp_path: Path) -> None:
    (tmp_path / "policies").symlink_to(ROOT / "policies")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {name: value for name, value in os.environ.items() if not name.startswith("PRIVACY_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
        PRIVACY_PORT=str(_free_port()),
        # Nothing listens here: mail stays queued in the outbox, which the guide never reads.
        PRIVACY_SMTP_PORT=str(_free_port()),
        PRIVACY_LOG_LEVEL="WARNING",
    )
    script = script_for(shell_blocks(GUIDE.read_text()))
    result = subprocess.run(  # noqa: S603 - bash running the guide's own examples
        [BASH, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0:
        blocks = [line for line in result.stderr.splitlines() if line.startswith(MARK)]
        failed = blocks[-1].removeprefix(MARK) if blocks else "?"
        number, _, line = failed.partition(":")
        pytest.fail(
            f"operator guide block {number} (docs/guides/operator.md line {line}) failed with exit "
            f"{result.returncode}\n--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
        )

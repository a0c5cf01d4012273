"""``privacy-service audit verify|export|checkpoint`` run as a user runs them: the installed console
script in a subprocess, configured by environment variables, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from httpx import AsyncClient
from sqlalchemy import text

from privacy_service.audit.service import seal_pending
from privacy_service.config import Settings
from privacy_service.runtime import Runtime
from tests.integration.test_cli import _env, one_line_error

SCRIPT = Path(sys.executable).with_name("privacy-service")


def run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv: this venv's console script
        [str(SCRIPT), *args],
        env=_env(settings),
        cwd=settings.keyring_path.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


async def _activity(client: AsyncClient, auth: dict[str, str], n: int, tag: str = "a") -> list[str]:
    ids = []
    for i in range(n):
        created = await client.post("/v1/subjects", json={"email": f"audit-cli-{tag}{i}@example.com"}, headers=auth)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
        await client.get(f"/v1/subjects/{ids[-1]}", headers=auth)
    return ids


async def _sql(runtime: Runtime, *statements: str) -> None:
    async with runtime.db.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


def test_the_audit_commands_are_mounted_with_their_help(tmp_path: Path) -> None:
    settings = Settings(keyring_path=tmp_path / "keyring.json")
    top = succeeded(run(settings, "--help"))
    assert "audit" in top.stdout
    group = succeeded(run(settings, "audit", "--help"))
    for command in ("verify", "export", "checkpoint"):
        assert command in group.stdout
    verify = succeeded(run(settings, "audit", "verify", "--help"))
    assert "--checkpoints" in verify.stdout
    assert "--from-checkpoint" in verify.stdout
    assert "--append" in succeeded(run(settings, "audit", "checkpoint", "--help")).stdout
    assert "--output" in succeeded(run(settings, "audit", "export", "--help")).stdout


async def test_checkpoint_export_and_verify_as_a_user_runs_them(
    settings: Settings, runtime: Runtime, client: AsyncClient, auth: dict[str, str], tmp_path: Path
) -> None:
    ids = await _activity(client, auth, 3)
    kept = tmp_path / "elsewhere" / "checkpoints.jsonl"
    kept.parent.mkdir()

    first = succeeded(run(settings, "audit", "checkpoint", "--append", str(kept)))
    line = json.loads(first.stdout.strip())  # one signed line on stdout, the same appended to the file
    assert kept.read_text().strip() == first.stdout.strip()
    assert line["event"] == "audit_checkpoint"
    assert line["seq"] >= 6
    assert len(bytes.fromhex(line["mac"])) == 32
    assert f"checkpoint signed at seq {line['seq']}" in first.stderr

    await _activity(client, auth, 1, "b")
    second = succeeded(run(settings, "audit", "checkpoint", "-a", str(kept)))
    assert len(kept.read_text().splitlines()) == 2
    head = json.loads(second.stdout)["seq"]

    verified = succeeded(run(settings, "audit", "verify"))
    assert f"audit chain intact: {head} entries verified from seq 1 to {head}" in verified.stderr
    against = succeeded(run(settings, "audit", "verify", "--checkpoints", str(kept)))
    assert "matches 2 external checkpoints" in against.stderr
    late = succeeded(run(settings, "audit", "verify", "--from-checkpoint", "-c", str(kept)))
    assert f"from seq {head + 1} to {head}" in late.stderr

    exported = tmp_path / "audit.jsonl"
    succeeded(run(settings, "audit", "export", "--output", str(exported)))
    events = [json.loads(row) for row in exported.read_text().splitlines()]
    assert [event["seq"] for event in events] == list(range(1, head + 1))
    one = succeeded(run(settings, "audit", "export", "--subject", ids[0]))
    assert [json.loads(row)["action"] for row in one.stdout.splitlines()] == ["subject.create", "subject.read"]
    assert "audit-cli-a0@example.com" not in exported.read_text() + one.stdout
    one_line_error(run(settings, "audit", "export", "--subject", "not-a-uuid"), "--subject must be a UUID")

    # Someone with write access to the database alone drops the newest entries, the checkpoints
    # that name them, and points the head back: the database looks consistent, the kept file does not.
    keep = line["seq"] - 2
    hash_at_keep = f"(SELECT hash FROM audit_events WHERE seq = {keep})"  # noqa: S608
    await _sql(
        runtime,
        f"DELETE FROM audit_events WHERE seq > {keep}",  # noqa: S608 - test-made numbers
        f"DELETE FROM audit_checkpoints WHERE seq > {keep}",  # noqa: S608
        f"UPDATE audit_head SET seq = {keep}, hash = {hash_at_keep} WHERE id = 1",  # noqa: S608
    )
    broken = run(settings, "audit", "verify", "--checkpoints", str(kept))
    assert broken.returncode == 1
    assert "Traceback" not in broken.stderr
    # The sealer's alarm (a JSON log line) comes first, then the verdict.
    assert broken.stderr.splitlines()[-1].startswith(f"error: audit chain broken at seq {keep}: the head")


async def test_a_checkpoint_file_that_holds_no_checkpoint_is_refused(
    settings: Settings, runtime: Runtime, client: AsyncClient, auth: dict[str, str], tmp_path: Path
) -> None:
    await _activity(client, auth, 1)
    await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
    empty, log, forged = tmp_path / "empty.jsonl", tmp_path / "other.log", tmp_path / "forged.jsonl"
    empty.write_text("")
    log.write_text(json.dumps({"event": "http_request", "status": 200}) + "\n")
    forged.write_text(json.dumps({"event": "audit_checkpoint", "seq": 1, "hash": "00" * 32, "mac": "11" * 32}) + "\n")
    for path in (empty, log):
        result = run(settings, "audit", "verify", "--checkpoints", str(path))
        assert result.returncode == 2
        one_line_error(result, "holds no audit checkpoint")
    bad = run(settings, "audit", "verify", "--checkpoints", str(forged))
    assert bad.returncode == 1
    one_line_error(bad, "not signed with this audit key")
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("seq=1\n")
    one_line_error(run(settings, "audit", "verify", "-c", str(garbage)), "line 1 is not JSON")

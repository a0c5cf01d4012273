"""The ``privacy-service`` command line, run as a real subprocess against a real database.

The operator commands run on a fresh SQLite file migrated by ``db upgrade``; key rotation runs on
both databases (the ``settings`` fixture: PostgreSQL follows the conftest skip/fail rules).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from httpx import AsyncClient

from privacy_service.config import Settings
from privacy_service.crypto.service import key_counts_by_kek
from privacy_service.operators.service import authenticate
from privacy_service.runtime import Runtime, build_runtime

ROOT = Path(__file__).resolve().parents[2]
KEY_LINE = re.compile(r"^psk_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$")


def _env(settings: Settings) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PRIVACY_")}
    env.update(
        PRIVACY_DATABASE_URL=settings.database_url,
        PRIVACY_KEYRING_PATH=str(settings.keyring_path),
        PRIVACY_POLICY_DIR=str(settings.policy_dir),
        PRIVACY_LOG_LEVEL="WARNING",
    )
    if settings.keystore_path is not None:
        env["PRIVACY_KEYSTORE_PATH"] = str(settings.keystore_path)
    return env


def cli_all(settings: Settings, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands side by side (start-up is most of a command's time)."""
    processes = [
        subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter running this package
            [sys.executable, "-m", "privacy_service", *args],
            env=_env(settings),
            cwd=settings.keyring_path.parent,  # its own folder, so no stray .env file is read
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return cli_all(settings, args)[0]


def one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode != 0, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def kek_table(result: subprocess.CompletedProcess[str]) -> dict[int, tuple[str, int]]:
    """``keys status`` as {KEK version: (current column, data keys)}."""
    assert "provider: local" in result.stdout
    rows: dict[int, tuple[str, int]] = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) == 4 and cells[0].isdigit():
            rows[int(cells[0])] = (cells[1], int(cells[3]))
    return rows


def operator_rows(result: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) == 6 and line.startswith("│"):
            rows[cells[0]] = cells
    return rows


async def _authenticates(settings: Settings, key: str) -> frozenset[str] | None:
    runtime = build_runtime(settings)
    try:
        async with runtime.db.transaction() as session:
            found = await authenticate(session, key, runtime.clock.now())
        return found.scopes if found else None
    finally:
        await runtime.close()


async def test_db_upgrade_and_operator_lifecycle(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/privacy.db",
        keyring_path=tmp_path / "keyring.json",
        policy_dir=ROOT / "policies",
    )
    upgraded = ok(cli(settings, "db", "upgrade"))
    assert "database at revision head" in upgraded.stderr
    assert (tmp_path / "privacy.db").exists()
    assert stat.S_IMODE((tmp_path / "keyring.json").stat().st_mode) == 0o600  # first set-up creates it

    created = ok(cli(settings, "operators", "create", "--name", "x", "--scopes", "subjects:read"))
    key = created.stdout.splitlines()[-1]
    match = KEY_LINE.match(key)
    assert match, created.stdout
    key_id = match.group(1)
    assert await _authenticates(settings, key) == frozenset({"subjects:read"})

    duplicate, unknown, listed = cli_all(
        settings,
        ("operators", "create", "--name", "x", "--scopes", "subjects:write"),
        ("operators", "create", "--name", "y", "--scopes", "subjects:read,subjects:delete"),
        ("operators", "list"),
    )
    one_line_error(duplicate, "already exists")
    assert duplicate.stdout == ""
    one_line_error(unknown, "unknown scopes", "subjects:delete")
    assert unknown.stdout == ""

    ok(listed)
    assert key not in listed.stdout
    assert match.group(2) not in listed.stdout
    rows = operator_rows(listed)
    assert set(rows) == {"x"}  # neither failed create left a row behind
    assert rows["x"][1:3] == [key_id, "subjects:read"]
    assert rows["x"][5] == "-"

    assert "operator 'x' revoked" in ok(cli(settings, "operators", "revoke", "--name", "x")).stderr
    assert await _authenticates(settings, key) is None


def test_db_upgrade_makes_private_files_in_an_existing_directory(tmp_path: Path) -> None:
    """`make run` does `mkdir -p var` (0755 under the usual umask) before `db upgrade`: the database
    files must still be 0600 and the directory 0700, and a file left 0644 by an old version is tightened."""
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / "privacy-keys.db").touch(mode=0o644)
    (data_dir / "privacy-keys.db").chmod(0o644)
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{data_dir}/privacy.db",
        keyring_path=tmp_path / "keyring.json",
        policy_dir=ROOT / "policies",
    )
    ok(cli(settings, "db", "upgrade"))
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("privacy.db", "privacy-keys.db"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name


def test_the_worker_logs_json_lines(tmp_path: Path) -> None:
    """Shipped logs parse: the worker prints the same JSON lines as the API (it once printed console text)."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/privacy.db",
        keyring_path=tmp_path / "keyring.json",
        policy_dir=ROOT / "policies",
    )
    ok(cli(settings, "db", "upgrade"))
    env = _env(settings) | {"PRIVACY_LOG_LEVEL": "INFO"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "privacy_service", "worker"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Bounded: a worker that never prints the line is stopped, which ends the read below.
    watchdog = threading.Timer(60, worker.terminate)
    watchdog.start()
    try:
        assert worker.stderr is not None
        started = None
        for line in worker.stderr:
            if "worker_started" in line:
                started = json.loads(line)
                break
        assert started is not None, "the worker never said it started"
        assert started["event"] == "worker_started"
        assert "retention-purge" in started["jobs"]
    finally:
        watchdog.cancel()
        worker.terminate()
        worker.communicate(timeout=30)


async def _create_subjects(client: AsyncClient, auth: dict[str, str], count: int) -> dict[str, str]:
    emails: dict[str, str] = {}
    for i in range(count):
        email = f"rotation-{i}@example.com"
        response = await client.post(
            "/v1/subjects", json={"email": email, "profile": {"name": f"Subject {i}"}}, headers=auth
        )
        assert response.status_code == 201, response.text
        emails[response.json()["id"]] = email
    return emails


async def _assert_readable(client: AsyncClient, auth: dict[str, str], emails: dict[str, str]) -> None:
    for subject_id, email in emails.items():
        response = await client.get(f"/v1/subjects/{subject_id}", headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["email"] == email


async def _data_keys(runtime: Runtime) -> dict[int, int]:
    async with runtime.db.transaction() as session:
        return await key_counts_by_kek(session)


async def test_keys_rotate_then_status(
    settings: Settings, runtime: Runtime, client: AsyncClient, auth: dict[str, str]
) -> None:
    emails = await _create_subjects(client, auth, 3)
    total = sum((await _data_keys(runtime)).values())
    assert total >= 3
    assert await _data_keys(runtime) == {1: total}

    rotated = ok(cli(settings, "keys", "rotate", "--batch-size", "2"))
    assert "new KEK version 2" in rotated.stderr
    assert f"done: {total} data keys now under KEK version 2" in rotated.stderr
    assert kek_table(ok(cli(settings, "keys", "status"))) == {1: ("", 0), 2: ("yes", total)}
    assert await _data_keys(runtime) == {2: total}
    await _assert_readable(client, auth, emails)  # this process learns of version 2 from the file


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # same logic on both; keep the suite fast
async def test_keys_resume_and_retire(
    settings: Settings, runtime: Runtime, client: AsyncClient, auth: dict[str, str]
) -> None:
    emails = await _create_subjects(client, auth, 2)
    total = sum((await _data_keys(runtime)).values())
    # An interrupted rotation: KEK version 2 exists but no data key has been re-wrapped yet.
    assert await runtime.provider.rotate() == 2

    stale, current, future = cli_all(
        settings, ("keys", "retire", "1"), ("keys", "retire", "2"), ("keys", "retire", "3")
    )
    one_line_error(stale, f"{total} data keys still use KEK version 1")
    one_line_error(current, "current KEK version cannot be retired")
    one_line_error(future, "does not exist")
    assert [v.version for v in await runtime.provider.versions()] == [1, 2]

    resumed = ok(cli(settings, "keys", "rotate", "--resume"))
    assert "resuming re-wrap to KEK version 2" in resumed.stderr
    assert f"done: {total} data keys now under KEK version 2" in resumed.stderr

    again, retired = cli_all(settings, ("keys", "rotate", "--resume"), ("keys", "retire", "1"))
    assert "done: 0 data keys now under KEK version 2" in ok(again).stderr
    assert "KEK version 1 retired" in ok(retired).stderr

    assert [v.version for v in await runtime.provider.versions()] == [2]
    assert await _data_keys(runtime) == {2: total}
    await _assert_readable(client, auth, emails)

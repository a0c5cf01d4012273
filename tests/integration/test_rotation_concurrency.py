"""Key rotation when two rotations overlap, and when the database goes away mid-run.

* Two ``keys rotate`` processes started together (or a rotation and a ``--resume``) both finish,
  every data key ends on the newest KEK version, and every record still opens with the old versions
  retired. In-process: a re-wrap adopts a KEK version added while it runs instead of looping.
* ``keys rotate`` whose database connection is cut mid-run (PostgreSQL behind a TCP proxy the test
  stops, or every connection terminated) retries, and if the database stays away, exits with one
  short line saying how far it got and that ``keys rotate --resume`` finishes it; the resume does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient
from sqlalchemy.engine import make_url

from privacy_service.config import Settings
from privacy_service.crypto.jobs import acquire_rotation_lock, rewrap_all
from privacy_service.crypto.service import PRIMARY, key_counts_by_kek
from privacy_service.runtime import Runtime
from tests.conftest import _dsn
from tests.integration.test_cli import _assert_readable, _create_subjects, _env, cli_all, ok


async def _seed_keys(runtime: Runtime, count: int) -> None:
    """``count`` extra data keys (wrapped like any subject's) so a re-wrap takes many batches."""
    async with runtime.db.transaction() as session:
        for _ in range(count):
            await runtime.keys.create_key(session, uuid.uuid4(), PRIMARY)


async def _counts(runtime: Runtime) -> dict[int, int]:
    async with runtime.db.transaction() as session:
        return await key_counts_by_kek(session)


async def _versions(runtime: Runtime) -> list[int]:
    return [info.version for info in await runtime.provider.versions()]


async def _retire_old_and_read(
    runtime: Runtime, client: AsyncClient, auth: dict[str, str], emails: dict[str, str]
) -> None:
    """Retiring every older KEK proves no data still depends on one; everything still opens."""
    versions = await _versions(runtime)
    for version in versions[:-1]:
        await runtime.provider.retire(version)
    assert await _versions(runtime) == versions[-1:]
    await _assert_readable(client, auth, emails)


# -- overlapping rotations -----------------------------------------------------------------------


async def test_a_rewrap_adopts_a_version_added_while_it_runs(
    runtime: Runtime, client: AsyncClient, auth: dict[str, str]
) -> None:
    emails = await _create_subjects(client, auth, 3)
    await _seed_keys(runtime, 60)
    total = sum((await _counts(runtime)).values())
    provider = runtime.provider
    assert await provider.rotate() == 2
    first_batch = asyncio.Event()

    async def second_rotation() -> Any:
        await first_batch.wait()
        assert await provider.rotate() == 3
        return await rewrap_all(runtime.db, provider, runtime.clock, batch_size=5)

    first, second = await asyncio.wait_for(
        asyncio.gather(
            rewrap_all(runtime.db, provider, runtime.clock, batch_size=5, on_batch=lambda _n: first_batch.set()),
            second_rotation(),
        ),
        timeout=60,  # before the fix the first run re-wrapped the same keys forever
    )
    assert first.target_version == second.target_version == 3
    assert await _counts(runtime) == {3: total}
    await _retire_old_and_read(runtime, client, auth, emails)


@pytest.mark.parametrize(
    "second", [("keys", "rotate", "--batch-size", "5"), ("keys", "rotate", "--resume", "--batch-size", "5")]
)
async def test_two_rotations_started_together_both_finish(
    settings: Settings, runtime: Runtime, client: AsyncClient, auth: dict[str, str], second: tuple[str, ...]
) -> None:
    emails = await _create_subjects(client, auth, 3)
    await _seed_keys(runtime, 400)
    total = sum((await _counts(runtime)).values())

    first_run, second_run = cli_all(settings, ("keys", "rotate", "--batch-size", "5"), second)
    for run in (first_run, second_run):
        assert "Traceback" not in ok(run).stderr
    newest = 2 if "--resume" in second else 3
    assert await _versions(runtime) == list(range(1, newest + 1))
    assert await _counts(runtime) == {newest: total}
    done = [line for run in (first_run, second_run) for line in run.stderr.splitlines() if "done:" in line]
    assert len(done) == 2
    assert any(f"data keys now under KEK version {newest}" in line for line in done)
    await _retire_old_and_read(runtime, client, auth, emails)


async def test_a_rotation_waits_while_another_holds_the_lock(
    settings: Settings, runtime: Runtime, client: AsyncClient, auth: dict[str, str]
) -> None:
    emails = await _create_subjects(client, auth, 2)
    total = sum((await _counts(runtime)).values())
    held = await acquire_rotation_lock(runtime.db)  # a rotation in another process, as far as the CLI can tell
    try:
        process = await _rotate(_env(settings), settings)
        assert process.stderr is not None
        first_line = await asyncio.wait_for(process.stderr.readline(), timeout=60)
        # Not a terminal: the CLI's notes are JSON lines, as its progress (privacy_service.progress).
        note = json.loads(first_line)
        assert note["event"] == "stage"
        assert note["message"] == "another key rotation is running; waiting for it to finish"
        await asyncio.sleep(1.5)
        assert process.returncode is None
        assert await _versions(runtime) == [1]  # nothing added while it waits
    finally:
        await held.release()
    _, rest = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, rest.decode()
    assert f"done: {total} data keys now under KEK version 2" in rest.decode()
    assert await _versions(runtime) == [1, 2]
    await _retire_old_and_read(runtime, client, auth, emails)


# -- the database goes away ----------------------------------------------------------------------


class Proxy:
    """A TCP proxy to PostgreSQL that the test can cut (every connection dropped, new ones refused)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        self._writers |= {client_writer, server_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()


@pytest.fixture
async def proxy(settings: Settings) -> Any:
    url = make_url(settings.database_url)
    running = Proxy(url.host or "127.0.0.1", url.port or 5432)
    await running.start()
    yield running
    with contextlib.suppress(AssertionError):
        await running.cut()


def _via(settings: Settings, port: int) -> dict[str, str]:
    env = _env(settings)
    url = make_url(settings.database_url).set(host="127.0.0.1", port=port)
    env["PRIVACY_DATABASE_URL"] = url.render_as_string(hide_password=False)
    return env


async def _rotate(env: dict[str, str], settings: Settings, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "privacy_service",
        "keys",
        "rotate",
        *args,
        env=env,
        cwd=settings.keyring_path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def _count_at(settings: Settings, version: int) -> int:
    conn = await asyncpg.connect(_dsn(settings.database_url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM keystore.data_keys WHERE kek_version = $1", version))
    finally:
        await conn.close()


async def _when_partly_done(settings: Settings, version: int, total: int) -> int:
    """Wait until some but not all keys are on ``version``; returns how many are."""
    for _ in range(3000):
        done = await _count_at(settings, version)
        assert done < total, "the rotation finished before the test could cut it; seed more keys"
        if done >= 50:
            return done
        await asyncio.sleep(0.01)
    raise AssertionError("the rotation did not start")


KEYS = 4000


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_lost_database_ends_in_one_line_and_resume_finishes(
    settings: Settings, runtime: Runtime, client: AsyncClient, auth: dict[str, str], proxy: Proxy
) -> None:
    emails = await _create_subjects(client, auth, 3)
    await _seed_keys(runtime, KEYS)
    total = sum((await _counts(runtime)).values())

    process = await _rotate(_via(settings, proxy.port), settings, "--batch-size", "10")
    await _when_partly_done(settings, 2, total)
    await proxy.cut()  # the database is gone for good (from this process's view)
    _, stderr_bytes = await asyncio.wait_for(process.communicate(), timeout=120)
    stderr = stderr_bytes.decode()
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) <= 10, stderr
    error = lines[-1]
    assert error.startswith("error: the database connection was lost: "), stderr
    assert f"of {total} data keys re-wrapped to KEK version 2" in error
    assert "keys rotate --resume" in error
    reported = int(error.removeprefix("error: the database connection was lost: ").split(" ", 1)[0])
    on_new = await _count_at(settings, 2)
    # What it reports is committed; at most the batch whose commit answer was lost is not counted.
    assert reported <= on_new <= reported + 10
    assert 0 < on_new < total
    assert "retry" in stderr  # it tried again before giving up

    resumed = await _rotate(_env(settings), settings, "--resume")
    _, resume_err = await asyncio.wait_for(resumed.communicate(), timeout=120)
    assert resumed.returncode == 0, resume_err.decode()
    assert f"done: {total - on_new} data keys now under KEK version 2" in resume_err.decode()
    assert await _counts(runtime) == {2: total}
    await _retire_old_and_read(runtime, client, auth, emails)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_dropped_connections_are_retried_and_the_rotation_finishes(
    settings: Settings, runtime: Runtime, client: AsyncClient, auth: dict[str, str]
) -> None:
    emails = await _create_subjects(client, auth, 3)
    await _seed_keys(runtime, KEYS)
    total = sum((await _counts(runtime)).values())
    database = make_url(settings.database_url).database

    process = await _rotate(_env(settings), settings, "--batch-size", "10")
    await _when_partly_done(settings, 2, total)
    conn = await asyncpg.connect(_dsn(settings.database_url))
    try:
        # Every connection of the service to this database (a restart or failover, as the CLI sees it).
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND application_name = 'privacy-service' AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await conn.close()
    assert killed >= 1
    _, stderr_bytes = await asyncio.wait_for(process.communicate(), timeout=120)
    stderr = stderr_bytes.decode()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "data keys now under KEK version 2" in stderr
    assert await _counts(runtime) == {2: total}
    await _retire_old_and_read(runtime, client, auth, emails)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_unreachable_database_changes_nothing(settings: Settings, runtime: Runtime, proxy: Proxy) -> None:
    await _seed_keys(runtime, 5)
    env = _via(settings, proxy.port)
    await proxy.cut()
    process = await _rotate(env, settings)
    _, stderr_bytes = await asyncio.wait_for(process.communicate(), timeout=120)
    stderr = stderr_bytes.decode()
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert lines[-1] == "error: the database is out of reach; nothing was changed"
    assert len(lines) <= 6, stderr
    assert await _versions(runtime) == [1]  # no KEK version added
    assert await _counts(runtime) == {1: 5}

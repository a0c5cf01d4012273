"""Several API processes on one PostgreSQL (issue 19, goals 2 and 3), as an operator runs them: real
``privacy-service serve`` processes on their own ports, the same database, keyring and Redis.

- With ``PRIVACY_REDIS_URL`` a limit of N is N across both processes (per address, per identity's
  code mails, per address of failed operator keys), not 2N; without it, each process counts its own
  (the documented embedded behaviour): 2N.
- A portal form served by one process is accepted by the other, and the request-token cookie the
  other sets opens the status page on the first (the CSRF key is derived from the shared audit key).
- Redis out of reach: request limits fall back to per-process counts (the failed-key lock-out still
  holds), code mails are refused with 503 and nothing is stored, never a 500; logged once.
- ``serve --workers N`` refuses several workers without Redis (unless accepted) and on SQLite.

Clients are told apart by X-Forwarded-For (``PRIVACY_TRUSTED_PROXIES=1``), as behind a load balancer.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from privacy_service.config import Settings
from privacy_service.runtime import Runtime, build_runtime
from tests.conftest import MailSink
from tests.integration.test_process_output import Lines, free_port, started
from tests.portal_support import csrf_token
from tests.redis_support import REDIS_URL, keys_under, redis_client, redis_prefix

__all__ = ["redis_client", "redis_prefix"]  # fixtures

ROOT = Path(__file__).resolve().parents[2]
N = 4  # the limits under test


@pytest.fixture
def backend() -> str:
    return "postgres"  # several processes share PostgreSQL; SQLite is refused (see the last test)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """The test's view of the shared database (and the keyring the processes will open)."""
    rt = build_runtime(settings)
    yield rt
    await rt.close()


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    values = {name: value for name, value in os.environ.items() if not name.startswith("PRIVACY_")}
    values.update(
        PRIVACY_DATABASE_URL=settings.database_url,
        PRIVACY_KEYRING_PATH=str(settings.keyring_path),
        PRIVACY_POLICY_DIR=str(ROOT / "policies"),
        PRIVACY_SMTP_HOST="127.0.0.1",
        PRIVACY_SMTP_PORT=str(settings.smtp_port),
        PRIVACY_LOG_JSON="true",
        PRIVACY_LOG_LEVEL="INFO",
        PRIVACY_TRUSTED_PROXIES="1",
        PRIVACY_OUTBOX_DELIVERY="api",
        PRIVACY_RATE_LIMITS=json.dumps({"intake": f"{N}/hour burst {N}", "auth_failed": f"{N}/hour burst {N}"}),
        PRIVACY_DSR_CODES_PER_IDENTITY_PER_DAY=str(N),
        PRIVACY_DSR_CODES_PER_IDENTITY_AND_ADDRESS_PER_DAY=str(N),
        PRIVACY_DSR_CODES_RESERVED_FOR_NEW_NETWORKS="0",
    )
    values.update(extra)
    return values


def serve_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "privacy_service", "serve", *args]


@contextmanager
def api_processes(tmp_path: Path, env: dict[str, str], count: int = 2) -> Iterator[list[tuple[str, Lines]]]:
    """``count`` API processes on their own ports; yields (base URL, stderr lines) once each answers."""
    with ExitStack() as stack:
        served = []
        for _ in range(count):
            port = free_port()
            process = stack.enter_context(
                started(
                    tmp_path, "serve", "--port", str(port), **{k: v for k, v in env.items() if k.startswith("PRIVACY_")}
                )
            )
            served.append((f"http://127.0.0.1:{port}", Lines(process), process))
        deadline = time.monotonic() + 90
        for base, _, process in served:
            while True:
                assert process.poll() is None, "the API process exited"
                try:
                    if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the API process did not answer in 90 s"
                time.sleep(0.2)
        yield [(base, lines) for base, lines, _ in served]


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def alternate(
    bases: list[str], times: int, send: Callable[[httpx.AsyncClient, str, int], Any]
) -> list[httpx.Response]:
    """``send`` ``times`` times, to each process in turn (one after another: the count is what matters)."""
    answers = []
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(times):
            answers.append(await send(client, bases[i % len(bases)], i))
    return answers


async def code_mails(mail: MailSink, address: str, runtime: Runtime) -> int:
    """Code mails that reached the SMTP server for ``address``, once the outbox has nothing left to send."""
    deadline = time.monotonic() + 60
    while True:
        async with runtime.db.engine.connect() as connection:
            left = (
                await connection.execute(
                    text("SELECT count(*) FROM outbox_messages WHERE status IN ('pending', 'sending')")
                )
            ).scalar_one()
        if left == 0:
            break
        assert time.monotonic() < deadline, f"{left} outbox messages still unsent after 60 s"
        await asyncio.sleep(0.2)
    return len(mail.to(address))


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "per-process"])
async def test_a_limit_of_n_is_n_across_two_processes_with_redis_and_per_process_without(
    settings: Settings,
    runtime: Runtime,
    mail: MailSink,
    redis_client: Redis,
    redis_prefix: str,
    tmp_path: Path,
    shared: bool,
) -> None:
    redis = {"PRIVACY_REDIS_URL": REDIS_URL, "PRIVACY_REDIS_PREFIX": redis_prefix} if shared else {}
    allowed = N if shared else 2 * N
    victim = f"victim-{secrets.token_hex(4)}@example.com"
    with api_processes(tmp_path, process_env(settings, **redis)) as processes:
        bases = [base for base, _ in processes]
        for base in bases:
            ready = httpx.get(base + "/readyz", timeout=30)
            assert ready.status_code == 200
            assert ready.json()["limits"] == ("shared (Redis)" if shared else "per process")

        # Requests per address: one client, 3N requests spread over both processes.
        intake = await alternate(
            bases,
            3 * N,
            lambda client, base, i: client.post(
                base + "/v1/requests",
                json={"type": "access", "identity": {"email": f"x{i}-{secrets.token_hex(3)}@example.com"}},
                headers=from_address("198.51.100.7"),
            ),
        )
        assert [r.status_code for r in intake].count(202) == allowed, [r.status_code for r in intake]
        refused = [r for r in intake if r.status_code != 202]
        assert {r.status_code for r in refused} == {429}
        assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
        assert all(r.headers["content-type"].startswith("application/problem+json") for r in refused)

        # Code mails to one identity: 3N requests in its name from 3N networks (each within its own
        # intake limit) are all accepted, and N code mails reach the inbox in all, whichever process.
        mail.clear()
        for_victim = await alternate(
            bases,
            3 * N,
            lambda client, base, i: client.post(
                base + "/v1/requests",
                json={"type": "access", "identity": {"email": victim}},
                headers=from_address(f"203.0.{i}.9"),
            ),
        )
        assert [r.status_code for r in for_victim] == [202] * (3 * N)
        assert await code_mails(mail, victim, runtime) == allowed

        # Failed operator keys per address: N, then 429 unchecked on both processes.
        junk = await alternate(
            bases,
            3 * N,
            lambda client, base, _: client.get(
                base + "/v1/subjects",
                headers={"Authorization": f"Bearer psk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"}
                | from_address("192.0.2.50"),
            ),
        )
        statuses = [r.status_code for r in junk]
        assert statuses.count(401) == allowed, statuses
        assert statuses.count(429) == 3 * N - allowed, statuses

    if shared:
        names = await keys_under(redis_client, redis_prefix)
        assert names, "the counts live in Redis"
        assert not any(b"198.51.100" in name or b"192.0.2" in name for name in names)
    else:
        assert await keys_under(redis_client, redis_prefix) == []


async def test_a_portal_form_from_one_process_is_accepted_by_the_other(
    settings: Settings, runtime: Runtime, mail: MailSink, tmp_path: Path
) -> None:
    """Form from process 1, posted to process 2; the code page from 2, the code posted to 1; the token
    cookie set by 1 opens the status page on 2. No PRIVACY_CSRF_SECRET, no Redis: nothing to share but
    the keyring."""
    email = f"portal-{secrets.token_hex(4)}@example.com"
    with api_processes(tmp_path, process_env(settings)) as processes:
        (one, _), (two, _) = processes
        async with (
            httpx.AsyncClient(base_url=one, timeout=30) as first,
            httpx.AsyncClient(base_url=two, timeout=30) as second,
        ):
            form = await first.get("/privacy/request")
            assert form.status_code == 200
            second.cookies.update(first.cookies)  # the browser's cookies, whichever process answers
            submitted = await second.post(
                "/privacy/request",
                data={"_csrf_token": csrf_token(form), "type": "access", "identity_kind": "email", "email": email},
            )
            assert submitted.status_code == 303, submitted.text
            verify_path = submitted.headers["location"]
            assert await code_mails(mail, email, runtime) == 1
            code = re.search(r"\b(\d{6})\b", mail.to(email)[-1].get_content())
            assert code is not None
            page = await second.get(verify_path)
            first.cookies.update(second.cookies)
            verified = await first.post(verify_path, data={"_csrf_token": csrf_token(page), "code": code.group(1)})
            assert verified.status_code == 303, verified.text
            assert "privacy_request" in verified.cookies
            second.cookies.update(first.cookies)
            status = await second.get(verified.headers["location"])
            assert status.status_code == 200
            assert verify_path.split("/")[3] in status.text

            # A token signed by another key is still refused (the shared key is not "anything goes").
            forged = await second.post(
                "/privacy/request", data={"_csrf_token": "0" * 128, "type": "access", "identity_kind": "email"}
            )
            assert forged.status_code == 403


async def test_redis_out_of_reach_limits_stay_per_process_and_code_mails_wait(
    settings: Settings, runtime: Runtime, redis_prefix: str, tmp_path: Path
) -> None:
    """PRIVACY_REDIS_URL names a port nobody listens on. Never a 500; logged once, without the URL."""
    down = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    env = process_env(settings, PRIVACY_REDIS_URL=down, PRIVACY_REDIS_PREFIX=redis_prefix)
    with api_processes(tmp_path, env, count=1) as [(base, lines)]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            # A request would mail a code, whose daily cap per identity cannot be checked: 503, nothing stored.
            for address in ("198.51.100.1", "198.51.100.2"):
                refused = await client.post(
                    "/v1/requests",
                    json={"type": "access", "identity": {"email": "someone@example.com"}},
                    headers=from_address(address),
                )
                assert refused.status_code == 503, refused.text
                assert refused.headers["content-type"].startswith("application/problem+json")
                assert refused.json()["type"].endswith("/unavailable")
                assert int(refused.headers["retry-after"]) >= 1
            page = await client.get("/privacy/request")
            assert page.status_code == 200
            portal = await client.post(
                "/privacy/request",
                data={
                    "_csrf_token": csrf_token(page),
                    "type": "access",
                    "identity_kind": "email",
                    "email": "someone@example.com",
                },
            )
            assert portal.status_code == 503
            assert portal.headers["content-type"].startswith("text/html")
            async with runtime.db.engine.connect() as connection:
                stored = (await connection.execute(text("SELECT count(*) FROM dsr_requests"))).scalar_one()
            assert stored == 0

            # Reads go on; the failed-key lock-out holds, counted by this process alone. Still ready (a
            # load balancer must not take every process out), and /readyz says where limits are counted.
            assert (await client.get("/v1/policy")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["limits"] == "per process: Redis out of reach (ConnectionError)"
            junk = [
                (
                    await client.get(
                        "/v1/subjects",
                        headers={"Authorization": f"Bearer psk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"}
                        | from_address("192.0.2.50"),
                    )
                ).status_code
                for _ in range(N + 2)
            ]
            assert junk == [401] * N + [429] * 2
    logged = [json.loads(line) for line in lines.finish() if line.startswith("{")]
    outages = [event for event in logged if event["event"] == "ratelimit_redis_unavailable"]
    assert len(outages) == 1  # once per outage, however many requests meet it
    assert not any("hunter2secret" in line or "redis://" in line for line in lines.lines)
    assert not [event for event in logged if event.get("level") in ("error", "critical")]


def test_several_workers_need_redis_or_an_explicit_yes(settings: Settings, tmp_path: Path) -> None:
    env = process_env(settings)
    refused = subprocess.run(  # noqa: S603 - fixed argv
        serve_argv("--workers", "2", "--port", str(free_port())),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode != 0
    assert "PRIVACY_REDIS_URL" in refused.stderr
    assert "--per-process-limits" in refused.stderr
    sqlite = subprocess.run(  # noqa: S603 - fixed argv
        serve_argv("--workers", "2", "--per-process-limits"),
        env=env | {"PRIVACY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert sqlite.returncode != 0
    assert "PostgreSQL" in sqlite.stderr


async def test_serve_with_two_workers_starts_two_processes_and_the_limit_holds(
    settings: Settings, runtime: Runtime, redis_prefix: str, tmp_path: Path
) -> None:
    """``serve --workers 2`` with Redis: two worker processes on one port, one intake count. (Which worker
    takes a connection is the kernel's choice, so the proof that two processes share a count is the
    test with two ports above; this one runs the command an operator runs.)"""
    port = free_port()
    env = process_env(settings, PRIVACY_REDIS_URL=REDIS_URL, PRIVACY_REDIS_PREFIX=redis_prefix)
    with started(
        tmp_path,
        "serve",
        "--workers",
        "2",
        "--port",
        str(port),
        **{k: v for k, v in env.items() if k.startswith("PRIVACY_")},
    ) as process:
        lines = Lines(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while len({e.get("pid") for e in _started_workers(lines)}) < 2:
            assert process.poll() is None, lines.lines
            assert time.monotonic() < deadline, lines.lines
            time.sleep(0.2)
        intake = await alternate(
            [base],
            3 * N,
            lambda client, base, i: client.post(
                base + "/v1/requests",
                json={"type": "access", "identity": {"email": f"w{i}-{secrets.token_hex(3)}@example.com"}},
                headers=from_address("198.51.100.8") | {"Connection": "close"},
            ),
        )
        assert [r.status_code for r in intake].count(202) == N


def _started_workers(lines: Lines) -> list[dict[str, Any]]:
    found = []
    for line in list(lines.lines):
        match = re.search(r"Started server process \[(\d+)\]", line)
        if match:
            found.append({"pid": match.group(1)})
    return found

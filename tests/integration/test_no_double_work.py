"""No double work (issue 19): two API processes and two workers on one PostgreSQL database.

Real subprocesses (``privacy-service serve`` twice, ``privacy-service worker`` twice), a real SMTP
server (aiosmtpd, in this process) and a real HTTP receiver for webhooks. Requests go in through
both APIs; then:

* every outbox message reached the SMTP server exactly once (counted by Message-ID) and is recorded sent;
* every webhook reached the receiver exactly once (counted by its Idempotency-Key) and is recorded delivered;
* two purges asked for at once on the two APIs: one runs, the other is refused (409) and did nothing;
* one audit sealer at a time: the chain has every event once, in one unbroken sequence, and
  ``privacy-service audit verify`` passes.

And the crash: a worker SIGKILLed after the server accepted mail but before it recorded the batch;
the next worker sends those messages again with the same Message-ID (at least once), and nothing is lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text

from privacy_service.config import Settings
from privacy_service.runtime import Runtime
from tests.api.dsr_support import OPEN_LIMITS, fresh_settings
from tests.conftest import make_operator_key
from tests.integration.systems_support import HookReceiver

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0
CUSTOMERS = 16  # requests that reach a downstream system (one webhook each)
STRANGERS = 40  # requests for unknown addresses: code mail only


@pytest.fixture
def backend() -> str:
    return "postgres"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Smtp:
    """aiosmtpd handler: every accepted message with its Message-ID. ``stall_after`` holds the
    envelope of the next message after that many were accepted (the worker is killed meanwhile)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, str]] = []  # (Message-ID, To, body)
        self.stall_after: int | None = None
        self.stalled = threading.Event()
        self._lock = threading.Lock()

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.stall_after is not None and len(self.messages) >= self.stall_after:
            self.stalled.set()
            await asyncio.sleep(30)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content or envelope.content, policy=default_policy)
        with self._lock:
            self.messages.append((str(message["Message-ID"]), str(message["To"]), str(message.get_content())))
        return "250 OK"

    def ids(self) -> Counter[str]:
        with self._lock:
            return Counter(message_id for message_id, _, _ in self.messages)

    def code_for(self, address: str) -> str | None:
        with self._lock:
            for _, to, body in self.messages:
                if to == address:
                    return next(word for word in body.split() if len(word) == 6 and word.isdigit())
        return None


@pytest.fixture
def smtp() -> Iterator[tuple[Smtp, int]]:
    handler, port = Smtp(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
async def settings(make_settings: Any, backend: str, smtp: tuple[Smtp, int]) -> Settings:
    return await fresh_settings(make_settings, backend, smtp_port=smtp[1], systems_allow_private_networks=True)


def process_env(settings: Settings, tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    values = {key: value for key, value in os.environ.items() if not key.startswith("PRIVACY_")}
    values.update(
        PRIVACY_DATABASE_URL=settings.database_url,
        PRIVACY_KEYRING_PATH=str(settings.keyring_path),
        PRIVACY_POLICY_DIR=str(ROOT / "policies"),
        PRIVACY_SMTP_PORT=str(settings.smtp_port),
        PRIVACY_SYSTEMS_ALLOW_PRIVATE_NETWORKS="true",
        PRIVACY_RATE_LIMITS=json.dumps(OPEN_LIMITS),
        PRIVACY_WORKER_HEARTBEAT_PATH=str(tmp_path / f"{name}-heartbeat.json"),
        PRIVACY_OUTBOX_POLL_SECONDS="0.5",
        PRIVACY_OUTBOX_INTERVAL_SECONDS="1",
        PRIVACY_AUDIT_SEAL_INTERVAL_SECONDS="1",
        PRIVACY_LOG_LEVEL="WARNING",
        PRIVACY_DB_POOL_SIZE="4",
    )
    values.update(extra)
    return values


@contextmanager
def started(env: dict[str, str], cwd: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    log = (cwd / f"{args[0]}-{uuid.uuid4().hex[:6]}.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - this interpreter running this package
        [sys.executable, "-m", "privacy_service", *args], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def scalar(runtime: Runtime, sql: str) -> Any:
    async with runtime.db.engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar_one()


async def column(runtime: Runtime, sql: str) -> list[Any]:
    async with runtime.db.engine.connect() as conn:
        return list((await conn.execute(text(sql))).scalars())


def message_ids(rows: list[Any], settings: Settings) -> set[str]:
    domain = settings.smtp_from.rpartition("@")[2]
    return {f"<{uuid.UUID(str(row))}@{domain}>" for row in rows}


async def healthy(urls: list[str]) -> None:
    async with httpx.AsyncClient(timeout=2) as http:

        async def answering() -> bool:
            try:
                answers = [await http.get(f"{url}/healthz") for url in urls]
            except httpx.TransportError:
                return False
            return all(answer.status_code == 200 for answer in answers)

        await until(answering, "the APIs to answer", START_TIMEOUT)


async def test_two_apis_and_two_workers_do_each_piece_of_work_once(
    runtime: Runtime, settings: Settings, smtp: tuple[Smtp, int], tmp_path: Path
) -> None:
    sink, _ = smtp
    ports = [free_port(), free_port()]
    apis = [f"http://127.0.0.1:{port}" for port in ports]
    key = await make_operator_key(runtime)
    auth = {"Authorization": f"Bearer {key}"}
    with HookReceiver().running() as receiver, ExitStack() as stack:
        for n, port in enumerate(ports):
            env = process_env(settings, tmp_path, f"api{n}")
            stack.enter_context(started(env, tmp_path, "serve", "--host", "127.0.0.1", "--port", str(port)))
        for n in range(2):
            stack.enter_context(started(process_env(settings, tmp_path, f"worker{n}"), tmp_path, "worker"))
        await healthy(apis)
        async with httpx.AsyncClient(timeout=30) as http:
            registered = await http.post(
                f"{apis[0]}/v1/systems",
                json={
                    "name": "crm",
                    "callback_url": receiver.url,
                    "request_types": ["access"],
                    "categories": ["user.name", "user.contact.email"],
                    "identities": ["email"],
                    "timeout_seconds": 5,
                    "required": True,
                },
                headers=auth,
            )
            assert registered.status_code == 201, registered.text
            system = registered.json()
            receiver.keys[system["system"]["key_id"]] = system["signing_key"].encode()

            customers = [f"customer{n}@nodouble.example" for n in range(CUSTOMERS)]
            made = await asyncio.gather(
                *(
                    http.post(
                        f"{apis[n % 2]}/v1/subjects",
                        json={"email": email, "profile": {"name": f"Customer {n}"}},
                        headers=auth,
                    )
                    for n, email in enumerate(customers)
                )
            )
            assert {response.status_code for response in made} == {201}
            addresses = customers + [f"stranger{n}@nodouble.example" for n in range(STRANGERS)]
            submitted = await asyncio.gather(
                *(
                    http.post(f"{apis[n % 2]}/v1/requests", json={"type": "access", "identity": {"email": email}})
                    for n, email in enumerate(addresses)
                )
            )
            assert {response.status_code for response in submitted} == {202}
            request_ids = [response.json()["id"] for response in submitted]

            async def codes_arrived() -> bool:
                return all(sink.code_for(address) for address in addresses)

            await until(codes_arrived, "every code mail")
            # Each customer confirms through the other API: the request reaches its downstream system.
            verified = await asyncio.gather(
                *(
                    http.post(
                        f"{apis[(n + 1) % 2]}/v1/requests/{request_ids[n]}/verify",
                        json={"code": sink.code_for(address)},
                    )
                    for n, address in enumerate(customers)
                )
            )
            assert {(r.status_code, r.json()["status"]) for r in verified} == {(200, "processing")}

            async def hooks_delivered() -> bool:
                return len(receiver.received) >= CUSTOMERS and not await scalar(
                    runtime, "SELECT count(*) FROM system_deliveries WHERE status <> 'delivered'"
                )

            await until(hooks_delivered, "every webhook")

            # Two purges asked for at once, one on each API: one runs, the other is refused.
            purges = await asyncio.gather(
                *(http.post(f"{api}/v1/retention/runs", json={"dry_run": False}, headers=auth) for api in apis)
            )
            assert sorted(response.status_code for response in purges) == [202, 409], [p.text for p in purges]
            (refused,) = [response for response in purges if response.status_code == 409]
            assert refused.headers["content-type"].startswith("application/problem+json")

            async def purge_finished() -> bool:
                return bool(await scalar(runtime, "SELECT count(*) FROM retention_runs WHERE status <> 'running'"))

            await until(purge_finished, "the purge run")

            async def all_sealed() -> bool:
                return not await scalar(runtime, "SELECT count(*) FROM audit_events WHERE seq IS NULL")

            await until(all_sealed, "the audit sealer")
            # Time for a second copy of anything to show up, were anything sent twice.
            await asyncio.sleep(3)

    # Mail: every outbox row sent, each exactly once at the SMTP server.
    assert await column(runtime, "SELECT DISTINCT status FROM outbox_messages") == ["sent"]
    outbox = await column(runtime, "SELECT id FROM outbox_messages")
    received = sink.ids()
    assert len(outbox) >= len(addresses)
    assert set(received) == message_ids(outbox, settings)
    assert set(received.values()) == {1}, [mid for mid, n in received.items() if n > 1]
    # Webhooks: one delivery per customer request, each POSTed exactly once.
    deliveries = {str(uuid.UUID(str(row))) for row in await column(runtime, "SELECT id FROM system_deliveries")}
    hooks = Counter(hit.headers["Idempotency-Key"] for hit in receiver.received)
    assert len(deliveries) == CUSTOMERS
    assert set(hooks) == deliveries
    assert set(hooks.values()) == {1}
    assert all(hit.valid_signature for hit in receiver.received)
    # One purge run, and it completed.
    assert await column(runtime, "SELECT status FROM retention_runs") == ["completed"]
    # The audit chain: every event once, in one gapless sequence, and `audit verify` agrees.
    async with runtime.db.engine.connect() as conn:
        chain = await conn.execute(text("SELECT count(seq), min(seq), max(seq), count(DISTINCT seq) FROM audit_events"))
        count, first, last, distinct = chain.one()
    assert (first, last, distinct) == (1, count, count)
    verify = subprocess.run(
        [sys.executable, "-m", "privacy_service", "audit", "verify"],
        env=process_env(settings, tmp_path, "cli"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def test_a_worker_killed_after_sending_leaves_mail_sent_again_with_the_same_message_id(
    runtime: Runtime, settings: Settings, smtp: tuple[Smtp, int], tmp_path: Path
) -> None:
    sink, _ = smtp
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    count, accepted_before_kill = 10, 4
    # Only the worker sends, one batch over one connection; a short lease for the rerun (the shortest
    # a 1 s SMTP timeout allows).
    only_worker = {
        "PRIVACY_OUTBOX_DELIVERY": "worker",
        "PRIVACY_OUTBOX_CONCURRENCY": "1",
        "PRIVACY_OUTBOX_LEASE_SECONDS": "8",
        "PRIVACY_SMTP_TIMEOUT_SECONDS": "1",
    }
    with started(process_env(settings, tmp_path, "api", **only_worker), tmp_path, "serve", "--port", str(port)):
        await healthy([api])
        async with httpx.AsyncClient(timeout=30) as http:
            for n in range(count):
                response = await http.post(
                    f"{api}/v1/requests", json={"type": "access", "identity": {"email": f"crash{n}@nodouble.example"}}
                )
                assert response.status_code == 202, response.text
    assert sink.messages == []  # the API does not send in this set-up
    sink.stall_after = accepted_before_kill
    with started(process_env(settings, tmp_path, "doomed", **only_worker), tmp_path, "worker") as doomed:
        deadline = time.monotonic() + START_TIMEOUT
        while not sink.stalled.is_set():
            assert time.monotonic() < deadline, "the worker never sent"
            await asyncio.sleep(0.05)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
    first_round = sink.ids()
    assert len(first_round) == accepted_before_kill
    # Accepted by the server, never recorded: still claimed, not sent, as far as the database knows.
    assert await scalar(runtime, "SELECT count(*) FROM outbox_messages WHERE status = 'sent'") == 0

    sink.stall_after = None
    with started(process_env(settings, tmp_path, "rerun", **only_worker), tmp_path, "worker"):

        async def all_sent() -> bool:
            return await scalar(runtime, "SELECT count(*) FROM outbox_messages WHERE status = 'sent'") == count

        await until(all_sent, "the rerun to send everything", timeout=60)
    received = sink.ids()
    outbox = await column(runtime, "SELECT id FROM outbox_messages")
    assert set(received) == message_ids(outbox, settings)  # nothing lost
    twice = {message_id for message_id, n in received.items() if n == 2}
    assert twice == set(first_round)  # at least once: those sent before the kill, again, same Message-ID
    assert set(received.values()) == {1, 2}

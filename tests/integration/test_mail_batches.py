"""Outbox delivery in batches, over real SMTP (in-process aiosmtpd servers), on both databases.

* Two processes' worth of delivery (two runtimes on one database, several lanes each) send every
  message exactly once, one SMTP connection per claimed batch, and record every message as sent.
* A message the server refuses fails alone: the rest of the batch goes out on the same connection.
* A lane that overran its lease does not overwrite the outcome of the run that took the message over.
* /metrics tells how long the oldest waiting mail has waited and how far delivery is behind.
* A server that cannot be reached fails a batch at once (retried later); PRIVACY_OUTBOX_DELIVERY
  decides whether the worker schedules delivery.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest
import time_machine
from aiosmtpd.controller import Controller

from privacy_service.config import Settings
from privacy_service.crypto.service import REQUEST
from privacy_service.metrics import Snapshot
from privacy_service.notify.jobs import LEASE, deliver_pending, delivers_in
from privacy_service.notify.mailer import Mail, MailConnection, Mailer, MailError
from privacy_service.notify.service import enqueue
from privacy_service.runtime import Runtime, build_runtime
from privacy_service.worker import build_scheduler
from tests.api.dsr_support import fresh_settings, rows

REFUSED = "refused@batch.example"


class CountingSink:
    """Keeps each message with the client port it came from (one port per SMTP connection)."""

    def __init__(self) -> None:
        self.messages: list[tuple[EmailMessage, int]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address == REFUSED:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content or envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.messages.append((message, session.peer[1]))
        return "250 OK"

    @property
    def connections(self) -> int:
        return len({port for _, port in self.messages})

    def message_ids(self) -> Counter[str]:
        return Counter(str(message["Message-ID"]) for message, _ in self.messages)


@pytest.fixture
def sink() -> Iterator[tuple[CountingSink, int]]:
    handler = CountingSink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
async def settings(make_settings: Any, backend: str, sink: tuple[CountingSink, int]) -> Settings:
    return await fresh_settings(make_settings, backend, smtp_port=sink[1])


@asynccontextmanager
async def second_process(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = build_runtime(settings)
    try:
        yield runtime
    finally:
        await runtime.close()


async def queue(runtime: Runtime, addresses: list[str]) -> list[uuid.UUID]:
    """Code mails as intake queues them: sealed under a per-request key."""
    ids = []
    now = runtime.clock.now()
    async with runtime.db.transaction() as session:
        for address in addresses:
            owner = uuid.uuid4()
            key = await runtime.keys.create_key(session, owner, REQUEST)
            ids.append(
                enqueue(
                    session,
                    template="verification_code",
                    language="en",
                    to=address,
                    now=now,
                    key=key,
                    owner_id=owner,
                    action="see",
                    code="123456",
                    minutes=15,
                    status_url="https://privacy.example/r",
                    request_id=str(owner),
                    due_date="2030-01-01",
                )
            )
    return ids


async def test_two_processes_send_every_message_once_one_connection_per_batch(
    runtime: Runtime, settings: Settings, sink: tuple[CountingSink, int]
) -> None:
    handler, _ = sink
    count, batch = 230, 40
    ids = await queue(runtime, [f"p{n}@batch.example" for n in range(count)])
    async with second_process(settings) as other:
        results = await asyncio.gather(
            deliver_pending(runtime.db, runtime.keys, runtime.mailer, runtime.clock, batch=batch, concurrency=3),
            deliver_pending(other.db, other.keys, other.mailer, other.clock, batch=batch, concurrency=3),
        )
    assert sum(result.sent for result in results) == count
    received = handler.message_ids()
    assert len(received) == count
    assert set(received.values()) == {1}
    domain = settings.smtp_from.rpartition("@")[2]
    assert set(received) == {f"<{message_id}@{domain}>" for message_id in ids}
    # One connection per claimed batch: at least ceil(230 / 40) = 6 batches, and never one per message.
    assert 6 <= handler.connections <= count // batch + 1 + 6
    outbox = await rows(runtime, "outbox_messages")
    assert {(row["status"], row["payload"], row["attempts"]) for row in outbox} == {("sent", None, 0)}
    assert all(row["sent_at"] is not None for row in outbox)


async def test_a_refused_message_fails_alone_and_the_batch_goes_on(
    runtime: Runtime, sink: tuple[CountingSink, int]
) -> None:
    handler, _ = sink
    addresses = [f"a{n}@batch.example" for n in range(5)] + [REFUSED] + [f"b{n}@batch.example" for n in range(5)]
    refused_id = (await queue(runtime, addresses))[5]
    result = await deliver_pending(runtime.db, runtime.keys, runtime.mailer, runtime.clock, batch=50)
    assert (result.sent, result.retried, result.dead) == (10, 1, 0)
    assert len(handler.messages) == 10
    assert handler.connections == 1
    by_id = {uuid.UUID(str(row["id"])): row for row in await rows(runtime, "outbox_messages")}
    refused = by_id.pop(refused_id)
    assert (refused["status"], refused["attempts"]) == ("pending", 1)
    assert refused["last_error"] == "SMTPRecipientsRefused"
    assert refused["payload"] is not None
    assert {row["status"] for row in by_id.values()} == {"sent"}


class OverrunsItsLease:
    """Sends nothing: while it holds the message, time passes beyond the lease and another process
    delivers the message; then this one fails (as a slow server would)."""

    def __init__(self, takeover: Runtime, moment: datetime) -> None:
        self.takeover, self.moment = takeover, moment

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[MailConnection]:
        yield self

    async def send(self, mail: Mail) -> None:
        with time_machine.travel(self.moment + LEASE + timedelta(seconds=1), tick=False):
            other = self.takeover
            assert (await deliver_pending(other.db, other.keys, other.mailer, other.clock)).sent == 1
        raise MailError("SMTPServerDisconnected")


async def test_a_lane_past_its_lease_does_not_overwrite_the_run_that_took_over(
    runtime: Runtime, settings: Settings, sink: tuple[CountingSink, int]
) -> None:
    handler, _ = sink
    await queue(runtime, ["slow@batch.example"])
    moment = datetime.now(UTC)
    async with second_process(settings) as other:
        slow: Mailer = OverrunsItsLease(other, moment)
        with time_machine.travel(moment, tick=False):
            result = await deliver_pending(runtime.db, runtime.keys, slow, runtime.clock)
    # Its failure was not recorded: the message stays sent, with no failed attempt and no retry.
    assert result == type(result)()
    (row,) = await rows(runtime, "outbox_messages")
    assert (row["status"], row["attempts"], row["last_error"], row["payload"]) == ("sent", 0, None, None)
    assert len(handler.messages) == 1


def gauge(exposition: str, name: str) -> float:
    (value,) = [line.split()[1] for line in exposition.splitlines() if line.startswith(name + " ")]
    return float(value)


async def test_the_outbox_age_and_lag_metrics_follow_waiting_mail(
    runtime: Runtime, settings: Settings, sink: tuple[CountingSink, int]
) -> None:
    async def figures() -> tuple[float, float]:
        text = await Snapshot().text(runtime.db, runtime.clock, 0, lambda: None)
        return (
            gauge(text, "privacy_outbox_oldest_pending_age_seconds"),
            gauge(text, "privacy_outbox_delivery_lag_seconds"),
        )

    assert await figures() == (0, 0)
    queued_at = datetime.now(UTC)
    with time_machine.travel(queued_at, tick=False):
        await queue(runtime, ["late@batch.example", "later@batch.example"])
    with time_machine.travel(queued_at + timedelta(minutes=10), tick=False):
        assert await figures() == (600, 600)  # nobody delivered for ten minutes
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        async with second_process(settings.model_copy(update={"smtp_port": closed_port})) as down:
            failed = await deliver_pending(down.db, down.keys, down.mailer, down.clock)
        assert failed.retried == 2
        # Retried later: no longer overdue, still waiting since it was queued.
        assert await figures() == (600, 0)
    with time_machine.travel(queued_at + timedelta(hours=1), tick=False):
        assert await figures() == (3600, pytest.approx(3600 - 630, abs=10))  # due again ~30 s (+-20 %) later
        assert (await deliver_pending(runtime.db, runtime.keys, runtime.mailer, runtime.clock)).sent == 2
        assert await figures() == (0, 0)


async def test_an_unreachable_server_fails_the_rest_of_the_batch_at_once(runtime: Runtime, settings: Settings) -> None:
    await queue(runtime, [f"down{n}@batch.example" for n in range(5)])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with second_process(settings.model_copy(update={"smtp_port": closed_port})) as down:
        started = time.perf_counter()
        result = await deliver_pending(down.db, down.keys, down.mailer, down.clock, batch=10)
        elapsed = time.perf_counter() - started
    assert (result.sent, result.retried, result.dead) == (0, 5, 0)
    assert elapsed < 5  # one refused connection, not one per message
    outbox = await rows(runtime, "outbox_messages")
    assert {(row["status"], row["attempts"], row["last_error"]) for row in outbox} == {
        ("pending", 1, "SMTPConnectError")
    }


@pytest.mark.parametrize(("mode", "worker_sends"), [("both", True), ("worker", True), ("api", False)])
def test_the_worker_schedules_mail_delivery_unless_only_the_api_sends(
    runtime: Runtime, mode: str, worker_sends: bool
) -> None:
    configured = dataclasses.replace(runtime, settings=runtime.settings.model_copy(update={"outbox_delivery": mode}))
    jobs = {job.id: job for job in build_scheduler(configured).get_jobs()}
    assert ("outbox" in jobs) is worker_sends
    assert delivers_in(configured, "api") is (mode != "worker")
    if worker_sends:
        assert jobs["outbox"].trigger.interval.total_seconds() == runtime.settings.outbox_poll_seconds

"""Outbox delivery against a slow relay and with poison messages, over real SMTP (aiosmtpd), on both databases.

* A relay slower than a batch's lease: three processes polling like workers, with several lanes each,
  send every message exactly once (counted by Message-ID at the server), and all of them. A lane sends
  only within its lease and releases what it did not get to (no attempt counted).
* A message still going out when its lane's time is up is cut off (a failed attempt, retried later);
  the connection is dropped at once and the rest of the batch goes out.
* Poison: a payload that does not decode and a data key that does not unwrap fail alone, next to
  good messages that go out; each is retried with backoff and dead-lettered after the last attempt
  (logged and audited without PII). The API's delivery loop outlives any error of a run.
* The lease must leave room for the SMTP timeout (checked when settings load).
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
from typing import Any

import pytest
import time_machine
from aiosmtpd.controller import Controller
from sqlalchemy import update
from sqlmodel import col

from privacy_service.config import ConfigError, Settings, load_settings
from privacy_service.crypto.models import DataKeyRow
from privacy_service.notify import jobs
from privacy_service.notify.jobs import LEASE_DEADLINE, deliver_outbox_forever, deliver_pending
from privacy_service.notify.mailer import MailConnection, Mailer
from privacy_service.notify.models import OutboxMessage
from privacy_service.notify.service import enqueue
from privacy_service.runtime import Runtime
from tests.api.dsr_support import fresh_settings, rows
from tests.integration.test_mail_batches import CountingSink, queue, second_process
from tests.log_support import Recorder

STALLS = "stalls@slow.example"


class SlowRelay(CountingSink):
    """Takes ``delay`` seconds to accept each message (``stall`` for mail to STALLS)."""

    def __init__(self, delay: float, stall: float = 0.0) -> None:
        super().__init__()
        self.delay, self.stall = delay, stall

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.stall if STALLS in envelope.rcpt_tos else self.delay)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def relay() -> Iterator[tuple[SlowRelay, int]]:
    handler = SlowRelay(delay=0.2, stall=4.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
async def settings(make_settings: Any, backend: str, relay: tuple[SlowRelay, int]) -> Settings:
    return await fresh_settings(make_settings, backend, smtp_port=relay[1])


async def outbox(runtime: Runtime) -> dict[uuid.UUID, dict[str, Any]]:
    return {uuid.UUID(str(row["id"])): row for row in await rows(runtime, "outbox_messages")}


async def test_a_relay_slower_than_the_lease_sends_every_message_once_and_all_of_them(
    runtime: Runtime, settings: Settings, relay: tuple[SlowRelay, int]
) -> None:
    handler, _ = relay
    # 40 messages, 0.2 s each at the relay: a batch of 20 would take 4 s, its lease is 3 s.
    count, batch, lease = 40, 20, timedelta(seconds=3)
    ids = await queue(runtime, [f"slow{n}@slow.example" for n in range(count)])

    async def poll(process: Runtime) -> int:
        """A worker's outbox job: a delivery run every 0.1 s until everything is sent."""
        sent = 0
        while sum(row["status"] == "sent" for row in (await outbox(runtime)).values()) < count:
            result = await deliver_pending(
                process.db, process.keys, process.mailer, process.clock, batch=batch, concurrency=2, lease=lease
            )
            sent += result.sent
            await asyncio.sleep(0.1)
        return sent

    started = time.perf_counter()
    # Three processes: while two are busy with their batches, the third polls (and would take over a
    # batch whose lease ran out while it was still going out).
    async with second_process(settings) as other, second_process(settings) as third:
        sent = await asyncio.wait_for(asyncio.gather(poll(runtime), poll(other), poll(third)), timeout=60)
    elapsed = time.perf_counter() - started
    received = handler.message_ids()
    assert set(received.values()) == {1}, "a message went out twice"
    domain = settings.smtp_from.rpartition("@")[2]
    assert set(received) == {f"<{message_id}@{domain}>" for message_id in ids}
    assert sum(sent) == count
    # Released, not failed: no attempt counted, nothing waiting for a retry.
    assert {(row["status"], row["attempts"], row["last_error"]) for row in (await outbox(runtime)).values()} == {
        ("sent", 0, None)
    }
    # Batches cut short: at 0.2 s a message, at most 11 fit the 2.25 s a lane sends of a 3 s lease.
    per_connection = Counter(port for _, port in handler.messages)
    assert max(per_connection.values()) <= 11
    assert elapsed < 30


async def test_a_message_still_going_out_at_the_cut_off_fails_alone_and_the_rest_goes_out(
    runtime: Runtime, relay: tuple[SlowRelay, int]
) -> None:
    handler, _ = relay
    ids = await queue(runtime, [f"before{n}@slow.example" for n in range(3)] + [STALLS])
    stalled = ids[-1]
    ids += await queue(runtime, [f"after{n}@slow.example" for n in range(3)])
    started = time.perf_counter()
    # The relay holds STALLS's message 4 s; the lease is 2 s, so it is cut off at 1.8 s.
    result = await deliver_pending(
        runtime.db, runtime.keys, runtime.mailer, runtime.clock, batch=10, lease=timedelta(seconds=2)
    )
    elapsed = time.perf_counter() - started
    assert (result.sent, result.retried, result.dead) == (6, 1, 0)
    # Dropped without waiting for the relay (no QUIT on a cut-off session, no 10 s SMTP timeout).
    assert elapsed < 3.5
    by_id = await outbox(runtime)
    late = by_id.pop(stalled)
    assert (late["status"], late["attempts"], late["last_error"]) == ("pending", 1, LEASE_DEADLINE)
    assert late["payload"] is not None
    due = late["next_attempt_at"]
    due = datetime.fromisoformat(due) if isinstance(due, str) else due
    assert due.replace(tzinfo=UTC) > datetime.now(UTC) + timedelta(seconds=20)  # a backoff, not at once
    assert {(row["status"], row["attempts"]) for row in by_id.values()} == {("sent", 0)}
    received = handler.message_ids()
    assert all(received[f"<{message_id}@wallet.example>"] == 1 for message_id in ids if message_id != stalled)


async def queue_poison(runtime: Runtime) -> tuple[uuid.UUID, uuid.UUID]:
    """An operator mail whose stored payload does not decode, and a sealed mail whose data key no
    longer unwraps (its wrapped bytes damaged)."""
    undecodable = (await queue_operator_mail(runtime, "ops-undecodable@poison.example"))[0]
    (unopenable,) = await queue(runtime, ["key-damaged@poison.example"])
    by_id = await outbox(runtime)
    owner = uuid.UUID(str(by_id[unopenable]["owner_id"]))
    async with runtime.db.transaction() as session:
        await session.exec(
            update(OutboxMessage).where(col(OutboxMessage.id) == undecodable).values(payload=b"\x00 not json")
        )
        await session.exec(update(DataKeyRow).where(col(DataKeyRow.subject_id) == owner).values(wrapped=b"\x01" * 64))
    return undecodable, unopenable


async def queue_operator_mail(runtime: Runtime, address: str) -> list[uuid.UUID]:
    async with runtime.db.transaction() as session:
        return [
            enqueue(
                session,
                template="verification_code",
                language="en",
                to=address,
                now=runtime.clock.now(),
                action="see",
                code="123456",
                minutes=15,
                status_url="https://privacy.example/r",
                request_id="r",
                due_date="2030-01-01",
            )
        ]


@pytest.fixture
def fast_relay(relay: tuple[SlowRelay, int]) -> SlowRelay:
    relay[0].delay = 0.0
    return relay[0]


async def test_poison_messages_fail_alone_and_are_dead_lettered_after_the_last_attempt(
    runtime: Runtime, fast_relay: SlowRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = Recorder()
    monkeypatch.setattr(jobs, "log", recorded)
    good = await queue(runtime, ["good1@poison.example"])
    undecodable, unopenable = await queue_poison(runtime)
    good += await queue(runtime, ["good2@poison.example"])

    def run() -> Any:
        return deliver_pending(runtime.db, runtime.keys, runtime.mailer, runtime.clock, batch=10, max_attempts=3)

    first = await asyncio.wait_for(run(), timeout=10)  # before: the batch stalled until its lease ran out
    assert (first.sent, first.retried, first.dead) == (2, 2, 0)
    assert fast_relay.message_ids() == {f"<{message_id}@wallet.example>": 1 for message_id in good}
    by_id = await outbox(runtime)
    assert (by_id[undecodable]["status"], by_id[undecodable]["attempts"]) == ("pending", 1)
    assert by_id[undecodable]["last_error"] == "unreadable: payload does not decode"
    assert (by_id[unopenable]["status"], by_id[unopenable]["attempts"]) == ("pending", 1)
    assert by_id[unopenable]["last_error"] == "unreadable: data key: UnwrapFailed"

    moment = datetime.now(UTC)
    for hours, expected in ((1, (0, 2, 0)), (3, (0, 0, 2))):  # past each backoff (30 s, 60 s, +-20 %)
        with time_machine.travel(moment + timedelta(hours=hours), tick=False):
            again = await run()
        assert (again.sent, again.retried, again.dead) == expected
    by_id = await outbox(runtime)
    for poisoned in (undecodable, unopenable):
        assert (by_id[poisoned]["status"], by_id[poisoned]["attempts"], by_id[poisoned]["payload"]) == ("dead", 3, None)
    assert len(fast_relay.messages) == 2  # the poisoned never reached the relay
    dead_letters = [e for e in await rows(runtime, "audit_events") if e["action"] == "outbox.dead_letter"]
    assert len(dead_letters) == 2
    # Logged per failure and per dead letter, with the kind of error only.
    events = [event for _, event, _ in recorded.lines]
    assert events.count("outbox_message_unsendable") == 6
    assert events.count("outbox_dead_letter") == 2
    assert "poison.example" not in repr(recorded.lines)
    assert "not json" not in repr(recorded.lines)


class FailsOnce:
    """A mailer whose first session fails with an error no handler expects (a bug, say)."""

    def __init__(self, inner: Mailer) -> None:
        self.inner, self.calls = inner, 0

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[MailConnection]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("unexpected: good3@poison.example")
        async with self.inner.connect() as connection:
            yield connection


async def test_the_api_delivery_loop_outlives_an_unexpected_error(
    runtime: Runtime, fast_relay: SlowRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = Recorder()
    monkeypatch.setattr(jobs, "log", recorded)
    failing = FailsOnce(runtime.mailer)
    api = dataclasses.replace(runtime, mailer=failing)
    (message_id,) = await queue(runtime, ["good3@poison.example"])
    kick = asyncio.Event()
    loop = asyncio.create_task(deliver_outbox_forever(api, kick))
    try:
        kick.set()
        for _ in range(100):
            if recorded.lines:
                break
            await asyncio.sleep(0.05)
        assert recorded.lines == [("warning", "outbox_delivery_failed", {"error": "RuntimeError"})]
        assert not loop.done()
        # The failed run released its claim: the next kick sends the message.
        row = (await outbox(runtime))[message_id]
        assert (row["status"], row["attempts"]) == ("pending", 0)
        kick.set()
        for _ in range(100):
            if fast_relay.messages:
                break
            await asyncio.sleep(0.05)
        assert fast_relay.message_ids() == {f"<{message_id}@wallet.example>": 1}
        assert not loop.done()
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


def test_a_lease_shorter_than_eight_smtp_timeouts_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"PRIVACY_OUTBOX_LEASE_SECONDS: must be at least 8 x .* \(80 s\)"):
        load_settings(smtp_timeout_seconds=10, outbox_lease_seconds=79)
    assert load_settings(smtp_timeout_seconds=10, outbox_lease_seconds=80).outbox_lease_seconds == 80
    assert load_settings(smtp_timeout_seconds=2, outbox_lease_seconds=16).smtp_timeout_seconds == 2
    assert load_settings().outbox_lease_seconds >= 8 * load_settings().smtp_timeout_seconds  # the defaults fit

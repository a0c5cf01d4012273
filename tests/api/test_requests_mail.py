"""Mail about requests goes over real SMTP (an in-process aiosmtpd server), holds no PII beyond the
recipient's own address, survives an SMTP outage with backoff, and is dead-lettered at the limit.

The outage is real too: the runtime's mailer points at a port nobody listens on.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from httpx import AsyncClient

from privacy_service.config import Settings
from privacy_service.notify.jobs import deliver_pending
from privacy_service.runtime import Runtime, build_runtime
from tests.api.dsr_support import (
    OPEN_LIMITS,
    TRANSACTION,
    bearer,
    code_from,
    deliver,
    fresh_settings,
    make_subject,
    rows,
    submit,
)
from tests.conftest import MailSink

EMAIL = "molly.mail@example.com"
PHONE = "+447911123456"
PROFILE = {"name": "Molly Mailer", "date_of_birth": "1990-02-03", "national_id": "MM445566"}
PII = ("Molly", "Mailer", "1990-02-03", "MM445566", "447911123456", f"{TRANSACTION}-")


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend)


@pytest.fixture
async def unreachable(make_settings: Any, settings: Settings) -> AsyncIterator[Runtime]:
    """A second runtime on the same database whose SMTP server is down (nothing listens on the port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    runtime = build_runtime(make_settings(smtp_port=closed_port, rate_limits=OPEN_LIMITS))
    assert runtime.settings.database_url == settings.database_url
    yield runtime
    await runtime.close()


async def outbox(runtime: Runtime) -> list[dict[str, Any]]:
    return await rows(runtime, "outbox_messages", order="created_at")


def as_utc(value: Any) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


async def test_code_and_completion_mail_go_over_smtp_with_no_pii(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink, settings: Settings
) -> None:
    await make_subject(client, auth, email=EMAIL, phone=PHONE, profile=PROFILE, records={TRANSACTION: 2})
    request_id = await submit(client, {"email": EMAIL}, "access")
    (queued,) = await outbox(runtime)
    assert queued["status"] == "pending"
    assert EMAIL.encode() not in queued["payload"]  # sealed at rest under the request's key
    assert mail.messages == []  # nothing leaves before delivery runs
    await deliver(runtime)
    (code_mail,) = mail.messages
    assert (code_mail["To"], code_mail["From"]) == (EMAIL, settings.smtp_from)
    (sent,) = await outbox(runtime)
    assert (sent["status"], sent["payload"], sent["attempts"]) == ("sent", None, 0)

    verified = await client.post(f"/v1/requests/{request_id}/verify", json={"code": code_from(mail, EMAIL)})
    assert verified.json()["status"] == "completed"
    await deliver(runtime)
    assert [str(m["Subject"]) for m in mail.messages][1:] == ["Your privacy request is complete"]
    assert request_id in mail.messages[1].get_content()
    for message in mail.messages:
        body = message.get_content()
        headers = "\n".join(f"{k}: {v}" for k, v in message.items() if k.lower() != "to")
        assert EMAIL not in body
        assert EMAIL not in headers
        for secret in PII:
            assert secret not in body, secret
            assert secret not in headers, secret
    status = (await client.get(f"/v1/requests/{request_id}", headers=bearer(verified.json()["token"]))).json()
    assert status["status"] == "completed"


async def test_a_phone_identity_is_written_to_at_the_address_on_file(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    await make_subject(client, auth, email=EMAIL, phone=PHONE, profile=PROFILE)
    request_id = await submit(client, {"phone": PHONE}, "access")
    nobody = await submit(client, {"phone": "+447911123457"}, "access")  # nobody's number: no mail at all
    # Both codes were queued alike, without an address: it is found when the mail is delivered.
    queued = await outbox(runtime)
    assert len(queued) == 2
    result = await deliver_pending(runtime.db, runtime.keys, runtime.mailer, runtime.clock)
    assert (result.sent, result.dropped, result.dead, result.retried) == (1, 1, 0, 0)
    (message,) = mail.messages
    assert message["To"] == EMAIL
    assert "447911123456" not in message.as_string()
    dropped = [row for row in await outbox(runtime) if uuid.UUID(str(row["owner_id"])) == uuid.UUID(nobody)]
    assert [(row["status"], row["payload"]) for row in dropped] == [("dropped", None)]
    # A resend (public too) reaches the same address the same way.
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=2)):
        resent = await client.post(f"/v1/requests/{request_id}/resend")
        assert resent.status_code == 202, resent.text
        await deliver(runtime)
    assert [m["To"] for m in mail.messages] == [EMAIL, EMAIL]
    verified = await client.post(f"/v1/requests/{request_id}/verify", json={"code": code_from(mail, EMAIL)})
    assert verified.json()["status"] == "completed"


async def test_an_smtp_outage_is_retried_with_backoff_then_delivered(
    client: AsyncClient, runtime: Runtime, mail: MailSink, unreachable: Runtime
) -> None:
    await submit(client, {"email": EMAIL}, "access")
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        first = await deliver_pending(unreachable.db, unreachable.keys, unreachable.mailer, unreachable.clock)
    assert (first.sent, first.retried, first.dead) == (0, 1, 0)
    (row,) = await outbox(runtime)
    first_delay = as_utc(row["next_attempt_at"]) - start
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert timedelta(seconds=24) <= first_delay <= timedelta(seconds=36)  # 30 s, ±20 % jitter
    assert row["last_error"]
    assert EMAIL not in row["last_error"]
    assert row["payload"] is not None  # kept for the next attempt

    # Not due yet: even a working server gets nothing.
    with time_machine.travel(start + first_delay - timedelta(seconds=1), tick=False):
        assert (await deliver_pending(runtime.db, runtime.keys, runtime.mailer, runtime.clock)).sent == 0
    assert mail.messages == []

    second_at = start + first_delay
    with time_machine.travel(second_at, tick=False):
        again = await deliver_pending(unreachable.db, unreachable.keys, unreachable.mailer, unreachable.clock)
    assert again.retried == 1
    (row,) = await outbox(runtime)
    assert row["attempts"] == 2
    assert as_utc(row["next_attempt_at"]) - second_at > first_delay  # 60 s ±20 %: the delay grows

    with time_machine.travel(as_utc(row["next_attempt_at"]) + timedelta(seconds=1), tick=False):
        delivered = await deliver_pending(runtime.db, runtime.keys, runtime.mailer, runtime.clock)
    assert delivered.sent == 1
    (message,) = mail.messages
    assert message["To"] == EMAIL
    assert "verification code" in str(message["Subject"])
    (row,) = await outbox(runtime)
    assert (row["status"], row["attempts"], row["payload"]) == ("sent", 2, None)


async def test_mail_is_dead_lettered_after_the_last_attempt(
    client: AsyncClient, runtime: Runtime, mail: MailSink, unreachable: Runtime
) -> None:
    await submit(client, {"email": EMAIL}, "access")
    moment = datetime.now(UTC)
    for attempt in range(1, 4):
        with time_machine.travel(moment, tick=False):
            result = await deliver_pending(
                unreachable.db, unreachable.keys, unreachable.mailer, unreachable.clock, max_attempts=3
            )
        (row,) = await outbox(runtime)
        assert row["attempts"] == attempt
        moment = as_utc(row["next_attempt_at"]) + timedelta(seconds=1)
    assert (result.dead, result.retried) == (1, 0)
    (row,) = await outbox(runtime)
    assert (row["status"], row["payload"]) == ("dead", None)  # the sealed message is wiped
    (event,) = [e for e in await rows(runtime, "audit_events") if e["action"] == "outbox.dead_letter"]
    detail = json.loads(event["detail"]) if isinstance(event["detail"], str) else event["detail"]
    assert (event["outcome"], detail) == (
        "failed",
        {"message_id": str(uuid.UUID(str(row["id"]))), "template": "verification_code"},
    )
    with time_machine.travel(moment + timedelta(days=1), tick=False):
        assert await deliver_pending(runtime.db, runtime.keys, runtime.mailer, runtime.clock) == type(result)()
    assert mail.messages == []

"""Mail as receivers see it, over real SMTP (in-process aiosmtpd servers).

* Delivery is at least once: after a crash between the server's accept and the outbox row being
  marked sent, the message goes out again, with the same Message-ID, so receivers can drop it.
* One e-mail domain, one identity: the Unicode and the punycode spelling of a domain give one blind
  index and one stored form, and mail to it needs no SMTPUTF8.
* A non-ASCII local part goes out with SMTPUTF8 where the server offers it; where it does not, the
  message fails at once with a clear reason instead of being retried until dead-lettered.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from aiosmtpd.controller import Controller as SmtpController
from httpx import AsyncClient

from privacy_service.config import Settings
from privacy_service.crypto.fields import normalise_email
from privacy_service.notify.jobs import LEASE, deliver_pending
from privacy_service.notify.mailer import SMTPUTF8_UNSUPPORTED, Mail, MailConnection, Mailer
from privacy_service.runtime import Runtime, build_runtime
from tests.api.dsr_support import OPEN_LIMITS, assert_problem, deliver, fresh_settings, make_subject, rows, submit
from tests.conftest import MailSink


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend)


@pytest.fixture
def plain_smtp() -> Iterator[tuple[MailSink, int]]:
    """A real SMTP server that does not offer SMTPUTF8 (the shared ``mail`` server, aiosmtpd's
    Controller default, does)."""
    sink = MailSink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = SmtpController(sink, hostname="127.0.0.1", port=port, enable_SMTPUTF8=False)
    controller.start()
    yield sink, port
    controller.stop()


@pytest.fixture
async def plain_runtime(
    make_settings: Any, settings: Settings, plain_smtp: tuple[MailSink, int]
) -> AsyncIterator[Runtime]:
    """A second runtime on the same database whose mail server lacks SMTPUTF8."""
    runtime = build_runtime(make_settings(smtp_port=plain_smtp[1], rate_limits=OPEN_LIMITS))
    assert runtime.settings.database_url == settings.database_url
    yield runtime
    await runtime.close()


class Killed(BaseException):
    """Stands in for kill -9: the process stops right after the server accepted the message."""


class DiesAfterAccept:
    connection: MailConnection

    def __init__(self, inner: Mailer) -> None:
        self.inner = inner

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[DiesAfterAccept]:
        async with self.inner.connect() as connection:
            self.connection = connection
            yield self

    async def send(self, mail: Mail) -> None:
        await self.connection.send(mail)
        raise Killed


async def _outbox(runtime: Runtime) -> list[dict[str, Any]]:
    return await rows(runtime, "outbox_messages", order="created_at")


def _row_id(row: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(str(row["id"]))


async def test_a_message_sent_again_after_a_crash_has_the_same_message_id(
    client: AsyncClient, runtime: Runtime, mail: MailSink, settings: Settings
) -> None:
    address = "dedup@example.com"
    await submit(client, {"email": address}, "access")
    (row,) = await _outbox(runtime)
    moment = datetime.now(UTC)
    with time_machine.travel(moment, tick=False), pytest.raises(Killed):
        await deliver_pending(runtime.db, runtime.keys, DiesAfterAccept(runtime.mailer), runtime.clock)
    (row,) = await _outbox(runtime)
    assert row["status"] == "sending"  # accepted by the server, never marked sent
    # The lease runs out and the next delivery run sends it again (at least once).
    with time_machine.travel(moment + LEASE + timedelta(seconds=1), tick=False):
        result = await deliver_pending(runtime.db, runtime.keys, runtime.mailer, runtime.clock)
    assert result.sent == 1
    first, second = mail.to(address)
    domain = settings.smtp_from.rpartition("@")[2]
    assert first["Message-ID"] == second["Message-ID"] == f"<{_row_id(row)}@{domain}>"
    assert first.get_content() == second.get_content()

    # Another message has another id.
    await submit(client, {"email": address}, "erase")
    await deliver(runtime)
    third = mail.to(address)[-1]
    assert re.fullmatch(r"<[0-9a-f-]{36}@" + re.escape(domain) + ">", third["Message-ID"])
    assert third["Message-ID"] != first["Message-ID"]


UNICODE = "ida@bücher.example"
PUNYCODE = "ida@xn--bcher-kva.example"


def test_unicode_and_punycode_domains_normalise_to_one_form() -> None:
    forms = [UNICODE, PUNYCODE, "Ida@XN--BCHER-KVA.EXAMPLE", "IDA@BÜCHER.example", "ida@bu\u0308cher.example"]
    assert {normalise_email(form) for form in forms} == {UNICODE}
    # ASCII domains only lower-case (blind indexes of existing rows do not change).
    assert normalise_email("Ida@Example.COM") == "ida@example.com"


async def test_a_punycode_spelling_finds_and_conflicts_with_the_unicode_one(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    subject_id = await make_subject(client, auth, email=UNICODE)
    for spelling in (PUNYCODE, "ida@XN--BCHER-KVA.example"):
        found = await client.post("/v1/subjects/lookup", json={"email": spelling}, headers=auth)
        assert found.status_code == 200, found.text
        assert [item["id"] for item in found.json()["items"]] == [subject_id]
    # A second subject with the same address in its other spelling is the same identity.
    duplicate = await client.post("/v1/subjects", json={"email": PUNYCODE, "profile": {}}, headers=auth)
    assert_problem(duplicate, 409, "conflict")
    read = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
    assert read["email"] == UNICODE


async def test_mail_to_an_idn_domain_needs_no_smtputf8(
    client: AsyncClient, plain_runtime: Runtime, plain_smtp: tuple[MailSink, int]
) -> None:
    sink, _ = plain_smtp
    await submit(client, {"email": UNICODE}, "access")
    result = await deliver_pending(plain_runtime.db, plain_runtime.keys, plain_runtime.mailer, plain_runtime.clock)
    assert (result.sent, result.retried, result.dead) == (1, 0, 0)
    (message,) = sink.messages
    assert message["To"] == PUNYCODE


NON_ASCII = "ålice.ünïcode@example.com"


async def test_a_non_ascii_local_part_is_delivered_with_smtputf8(
    client: AsyncClient, runtime: Runtime, mail: MailSink
) -> None:
    await submit(client, {"email": NON_ASCII}, "access")
    result = await deliver_pending(runtime.db, runtime.keys, runtime.mailer, runtime.clock)
    assert (result.sent, result.retried, result.dead) == (1, 0, 0)
    (message,) = mail.to(NON_ASCII)
    assert re.search(r"\b\d{6}\b", message.get_content())
    (row,) = await _outbox(runtime)
    assert row["status"] == "sent"


async def test_a_non_ascii_local_part_fails_at_once_without_smtputf8(
    client: AsyncClient, runtime: Runtime, plain_runtime: Runtime, plain_smtp: tuple[MailSink, int]
) -> None:
    sink, _ = plain_smtp
    await submit(client, {"email": NON_ASCII}, "access")
    result = await deliver_pending(plain_runtime.db, plain_runtime.keys, plain_runtime.mailer, plain_runtime.clock)
    assert (result.sent, result.retried, result.dead) == (0, 0, 1)
    (row,) = await _outbox(runtime)
    assert (row["status"], row["attempts"], row["payload"]) == ("dead", 1, None)
    assert row["last_error"] == SMTPUTF8_UNSUPPORTED[:100]
    assert "ålice" not in row["last_error"]
    (event,) = [e for e in await rows(runtime, "audit_events") if e["action"] == "outbox.dead_letter"]
    assert event["outcome"] == "failed"
    # Not retried later either.
    with time_machine.travel(datetime.now(UTC) + timedelta(days=1), tick=False):
        again = await deliver_pending(plain_runtime.db, plain_runtime.keys, plain_runtime.mailer, plain_runtime.clock)
    assert (again.sent, again.retried, again.dead) == (0, 0, 0)
    assert sink.messages == []

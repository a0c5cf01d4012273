"""The load runs' SMTP server (benchmarks.smtp_sink) in its own process, as mail.sustained uses it."""

from __future__ import annotations

import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from benchmarks.mail import SinkProcess


def _message(to: str, message_id: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "privacy@wallet.example"
    message["To"] = to
    message["Message-ID"] = message_id
    message["Subject"] = "Your code"
    message.set_content("123456")
    return message


async def test_the_sink_records_each_arrival_once_with_its_recipient_and_id(tmp_path: Path) -> None:
    with SinkProcess(tmp_path) as sink:
        assert sink.count() == 0
        before = time.monotonic()
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port) as smtp:
            await smtp.send_message(_message("a@example.org", "<1@bench>"))
            await smtp.send_message(_message("b@example.org", "<2@bench>"))
            await smtp.send_message(_message("a@example.org", "<1@bench>"))  # the same mail again
        after = time.monotonic()
        assert sink.count() == 3
        assert sink.count() == 3  # reads only what was appended since: nothing new
    arrivals, ids = sink.arrivals()
    assert set(arrivals) == {"a@example.org", "b@example.org"}
    # The same clock as the bench's (system-wide monotonic), so intake-to-mail times subtract.
    assert all(before <= at <= after for at in arrivals.values())
    assert ids == {"<1@bench>": 2, "<2@bench>": 1}

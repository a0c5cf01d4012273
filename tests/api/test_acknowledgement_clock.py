"""The CCPA acknowledgement clock (11 CCR §7021(a): confirm receipt within 10 business days), with time
travel on California's calendar, on both databases.

A confirmation counts once the outbox delivered it to the requester; a request whose confirmation never
went out gets the operators a reminder while business days are left, and one escalation once late.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import time_machine
from httpx import AsyncClient

from privacy_service.config import Settings
from privacy_service.dsr.jobs import AcknowledgementResult, watch_acknowledgements
from privacy_service.runtime import Runtime
from tests.api.dsr_support import deliver, fresh_settings, rows, submit, utc
from tests.conftest import MailSink

EMAIL = "ack.clock@example.com"
UNKNOWN_PHONE = "+14155550199"  # no subject has it: the code mail has nobody to go to


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend)


async def watch(runtime: Runtime, settings: Settings) -> AcknowledgementResult:
    return await watch_acknowledgements(runtime.db, runtime.clock, settings, runtime.deadlines)


def by_id(table: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(uuid.UUID(str(row["id"]))): row for row in table}


def detail(event: dict[str, Any]) -> dict[str, Any]:
    value = event["detail"]
    return json.loads(value) if isinstance(value, str) else dict(value)


async def test_delivered_code_mail_confirms_receipt_and_a_missing_one_is_escalated_once(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink, settings: Settings
) -> None:
    # Friday 20 Nov 2026: ten California business days skip Thanksgiving (26 Nov) and the day after
    # (27 Nov, a state holiday): confirmation is due by Tuesday 8 Dec, not Friday 4 Dec.
    with time_machine.travel(utc(2026, 11, 20, 17), tick=False):
        confirmed = await submit(client, {"email": EMAIL}, "access", regime="ccpa")
        unsent = await submit(client, {"phone": UNKNOWN_PHONE}, "erase", regime="ccpa")
        gdpr = await submit(client, {"phone": "+353861234567"}, "erase", regime="gdpr")
    with time_machine.travel(utc(2026, 11, 20, 17, 5), tick=False):
        await deliver(runtime)
        assert mail.to(EMAIL), "the code mail went out"
        first = await watch(runtime, settings)
    assert first == AcknowledgementResult(confirmed=1, reminded=0, overdue=0)
    requests = by_id(await rows(runtime, "dsr_requests"))
    assert requests[confirmed]["receipt_confirmed_at"] is not None
    assert requests[unsent]["receipt_confirmed_at"] is None
    assert requests[gdpr]["receipt_confirmed_at"] is None  # GDPR sets no acknowledgement deadline
    (event,) = [e for e in await rows(runtime, "audit_events") if e["action"] == "dsr.receipt_confirmed"]
    assert detail(event) == {
        "dsr_id": confirmed,
        "confirmed_at": "2026-11-20T17:05:00+00:00",
        "in_time": True,
    }

    # Thursday 3 Dec: three business days left (4, 7, 8 Dec): nothing yet.
    with time_machine.travel(utc(2026, 12, 3, 9), tick=False):
        assert await watch(runtime, settings) == AcknowledgementResult()
        await deliver(runtime)
    assert not mail.to(settings.operator_email)
    # Friday 4 Dec: two left: one reminder to the operators, not repeated the next day.
    with time_machine.travel(utc(2026, 12, 4, 9), tick=False):
        assert await watch(runtime, settings) == AcknowledgementResult(reminded=1)
        await deliver(runtime)
    with time_machine.travel(utc(2026, 12, 5, 9), tick=False):
        assert await watch(runtime, settings) == AcknowledgementResult()
    (reminder,) = mail.to(settings.operator_email)
    text = str(reminder["Subject"]) + reminder.get_content()
    assert "0 not acknowledged in time, 1 to acknowledge soon" in text
    assert f"{unsent} erase (ccpa)" in text
    assert "confirm by 2026-12-08" in text
    assert confirmed not in text
    assert gdpr not in text

    # Still in time on the due day; escalated once the day is over in California (the CCPA
    # calendar's zone: 8 Dec ends at 07:59:59 UTC on 9 Dec, Pacific standard time).
    with time_machine.travel(utc(2026, 12, 9, 7, 30), tick=False):
        assert await watch(runtime, settings) == AcknowledgementResult()
    with time_machine.travel(utc(2026, 12, 9, 8, 30), tick=False):
        assert await watch(runtime, settings) == AcknowledgementResult(overdue=1)
        await deliver(runtime)
    with time_machine.travel(utc(2026, 12, 10, 9), tick=False):
        assert await watch(runtime, settings) == AcknowledgementResult()
        await deliver(runtime)
    reminder, escalation = mail.to(settings.operator_email)
    text = str(escalation["Subject"]) + escalation.get_content()
    assert "1 not acknowledged in time, 0 to acknowledge soon" in text
    assert "confirmation was due 2026-12-08" in text
    for secret in (EMAIL, UNKNOWN_PHONE, "4155550199"):
        assert secret not in escalation.as_string()
    overdue = [e for e in await rows(runtime, "audit_events") if e["action"] == "dsr.acknowledge_overdue"]
    assert [(e["actor_type"], detail(e)) for e in overdue] == [
        ("system", {"dsr_id": unsent, "due_at": "2026-12-09T07:59:59+00:00"})
    ]
    assert by_id(await rows(runtime, "dsr_requests"))[unsent]["acknowledge_escalated_at"] is not None
    # Operators see the clock on the request.
    views = {rid: (await client.get(f"/v1/requests/{rid}", headers=auth)).json() for rid in (confirmed, unsent, gdpr)}
    assert views[confirmed]["acknowledgement"] == {
        "due_at": "2026-12-09T07:59:59Z",
        "confirmed_at": "2026-11-20T17:05:00Z",
        "escalated_at": None,
    }
    assert views[unsent]["acknowledgement"] == {
        "due_at": "2026-12-09T07:59:59Z",
        "confirmed_at": None,
        "escalated_at": "2026-12-09T08:30:00Z",
    }
    assert views[gdpr]["acknowledgement"] is None


async def test_a_confirmation_that_goes_out_late_is_recorded_as_late(
    client: AsyncClient, runtime: Runtime, mail: MailSink, settings: Settings
) -> None:
    with time_machine.travel(utc(2026, 3, 20, 10), tick=False):
        request_id = await submit(client, {"email": EMAIL}, "access", regime="ccpa")
    # The SMTP relay was down for weeks: the code mail went out on 7 April, one business day late
    # (Cesar Chavez Day, 31 March, makes the deadline Monday 6 April). The clock, not run meanwhile,
    # records the confirmation and that it was late.
    with time_machine.travel(utc(2026, 4, 7, 8), tick=False):
        await deliver(runtime)
        assert await watch(runtime, settings) == AcknowledgementResult(confirmed=1)
    (event,) = [e for e in await rows(runtime, "audit_events") if e["action"] == "dsr.receipt_confirmed"]
    assert detail(event)["in_time"] is False
    assert detail(event)["dsr_id"] == request_id

"""An erasure dates the data a legal duty keeps from the same anchors as the purge (one definition,
``retention.rules``); only the account closing is "now" at erasure, because the erasure closes it.

- No activity ever recorded: the duty runs from the subject's ``created_at`` (as in the purge), not
  from the erasure.
- A record filed under a ``request_completed_at`` category: the duty runs from the record's
  ``created_at`` (as in the purge), not from the erasure.
- An open account: a duty from ``account_closed_at`` runs from the erasure.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from privacy_service.dsr.deadlines import build_deadline_rules
from privacy_service.policy.document import LegalDuty, RetentionSpec
from privacy_service.policy.duration import Duration
from privacy_service.runtime import Runtime
from privacy_service.subjects.erasure import Erasure, erase_subject
from privacy_service.subjects.service import SubjectService
from tests.integration.test_retention_anchors import with_rules
from tests.retention_support import TEST_ACTOR, FixedClock, add_record, add_subject, building

CREATED = datetime(2023, 3, 10, 14, 37, 21, 123456, tzinfo=UTC)
ERASED_AT = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)


def with_ticket_duty(runtime: Runtime, trigger: str) -> Runtime:
    return with_rules(
        runtime,
        {
            "system.support_ticket": RetentionSpec(
                period=Duration(years=1),
                trigger="occurred_at",
                action="delete",
                legal_duty=LegalDuty(basis="test duty: two years", period=Duration(years=2), trigger=trigger),
            ),
        },
    )


async def erase(runtime: Runtime, subject: uuid.UUID) -> Erasure:
    rules = build_deadline_rules(runtime.policy)
    clock = FixedClock(ERASED_AT)
    async with building(runtime) as vault:
        service = SubjectService(vault.session, runtime.keys, runtime.policy, clock, TEST_ACTOR)
        return await erase_subject(vault.session, service, rules, clock, subject)


def kept_until(erasure: Erasure, category: str) -> str:
    return {item["category"]: item["until"] for item in erasure.result["kept"]}[category]


async def test_no_recorded_activity_means_the_subjects_creation_as_in_the_purge(runtime: Runtime) -> None:
    runtime = with_ticket_duty(runtime, "last_activity_at")
    subject = await add_subject(runtime, created_at=CREATED)
    await add_record(runtime, subject, category="system.support_ticket", created_at=CREATED + timedelta(days=3))
    erasure = await erase(runtime, subject)
    assert kept_until(erasure, "system.support_ticket") == CREATED.replace(year=2025).isoformat()


async def test_recorded_activity_is_the_anchor(runtime: Runtime) -> None:
    runtime = with_ticket_duty(runtime, "last_activity_at")
    activity = CREATED + timedelta(days=100)
    subject = await add_subject(runtime, created_at=CREATED, activity=activity)
    await add_record(runtime, subject, category="system.support_ticket", created_at=CREATED + timedelta(days=3))
    erasure = await erase(runtime, subject)
    assert kept_until(erasure, "system.support_ticket") == activity.replace(year=activity.year + 2).isoformat()


async def test_a_request_record_is_kept_from_when_it_was_written_as_in_the_purge(runtime: Runtime) -> None:
    # Shipped policy: system.privacy_request, legal duty P24M from request_completed_at.
    subject = await add_subject(runtime, created_at=CREATED)
    written = CREATED + timedelta(days=200)
    await add_record(runtime, subject, category="system.privacy_request", created_at=written)
    erasure = await erase(runtime, subject)
    assert kept_until(erasure, "system.privacy_request") == written.replace(year=written.year + 2).isoformat()


async def test_an_open_account_closes_at_the_erasure(runtime: Runtime) -> None:
    runtime = with_ticket_duty(runtime, "account_closed_at")
    subject = await add_subject(runtime, created_at=CREATED)
    await add_record(runtime, subject, category="system.support_ticket", created_at=CREATED + timedelta(days=3))
    erasure = await erase(runtime, subject)
    assert kept_until(erasure, "system.support_ticket") == ERASED_AT.replace(year=2026).isoformat()


async def test_a_closed_account_keeps_its_closing_time(runtime: Runtime) -> None:
    runtime = with_ticket_duty(runtime, "account_closed_at")
    closed = CREATED + timedelta(days=50)
    subject = await add_subject(runtime, created_at=CREATED, closed_at=closed)
    await add_record(runtime, subject, category="system.support_ticket", created_at=CREATED + timedelta(days=3))
    erasure = await erase(runtime, subject)
    assert kept_until(erasure, "system.support_ticket") == closed.replace(year=closed.year + 2).isoformat()

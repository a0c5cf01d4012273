"""Retention runs from the event (issue 21 items 5 and 6), on both databases.

- Imported history (an old ``occurred_at`` stored today) is due on the first run, and the dry run
  before it shows exactly that.
- The anchor is chosen per category by its rule's ``trigger`` (``occurred_at`` or ``collected_at``,
  or a subject's event), and ``policy check`` refuses an anchor it does not know.
- A legal duty anchored on a record's own time ends at the exact instant the law allows: the kept
  data is there a second before and gone a second after.
- A future ``occurred_at`` is refused at write, so it cannot stretch a period.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from privacy_service.dsr.deadlines import build_deadline_rules
from privacy_service.errors import InvalidInput
from privacy_service.policy.document import LegalDuty, PolicyDocument, RetentionSpec
from privacy_service.policy.duration import Duration
from privacy_service.policy.loader import check_policy
from privacy_service.runtime import Runtime
from privacy_service.subjects.erasure import erase_subject
from privacy_service.subjects.models import Record, Subject
from privacy_service.subjects.service import SubjectService
from tests.policy_files import copy_policies, edit_yaml
from tests.retention_support import (
    NOW,
    TEST_ACTOR,
    FixedClock,
    add_record,
    add_subject,
    building,
    counts,
    entry,
    purge,
    state,
    years,
)

TICKETS = "records:system.support_ticket"
DEVICES = "records:user.device"


def with_rules(runtime: Runtime, specs: dict[str, RetentionSpec]) -> Runtime:
    """The runtime with some categories' retention rules replaced (the rest as shipped)."""
    policy = runtime.policy
    categories = {
        key: category.model_copy(update={"retention": specs[key]}) if key in specs else category
        for key, category in policy.spec.data_categories.items()
    }
    document = PolicyDocument(policy.spec.model_copy(update={"data_categories": categories}), policy.notices)
    return dataclasses.replace(runtime, policy=document)


async def imported_history(runtime: Runtime) -> dict[str, Any]:
    """A customer moved to the vault a month ago with their history: tickets and device data of
    2015 and of last year, all stored (``created_at``) yesterday."""
    imported = NOW - timedelta(days=1)
    subject = await add_subject(runtime, created_at=NOW - timedelta(days=30), profile={"name": "Imported"})
    old = datetime(2015, 4, 2, 10, 0, tzinfo=UTC)
    recent = NOW - years(1)
    return {
        "subject": subject,
        "old_ticket": await add_record(
            runtime, subject, category="system.support_ticket", created_at=imported, occurred_at=old
        ),
        "recent_ticket": await add_record(
            runtime, subject, category="system.support_ticket", created_at=imported, occurred_at=recent
        ),
        "old_device": await add_record(runtime, subject, category="user.device", created_at=imported, occurred_at=old),
        "recent_device": await add_record(
            runtime, subject, category="user.device", created_at=imported, occurred_at=NOW - timedelta(days=60)
        ),
    }


async def test_imported_history_is_purged_on_the_first_run_and_the_dry_run_shows_it_first(runtime: Runtime) -> None:
    assert runtime.policy.retention_rules()["system.support_ticket"].trigger == "occurred_at"
    assert runtime.policy.retention_rules()["user.device"].trigger == "occurred_at"
    built = await imported_history(runtime)
    before = await state(runtime)

    dry = await purge(runtime, dry_run=True)
    assert await state(runtime) == before, "the dry run changed data"
    assert entry(dry, TICKETS).purged == 1
    assert entry(dry, DEVICES).purged == 1

    real = await purge(runtime)
    assert real.status == "completed", real
    assert counts(real) == counts(dry), "the first run did not do what the dry run showed"
    left = set((await state(runtime))["records"])
    assert built["old_ticket"] not in left
    assert built["old_device"] not in left
    assert {built["recent_ticket"], built["recent_device"]} <= left
    # The subject still has live data (its name, the recent records): it stays.
    assert (await state(runtime))["subjects"][built["subject"]][0] == "active"

    again = await purge(runtime)
    assert entry(again, TICKETS).purged == entry(again, DEVICES).purged == 0


async def test_the_anchor_is_chosen_per_category(runtime: Runtime) -> None:
    """Tickets run from the event, device data (for this test) from storage: only the ticket goes."""
    runtime = with_rules(
        runtime,
        {"user.device": RetentionSpec(period=Duration(months=13), trigger="collected_at", action="delete")},
    )
    built = await imported_history(runtime)
    dry = await purge(runtime, dry_run=True)
    assert entry(dry, TICKETS).purged == 1
    assert entry(dry, DEVICES).selected == 0, "stored yesterday: a storage-anchored period has not run out"
    real = await purge(runtime)
    assert counts(real) == counts(dry)
    left = set((await state(runtime))["records"])
    assert built["old_ticket"] not in left
    assert {built["old_device"], built["recent_device"], built["recent_ticket"]} <= left


async def test_a_storage_anchor_would_keep_imported_history(runtime: Runtime) -> None:
    """The behaviour before the upgrade, still available per category: nothing imported is due."""
    runtime = with_rules(
        runtime,
        {
            "system.support_ticket": RetentionSpec(period=Duration(years=3), trigger="collected_at", action="delete"),
            "user.device": RetentionSpec(period=Duration(months=13), trigger="collected_at", action="delete"),
        },
    )
    await imported_history(runtime)
    before = await state(runtime)
    real = await purge(runtime)
    assert entry(real, TICKETS).selected == entry(real, DEVICES).selected == 0
    assert (await state(runtime))["records"] == before["records"]


async def test_month_end_anchors_are_decided_on_the_event_time(runtime: Runtime) -> None:
    """At a month end a calendar-month bound cannot settle every row in SQL: those rows are read
    one by one, and must use the event time too (1 month after 31 January is 28 February)."""
    runtime = with_rules(
        runtime,
        {"system.support_ticket": RetentionSpec(period=Duration(months=1), trigger="occurred_at", action="delete")},
    )
    now = datetime(2025, 2, 28, 12, 0, tzinfo=UTC)
    subject = await add_subject(runtime, created_at=now - timedelta(days=90), profile={"name": "Month End"})
    stored = now - timedelta(hours=1)
    due = await add_record(
        runtime,
        subject,
        category="system.support_ticket",
        created_at=stored,
        occurred_at=datetime(2025, 1, 31, 11, 0, tzinfo=UTC),
    )
    live = await add_record(
        runtime,
        subject,
        category="system.support_ticket",
        created_at=stored,
        occurred_at=datetime(2025, 1, 31, 13, 0, tzinfo=UTC),
    )
    dry = await purge(runtime, now, dry_run=True)
    real = await purge(runtime, now)
    assert counts(dry) == counts(real)
    assert entry(real, TICKETS).purged == 1
    left = set((await state(runtime))["records"])
    assert due not in left
    assert live in left


# -- a legal duty on the record's own time ends exactly ----------------------------------------

EVENT = datetime(2023, 3, 10, 14, 37, 21, 123456, tzinfo=UTC)
DUTY_END = datetime(2025, 3, 10, 14, 37, 21, 123456, tzinfo=UTC)  # EVENT + P2Y


def with_ticket_duty(runtime: Runtime) -> Runtime:
    return with_rules(
        runtime,
        {
            "system.support_ticket": RetentionSpec(
                period=Duration(years=1),
                trigger="occurred_at",
                action="delete",
                legal_duty=LegalDuty(
                    basis="test duty: two years from the event", period=Duration(years=2), trigger="occurred_at"
                ),
            ),
        },
    )


async def test_a_duty_on_the_records_own_time_ends_at_the_exact_instant(runtime: Runtime) -> None:
    runtime = with_ticket_duty(runtime)
    # Only tickets, stored the next day (a storage anchor would end the duty a day later).
    subject = await add_subject(runtime, created_at=EVENT - timedelta(days=400))
    older = await add_record(
        runtime,
        subject,
        category="system.support_ticket",
        created_at=EVENT + timedelta(days=1),
        occurred_at=EVENT - timedelta(days=5),
    )
    latest = await add_record(
        runtime, subject, category="system.support_ticket", created_at=EVENT + timedelta(days=1), occurred_at=EVENT
    )

    # A year and a day on: the period is over, the duty runs -> restricted until the exact end.
    first = await purge(runtime, EVENT + timedelta(days=366))
    assert first.status == "completed", first
    after = await state(runtime)
    status, _, _, retained_until = after["subjects"][subject]
    assert status == "restricted"
    assert retained_until == DUTY_END
    assert after["records"][older][2:] == (True, DUTY_END)
    assert after["records"][latest][2:] == (True, DUTY_END)

    # A second before the end: kept. A second after (the same day): gone.
    before_end = await purge(runtime, DUTY_END - timedelta(seconds=1))
    assert entry(before_end, "restricted_records").selected == 0
    assert set((await state(runtime))["records"]) == {older, latest}
    after_end = await purge(runtime, DUTY_END + timedelta(seconds=1))
    assert entry(after_end, "restricted_records").purged == 2
    assert entry(after_end, "restricted_subjects").purged == 1
    final = await state(runtime)
    assert older not in final["records"]
    assert latest not in final["records"]
    assert final["subjects"][subject][0] == "erased"


async def test_the_duty_end_the_engine_decides_is_exact_at_a_month_end(runtime: Runtime) -> None:
    """The duty's end is decided in Python from the latest record's event: 29 February + P1Y is
    28 February, to the microsecond, whatever day the record was stored."""
    runtime = with_rules(
        runtime,
        {
            "system.support_ticket": RetentionSpec(
                period=Duration(days=30),
                trigger="occurred_at",
                action="delete",
                legal_duty=LegalDuty(basis="test duty", period=Duration(years=1), trigger="occurred_at"),
            ),
        },
    )
    event = datetime(2024, 2, 29, 8, 15, 0, 1, tzinfo=UTC)
    subject = await add_subject(runtime, created_at=event - timedelta(days=10))
    record = await add_record(
        runtime, subject, category="system.support_ticket", created_at=event + timedelta(hours=20), occurred_at=event
    )
    await purge(runtime, event + timedelta(days=40))
    after = await state(runtime)
    assert after["records"][record][2:] == (True, datetime(2025, 2, 28, 8, 15, 0, 1, tzinfo=UTC))


# -- write side and policy check -----------------------------------------------------------------


async def test_a_future_occurred_at_is_refused_by_the_vault(runtime: Runtime) -> None:
    subject = await add_subject(runtime, created_at=NOW - timedelta(days=1))
    with pytest.raises(InvalidInput, match="future"):
        await add_record(
            runtime, subject, category="user.device", created_at=NOW, occurred_at=NOW + timedelta(minutes=6)
        )
    # Within the clock-skew allowance: accepted, and the period runs from that time.
    kept = await add_record(
        runtime, subject, category="user.device", created_at=NOW, occurred_at=NOW + timedelta(minutes=4)
    )
    async with runtime.db.transaction() as session:
        rows = (await session.exec(select(Record).where(Record.subject_id == subject))).all()
        assert [r.id for r in rows] == [kept]
        assert (await session.get(Subject, subject)) is not None


@pytest.mark.parametrize("anchor", ["stored_at", "occured_at", "account_closed"])
def test_policy_check_refuses_an_unknown_anchor(tmp_path: Path, anchor: str) -> None:
    folder = copy_policies(tmp_path)

    def change(policy: dict[str, Any]) -> None:
        policy["data_categories"]["system.support_ticket"]["retention"]["trigger"] = anchor

    edit_yaml(folder / "policy.yaml", change)
    document, problems = check_policy(folder)
    assert document is None
    assert any("data_categories.system.support_ticket.retention.trigger" in str(p) for p in problems), problems


@pytest.mark.parametrize("anchor", ["occurred_at", "collected_at", "last_activity_at"])
def test_policy_check_accepts_each_anchor_for_a_record_category(tmp_path: Path, anchor: str) -> None:
    folder = copy_policies(tmp_path)

    def change(policy: dict[str, Any]) -> None:
        policy["data_categories"]["system.support_ticket"]["retention"]["trigger"] = anchor
        policy["data_categories"]["user.financial.transaction"]["retention"]["legal_duty"]["trigger"] = anchor

    edit_yaml(folder / "policy.yaml", change)
    document, problems = check_policy(folder)
    assert problems == []
    assert document is not None
    assert document.retention_rules()["system.support_ticket"].trigger == anchor
    # The published notice names the anchor in words, in every language.
    for notice in document.notices.values():
        assert getattr(notice.labels.triggers, anchor)


async def test_an_erasure_keeps_data_under_a_duty_on_the_records_own_time_until_its_exact_end(
    runtime: Runtime,
) -> None:
    """An erasure (a data-subject request, or an operator's DELETE) keeps the tickets a duty on
    their event time still covers, until the latest ticket's event plus the duty, exactly."""
    runtime = with_ticket_duty(runtime)
    rules = build_deadline_rules(runtime.policy)
    subject = await add_subject(runtime, created_at=EVENT - timedelta(days=400))
    for occurred in (EVENT - timedelta(days=5), EVENT):
        await add_record(
            runtime,
            subject,
            category="system.support_ticket",
            created_at=EVENT + timedelta(days=1),
            occurred_at=occurred,
        )
    at = EVENT + timedelta(days=30)
    async with building(runtime) as vault:
        service = SubjectService(vault.session, runtime.keys, runtime.policy, FixedClock(at), TEST_ACTOR)
        erasure = await erase_subject(vault.session, service, rules, FixedClock(at), subject)
    kept = {item["category"]: item for item in erasure.result["kept"]}
    assert kept["system.support_ticket"]["until"] == DUTY_END.isoformat()
    assert "system.support_ticket" not in erasure.result["erased"]
    after = await state(runtime)
    assert after["subjects"][subject][0] == "restricted"
    assert {v[2:] for k, v in after["records"].items() if v[0] == subject} == {(True, DUTY_END)}

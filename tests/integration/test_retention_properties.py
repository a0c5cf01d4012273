"""Property test of the purge on both databases (hypothesis): generated retention rules, subjects,
records, legal holds and data kept after erasure, checked against an oracle written from the
policy's definition (``period.add_to(anchor) <= now``, legal duty likewise).

After a real run: nothing due and unprotected remains; nothing live, legally kept or held was
touched (held subjects are byte-for-byte unchanged); a subject with nothing live left is erased
or restricted; and the dry run at the same ``now`` reported exactly the real run's counts.
Run times include month ends, where calendar-month periods are decided row by row.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, text
from sqlmodel import select

from privacy_service.crypto.fields import Binding
from privacy_service.crypto.models import DataKeyRow
from privacy_service.policy.document import LegalDuty, PolicyDocument, RetentionSpec
from privacy_service.policy.duration import Duration
from privacy_service.retention.models import LegalHold, RetentionAggregate, RetentionRun
from privacy_service.runtime import Runtime
from privacy_service.subjects.models import Record, Subject
from privacy_service.subjects.service import Retention
from tests.retention_support import building, counts, purge

RECORD_CATEGORIES = ("user.device", "user.behavior", "system.support_ticket", "user.financial.transaction")
FIELD_CATEGORIES = ("user.name", "user.contact.email")
NOWS = (
    datetime(2025, 6, 15, 12, 0, tzinfo=UTC),
    datetime(2025, 2, 28, 9, 30, tzinfo=UTC),  # month end: calendar months clamp
    datetime(2024, 2, 29, 23, 0, tzinfo=UTC),
    datetime(2025, 4, 30, 0, 0, 1, tzinfo=UTC),
)
TRIGGERS = ("collected_at", "account_closed_at", "last_activity_at", "request_completed_at", "occurred_at")
FIELD_TRIGGERS = ("collected_at", "account_closed_at", "last_activity_at", "occurred_at")

durations = st.builds(Duration, years=st.integers(0, 2), months=st.integers(0, 14), days=st.integers(0, 40)).filter(
    lambda d: not d.is_zero
)
duties = st.none() | st.builds(
    lambda period, trigger: LegalDuty(basis="test duty", period=period, trigger=trigger),
    durations,
    st.sampled_from(TRIGGERS),
)


def rules(triggers: tuple[str, ...]) -> st.SearchStrategy[RetentionSpec]:
    return st.builds(
        RetentionSpec,
        period=durations,
        trigger=st.sampled_from(triggers),
        action=st.sampled_from(["delete", "anonymise"]),
        legal_duty=duties,
    )


@st.composite
def subjects(draw: st.DrawFn) -> dict[str, Any]:
    age = draw(st.integers(0, 2500))
    return {
        "age": age,
        "closed": draw(st.none() | st.integers(0, age)),
        "activity": draw(st.none() | st.integers(0, age)),
        "seconds": draw(st.integers(0, 86_399)),
        "name": draw(st.booleans()),
        "email": draw(st.booleans()),
        "secondary_email": draw(st.booleans()),
        "records": draw(
            st.lists(
                # (category, days ago it was stored, seconds, days earlier it occurred: imported history)
                st.tuples(
                    st.sampled_from(RECORD_CATEGORIES),
                    st.integers(0, age),
                    st.integers(0, 86_399),
                    st.sampled_from([0, 0, 1, 45, 400, 1500]),
                ),
                max_size=4,
            )
        ),
        "hold": draw(st.sampled_from(["none", "none", "active", "until", "expired", "released"])),
        # Erased earlier with the name kept until (now + days): data kept after erasure.
        "restricted": draw(st.none() | st.integers(-30, 30)),
    }


scenarios = st.fixed_dictionaries(
    {
        "now": st.sampled_from(NOWS),
        "record_rules": st.fixed_dictionaries({c: rules(TRIGGERS) for c in RECORD_CATEGORIES}),
        "field_rules": st.fixed_dictionaries({c: rules(FIELD_TRIGGERS) for c in FIELD_CATEGORIES}),
        "subjects": st.lists(subjects(), min_size=1, max_size=4),
    }
)


def with_rules(policy: PolicyDocument, specs: dict[str, RetentionSpec]) -> PolicyDocument:
    categories = {
        key: category.model_copy(update={"retention": specs[key]}) if key in specs else category
        for key, category in policy.spec.data_categories.items()
    }
    return PolicyDocument(policy.spec.model_copy(update={"data_categories": categories}), policy.notices)


# -- the oracle ----------------------------------------------------------------------------------


def state_of(spec: RetentionSpec, anchors: dict[str, datetime | None], now: datetime) -> str:
    def over(period: Duration, anchor: datetime | None) -> bool:
        return anchor is not None and period.add_to(anchor) <= now

    if not over(spec.period, anchors[spec.trigger]):
        return "live"
    if spec.legal_duty is not None and not over(spec.legal_duty.period, anchors[spec.legal_duty.trigger]):
        return "duty"
    return "due"


def duty_end(spec: RetentionSpec, anchors: dict[str, datetime | None]) -> datetime | None:
    assert spec.legal_duty is not None
    anchor = anchors[spec.legal_duty.trigger]
    return spec.legal_duty.period.add_to(anchor) if anchor is not None else None


# -- building and reading ------------------------------------------------------------------------


async def wipe(runtime: Runtime) -> None:
    async with runtime.db.transaction() as session:
        for model in (Record, LegalHold, Subject, DataKeyRow, RetentionRun, RetentionAggregate):
            await session.exec(delete(model))  # type: ignore[call-overload]


async def build(runtime: Runtime, scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """The scenario's data, written through the real services in one transaction (fast examples)."""
    now: datetime = scenario["now"]
    built = []
    async with building(runtime) as vault:
        for index, spec in enumerate(scenario["subjects"]):

            def ago(days: int, seconds: int = spec["seconds"]) -> datetime:
                return now - timedelta(days=days, seconds=seconds)

            profile: dict[str, Any] = {}
            if spec["name"] or spec["restricted"] is not None:
                profile["name"] = f"Person {index}"
            if spec["secondary_email"]:
                profile["secondary_email"] = f"alt{index}@example.org"
            subject_id = await vault.subject(
                created_at=ago(spec["age"]),
                profile=profile,
                email=f"person{index}@example.com" if spec["email"] else None,
                closed_at=ago(spec["closed"]) if spec["closed"] is not None else None,
                activity=ago(spec["activity"]) if spec["activity"] is not None else None,
            )
            records = {}
            if spec["restricted"] is not None:
                until = now + timedelta(days=spec["restricted"])
                await vault.restrict(subject_id, {"user.name": Retention("test duty", until)}, ago(spec["age"]))
            else:
                for category, days, seconds, earlier in spec["records"]:
                    created = ago(days, seconds)
                    occurred = created - timedelta(days=earlier)
                    record_id = await vault.record(
                        subject_id, category=category, created_at=created, occurred_at=occurred, data={"amount": days}
                    )
                    records[record_id] = (category, created, occurred)
            if spec["hold"] != "none":
                until = {"until": now + timedelta(days=5), "expired": now - timedelta(days=1)}.get(spec["hold"])
                await vault.hold(
                    subject_id, until=until, at=now - timedelta(days=30), release=spec["hold"] == "released"
                )
            built.append({"id": subject_id, "spec": spec, "records": records})
    return built


async def snapshot(runtime: Runtime) -> dict[str, Any]:
    async with runtime.db.transaction() as session:
        subjects = {s.id: s.model_dump() for s in (await session.exec(select(Subject))).all()}
        records = {r.id: r.model_dump() for r in (await session.exec(select(Record))).all()}
        keys = {(k.subject_id, k.purpose) for k in (await session.exec(select(DataKeyRow))).all()}
        aggregated = sum(a.count for a in (await session.exec(select(RetentionAggregate))).all())
    return {"subjects": subjects, "records": records, "keys": keys, "aggregated": aggregated}


async def profile_of(runtime: Runtime, subject: dict[str, Any]) -> dict[str, Any]:
    async with runtime.db.transaction() as session:
        key = await runtime.keys.load_key(session, subject["id"])
    blob = subject["profile_ct"]
    return msgspec.json.decode(key.open(blob, Binding("subjects", subject["id"], None, "profile"))) if blob else {}


# -- the property --------------------------------------------------------------------------------


PROPERTY = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(scenario=scenarios)
async def test_purge_follows_the_rules_exactly(runtime: Runtime, scenario: dict[str, Any]) -> None:
    await wipe(runtime)
    now: datetime = scenario["now"]
    specs = {**scenario["record_rules"], **scenario["field_rules"]}
    runtime = dataclasses.replace(runtime, policy=with_rules(runtime.policy, specs))
    built = await build(runtime, scenario)
    before = await snapshot(runtime)

    dry = await purge(runtime, now, dry_run=True)
    assert await snapshot(runtime) == before, "the dry run changed data"
    real = await purge(runtime, now)
    assert real.status == "completed", real
    assert counts(dry) == counts(real), "the dry run did not report what the real run did"
    after = await snapshot(runtime)
    assert real.report is not None
    assert after["aggregated"] == real.report.totals.anonymised

    for subject in built:
        check_subject(subject, specs, now, before, after)
    for subject in built:
        row = after["subjects"][subject["id"]]
        if row["status"] == "active" and row["profile_ct"] != before["subjects"][subject["id"]]["profile_ct"]:
            kept = await profile_of(runtime, row)
            assert set(kept) == set(row["profile_fields"])

    again = await purge(runtime, now)
    assert again.report is not None
    assert again.report.totals.purged + again.report.totals.anonymised + again.report.totals.restricted == 0


def check_subject(
    subject: dict[str, Any],
    specs: dict[str, RetentionSpec],
    now: datetime,
    before: dict[str, Any],
    after: dict[str, Any],
) -> None:
    subject_id, spec = subject["id"], subject["spec"]
    old, new = before["subjects"][subject_id], after["subjects"][subject_id]
    held = spec["hold"] in ("active", "until")
    mine = {rid for rid, r in before["records"].items() if r["subject_id"] == subject_id}
    if held:
        assert new == old, "a held subject changed"
        assert all(after["records"].get(rid) == before["records"][rid] for rid in mine), "a held record changed"
        return
    if spec["restricted"] is not None:
        if spec["restricted"] <= 0:
            assert new["status"] == "erased"
            assert not any(k[0] == subject_id for k in after["keys"])
        else:
            assert new == old
        return
    anchors = {
        "occurred_at": old["created_at"],
        "collected_at": old["created_at"],
        "request_completed_at": None,
        "account_closed_at": old["account_closed_at"],
        "last_activity_at": old["last_activity_at"] or old["created_at"],
    }
    fields = {c: state_of(specs[c], anchors, now) for c in set(old["profile_fields"].values())}
    if old["email_ct"] is not None:
        fields["user.contact.email"] = state_of(specs["user.contact.email"], anchors, now)
    record_states = {}
    record_ends: dict[Any, datetime | None] = {}
    ends: list[datetime | None] = [duty_end(specs[c], anchors) for c, s in fields.items() if s == "duty"]
    for record_id, (category, created, occurred) in subject["records"].items():
        record_anchors = {**anchors, "occurred_at": occurred, "collected_at": created, "request_completed_at": created}
        record_states[record_id] = state_of(specs[category], record_anchors, now)
        if record_states[record_id] == "duty":
            ends.append(duty_end(specs[category], record_anchors))
            record_ends[record_id] = duty_end(specs[category], record_anchors)
        if record_states[record_id] == "due":
            assert record_id not in after["records"], "a due record survived"
        else:
            assert record_id in after["records"], "a live or legally kept record was purged"
    live = "live" in fields.values() or "live" in record_states.values()
    over = any(s != "live" for s in (*fields.values(), *record_states.values()))
    if not live and over and None not in ends:
        expected = "restricted" if ends else "erased"
        assert new["status"] == expected, (fields, record_states)
        if expected == "restricted":
            assert all(after["records"][rid]["restricted"] for rid, s in record_states.items() if s == "duty")
            for rid, s in record_states.items():
                if s == "duty":
                    assert after["records"][rid]["retain_until"] >= now
            # Kept exactly until its category's latest duty ends: no end-of-day margin, not a moment less.
            for rid, end in record_ends.items():
                category = subject["records"][rid][0]
                wanted = max(e for r, e in record_ends.items() if subject["records"][r][0] == category)
                assert after["records"][rid]["retain_until"] == wanted, (end, wanted)
        else:
            assert not any(k[0] == subject_id for k in after["keys"])
        return
    assert new["status"] == "active", (fields, record_states)
    due_fields = {c for c, s in fields.items() if s == "due"}
    assert set(new["profile_fields"].values()) == set(old["profile_fields"].values()) - due_fields
    if "user.contact.email" in due_fields:
        assert new["email_ct"] is None
    else:
        assert new["email_ct"] == old["email_ct"]
    for record_id, s in record_states.items():
        if s != "due":
            assert after["records"][record_id] == before["records"][record_id], "a kept record changed"


async def test_database_is_checked(runtime: Runtime) -> None:
    """The property test wipes tables between examples; make sure it starts from the migrated schema."""
    async with runtime.db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM legal_holds"))).scalar_one() == 0

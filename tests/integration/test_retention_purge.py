"""The purge end to end on both databases: each rule's action, holds, legal duties, the subject-level
decisions (erase, restrict, drop fields), data kept after erasure, and dry run == real run."""

from __future__ import annotations

import uuid
from datetime import timedelta

import msgspec
import pytest
from sqlmodel import col, select

from privacy_service.crypto.fields import Binding
from privacy_service.crypto.models import DataKeyRow
from privacy_service.crypto.service import PRIMARY, REQUEST, RETENTION
from privacy_service.dsr.models import PrivacyRequest, RequestTransition
from privacy_service.notify.models import OutboxMessage
from privacy_service.retention.service import RetentionEngine
from privacy_service.runtime import Runtime
from privacy_service.subjects import service as subjects_service
from privacy_service.subjects.models import Record
from privacy_service.subjects.service import Retention
from tests.retention_support import (
    NOW,
    add_record,
    add_subject,
    counts,
    entry,
    hold,
    purge,
    restrict,
    state,
    years,
)

AML = "EU AMLD4 (Directive (EU) 2015/849) Art. 40(1)(a); FATF Recommendation 11"


async def test_each_rule_purges_what_is_due_and_nothing_else(runtime: Runtime) -> None:
    # An open account: old device data goes, recent stays, old app activity is anonymised, old
    # transactions stay under the AML duty (it starts only when the account closes).
    active = await add_subject(runtime, created_at=NOW - years(4), profile={"name": "Ada"}, email="ada@example.com")
    old_device = await add_record(runtime, active, category="user.device", created_at=NOW - years(2))
    new_device = await add_record(runtime, active, category="user.device", created_at=NOW - timedelta(days=30))
    await add_record(
        runtime, active, category="user.behavior", kind="screen_view", created_at=NOW - years(2), data={"amount": 250}
    )
    old_tx = await add_record(runtime, active, category="user.financial.transaction", created_at=NOW - years(3))
    ticket = await add_record(runtime, active, category="system.support_ticket", created_at=NOW - years(1))
    # Closed six years ago: every period and the AML duty are over -> erased (crypto-shredded).
    gone = await add_subject(
        runtime, created_at=NOW - years(9), profile={"name": "Bo"}, email="bo@example.com", closed_at=NOW - years(6)
    )
    await add_record(runtime, gone, category="user.financial.transaction", created_at=NOW - years(7))
    # Closed a year ago: the e-mail's period is over (no duty); the name is kept for AML -> restricted.
    kept = await add_subject(
        runtime,
        created_at=NOW - years(5),
        profile={"name": "Cy", "secondary_email": "cy@example.org"},
        closed_at=NOW - years(1),
    )
    kept_tx = await add_record(runtime, kept, category="user.financial.transaction", created_at=NOW - years(3))
    # Same as `gone`, but under a legal hold: untouched.
    held = await add_subject(
        runtime, created_at=NOW - years(9), profile={"name": "Di"}, email="di@example.com", closed_at=NOW - years(6)
    )
    held_tx = await add_record(runtime, held, category="user.financial.transaction", created_at=NOW - years(7))
    await hold(runtime, held)
    # Erased earlier with AML data kept until yesterday: the kept data and the retention key go now.
    ended = await add_subject(runtime, created_at=NOW - years(8), profile={"name": "Ed"}, closed_at=NOW - years(5))
    await restrict(runtime, ended, {"user.name": Retention(AML, NOW - timedelta(days=1))}, NOW - years(1))

    before = await state(runtime)
    dry = await purge(runtime, dry_run=True)
    assert await state(runtime) == before, "a dry run changed data"
    real = await purge(runtime)
    assert real.status == "completed", real
    assert counts(dry) == counts(real)
    after = await state(runtime)

    records = after["records"]
    assert old_device not in records
    assert new_device in records
    assert ticket in records
    assert old_tx in records
    assert held_tx in records
    assert not any(r[0] == active and r[1] == "user.behavior" for r in records.values())
    assert ("user.behavior", "screen_view", (NOW - years(2)).strftime("%Y-%m"), "100-1000", 1) in after["aggregates"]

    assert after["subjects"][active][0] == "active"
    assert after["subjects"][gone][0] == "erased"
    assert not any(k[0] == str(gone) for k in after["keys"])
    assert after["subjects"][kept][0] == "restricted"
    assert after["subjects"][kept][1] == (("user.financial.transaction", AML.replace("(a)", "(b)")), ("user.name", AML))
    assert records[kept_tx][2] is True  # restricted, kept until the duty ends
    assert (str(kept), RETENTION) in after["keys"]
    assert (str(kept), PRIMARY) not in after["keys"]
    assert after["subjects"][held] == before["subjects"][held]
    assert after["subjects"][ended][0] == "erased"
    assert not any(k[0] == str(ended) for k in after["keys"])

    assert entry(real, "records:user.device").purged == 1
    assert entry(real, "records:user.behavior").anonymised == 1
    assert entry(real, "records:user.financial.transaction").skipped_legal_duty == 2  # active's and kept's
    assert entry(real, "records:user.financial.transaction").skipped_hold == 1
    subjects = entry(real, "subjects")
    assert (subjects.selected, subjects.purged, subjects.restricted, subjects.skipped_hold) == (3, 1, 1, 1)
    assert entry(real, "subject_fields:user.contact.email").purged == 2  # gone's e-mail, kept's secondary
    assert entry(real, "subject_fields:user.name").skipped_legal_duty == 1
    assert entry(real, "restricted_subjects").purged == 1
    assert real.report is not None
    assert real.report.holds.active == 1

    again = await purge(runtime)
    assert again.report is not None
    assert again.report.totals.purged == 0, "a second run found more to purge"
    assert await state(runtime) == after


async def _request(
    runtime: Runtime,
    *,
    completed: timedelta | None,
    subject_id: uuid.UUID | None = None,
    secrets_expired: timedelta | None = None,
) -> uuid.UUID:
    """A privacy request row as DsrService leaves it: its own data key, history and queued mail."""
    request_id = uuid.uuid4()
    received = NOW - (completed or timedelta()) - timedelta(days=10)
    expiry = NOW - secrets_expired if secrets_expired is not None else NOW + timedelta(days=1)
    async with runtime.db.transaction() as session:
        key = await runtime.keys.create_key(session, request_id, REQUEST)
        session.add(
            PrivacyRequest(
                id=request_id,
                type="access",
                status="completed" if completed is not None else "awaiting_review",
                regime="gdpr",
                language="en",
                identity_kind="email",
                identity_bidx=uuid.uuid4().bytes,
                identity_ct=key.seal(b"requester@example.com", Binding("dsr_requests", request_id, None, "identity")),
                subject_id=subject_id,
                received_at=received,
                due_at=received + timedelta(days=30),
                completed_at=NOW - completed if completed is not None else None,
                code_hash=b"c" * 32,
                code_expires_at=expiry,
                token_hash=uuid.uuid4().bytes * 2,
                token_expires_at=expiry,
                export_expires_at=expiry,
            )
        )
        await session.flush()
        session.add(
            RequestTransition(
                request_id=request_id, to_status="received", at=received, actor_type="subject", actor_id="x"
            )
        )
        for age, status in ((40, "sent"), (5, "sent"), (40, "pending")):
            session.add(
                OutboxMessage(
                    id=uuid.uuid4(),
                    template="completed",
                    owner_id=request_id,
                    status=status,
                    next_attempt_at=NOW - timedelta(days=age),
                    created_at=NOW - timedelta(days=age),
                )
            )
    return request_id


async def test_requests_credentials_and_old_mail_are_purged(runtime: Runtime) -> None:
    held_subject = await add_subject(runtime, created_at=NOW - years(5), profile={"name": "Held Requester"})
    await hold(runtime, held_subject)
    # P24M and the CCPA duty (P24M) both over; its credentials and mail expired long ago too.
    old = await _request(runtime, completed=years(3), secrets_expired=years(3))
    recent = await _request(runtime, completed=years(1), secrets_expired=timedelta(days=3))
    held = await _request(runtime, completed=years(3), subject_id=held_subject)
    open_ = await _request(runtime, completed=None, secrets_expired=timedelta(hours=1))  # within the grace

    dry = await purge(runtime, dry_run=True)
    real = await purge(runtime)
    assert counts(dry) == counts(real)
    requests = entry(real, "requests:system.privacy_request")
    assert (requests.selected, requests.purged, requests.skipped_hold) == (2, 1, 1)

    async with runtime.db.transaction() as session:
        rows = {r.id: r for r in (await session.exec(select(PrivacyRequest))).all()}
        history = set((await session.exec(select(col(RequestTransition.request_id)))).all())
        mail = (await session.exec(select(OutboxMessage))).all()
        keys = {k.subject_id for k in (await session.exec(select(DataKeyRow))).all()}
    assert old not in rows
    assert old not in history
    assert old not in keys
    assert all(m.owner_id != old for m in mail)
    assert {recent, held, open_} <= set(rows)
    assert rows[recent].code_hash is None
    assert rows[recent].token_hash is None
    assert rows[recent].export_expires_at is None
    assert rows[open_].code_hash is not None
    assert rows[open_].token_hash is not None
    # Sent mail older than 30 days goes; recent or unsent mail stays.
    assert sorted((m.status, (NOW - m.created_at).days) for m in mail if m.owner_id == recent) == [
        ("pending", 40),
        ("sent", 5),
    ]
    assert entry(real, "request_tokens").purged == 2  # old's and recent's (held's are not expired)
    assert entry(real, "outbox").purged == 4  # every request's 40-day-old sent mail


async def test_the_plan_counts_the_same_whatever_order_it_tests_the_rules_in(runtime: Runtime) -> None:
    # plan_records tests the most common category first; the order is a speed hint, never a result.
    closed = await add_subject(
        runtime, created_at=NOW - years(9), profile={"name": "Fay"}, email="fay@example.com", closed_at=NOW - years(2)
    )
    open_ = await add_subject(runtime, created_at=NOW - years(4), profile={"name": "Gus"})
    await hold(runtime, open_)
    for subject in (closed, open_):
        for category, age in (
            ("user.device", 2),
            ("user.device", 0.1),
            ("user.financial.transaction", 3),
            ("user.behavior", 2),
            ("system.support_ticket", 4),
        ):
            await add_record(runtime, subject, category=category, created_at=NOW - years(age))
    engine = RetentionEngine(
        policy=runtime.policy,
        keys=runtime.keys,
        clock=runtime.clock,
        settings=runtime.settings,
        now=NOW,
        run_id=uuid.uuid4(),
        postgres=not runtime.settings.is_sqlite,
    )
    categories = sorted(runtime.policy.retention_rules())
    plans = []
    for hint in (
        {},
        {category: n for n, category in enumerate(categories)},
        {category: -n for n, category in enumerate(categories)},
    ):
        async with runtime.db.transaction() as session:
            tally, by_category = await engine.plan_records(session, hint)
        plans.append({key: msgspec.to_builtins(c) for key, c in tally.counts.items()})
        # The same scan counts every record per category (restricted or not) for the report's frame.
        assert by_category == {
            "user.device": 4,
            "user.financial.transaction": 2,
            "user.behavior": 2,
            "system.support_ticket": 2,
        }
    assert plans[0] == plans[1] == plans[2]
    device = plans[0]["records:user.device"]
    assert (device["selected"], device["skipped_hold"], device["purged"]) == (2, 1, 1)
    transaction = plans[0]["records:user.financial.transaction"]
    assert (transaction["selected"], transaction["skipped_hold"], transaction["skipped_legal_duty"]) == (2, 1, 1)


async def test_erasure_reseals_every_kept_record_under_the_retention_key(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subjects_service, "_RESEAL_CHUNK", 2)  # five records: three chunks
    subject = await add_subject(runtime, created_at=NOW - years(4), profile={"name": "Ivy"}, closed_at=NOW - years(1))
    kept = {
        await add_record(
            runtime, subject, category="user.financial.transaction", created_at=NOW - years(3), data={"n": n}
        ): n
        for n in range(5)
    }
    gone = await add_record(runtime, subject, category="user.device", created_at=NOW - years(3))
    until = NOW + years(4)
    await restrict(runtime, subject, {"user.financial.transaction": Retention(AML, until)}, NOW)
    async with runtime.db.transaction() as session:
        rows = (await session.exec(select(Record).where(col(Record.subject_id) == subject))).all()
        key = await runtime.keys.load_key(session, subject, RETENTION)
    assert {row.id for row in rows} == set(kept), f"{gone} should be gone, every kept record there"
    for row in rows:
        assert row.restricted
        assert row.retain_until == until
        plain = key.open(row.data_ct, Binding("records", subject, row.id, "data"))
        assert msgspec.json.decode(plain) == {"n": kept[row.id]}

"""The purge end to end on both databases: each rule's action, holds, legal duties, the subject-level
decisions (erase, restrict, drop fields), data kept after erasure, and dry run == real run."""

from __future__ import annotations

from datetime import timedelta

from privacy_service.crypto.service import PRIMARY, RETENTION
from privacy_service.runtime import Runtime
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

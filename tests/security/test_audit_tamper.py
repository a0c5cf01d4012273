"""Abuse cases for the audit chain (issue 16, item 4), one per claim of SECURITY.md's attacker table.

The attackers:
* **DB-only**: can read and write every table, but holds neither the keyring file nor PRIVACY_AUDIT_KEY.
* **DB-only with an old copy**: the same, plus the head row as it was earlier (a backup, or a read
  made before): rolls the log back to that state.
* **DB + keyring**: also holds the audit key: can recompute and re-sign everything in the database.

Each test attacks as described, then asserts what `verify_chain` (what `audit verify` runs) says about
the database alone and against checkpoints kept outside it (`audit checkpoint` lines).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlmodel import col, select

from privacy_service.audit import service as audit
from privacy_service.audit.checkpoints import SignedCheckpoint, checkpoint_mac, head_mac, parse_checkpoints
from privacy_service.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from privacy_service.audit.service import Actor, event_digest, seal_pending, verify_chain, write_checkpoint
from privacy_service.runtime import Runtime

EVERY = 3  # a checkpoint every 3 sealed entries, so a few entries span several checkpoints


async def _events(runtime: Runtime, n: int, tag: str) -> int:
    """``n`` audit events, sealed (checkpoints every EVERY entries); returns the head seq."""
    async with runtime.db.transaction() as session:
        for i in range(n):
            audit.record(
                session,
                at=runtime.clock.now() + timedelta(microseconds=i),
                actor=Actor("operator", f"op-{tag}"),
                action="subject.read",
                detail={"n": i},
            )
    result = None
    for _ in range(n):  # one event per seal, so the periodic checkpoints land where EVERY says
        result = await seal_pending(runtime.db, runtime.clock, runtime.audit_key, batch_size=1, checkpoint_every=EVERY)
    assert result is not None
    assert not result.refused
    return result.head_seq


async def _sql(runtime: Runtime, *statements: str, **params: Any) -> None:
    async with runtime.db.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement), params)


async def _row(runtime: Runtime, seq: int) -> AuditEvent:
    async with runtime.db.transaction() as session:
        return (await session.exec(select(AuditEvent).where(col(AuditEvent.seq) == seq))).one()


async def _head(runtime: Runtime) -> AuditHead:
    async with runtime.db.transaction() as session:
        return (await session.exec(select(AuditHead).where(AuditHead.id == 1))).one()


async def _checkpoint_seqs(runtime: Runtime) -> list[int]:
    async with runtime.db.transaction() as session:
        return list((await session.exec(select(AuditCheckpoint.seq).order_by(col(AuditCheckpoint.seq)))).all())


async def _kept_outside(runtime: Runtime) -> list[SignedCheckpoint]:
    """What `audit checkpoint --append FILE` leaves in a file elsewhere, read back as verify reads it."""
    signed = await write_checkpoint(runtime.db, runtime.clock, runtime.audit_key)
    assert signed is not None
    return parse_checkpoints(signed.line() + "\n", "kept.jsonl")


async def _truncate_to(runtime: Runtime, keep: int, *, drop_checkpoints: bool) -> None:
    """DB-only: delete every entry after ``keep`` and point the head at entry ``keep``."""
    row = await _row(runtime, keep)
    statements = ["DELETE FROM audit_events WHERE seq > :keep"]
    if drop_checkpoints:
        statements.append("DELETE FROM audit_checkpoints WHERE seq > :keep")
    statements.append("UPDATE audit_head SET seq = :keep, hash = :hash WHERE id = 1")
    await _sql(runtime, *statements, keep=keep, hash=row.hash)


async def _rewrite(runtime: Runtime, seq: int, key: bytes | None = None) -> None:
    """Edit entry ``seq``, recompute every later link and the head; with ``key`` (an attacker holding
    the audit key) also re-sign the head and every checkpoint."""
    async with runtime.db.transaction() as session:
        rows = (
            await session.exec(select(AuditEvent).where(col(AuditEvent.seq) >= seq).order_by(col(AuditEvent.seq)))
        ).all()
        head = (await session.exec(select(AuditHead).where(AuditHead.id == 1))).one()
        prev = rows[0].prev_hash
        assert prev is not None
        rows[0].actor_id = "someone-else"
        for row in rows:
            row.prev_hash, row.hash = prev, event_digest(prev, row)
            prev = row.hash
            session.add(row)
        head.hash = prev
        if key is not None:
            head.mac = head_mac(key, head.seq, prev)
            hashes = {row.seq: row.hash for row in rows}
            for checkpoint in (await session.exec(select(AuditCheckpoint))).all():
                if checkpoint.seq in hashes:
                    checkpoint.hash = hashes[checkpoint.seq]  # type: ignore[assignment]
                    checkpoint.mac = checkpoint_mac(key, checkpoint.seq, checkpoint.hash)
                    session.add(checkpoint)
        session.add(head)


# -- DB-only ------------------------------------------------------------------------------------


async def test_db_only_truncation_across_several_checkpoints_is_detected(runtime: Runtime) -> None:
    assert await _events(runtime, 12, "a") == 12
    assert await _checkpoint_seqs(runtime) == [3, 6, 9, 12]
    await _truncate_to(runtime, 4, drop_checkpoints=False)  # checkpoints at 6, 9, 12 now lie beyond the head

    verdict = await verify_chain(runtime.db, runtime.audit_key)
    assert not verdict.ok
    assert verdict.broken_seq == 6
    assert "beyond the head" in (verdict.problem or "")


async def test_db_only_truncation_that_also_deletes_the_checkpoints_is_detected(runtime: Runtime) -> None:
    await _events(runtime, 12, "a")
    await _truncate_to(runtime, 4, drop_checkpoints=True)

    verdict = await verify_chain(runtime.db, runtime.audit_key)
    assert not verdict.ok
    assert "head's signature does not match" in (verdict.problem or "")
    # The sealer does not adopt the moved head either: new events stay pending, nothing is re-signed.
    refused = await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
    assert refused.refused


async def test_db_only_cannot_move_the_head_onto_a_checkpoint_with_its_signature(runtime: Runtime) -> None:
    """A checkpoint's MAC is made under another context than the head's: it cannot be copied over."""
    await _events(runtime, 12, "a")
    async with runtime.db.transaction() as session:
        at_six = await session.get(AuditCheckpoint, 6)
        assert at_six is not None
    await _sql(
        runtime,
        "DELETE FROM audit_events WHERE seq > 6",
        "DELETE FROM audit_checkpoints WHERE seq > 6",
        "UPDATE audit_head SET seq = 6, hash = :hash, mac = :mac WHERE id = 1",
        hash=at_six.hash,
        mac=at_six.mac,
    )
    verdict = await verify_chain(runtime.db, runtime.audit_key)
    assert not verdict.ok
    assert "head's signature does not match" in (verdict.problem or "")


async def test_db_only_head_moved_back_with_entries_left_beyond_it_is_detected(runtime: Runtime) -> None:
    await _events(runtime, 5, "a")
    row = await _row(runtime, 2)
    await _sql(runtime, "UPDATE audit_head SET seq = 2, hash = :hash WHERE id = 1", hash=row.hash)
    verdict = await verify_chain(runtime.db, runtime.audit_key)
    assert not verdict.ok
    assert "beyond the head" in (verdict.problem or "")


async def test_db_only_rewrite_with_checkpoints_deleted_is_detected(runtime: Runtime) -> None:
    """Issue 16 item 4 (b): edit an old entry, recompute the unkeyed chain, delete audit_checkpoints."""
    await _events(runtime, 7, "a")
    kept = await _kept_outside(runtime)
    await _events(runtime, 2, "b")
    await _rewrite(runtime, 2)
    await _sql(runtime, "DELETE FROM audit_checkpoints")

    alone = await verify_chain(runtime.db, runtime.audit_key)
    assert not alone.ok
    assert "head's signature does not match" in (alone.problem or "")

    against = await verify_chain(runtime.db, runtime.audit_key, external=kept)
    assert not against.ok
    assert against.broken_seq == kept[0].seq
    assert "external checkpoint" in (against.problem or "")


async def test_db_only_rollback_to_an_old_copy_needs_the_external_checkpoints(runtime: Runtime) -> None:
    """The limit SECURITY.md states: with the head row as it was earlier (a backup), a DB-only attacker
    rolls the log back to that state and the database alone cannot tell. A checkpoint kept outside
    the database since then can."""
    await _events(runtime, 4, "a")
    old = await _head(runtime)
    await _events(runtime, 5, "b")  # what the attacker wants gone: entries 5..9
    kept = await _kept_outside(runtime)

    await _sql(
        runtime,
        "DELETE FROM audit_events WHERE seq > :seq",
        "DELETE FROM audit_checkpoints WHERE seq > :seq",
        "UPDATE audit_head SET seq = :seq, hash = :hash, mac = :mac WHERE id = 1",
        seq=old.seq,
        hash=old.hash,
        mac=old.mac,
    )
    assert (await verify_chain(runtime.db, runtime.audit_key)).ok  # undetectable from the database alone

    against = await verify_chain(runtime.db, runtime.audit_key, external=kept)
    assert not against.ok
    assert against.broken_seq == kept[0].seq
    assert "restored from an older copy" in (against.problem or "")


async def test_db_only_wipe_to_the_empty_log_needs_the_external_checkpoints(runtime: Runtime) -> None:
    """The empty log is an old copy every attacker has (its head is a constant and carries no signature):
    deleting every entry and checkpoint and resetting the head passes the database-only check, as
    SECURITY.md states. A checkpoint kept outside the database catches it."""
    await _events(runtime, 5, "a")
    kept = await _kept_outside(runtime)

    await _sql(
        runtime,
        "DELETE FROM audit_events",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_head SET seq = 0, hash = :genesis, mac = NULL WHERE id = 1",
        genesis=audit.GENESIS,
    )
    assert (await verify_chain(runtime.db, runtime.audit_key)).ok  # the stated limit of the database alone

    against = await verify_chain(runtime.db, runtime.audit_key, external=kept)
    assert not against.ok
    assert against.broken_seq == kept[0].seq


async def test_db_only_cannot_forge_an_external_checkpoint(runtime: Runtime) -> None:
    await _events(runtime, 3, "a")
    row = await _row(runtime, 3)
    assert row.hash is not None
    forged = SignedCheckpoint(3, row.hash, checkpoint_mac(b"\x00" * 32, 3, row.hash))
    verdict = await verify_chain(runtime.db, runtime.audit_key, external=[forged])
    assert not verdict.ok
    assert "not signed with this audit key" in (verdict.problem or "")


async def test_pending_events_are_protected_by_permissions_only(runtime: Runtime) -> None:
    """SECURITY.md's sealing window: an event not yet sealed can be deleted without a trace."""
    await _events(runtime, 3, "a")
    async with runtime.db.transaction() as session:
        audit.record(session, at=runtime.clock.now(), actor=Actor("operator", "op-x"), action="subject.read")
    await _sql(runtime, "DELETE FROM audit_events WHERE seq IS NULL")
    assert (await verify_chain(runtime.db, runtime.audit_key)).ok


# -- DB + keyring -------------------------------------------------------------------------------


async def test_db_and_keyring_rewrite_is_caught_only_by_external_checkpoints(runtime: Runtime) -> None:
    """Holding the audit key, an attacker recomputes and re-signs everything in the database: the
    database alone verifies. Checkpoints shipped elsewhere before the rewrite still catch it, as long
    as the attacker cannot rewrite those too (another host, write-once storage, a log pipeline)."""
    await _events(runtime, 7, "a")
    kept = await _kept_outside(runtime)
    await _events(runtime, 2, "b")
    await _rewrite(runtime, 2, key=runtime.audit_key)

    assert (await verify_chain(runtime.db, runtime.audit_key)).ok
    against = await verify_chain(runtime.db, runtime.audit_key, external=kept)
    assert not against.ok
    assert against.broken_seq == kept[0].seq
    assert "no longer matches the external checkpoint" in (against.problem or "")

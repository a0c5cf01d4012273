"""Signed checkpoints and the signed head pin the chain: a consistent rewrite (hashes recomputed, head
updated) by someone who can write the tables but lacks the audit key is caught at the first checkpoint
after the edit, or at the head if no checkpoint follows it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from httpx import AsyncClient
from sqlmodel import col, select

from privacy_service.audit.checkpoints import head_mac
from privacy_service.audit.models import AuditEvent, AuditHead
from privacy_service.audit.service import AuditHeadInvalid, event_digest, seal_pending, verify_chain, write_checkpoint
from privacy_service.config import ConfigError, Settings
from privacy_service.crypto.keys import LocalKeyring
from privacy_service.migrations.runner import upgrade
from privacy_service.runtime import Runtime
from tests.conftest import ROOT, isolated


async def _rewrite_from(runtime: Runtime, seq: int) -> None:
    """Edit entry ``seq`` and recompute every later link and the head, as a careful attacker would."""
    async with runtime.db.transaction() as session:
        rows = (
            await session.exec(select(AuditEvent).where(col(AuditEvent.seq) >= seq).order_by(col(AuditEvent.seq)))
        ).all()
        head = (await session.exec(select(AuditHead).where(AuditHead.id == 1))).one()
        prev = rows[0].prev_hash
        rows[0].action = "subject.lookup"
        for row in rows:
            row.prev_hash, row.hash = prev, event_digest(prev, row)
            prev = row.hash
            session.add(row)
        head.hash = prev
        session.add(head)


async def _activity(client: AsyncClient, auth: dict[str, str], n: int, tag: str) -> None:
    for i in range(n):
        subject = await client.post("/v1/subjects", json={"email": f"cp-{tag}{i}@example.com"}, headers=auth)
        await client.get(f"/v1/subjects/{subject.json()['id']}", headers=auth)


async def test_a_consistent_rewrite_before_a_checkpoint_is_caught(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    await _activity(client, auth, 3, "a")
    await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
    signed = await write_checkpoint(runtime.db, runtime.clock, runtime.audit_key)
    assert signed is not None
    await _activity(client, auth, 2, "b")
    await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
    assert (await verify_chain(runtime.db, runtime.audit_key)).ok

    await _rewrite_from(runtime, 2)
    verdict = await verify_chain(runtime.db, runtime.audit_key)
    assert not verdict.ok
    assert verdict.broken_seq == signed.seq
    assert "signed checkpoint" in (verdict.problem or "")


async def test_a_rewrite_after_the_last_checkpoint_is_caught_at_the_signed_head(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    """The head carries a MAC under the audit key, so a rewrite with no checkpoint after it is caught
    too; and neither the sealer nor `audit checkpoint` signs on top of the forged head."""
    await _activity(client, auth, 2, "a")
    await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
    signed = await write_checkpoint(runtime.db, runtime.clock, runtime.audit_key)
    assert signed is not None
    await _activity(client, auth, 2, "b")
    await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
    await _rewrite_from(runtime, signed.seq + 1)

    verdict = await verify_chain(runtime.db, runtime.audit_key)
    assert not verdict.ok
    assert "head's signature does not match" in (verdict.problem or "")

    await _activity(client, auth, 1, "c")
    sealing = await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
    assert sealing.refused
    assert sealing.sealed == 0
    with pytest.raises(AuditHeadInvalid):
        await write_checkpoint(runtime.db, runtime.clock, runtime.audit_key)
    assert not (await verify_chain(runtime.db, runtime.audit_key)).ok


def test_upgrading_a_database_with_sealed_events_signs_its_head(tmp_path: Path) -> None:
    """Migration 0007 signs an existing head with the configured audit key, so the sealer can go on;
    without the key the upgrade stops with one clear line instead of leaving a head every seal refuses."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'old.db'}",
        keystore_path=tmp_path / "old-keys.db",
        keyring_path=tmp_path / "keyring.json",
        policy_dir=ROOT / "policies",
    )
    isolated(upgrade, settings, "0006")
    digest = bytes(range(32))
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("UPDATE audit_head SET seq = 1, hash = ? WHERE id = 1", (digest,))
    with pytest.raises(ConfigError, match="audit key"):
        isolated(upgrade, settings, "heads")

    key = LocalKeyring.open_or_create(settings.keyring_path).audit_key
    isolated(upgrade, settings, "heads")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        (mac,) = conn.execute("SELECT mac FROM audit_head WHERE id = 1").fetchone()
    assert mac == head_mac(key, 1, digest)

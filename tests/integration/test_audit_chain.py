"""The audit hash chain: sealing, verification, and detection of edited, deleted and reordered rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from httpx import AsyncClient
from sqlalchemy import text

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor, Verification, seal_pending, verify_chain, write_checkpoint
from privacy_service.runtime import Runtime


async def _activity(client: AsyncClient, auth: dict[str, str], n: int = 5, tag: str = "a") -> list[str]:
    ids = []
    for i in range(n):
        response = await client.post("/v1/subjects", json={"email": f"audit-{tag}{i}@example.com"}, headers=auth)
        ids.append(response.json()["id"])
        await client.get(f"/v1/subjects/{ids[-1]}", headers=auth)
    return ids


async def _seal(runtime: Runtime) -> None:
    await seal_pending(runtime.db, runtime.clock, runtime.audit_key)


async def test_sealed_chain_verifies(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    await _activity(client, auth)
    result = await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
    assert result.sealed >= 10
    verdict = await verify_chain(runtime.db, runtime.audit_key)
    assert verdict.ok, verdict
    assert verdict.checked == verdict.head_seq == result.head_seq
    assert verdict.pending == 0


async def _tamper(runtime: Runtime, sql: str) -> None:
    async with runtime.db.engine.begin() as conn:
        await conn.execute(text(sql))


async def test_edit_is_detected(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    await _activity(client, auth)
    await _seal(runtime)
    await _tamper(runtime, "UPDATE audit_events SET action = 'subject.lookup' WHERE seq = 3")
    verdict = await verify_chain(runtime.db, runtime.audit_key)
    assert not verdict.ok
    assert verdict.broken_seq == 3
    assert verdict.problem is not None
    assert "edited" in verdict.problem


async def test_delete_is_detected(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    await _activity(client, auth)
    await _seal(runtime)
    await _tamper(runtime, "DELETE FROM audit_events WHERE seq = 4")
    verdict = await verify_chain(runtime.db, runtime.audit_key)
    assert not verdict.ok
    assert verdict.broken_seq == 4
    assert verdict.problem is not None
    assert "deleted" in verdict.problem


async def test_trailing_delete_is_detected(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    await _activity(client, auth)
    head = (await seal_pending(runtime.db, runtime.clock, runtime.audit_key)).head_seq
    await _tamper(runtime, f"DELETE FROM audit_events WHERE seq = {head}")  # noqa: S608
    verdict = await verify_chain(runtime.db, runtime.audit_key)
    assert not verdict.ok
    assert "trailing" in (verdict.problem or "")


async def test_reorder_is_detected(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    await _activity(client, auth)
    await _seal(runtime)
    # Swap two entries' positions (seq) while keeping their content: the links no longer match.
    await _tamper(runtime, "UPDATE audit_events SET seq = -1 WHERE seq = 2")
    await _tamper(runtime, "UPDATE audit_events SET seq = 2 WHERE seq = 5")
    await _tamper(runtime, "UPDATE audit_events SET seq = 5 WHERE seq = -1")
    verdict = await verify_chain(runtime.db, runtime.audit_key)
    assert not verdict.ok
    assert verdict.broken_seq == 2


async def test_checkpoint_lets_verification_start_late(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    await _activity(client, auth, 3)
    await _seal(runtime)
    signed = await write_checkpoint(runtime.db, runtime.clock, runtime.audit_key)
    assert signed is not None
    checkpoint = signed.seq
    # Damage before the checkpoint is invisible to a checkpoint-based run, and caught by a full run.
    await _tamper(runtime, "UPDATE audit_events SET actor_id = 'someone-else' WHERE seq = 1")
    await _activity(client, auth, 2, tag="b")
    await _seal(runtime)
    late = await verify_chain(runtime.db, runtime.audit_key, from_checkpoint=True)
    assert late.ok
    assert late.start_seq == checkpoint
    assert not (await verify_chain(runtime.db, runtime.audit_key)).ok
    # A forged checkpoint (wrong MAC) is refused.
    await _tamper(runtime, f"UPDATE audit_checkpoints SET mac = hash WHERE seq = {checkpoint}")  # noqa: S608
    forged = await verify_chain(runtime.db, runtime.audit_key, from_checkpoint=True)
    assert not forged.ok
    assert forged.problem == "checkpoint signature invalid"


async def test_concurrent_writers_and_sealers_keep_chain_gap_free(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    async def writer(n: int) -> None:
        for i in range(6):
            await client.post("/v1/subjects", json={"email": f"w{n}-{i}@example.com"}, headers=auth)

    async def sealer() -> None:
        for _ in range(6):
            await _seal(runtime)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(writer(n) for n in range(6)), sealer(), sealer())
    await _seal(runtime)
    verdict = await verify_chain(runtime.db, runtime.audit_key)
    assert verdict.ok, verdict
    async with runtime.db.engine.connect() as conn:
        seqs = [row[0] for row in await conn.execute(text("SELECT seq FROM audit_events ORDER BY seq"))]
        creates = (
            await conn.execute(text("SELECT count(*) FROM audit_events WHERE action = 'subject.create'"))
        ).scalar_one()
    assert creates == 36
    assert seqs == list(range(1, len(seqs) + 1))
    assert verdict.checked == len(seqs)


async def test_audit_api_filters_and_paginates(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    ids = await _activity(client, auth, 3, tag="api")
    await _seal(runtime)
    first = await client.get("/v1/audit", params={"subject": ids[0]}, headers=auth)
    assert first.status_code == 200
    actions = [item["action"] for item in first.json()["items"]]
    assert actions == ["subject.create", "subject.read"]
    assert all(item["subject_id"] == ids[0] for item in first.json()["items"])
    # No PII: the subject's e-mail never appears in the audit log.
    assert "audit-api0@example.com" not in first.text
    paged = await client.get("/v1/audit", params={"limit": 2}, headers=auth)
    cursor = paged.json()["next_cursor"]
    assert len(paged.json()["items"]) == 2
    assert cursor is not None
    rest = await client.get("/v1/audit", params={"limit": 100, "after": cursor}, headers=auth)
    seqs = [item["seq"] for item in paged.json()["items"] + rest.json()["items"]]
    assert seqs == list(range(1, len(seqs) + 1))
    naive = await client.get("/v1/audit", params={"since": "2026-01-01T00:00:00"}, headers=auth)
    assert naive.status_code == 422


async def test_audit_api_needs_scope(client: AsyncClient, runtime: Runtime) -> None:
    from tests.conftest import make_operator_key

    key = await make_operator_key(runtime, frozenset({"subjects:read"}))
    response = await client.get("/v1/audit", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 403


class _SealsBetweenReads:
    """The verifier's database, with the sealer appending just before its second transaction opens:
    the moment a live system's sealer used to slip in between reading the head and the entries."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.settings = runtime.db.settings
        self.opened = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        self.opened += 1
        if self.opened == 2:
            await _append_and_seal(self._runtime, 3)
        async with self._runtime.db.transaction() as session:
            yield session


async def _append_and_seal(runtime: Runtime, n: int) -> None:
    async with runtime.db.transaction() as session:
        for _ in range(n):
            audit.record(session, at=runtime.clock.now(), actor=Actor("operator", "op-live"), action="subject.read")
    await seal_pending(runtime.db, runtime.clock, runtime.audit_key, checkpoint_every=4)


async def test_verify_sees_one_state_while_the_sealer_appends(runtime: Runtime) -> None:
    """Issue 16 item 5: no "trailing entries deleted" because entries were sealed mid-verification."""
    await _append_and_seal(runtime, 6)
    racing = _SealsBetweenReads(runtime)
    verdict = await verify_chain(racing, runtime.audit_key)  # type: ignore[arg-type]
    assert racing.opened >= 2
    assert verdict.ok, verdict
    assert verdict.head_seq == 6  # the state it started from; the 3 newer entries are the next run's
    assert (await verify_chain(runtime.db, runtime.audit_key)).head_seq == 9


async def test_verify_never_raises_a_false_alarm_under_live_traffic(runtime: Runtime) -> None:
    """The sealer appends (crossing checkpoints) while verification runs again and again."""
    await _append_and_seal(runtime, 5)
    done = asyncio.Event()

    async def traffic() -> None:
        while not done.is_set():
            await _append_and_seal(runtime, 2)

    async def verifier() -> list[Verification]:
        # At least 25 runs, and on until the head has moved under them: on SQLite the event loop may
        # otherwise run all 25 before the traffic task commits once (a CI run saw exactly that).
        verdicts: list[Verification] = []
        try:
            while len(verdicts) < 25 or (verdicts[-1].head_seq == verdicts[0].head_seq and len(verdicts) < 2000):
                verdicts.append(await verify_chain(runtime.db, runtime.audit_key))
                await asyncio.sleep(0)
            return verdicts
        finally:
            done.set()

    verdicts, _ = await asyncio.gather(verifier(), traffic())
    assert [v.problem for v in verdicts if not v.ok] == []
    assert len({v.head_seq for v in verdicts}) > 1  # the sealer really did append meanwhile

"""The audit search's plan at scale (issue 17 review): a rare actor is found through ``ix_audit_actor_seq``,
not by walking the chain, and a time range becomes ``seq`` bounds from the checkpoints (no index on ``at``),
with exactly the events the ``at`` conditions select, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite

from privacy_service.audit import service as audit
from privacy_service.audit.queries import AuditFilter, SeqBounds, page, page_query, seq_bounds
from privacy_service.audit.service import Actor, seal_pending
from privacy_service.runtime import Runtime

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
T2 = T0 + timedelta(days=2)


class FixedClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


async def _day(runtime: Runtime, at: datetime, n: int, actor: str = "op-routine") -> None:
    """``n`` events recorded at ``at`` (one a minute), sealed a minute after the last (checkpoint every 3)."""
    async with runtime.db.transaction() as session:
        for i in range(n):
            audit.record(session, at=at + timedelta(minutes=i), actor=Actor("operator", actor), action="subject.read")
    await seal_pending(runtime.db, FixedClock(at + timedelta(minutes=n)), runtime.audit_key, checkpoint_every=3)


async def _all(runtime: Runtime, where: AuditFilter) -> list[int]:
    seqs: list[int] = []
    after = None
    while True:
        async with runtime.db.transaction() as session:
            found = await page(session, where, after=after, limit=2)
        seqs += [item.seq for item in found.items if item.seq is not None]
        if found.next_cursor is None:
            return seqs
        after = found.next_cursor


async def test_a_time_range_is_turned_into_seq_bounds_and_still_selects_exactly(runtime: Runtime) -> None:
    await _day(runtime, T0, 6)  # seq 1-6, sealed in one batch: a checkpoint at 6 signed at T0 + 6 min
    await _day(runtime, T2, 6)  # seq 7-12, a checkpoint at 12 signed at T2 + 6 min
    await _day(runtime, T2 + timedelta(days=2), 6)  # seq 13-18, a checkpoint at 18
    since, until = T2 - timedelta(minutes=1), T0 + timedelta(minutes=30)
    async with runtime.db.transaction() as session:
        assert await seq_bounds(session, AuditFilter(since=since)) == SeqBounds(above=6)
        assert await seq_bounds(session, AuditFilter(until=until)) == SeqBounds(through=12)
        # Within the margin of a checkpoint's time: no bound from it (clocks and open transactions).
        assert await seq_bounds(session, AuditFilter(since=T0 + timedelta(minutes=30))) == SeqBounds()
        assert await seq_bounds(session, AuditFilter(until=T2 + timedelta(days=2))) == SeqBounds()
    assert await _all(runtime, AuditFilter(since=since)) == list(range(7, 19))
    assert await _all(runtime, AuditFilter(until=until)) == list(range(1, 7))
    assert await _all(runtime, AuditFilter(since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=5))) == [4, 5]
    assert await _all(runtime, AuditFilter(since=since, until=T2 + timedelta(days=1))) == list(range(7, 13))
    assert await _all(runtime, AuditFilter()) == list(range(1, 19))


async def test_a_rare_actor_is_found_through_its_index(runtime: Runtime, backend: str) -> None:
    await _day(runtime, T0, 6)
    await _day(runtime, T0 + timedelta(hours=1), 1, actor="op-rare")
    await _day(runtime, T2, 6)
    where = AuditFilter(actor_id="op-rare", since=T0 + timedelta(minutes=30))
    assert await _all(runtime, where) == [7]
    async with runtime.db.transaction() as session:
        query = page_query(where, await seq_bounds(session, where), after=None, limit=50)
        dialect = postgresql.dialect() if backend == "postgres" else sqlite.dialect()
        statement = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        if backend == "postgres":
            # A small table is cheapest to read whole; what matters is which index a large one would use.
            await session.exec(text("SET LOCAL enable_seqscan = off"))  # type: ignore[call-overload]
            rows = (await session.exec(text(f"EXPLAIN {statement}"))).all()  # type: ignore[call-overload]
        else:
            rows = (await session.exec(text(f"EXPLAIN QUERY PLAN {statement}"))).all()  # type: ignore[call-overload]
    plan = "\n".join(str(row) for row in rows)
    assert "ix_audit_actor_seq" in plan, plan

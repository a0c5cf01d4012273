"""Append-only rows queued on the session (db.append_row) behave like rows added to the unit of work:
the transaction reads its own writes, a commit keeps them, a rollback discards them, and a savepoint
rolled back takes with it exactly the rows written inside it."""

from __future__ import annotations

import pytest
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.models import AuditEvent
from privacy_service.audit.service import Actor
from privacy_service.runtime import Runtime

ACTOR = Actor.system("append-rows-test")


class Boom(Exception):
    pass


def _record(runtime: Runtime, session: AsyncSession, action: str) -> None:
    audit.record(session, at=runtime.clock.now(), actor=ACTOR, action=action)


async def _actions(runtime: Runtime) -> list[str]:
    async with runtime.db.transaction() as session:
        query = select(AuditEvent.action).where(col(AuditEvent.actor_id) == ACTOR.id).order_by(col(AuditEvent.id))
        return list((await session.exec(query)).all())


async def test_a_transaction_reads_its_own_queued_rows_and_commits_them(runtime: Runtime) -> None:
    async with runtime.db.transaction() as session:
        _record(runtime, session, "test.one")
        _record(runtime, session, "test.two")
        # A query in the same transaction writes the queue first, so it sees both rows.
        seen = (await session.exec(select(func.count()).where(col(AuditEvent.actor_id) == ACTOR.id))).one()
        assert seen == 2
        _record(runtime, session, "test.three")
    assert await _actions(runtime) == ["test.one", "test.two", "test.three"]


async def _failing_transaction(runtime: Runtime, action: str, *, query_first: bool) -> None:
    async with runtime.db.transaction() as session:
        _record(runtime, session, action)
        if query_first:
            await session.exec(select(func.count()).select_from(AuditEvent))  # writes the queue
        raise Boom


async def test_a_rollback_discards_queued_rows(runtime: Runtime) -> None:
    with pytest.raises(Boom):
        await _failing_transaction(runtime, "test.lost", query_first=False)
    with pytest.raises(Boom):
        await _failing_transaction(runtime, "test.written-then-lost", query_first=True)
    assert await _actions(runtime) == []
    # The next transaction on a pooled session starts with an empty queue.
    async with runtime.db.transaction() as session:
        _record(runtime, session, "test.kept")
    assert await _actions(runtime) == ["test.kept"]


async def test_a_savepoint_rolled_back_keeps_the_outer_rows(runtime: Runtime) -> None:
    async def failing_savepoint(session: AsyncSession) -> None:
        async with session.begin_nested():
            _record(runtime, session, "test.inner-lost")
            # A query inside the savepoint must not write the outer transaction's queue there.
            await session.exec(select(func.count()).select_from(AuditEvent))
            raise Boom

    async with runtime.db.transaction() as session:
        _record(runtime, session, "test.outer-before")
        with pytest.raises(Boom):
            await failing_savepoint(session)
        async with session.begin_nested():
            _record(runtime, session, "test.inner-kept")
        _record(runtime, session, "test.outer-after")
    assert sorted(await _actions(runtime)) == ["test.inner-kept", "test.outer-after", "test.outer-before"]

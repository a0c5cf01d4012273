"""Append-only rows queued on the session (db.append_row) behave like rows added to the unit of work:
the transaction reads its own writes, a commit keeps them, a rollback discards them, and a savepoint
rolled back takes with it exactly the rows written inside it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Table, bindparam, event, func, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.models import AuditEvent
from privacy_service.audit.service import Actor
from privacy_service.db import carry_appended_rows, column_values, new_row, write_last
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.runtime import Runtime
from privacy_service.subjects.models import Subject
from privacy_service.subjects.schemas import SubjectCreate
from privacy_service.subjects.service import SubjectService
from tests.conftest import sql_statements

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


# -- rows carried on a query (PostgreSQL) and in one statement at commit -------------------------


async def _audited_read(runtime: Runtime, session: AsyncSession, subject_id: uuid.UUID) -> None:
    _record(runtime, session, "test.read")
    found, _ = await runtime.keys.get_with_key_row(session, Subject, subject_id)
    assert found is not None


async def _subject(runtime: Runtime) -> uuid.UUID:
    async with runtime.db.transaction() as session:
        service = SubjectService(session, runtime.keys, runtime.policy, runtime.clock, Actor.system("setup"))
        return await service.create(SubjectCreate(email="carried@example.com"))


async def test_a_queued_row_rides_on_the_next_carrying_query(runtime: Runtime, backend: str) -> None:
    subject_id = await _subject(runtime)
    with sql_statements(runtime) as sent:
        async with runtime.db.transaction() as session:
            await _audited_read(runtime, session, subject_id)
    assert await _actions(runtime) == ["test.read"]
    if backend == "postgres":
        # One statement: the event's INSERT is a CTE of the read.
        assert [s.split()[0] for s in sent] == ["WITH"]
        assert "FROM subjects" in sent[0]
    else:
        # SQLite has no data-modifying CTEs: the INSERT goes first, then the read.
        assert [s.split()[0] for s in sent if s != "BEGIN IMMEDIATE"] == ["INSERT", "SELECT"]


async def _failing_read(runtime: Runtime, subject_id: uuid.UUID) -> None:
    async with runtime.db.transaction() as session:
        await _audited_read(runtime, session, subject_id)
        raise Boom


async def test_a_carried_row_is_rolled_back_with_its_transaction(runtime: Runtime) -> None:
    subject_id = await _subject(runtime)
    with pytest.raises(Boom):
        await _failing_read(runtime, subject_id)
    assert await _actions(runtime) == []


async def test_rows_of_a_table_the_query_reads_are_written_before_it(runtime: Runtime) -> None:
    async with runtime.db.transaction() as session:
        _record(runtime, session, "test.seen")
        count = select(func.count()).where(col(AuditEvent.actor_id) == ACTOR.id)
        query, params = carry_appended_rows(session, count, {})
        assert query is count  # not carried: the query would not see its own transaction's row
        assert (await session.exec(query, params=params)).one() == 1


async def test_a_long_queue_is_not_carried_but_still_written(runtime: Runtime, backend: str) -> None:
    subject_id = await _subject(runtime)
    actions = [f"test.many-{n}" for n in range(12)]
    with sql_statements(runtime) as sent:
        async with runtime.db.transaction() as session:
            for action in actions:
                _record(runtime, session, action)
            found, _ = await runtime.keys.get_with_key_row(session, Subject, subject_id)
            assert found is not None
    assert await _actions(runtime) == actions
    assert not any(s.startswith("WITH") for s in sent)


async def test_queued_rows_of_several_tables_go_in_one_statement_at_commit(runtime: Runtime, backend: str) -> None:
    subject_id = uuid.uuid4()
    with sql_statements(runtime) as sent:
        async with runtime.db.transaction() as session:
            _record(runtime, session, "test.first")
            await runtime.keys.create_key(session, subject_id)
            _record(runtime, session, "test.second")
    assert await _actions(runtime) == ["test.first", "test.second"]
    async with runtime.db.transaction() as session:
        assert await runtime.keys.load_key(session, subject_id)
    if backend == "postgres":
        assert len(sent) == 1
        assert sent[0].count("INSERT INTO") == 3


async def test_rows_queued_before_a_savepoint_are_not_carried_inside_it(runtime: Runtime) -> None:
    subject_id = await _subject(runtime)

    async def failing_savepoint(session: AsyncSession) -> None:
        async with session.begin_nested():
            # Carried here, the outer row would be rolled back with the savepoint.
            found, _ = await runtime.keys.get_with_key_row(session, Subject, subject_id)
            assert found is not None
            raise Boom

    async with runtime.db.transaction() as session:
        _record(runtime, session, "test.outer")
        with pytest.raises(Boom):
            await failing_savepoint(session)
    assert await _actions(runtime) == ["test.outer"]


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_query_parameter_named_like_a_carried_one_is_refused(runtime: Runtime) -> None:
    async with runtime.db.transaction() as session:
        _record(runtime, session, "test.clash")
        query = select(Subject.id).where(col(Subject.status) == bindparam("_append_0_0_action"))
        with pytest.raises(ValueError, match="_append_"):
            carry_appended_rows(session, query, {"_append_0_0_action": "x"})
        # Refused, the rows stay queued and are written at commit.
    assert await _actions(runtime) == ["test.clash"]


# -- the last write (db.write_last), as intake makes it -------------------------------------------

_EVENTS: Table = AuditEvent.__table__  # type: ignore[attr-defined]


def _event_row(runtime: Runtime, action: str) -> dict[str, object]:
    return {"at": runtime.clock.now(), "actor_type": ACTOR.type, "actor_id": ACTOR.id, "action": action, "detail": {}}


async def test_a_last_write_alone_runs_by_itself_in_autocommit(runtime: Runtime, backend: str) -> None:
    isolation: list[object] = []

    def seen(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        isolation.append((statement.split()[0], conn.get_execution_options().get("isolation_level")))

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with runtime.db.transaction() as session:
            await write_last(session, insert(_EVENTS), _event_row(runtime, "test.alone"))
            assert isolation == []  # deferred to the end of the unit of work
    finally:
        event.remove(runtime.db.engine.sync_engine, "before_cursor_execute", seen)
    assert await _actions(runtime) == ["test.alone"]
    if backend == "postgres":
        assert isolation == [("INSERT", "AUTOCOMMIT")]  # no BEGIN or COMMIT round trips
    else:
        assert [kind for kind, _ in isolation] == ["BEGIN", "INSERT"]


async def test_a_last_write_commits_with_objects_the_unit_of_work_holds(runtime: Runtime) -> None:
    # session.add begins no transaction: the deferred write must not run alone and leave the object
    # unflushed (lost) or written apart from it.
    request = _new_request()
    async with runtime.db.transaction() as session:
        session.add(request)
        await write_last(session, insert(_EVENTS), _event_row(runtime, "test.with-object"))
    assert await _actions(runtime) == ["test.with-object"]
    async with runtime.db.transaction() as session:
        assert await session.get(PrivacyRequest, request.id) is not None


async def _failing_last_write(runtime: Runtime, *, query_after: bool) -> None:
    async with runtime.db.transaction() as session:
        await write_last(session, insert(_EVENTS), _event_row(runtime, "test.lost"))
        if query_after:
            _record(runtime, session, "test.queued-after")
            count = select(func.count()).where(col(AuditEvent.actor_id) == ACTOR.id)
            assert (await session.exec(count)).one() == 2  # written before the query, in the transaction
        raise Boom


async def test_a_last_write_is_discarded_when_the_block_fails(runtime: Runtime) -> None:
    with pytest.raises(Boom):
        await _failing_last_write(runtime, query_after=False)
    with pytest.raises(Boom):
        await _failing_last_write(runtime, query_after=True)
    assert await _actions(runtime) == []  # rolled back with the transaction: neither ran alone


async def test_last_writes_and_queued_rows_are_written_in_their_order(runtime: Runtime) -> None:
    async with runtime.db.transaction() as session:
        await write_last(session, insert(_EVENTS), _event_row(runtime, "test.first"))
        await write_last(session, insert(_EVENTS), _event_row(runtime, "test.second"))
        _record(runtime, session, "test.third")
    assert await _actions(runtime) == ["test.first", "test.second", "test.third"]


def _new_request(**values: object) -> PrivacyRequest:
    now = datetime.now(UTC)
    fields: dict[str, object] = {
        "id": uuid.uuid4(),
        "type": "access",
        "status": "received",
        "regime": "gdpr",
        "language": "en",
        "identity_kind": "email",
        "identity_bidx": uuid.uuid4().bytes,
        "received_at": now,
        "due_at": now + timedelta(days=30),
    }
    return new_row(PrivacyRequest, fields | values)


def test_new_row_fills_defaults_and_refuses_a_missing_required_column() -> None:
    request = _new_request()
    assert request.code_attempts == 0
    assert request.subject_id is None
    assert column_values(request)["code_attempts"] == 0
    request.status = "awaiting_verification"  # assignments go through the instrumented attribute
    assert column_values(request)["status"] == "awaiting_verification"
    with pytest.raises(TypeError, match="due_at"):
        new_row(PrivacyRequest, {"id": uuid.uuid4(), "type": "access"})


async def test_a_row_built_by_new_row_is_saved_like_one_built_by_its_constructor(runtime: Runtime) -> None:
    # Built without the constructor, the instance is still an ordinary pending object for the ORM.
    built = _new_request(status="awaiting_review")
    constructed = PrivacyRequest(**column_values(_new_request(status="awaiting_review")))
    async with runtime.db.transaction() as session:
        session.add(built)
        session.add(constructed)
    async with runtime.db.transaction() as session:
        rows = {
            row.id: row
            for row in (
                await session.exec(select(PrivacyRequest).where(col(PrivacyRequest.id).in_([built.id, constructed.id])))
            ).all()
        }
    assert rows.keys() == {built.id, constructed.id}
    saved, reference = rows[built.id], rows[constructed.id]
    skip = {"id", "identity_bidx", "received_at", "due_at"}
    assert {k: v for k, v in column_values(saved).items() if k not in skip} == {
        k: v for k, v in column_values(reference).items() if k not in skip
    }
    assert saved.due_at == built.due_at


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_last_write_run_alone_stores_what_sqlalchemy_would(runtime: Runtime, backend: str) -> None:
    # Run alone, the write reaches the driver as a positional tuple built from the statement's
    # compiled form (db._driver_form), not through SQLAlchemy's per-execution parameter handling.
    # Intake's own statement, with a row queued on it, stores the same values either way: bytes,
    # UUIDs, times, NULLs (a JSON column's as JSON null), JSON, and the LIMIT the duplicate look-up
    # holds in the statement.
    from privacy_service.db import _driver_form
    from privacy_service.dsr.intake import _NEW_REQUEST, new_request_params

    at = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
    fixed = {"received_at": at, "due_at": at + timedelta(days=30), "acknowledged_at": at, "identity_ct": b"ct\x00"}

    driven: list[Any] = []  # the "through" run's driver form and values

    async def write(run_alone: bool, action: str) -> uuid.UUID:
        request = _new_request(code_hash=b"\x00\xffdigest", reason_ct=None, **fixed)
        async with runtime.db.transaction() as session:
            audit.record(session, at=request.received_at, actor=ACTOR, action=action, detail={"n": 1, "zh": "请求"})
            statement, params = carry_appended_rows(session, _NEW_REQUEST, new_request_params(request))
            form = _driver_form(statement, runtime.db.engine.dialect)
            assert form is not None  # the path under test, not the fallback
            assert form.takes(params)
            if run_alone:
                await write_last(session, statement, params)
            else:
                driven[:] = [form, params]
                await session.exec(statement, params=params)
        return request.id

    sent: list[tuple[bool, Any]] = []  # (SQLAlchemy compiled it for this execution, values sent)
    on_driver: list[str] = []  # statements run on the driver's cursor directly (Database._run_on_driver)

    def seen(_conn: Any, _cursor: Any, _statement: str, parameters: Any, context: Any, _many: bool) -> None:
        sent.append((context.compiled is not None, parameters))

    def seen_on_driver(statement: str, _values: tuple[Any, ...]) -> None:
        on_driver.append(statement)

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", seen)
    runtime.db.driver_listeners.append(seen_on_driver)
    try:
        alone = await write(True, "test.alone")
        # One statement, no BEGIN or COMMIT, and none of it through SQLAlchemy's Connection.
        assert sent == []
        assert len(on_driver) == 1
        assert on_driver[0].startswith("WITH")
        assert "INSERT INTO dsr_requests" in on_driver[0]
        through = await write(False, "test.through")
    finally:
        event.remove(runtime.db.engine.sync_engine, "before_cursor_execute", seen)
        runtime.db.driver_listeners.remove(seen_on_driver)
    assert len(on_driver) == 1
    # The values SQLAlchemy sent for the same statement are the ones the driver form makes of them.
    (processed,) = [parameters for compiled, parameters in sent if compiled]
    assert tuple(processed) == driven[0].values(driven[1])

    async with runtime.db.transaction() as session:
        rows = {
            row.id: row.model_dump(exclude={"id"})
            for row in (await session.exec(select(PrivacyRequest).where(col(PrivacyRequest.id).in_([alone, through]))))
        }
        events = (await session.exec(select(AuditEvent).where(col(AuditEvent.actor_id) == ACTOR.id))).all()
    assert rows[alone] | {"identity_bidx": None} == rows[through] | {"identity_bidx": None}
    assert rows[alone]["code_hash"] == b"\x00\xffdigest"
    assert rows[alone]["identity_bidx"] != rows[through]["identity_bidx"]
    by_action = {event.action: event for event in events}
    for name in ("at", "actor_type", "detail", "subject_id", "request_id"):
        assert getattr(by_action["test.alone"], name) == getattr(by_action["test.through"], name), name
    assert by_action["test.alone"].detail == {"n": 1, "zh": "请求"}


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_last_write_run_alone_that_fails_raises_sqlalchemys_error_without_its_values(
    runtime: Runtime, backend: str
) -> None:
    # The same error types as SQLAlchemy's own path (the API's handlers map them), the values hidden
    # (they are a request's sealed identity and blind index), and the connection not handed out again.
    from privacy_service.dsr.intake import _NEW_REQUEST, new_request_params

    request = _new_request(identity_ct=b"sealed-identity")
    async with runtime.db.transaction() as session:
        await write_last(session, _NEW_REQUEST, new_request_params(request))
    pool = runtime.db.engine.sync_engine.pool
    discarded: list[BaseException | None] = []

    def invalidated(_dbapi: Any, _record: Any, exc: BaseException | None) -> None:
        discarded.append(exc)

    event.listen(pool, "invalidate", invalidated)
    try:
        with pytest.raises(IntegrityError) as failed:
            async with runtime.db.transaction() as session:
                await write_last(session, _NEW_REQUEST, new_request_params(request))  # the same id again
    finally:
        event.remove(pool, "invalidate", invalidated)
    assert failed.value.connection_invalidated is False  # a constraint, not a lost connection: a 500
    assert "sealed-identity" not in str(failed.value)  # no values in the message, none kept on it
    assert failed.value.params is None
    assert discarded == [failed.value.orig]  # that connection is closed, not handed out again
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    async with runtime.db.transaction() as session:
        assert (await session.get(PrivacyRequest, request.id)) is not None  # the pool serves on


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_connection_a_last_write_ran_on_goes_back_to_the_pool_transactional(
    runtime: Runtime, backend: str
) -> None:
    # The driver path sets the connection to autocommit for its one statement. Were that left on,
    # the next unit of work on the same connection would write without a transaction and a failure
    # would roll nothing back.
    from privacy_service.dsr.intake import _NEW_REQUEST, new_request_params

    async with runtime.db.transaction() as session:
        await write_last(session, _NEW_REQUEST, new_request_params(_new_request()))
    assert runtime.db.engine.sync_engine.pool.checkedin() == 1  # type: ignore[attr-defined]  # reused below
    kept = _new_request()

    async def failing() -> None:
        async with runtime.db.transaction() as session:
            session.add(kept)
            await session.flush()
            raise Boom

    with pytest.raises(Boom):
        await failing()
    async with runtime.db.transaction() as session:
        assert await session.get(PrivacyRequest, kept.id) is None


async def test_a_unit_of_work_closes_its_session_however_it_ends(runtime: Runtime) -> None:
    # Database.transaction closes the session itself once it committed or rolled back (db._close):
    # its objects are detached and nothing of it is left open, after a commit, a last write run
    # alone, and a failure alike; the connections all went back to the pool.
    request = _new_request()
    async with runtime.db.transaction() as session:
        session.add(request)
    assert session.sync_session.in_transaction() is False
    assert request not in session.sync_session  # expunged: closed
    async with runtime.db.transaction() as alone:
        await write_last(alone, insert(_EVENTS), _event_row(runtime, "test.closed"))
    assert alone.sync_session.info == {}
    seen: list[Any] = []  # the failed unit's session and the object it loaded

    async def failing() -> None:
        async with runtime.db.transaction() as failed:
            seen.extend([failed, await failed.get(PrivacyRequest, request.id)])
            raise Boom

    with pytest.raises(Boom):
        await failing()
    failed, loaded = seen
    assert loaded is not None
    assert loaded not in failed.sync_session
    assert failed.sync_session.in_transaction() is False
    assert runtime.db.engine.sync_engine.pool.checkedout() == 0


async def test_a_unit_of_work_whose_rollback_fails_is_still_closed(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A transaction still open at the end (its rollback raised) is closed as ``async with`` would
    # (AsyncSession's own close, shielded): the connection goes back to the pool all the same.
    async def failing_rollback(self: AsyncSession) -> None:
        raise RuntimeError("rollback failed")

    monkeypatch.setattr(AsyncSession, "rollback", failing_rollback)
    seen: list[AsyncSession] = []

    async def failing() -> None:
        async with runtime.db.transaction() as session:
            seen.append(session)
            await session.get(PrivacyRequest, uuid.uuid4())  # begins a transaction on a connection
            raise Boom

    with pytest.raises(RuntimeError, match="rollback failed"):
        await failing()
    assert seen[0].sync_session.in_transaction() is False
    assert runtime.db.engine.sync_engine.pool.checkedout() == 0

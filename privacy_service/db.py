"""Engine and session factory. The request (or job) owns the transaction: services never commit.

On SQLite the key store is a second file attached as schema ``keystore`` to every connection,
so subjects' wrapped data keys live outside the data file and one transaction covers both.
On PostgreSQL ``keystore`` is a schema of the same database (exclude it from ordinary backups
with ``pg_dump --exclude-schema=keystore``; see the README's threat model).
"""

from __future__ import annotations

import functools
import operator
import os
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import DateTime, Select, Table, bindparam, event, insert, literal_column, select
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as SqlAlchemyAsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, class_mapper
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.selectable import CTE, HasCTE
from sqlalchemy.sql.util import find_tables
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import greenlet_spawn
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.config import Settings

KEYSTORE_SCHEMA = "keystore"
_PENDING_ROWS = "privacy_service.pending_rows"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        data_path = settings.sqlite_path
        keystore = settings.resolved_keystore_path
        for path in (data_path, keystore):
            if path is not None and str(path) != ":memory:":
                make_private(path)
        engine = create_async_engine(settings.database_url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            # Take transactions into our own hands (see _on_begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute(f"ATTACH DATABASE ? AS {KEYSTORE_SCHEMA}", (str(keystore),))
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection: Connection) -> None:
            # IMMEDIATE takes the write lock up front, so two transactions never deadlock upgrading
            # a read lock (SQLite answers that with an instant "database is locked", not a wait).
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=_overflow(settings),
        connect_args={"server_settings": {"jit": "off", "application_name": "privacy-service"}},
    )
    event.listen(engine.sync_engine, "checkout", _discard_closed)
    return engine


def _overflow(settings: Settings) -> int:
    """Connections PostgreSQL's pool opens beyond its size under a burst: as many again."""
    return settings.db_pool_size


def make_private(path: Path) -> None:
    """Create a SQLite file 0600 in a 0700 directory, whatever existed before (``make run`` does
    ``mkdir -p var`` with the umask's 0755). SQLite gives its -wal/-journal files the main file's mode.

    A shared sticky directory such as /tmp is left as it is: tightening it would break the machine.
    """
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = directory.stat()
    if info.st_uid == os.getuid() and not info.st_mode & stat.S_ISVTX:
        directory.chmod(0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    path.chmod(0o600)


def _discard_closed(dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: Any) -> None:
    """Hand out only connections the server has not closed, at no round trip.

    A restarted (or ``pg_terminate_backend``-ed) server closes its sockets; asyncpg sees the close as
    it happens and reports ``is_closed()``. Raising ``DisconnectionError`` makes the pool drop that
    connection and check out another (a fresh one if need be). SQLAlchemy's ``pool_pre_ping`` would
    do the same with three round trips (BEGIN, a ping, ROLLBACK) per transaction.
    """
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self.sessionmaker = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        # The same pool, each statement its own transaction (see _write_alone).
        self._autocommit = None if settings.is_sqlite else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # Connections the pool opens at most at once: PostgreSQL's pool size plus its overflow (see
        # make_engine); SQLite's pool serialises writers anyway, counted as one.
        self.max_connections = 1 if settings.is_sqlite else settings.db_pool_size + _overflow(settings)
        # Called with (sql, values) before each statement run on the driver directly (see
        # _run_on_driver), which SQLAlchemy's cursor events do not see: tests, diagnostics. The values
        # are a request's sealed data and blind index: never log them. A listener that raises fails
        # the statement.
        self.driver_listeners: list[Callable[[str, tuple[Any, ...]], None]] = []

    @asynccontextmanager
    async def transaction(self, bind: AsyncConnection | None = None) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit if the block succeeds, roll back if it raises. ``bind``: on a
        connection the caller holds (one after another on it), not one from the pool."""
        session = self.sessionmaker() if bind is None else self.sessionmaker(bind=bind)
        try:
            yield session
            if bind is not None or not await self._write_alone(session):
                await session.commit()
        except BaseException:
            session.sync_session.info.pop(_DEFERRED, None)
            await session.rollback()
            raise
        finally:
            await _close(session)

    async def _write_alone(self, session: AsyncSession) -> bool:
        """If the unit of work's one write is a statement deferred to its end (:func:`write_last`)
        and it did nothing else in the database (no transaction begun: nothing read, added or queued),
        run that statement by itself on a pooled connection in autocommit: a single statement is
        atomic, and it saves the BEGIN and COMMIT round trips. A statement built once goes to the
        driver in its compiled form (:func:`_driver_form`, :meth:`_run_on_driver`). False: commit as usual."""
        info = session.sync_session.info
        if self._autocommit is None or _DEFERRED not in info or _PENDING_ROWS in info or session.in_transaction():
            return False
        statement, params = info.pop(_DEFERRED)
        driver = _driver_form(statement, self.engine.dialect)
        if driver is None or not driver.takes(params):
            async with self._autocommit.connect() as connection:
                await connection.execute(statement, params)
        else:
            await greenlet_spawn(self._run_on_driver, driver.sql, driver.values(params))
        return True

    def _run_on_driver(self, sql: str, values: tuple[Any, ...]) -> None:
        """Run ``sql`` alone in autocommit on a pooled connection's DB-API cursor (in a greenlet).

        The pool's connection and the driver's cursor, without SQLAlchemy's ``Connection``: building
        one, its execution context and its result for a statement that returns nothing cost an intake
        as much CPU as the driver's round trip. What the ``Connection`` would still do is done here:
        the driver's errors are raised as SQLAlchemy's (``IntegrityError``, ``OperationalError``, ...;
        parameters hidden), marked ``connection_invalidated`` when the connection was lost, and a
        connection that failed or was cancelled mid-statement is discarded, never handed out again.

        Two differences remain. A lost connection discards this connection only, where SQLAlchemy
        would also mark every other pooled one stale: those the server closed are dropped at their
        next checkout anyway (``_discard_closed``). And SQLAlchemy's cursor events do not see the
        statement: :attr:`driver_listeners` do.
        """
        try:
            pooled = self.engine.sync_engine.raw_connection()
        except Exception as error:
            wrapped = self._as_sqlalchemy_error(error, sql, None)
            if wrapped is error:
                raise
            raise wrapped from error
        # Checked out, so never None; ``autocommit`` is a DB-API extension the asyncpg adapter has.
        adapted: Any = pooled.dbapi_connection
        try:
            for listener in self.driver_listeners:
                listener(sql, values)
            autocommit = adapted.autocommit
            adapted.autocommit = True
            adapted.cursor().execute(sql, values)
            adapted.autocommit = autocommit
        except Exception as error:
            wrapped = self._as_sqlalchemy_error(error, sql, adapted)  # asks the connection: before it is closed
            pooled.invalidate(error)
            if wrapped is error:
                raise
            raise wrapped from error
        except BaseException:  # cancelled mid-statement: the connection's state is unknown
            pooled.invalidate()
            raise
        pooled.close()

    def _as_sqlalchemy_error(self, error: Exception, sql: str, connection: Any) -> Exception:
        """A DB-API error wrapped as SQLAlchemy's own execution path wraps it; anything else
        (``OSError``, the pool's ``TimeoutError``) as it is."""
        dialect = self.engine.dialect
        dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        if not isinstance(error, dbapi_error):
            return error
        lost = dialect.is_disconnect(cast(Any, error), connection, None)
        wrapped = DBAPIError.instance(
            sql, None, error, dbapi_error, hide_parameters=True, connection_invalidated=lost, dialect=dialect
        )
        return cast(Exception, wrapped)

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()


@dataclass(frozen=True, slots=True)
class _DriverForm:
    """A statement built once, compiled once: its SQL and how to turn its named values into the
    driver's positional ones (each through its type's bind processor, as SQLAlchemy would)."""

    sql: str
    pick: Callable[[dict[str, Any]], tuple[Any, ...]]  # the given values, in the statement's order
    constants: tuple[tuple[int, Any], ...]  # (position, value) of values the statement holds (a LIMIT, say)
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, processor) where the type has one
    given: frozenset[str]  # the values each execution must give, no more, no fewer

    def takes(self, params: dict[str, Any]) -> bool:
        """Whether ``params`` are this form's values (an ``insert(table)`` without ``.values()`` is
        compiled for the columns its parameters name, so another set of names is another statement)."""
        return params.keys() == self.given

    def values(self, params: dict[str, Any]) -> tuple[Any, ...]:
        values = list(self.pick(params))
        for position, constant in self.constants:  # in ascending order: each lands where it belongs
            values.insert(position, constant)
        for position, process in self.processors:
            # None too, as SQLAlchemy does: a JSON column's processor turns it into JSON null.
            values[position] = process(values[position])
        return tuple(values)


@functools.lru_cache(maxsize=256)
def _driver_form(statement: ClauseElement, dialect: Dialect) -> _DriverForm | None:
    """The positional form of a write deferred by :func:`write_last` (statements built once and
    cached, so their compiled form is kept too), or None where values must go through SQLAlchemy's
    own rendering (a dialect with named parameters, expanding or literal-rendered parameters).

    Intake's INSERT carries some 65 values; SQLAlchemy's per-execution handling of them (building
    the parameter dictionary, running each through its processor, ordering them) cost as much CPU
    as the driver's whole round trip. Here that is a tuple built from a precomputed order."""
    if not dialect.positional:
        return None
    compiled = statement.compile(dialect=dialect)
    if not isinstance(compiled, SQLCompiler):
        return None
    if (
        compiled.positiontup is None
        or compiled.literal_execute_params
        or compiled.post_compile_params
        or compiled.escaped_bind_names
        or compiled.insert_prefetch  # Python-side column defaults, run at each execution
        or compiled.update_prefetch
    ):
        return None
    names = tuple(compiled.positiontup)
    binds = [compiled.binds[name] for name in names]
    if any(bind.callable is not None for bind in binds):
        return None  # a callable's value is taken at each execution
    given = tuple(name for name, bind in zip(names, binds, strict=True) if bind.required)
    if len(given) < 2:
        return None  # itemgetter of one name returns the value, not a tuple
    constants = tuple((position, bind.effective_value) for position, bind in enumerate(binds) if not bind.required)
    processors = tuple(
        (position, process)
        for position, bind in enumerate(binds)
        if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
    )
    return _DriverForm(compiled.string, operator.itemgetter(*given), constants, processors, frozenset(given))


async def _close(session: AsyncSession) -> None:
    """Close a unit of work's session once it committed or rolled back.

    With no transaction left, closing only forgets the session's objects: no connection to return,
    no I/O, so it runs here directly. ``AsyncSession.close`` would run the same in a greenlet on a
    task of its own, shielded from cancellation (~15 µs, a few percent of an intake). A transaction
    still open (its rollback failed) is closed that way.
    """
    if session.sync_session.in_transaction():
        await session.__aexit__(None, None, None)  # as ``async with`` closes it: shielded from cancellation
    else:
        session.sync_session.close()


# -- append-only rows ----------------------------------------------------------------------------
#
# Audit events, request transitions, outbox messages and wrapped data keys are written once and
# never updated in the transaction that writes them. Building an ORM object for each and letting the
# unit of work insert it costs more Python time than the rest of a typical request (SQLModel
# validation, attribute instrumentation, flush planning). Such rows are instead queued as plain dicts
# on the session and written with one Core ``INSERT`` per table (a single executemany) when the
# transaction commits, or earlier if the same transaction runs a query first (so it reads its own
# writes). A rollback discards the queue. Inside a savepoint rows take the ordinary ORM path, so a
# savepoint rolled back takes them with it. None of these tables is the target of a foreign key, so
# the order relative to the unit of work's own inserts does not matter.
#
# On PostgreSQL the queued rows of a transaction go in one statement, each table's INSERT a
# data-modifying CTE (``WITH a AS (INSERT ...), b AS (INSERT ...) SELECT 1``), built once per shape
# and cached. A query passed through :func:`carry_appended_rows` takes them along itself, so an
# audited read costs no extra statement at all. Statements are only ever built from bind parameters.

_DEFERRED = "privacy_service.deferred_statement"
_MAX_CARRIED_ROWS = 8  # per table; a larger batch is an executemany (insertmanyvalues batches it)

# What the queued rows look like: per table, its column names and how many rows.
_Shape = tuple[tuple[Table, tuple[str, ...], int], ...]
_Statement = TypeVar("_Statement", bound=HasCTE)
_NOTHING_ELSE: Select[*tuple[Any, ...]] = select(literal_column("1"))


def append_row(session: SqlAlchemyAsyncSession | Session, model: type[SQLModel], row: dict[str, Any]) -> None:
    """Queue the INSERT of an append-only row of ``model``'s table in the session's transaction.

    Columns ``row`` leaves out take the model's defaults, so every queued row of a table has the
    same keys (one executemany statement serves them all).
    """
    sync_session = session.sync_session if isinstance(session, SqlAlchemyAsyncSession) else session
    if sync_session.in_nested_transaction():
        sync_session.add(model(**row))
        return
    table: Table = model.__table__  # type: ignore[attr-defined]
    pending: dict[Table, list[dict[str, Any]]] = sync_session.info.setdefault(_PENDING_ROWS, {})
    pending.setdefault(table, []).append(_defaults(model) | row)


@functools.cache
def _defaults(model: type[SQLModel]) -> dict[str, Any]:
    """Constant defaults of ``model``'s columns (an autoincrementing id is left to the database)."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    defaults: dict[str, Any] = {}
    for column in table.columns:
        field = model.model_fields[column.key]
        if field.is_required() or field.default_factory is not None:
            continue  # a required value, or a mutable one the caller must give
        if column.primary_key and field.default is None:
            continue
        defaults[column.key] = field.default
    return defaults


_Model = TypeVar("_Model", bound=SQLModel)


def new_row(model: type[_Model], values: dict[str, Any]) -> _Model:
    """A new, unsaved instance of table model ``model``: ``values`` over the model's defaults.

    Built the way SQLAlchemy builds a row it loads (values straight into the instance's dict), not
    through the constructor: SQLModel's sets every field of a table model through both SQLAlchemy's
    and pydantic's ``__setattr__`` (and validates none), which cost intake more than building its
    whole statement. Later assignments go through the instrumented attributes as usual. Every
    column without a constant default must be given.
    """
    missing = _required(model) - values.keys()
    if missing:
        raise TypeError(f"{model.__name__}: no value for " + ", ".join(sorted(missing)))
    # class_mapper configures the mappers first if they are not yet (the constructor would).
    instance: _Model = class_mapper(model).class_manager.new_instance()
    instance.__dict__.update(_defaults(model) | values)
    return instance


@functools.cache
def _required(model: type[SQLModel]) -> frozenset[str]:
    table: Table = model.__table__  # type: ignore[attr-defined]
    defaults = _defaults(model)
    return frozenset(
        column.key
        for column in table.columns
        if column.key not in defaults and not (column.primary_key and column.autoincrement is True)
    )


def column_values(instance: SQLModel) -> dict[str, Any]:
    """Every column of a new, unsaved model instance, as :func:`append_row` takes them."""
    values = instance.__dict__  # a new instance holds every column there (no lazy loads to trigger)
    return {
        key: values[key] if key in values else getattr(instance, key)
        for key in _column_keys(instance.__table__)  # type: ignore[attr-defined]
    }


@functools.cache
def _column_keys(table: Table) -> tuple[str, ...]:
    return tuple(column.key for column in table.columns)  # a table's columns list is rebuilt on each iteration


def carry_appended_rows(
    session: SqlAlchemyAsyncSession, statement: _Statement, params: dict[str, Any]
) -> tuple[_Statement, dict[str, Any]]:
    """On PostgreSQL, ``statement`` and ``params`` with the transaction's queued rows riding along.

    Each queued row becomes an ``INSERT`` CTE of the query, so recording an event costs no statement
    of its own. ``statement`` must be built once (module level or cached): the combined statement is
    cached per statement object. Otherwise (SQLite, inside a savepoint, a queued row of a table the
    query reads, a long queue) the arguments come back unchanged and the rows are written before the
    query as usual, so the transaction still reads its own writes.
    """
    sync_session = session.sync_session
    pending: dict[Table, list[dict[str, Any]]] | None = sync_session.info.get(_PENDING_ROWS)
    if not pending or sync_session.in_nested_transaction() or sync_session.get_bind().dialect.name != "postgresql":
        return statement, params
    shape = _shape(pending)
    if shape is None or _tables_read(statement).intersection(pending):
        return statement, params
    carrier = _carrier(statement, shape)
    carried = carrier.params(pending)
    if not carried.keys().isdisjoint(params):
        raise ValueError("a parameter of the query has the name of a queued row's parameter (_append_*)")
    # The rows leave the queue only once the statement that writes them is built.
    del sync_session.info[_PENDING_ROWS]
    return cast(_Statement, carrier.statement), carried | params


async def write_last(session: AsyncSession, statement: UpdateBase, params: dict[str, Any]) -> None:
    """Run ``statement`` (a write that returns nothing) as the transaction's last statement.

    Contract: it must be the unit of work's last database action. Nothing after it may depend on
    it having been written. Build ``statement`` once (module level or cached): run alone, its
    compiled form is kept per statement object.

    Deferred: it runs before the next query the session executes, or at commit, inside the
    transaction. When it is all the unit of work does in the database (intake: one INSERT carrying
    every queued row), :meth:`Database.transaction` runs it alone in autocommit instead. Inside a
    savepoint, or with a statement deferred already, it runs at once.

    What does not write it first: an explicit ``session.flush()``, a statement run on the raw
    connection (``(await session.connection()).execute(...)``), or a query inside a
    ``begin_nested()`` savepoint opened after it. Each of those runs while the statement is still
    waiting, and sees the database as if the write had not happened; the statement is written
    later (at the next query outside a savepoint, or at commit), after them.
    """
    sync_session = session.sync_session
    if sync_session.in_nested_transaction() or _DEFERRED in sync_session.info:
        await session.exec(statement, params=params)
        return
    sync_session.info[_DEFERRED] = (statement, params)


def _write_deferred(session: Session) -> None:
    deferred: tuple[Executable, dict[str, Any]] | None = session.info.pop(_DEFERRED, None)
    if deferred is not None:
        session.connection().execute(*deferred)


def _shape(pending: dict[Table, list[dict[str, Any]]]) -> _Shape | None:
    shape = []
    for table, rows in pending.items():
        keys = tuple(rows[0])
        if len(rows) > _MAX_CARRIED_ROWS or any(tuple(row) != keys for row in rows[1:]):
            return None
        shape.append((table, keys, len(rows)))
    return tuple(shape)


@dataclass(frozen=True, slots=True)
class _Carrier:
    statement: HasCTE
    names: tuple[tuple[str, ...], ...]  # per queued row, in queue order: its columns' bind parameters

    def params(self, pending: dict[Table, list[dict[str, Any]]]) -> dict[str, Any]:
        rows = (row for table_rows in pending.values() for row in table_rows)
        return {
            name: value
            for names, row in zip(self.names, rows, strict=True)
            for name, value in zip(names, row.values(), strict=True)
        }


@functools.lru_cache(maxsize=256)
def _carrier(statement: HasCTE, shape: _Shape) -> _Carrier:
    """``statement`` with an INSERT CTE per queued row of ``shape``, every value a bind parameter.

    One CTE per row, not one multi-row VALUES per table: SQLAlchemy does not cache the compiled
    form of a multi-row VALUES, and compiling it on every call would cost more than it saves.
    PostgreSQL runs a statement's CTEs in no set order, so each further row of a table selects its
    values from the previous row's CTE: its INSERT (and the id the sequence gives it) comes after.
    """
    names = []
    for index, (table, keys, count) in enumerate(shape):
        previous: CTE | None = None
        for row in range(count):
            row_names = tuple(f"_append_{index}_{row}_{key}" for key in keys)
            values = [bindparam(name, type_=table.c[key].type) for key, name in zip(keys, row_names, strict=True)]
            if previous is None:
                insert_row = insert(table).values(dict(zip(keys, values, strict=True)))
            else:
                insert_row = insert(table).from_select(keys, select(*values).select_from(previous))
            if row + 1 < count:
                insert_row = insert_row.returning(literal_column("1"))
            previous = insert_row.cte(f"_append_{index}_{row}")
            statement = statement.add_cte(previous)
            names.append(row_names)
    return _Carrier(statement, tuple(names))


@functools.lru_cache(maxsize=256)
def _tables_read(statement: HasCTE) -> frozenset[Table]:
    return frozenset(
        table for table in find_tables(statement, include_joins=True, check_columns=True) if isinstance(table, Table)
    )


def _write_pending(session: Session) -> None:
    pending: dict[Table, list[dict[str, Any]]] | None = session.info.pop(_PENDING_ROWS, None)
    if not pending:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql" and (shape := _shape(pending)) is not None:
        carrier = _carrier(_NOTHING_ELSE, shape)
        connection.execute(cast(Executable, carrier.statement), carrier.params(pending))
        return
    for table, rows in pending.items():
        # One row as a plain execute: an executemany of one costs more on asyncpg.
        connection.execute(insert(table), rows[0] if len(rows) == 1 else rows)


@event.listens_for(Session, "do_orm_execute")
def _write_pending_before_query(state: ORMExecuteState) -> None:
    # Not inside a savepoint: rows queued by the outer transaction must not be rolled back with it.
    info = state.session.info
    if (_DEFERRED in info or _PENDING_ROWS in info) and not state.session.in_nested_transaction():
        _write_deferred(state.session)
        _write_pending(state.session)


@event.listens_for(Session, "before_commit")
def _write_pending_before_commit(session: Session) -> None:
    _write_deferred(session)
    _write_pending(session)


@event.listens_for(Session, "after_soft_rollback")
def _discard_pending(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING_ROWS, None)
        session.info.pop(_DEFERRED, None)

"""Engine and session factory. The request (or job) owns the transaction: services never commit.

On SQLite the key store is a second file attached as schema ``keystore`` to every connection,
so subjects' wrapped data keys live outside the data file and one transaction covers both.
On PostgreSQL ``keystore`` is a schema of the same database (exclude it from ordinary backups
with ``pg_dump --exclude-schema=keystore``; see the README's threat model).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Table, event, insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as SqlAlchemyAsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator
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
                # The data directory is private: the database files inherit no wider access.
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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
        max_overflow=settings.db_pool_size,
        connect_args={"server_settings": {"jit": "off", "application_name": "privacy-service"}},
    )
    event.listen(engine.sync_engine, "checkout", _discard_closed)
    return engine


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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit if the block succeeds, roll back if it raises."""
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()


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


def column_values(instance: SQLModel) -> dict[str, Any]:
    """Every column of a new, unsaved model instance, as :func:`append_row` takes them."""
    table: Table = instance.__table__  # type: ignore[attr-defined]
    return {column.key: getattr(instance, column.key) for column in table.columns}


def _write_pending(session: Session) -> None:
    pending: dict[Table, list[dict[str, Any]]] | None = session.info.pop(_PENDING_ROWS, None)
    if not pending:
        return
    connection = session.connection()
    for table, rows in pending.items():
        # One row as a plain execute: an executemany of one costs more on asyncpg.
        connection.execute(insert(table), rows[0] if len(rows) == 1 else rows)


@event.listens_for(Session, "do_orm_execute")
def _write_pending_before_query(state: ORMExecuteState) -> None:
    # Not inside a savepoint: rows queued by the outer transaction must not be rolled back with it.
    if _PENDING_ROWS in state.session.info and not state.session.in_nested_transaction():
        _write_pending(state.session)


@event.listens_for(Session, "before_commit")
def _write_pending_before_commit(session: Session) -> None:
    _write_pending(session)


@event.listens_for(Session, "after_soft_rollback")
def _discard_pending(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING_ROWS, None)

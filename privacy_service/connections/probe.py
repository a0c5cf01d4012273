"""A connection test: connect within a deadline, then check that every collection and field exists.

Failures are described by class (timeout, refused, authentication, missing database...), never by
the driver's message: those name the host, the user, sometimes a value.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import inspect
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from privacy_service.connections.engines import create_engine
from privacy_service.connections.targets import Network, ServerIdentity, guard

# Server error codes (MySQL/MariaDB) and SQLSTATEs (PostgreSQL) worth a name of their own.
_MYSQL = {1044: "authentication", 1045: "authentication", 1049: "no_database", 2003: "unreachable", 2005: "no_host"}
_PG_STATES = {"28P01": "authentication", "28000": "authentication", "3D000": "no_database", "53300": "busy"}
PROBLEMS = {
    "timeout": "timeout: the database did not answer within {timeout:g} s",
    "unreachable": "unreachable: the connection was refused or the host cannot be reached",
    "no_host": "unreachable: the host name does not resolve",
    "authentication": "authentication failed: the user or password is not accepted",
    "no_database": "the database named in the URL does not exist",
    "busy": "the database refuses new connections (too many)",
    "sqlite_file": "the sqlite database file cannot be opened (missing, a directory or not readable)",
    "missing": "the database lacks collections or fields the dataset names",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    problem: str | None
    missing: list[str] = field(default_factory=list)
    duration_ms: float = 0.0


def missing_columns(connection: SyncConnection, wanted: Mapping[str, Sequence[str]]) -> list[str]:
    """``collection`` for a table that is not there, ``collection.field`` for a column that is not."""
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    missing: list[str] = []
    for collection, fields in wanted.items():
        if collection not in tables:
            missing.append(collection)
            continue
        columns = {column["name"] for column in inspector.get_columns(collection)}
        missing.extend(f"{collection}.{name}" for name in fields if name not in columns)
    return missing


def _chain(exc: BaseException) -> list[BaseException]:
    """The error and what it wraps: SQLAlchemy wraps the driver's error, which may wrap an OSError."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(found) < 8 and current not in found:
        found.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return found


def classify(exc: BaseException) -> str:
    """A problem key of ``PROBLEMS`` (or the exception's class name) for a failed connection."""
    chain = _chain(exc)
    if any(isinstance(item, socket.gaierror) for item in chain):
        return "no_host"
    if any(isinstance(item, TimeoutError) for item in chain):
        return "timeout"
    for item in chain:
        state = getattr(item, "sqlstate", None) or getattr(item, "pgcode", None)
        if isinstance(state, str) and state in _PG_STATES:
            return _PG_STATES[state]
        args = getattr(item, "args", ())
        if args and isinstance(args[0], int) and args[0] in _MYSQL and _MYSQL[args[0]] != "unreachable":
            return _MYSQL[args[0]]
    if any(isinstance(item, OSError) for item in chain):
        return "unreachable"
    if any(isinstance(item, (sqlite3.Error,)) for item in chain):
        return "sqlite_file"
    if any(getattr(item, "args", (None,))[:1] == (2003,) for item in chain):
        return "unreachable"
    return type(exc).__name__


def describe(key: str, timeout: float) -> str:
    template = PROBLEMS.get(key)
    return template.format(timeout=timeout) if template else f"connection failed ({key})"


async def probe(
    stored_url: str,
    wanted: Mapping[str, Sequence[str]],
    *,
    timeout: float,
    own: ServerIdentity | None = None,
    networks: Sequence[Network] = (),
) -> Outcome:
    """Connect with a fresh engine (no pool kept), inspect, dispose; all within ``timeout`` seconds.

    The connection is checked first (``targets.guard``): a server that is the service's own database
    (``own``), or an address a connection may not reach, raises :class:`targets.TargetRefused` (422)."""
    started = time.perf_counter()
    engine = create_engine(stored_url, pool_size=1, timeout=timeout, poolclass=NullPool)
    guard(engine, own, networks)
    try:
        async with asyncio.timeout(timeout):
            async with engine.connect() as connection:
                missing = await connection.run_sync(missing_columns, wanted)
    except (TimeoutError, OSError, DBAPIError, SQLAlchemyError) as exc:
        key = classify(exc)
        return Outcome(False, describe(key, timeout), duration_ms=_since(started))
    finally:
        await _dispose(engine, timeout)
    if missing:
        return Outcome(False, PROBLEMS["missing"], missing, _since(started))
    return Outcome(True, None, duration_ms=_since(started))


async def _dispose(engine: AsyncEngine, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            await engine.dispose()
    except (TimeoutError, OSError, SQLAlchemyError):
        return


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)

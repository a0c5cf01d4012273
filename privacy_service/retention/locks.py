"""Single-flight for purge runs (and key rotations): one run at a time across every process and replica.

PostgreSQL: a session-level advisory lock, held on a connection of its own for the whole run (the
run commits in batches, so a transaction-level lock would end with the first batch). The
connection is in autocommit, so it never sits "idle in transaction"; if the process dies, the
server ends the session and the lock with it. SQLite (one host by nature): an exclusive ``flock``
on a file next to the database, which the kernel releases when the process dies.

Each kind of run has its own lock: a PostgreSQL advisory lock key and a lock file name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from privacy_service.db import Database

# pg_advisory_lock key: "PSRETENT".
RUN_LOCK_KEY = 0x5053_5245_5445_4E54


class LockLost(Exception):
    """The lock's connection broke mid-run: stop before another replica starts a second run."""


class RunLock(Protocol):
    async def check(self) -> None: ...

    async def release(self) -> None: ...


class PostgresRunLock:
    def __init__(self, connection: AsyncConnection, key: int = RUN_LOCK_KEY) -> None:
        self._connection = connection
        self._key = key

    async def check(self) -> None:
        try:
            await self._connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            raise LockLost("the connection holding the run lock was lost") from exc

    async def release(self) -> None:
        try:
            await self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
        except (SQLAlchemyError, OSError):
            # Closing the broken session is what releases the lock then.
            await self._connection.invalidate()
        finally:
            await self._connection.close()


class FileRunLock:
    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor

    async def check(self) -> None:
        """A flock cannot be lost while its descriptor is open."""

    async def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        os.close(self._descriptor)


def lock_path(database: Path, name: str = "retention") -> Path:
    return database.with_name(f"{database.name}.{name}.lock")


async def try_acquire(db: Database, *, key: int = RUN_LOCK_KEY, name: str = "retention") -> RunLock | None:
    """The run lock (``key`` on PostgreSQL, file ``<database>.<name>.lock`` on SQLite), or None at
    once if another run holds it (never waits)."""
    if db.settings.is_sqlite:
        path = lock_path(db.settings.sqlite_path or Path("./var/privacy.db"), name)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return None
        return FileRunLock(descriptor)
    connection = await db.engine.connect()
    try:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        locked = (await connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})).scalar_one()
    except BaseException:
        await connection.close()
        raise
    if not locked:
        await connection.close()
        return None
    return PostgresRunLock(connection, key)

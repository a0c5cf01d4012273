"""Online KEK rotation: re-wrap every data key under the current KEK, in small transactions.

Resumable by construction: each batch selects keys still wrapped under an older version and
commits; a crash loses at most the batch in flight, and a rerun continues where it stopped.
Only the small wrapped keys are rewritten; no record is decrypted or re-encrypted.

Single-flight: :func:`rotate_keys` (``keys rotate``) holds the rotation lock (the purge's run lock
with its own key, see :mod:`retention.locks`) for the whole run; a second rotation waits for it,
then adds its own version. Independently of the lock, :func:`rewrap_all` re-reads the current KEK
version every batch and adopts a newer one, so two re-wraps that do overlap (the lock's connection
lost, a direct caller) both finish with every key on the newest version.

A database connection dropped mid-run is retried a few times (:data:`RETRY_DELAYS`); if the
database stays away, :class:`RotationInterrupted` says in one line how far the run got.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import func
from sqlmodel import col, select

from privacy_service.clock import Clock
from privacy_service.crypto.keys import KeyProvider, WrappedKey
from privacy_service.crypto.models import DataKeyRow
from privacy_service.crypto.service import wrap_context
from privacy_service.db import Database
from privacy_service.errors import database_unavailable
from privacy_service.retention.locks import RunLock, try_acquire

T = TypeVar("T")

# pg_advisory_lock key: "PSROTATE"; on SQLite the file <database>.rotation.lock.
ROTATION_LOCK_KEY = 0x5053_524F_5441_5445
ROTATION_LOCK_NAME = "rotation"
# Seconds to wait before each retry of a step whose database connection dropped (a restart, a failover).
RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
LOCK_POLL_SECONDS = 0.5
RESUME_HINT = "run `privacy-service keys rotate --resume` to finish"


@dataclass(frozen=True, slots=True)
class RewrapResult:
    target_version: int
    rewrapped: int
    batches: int


class RewrapInterrupted(Exception):
    """The database stayed out of reach; every batch committed before stays done."""

    def __init__(self, rewrapped: int, target_version: int) -> None:
        super().__init__(f"re-wrap to KEK version {target_version} stopped after {rewrapped} data keys")
        self.rewrapped = rewrapped
        self.target_version = target_version


class RotationInterrupted(Exception):
    """A rotation stopped because the database is out of reach; ``str()`` is one line for the operator."""


OnRetry = Callable[[int, float], None]  # (retry number, seconds until it)


async def _retrying(step: Callable[[], Awaitable[T]], on_retry: OnRetry | None, delays: tuple[float, ...]) -> T:
    """``step()``, run again after each delay while it fails because the database is out of reach."""
    for number, delay in enumerate((*delays, None), start=1):
        try:
            return await step()
        except Exception as exc:
            if delay is None or not database_unavailable(exc):
                raise
            if on_retry is not None:
                on_retry(number, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


async def count_stale(db: Database, target_version: int) -> int:
    async with db.transaction() as session:
        result = await session.exec(
            select(func.count()).select_from(DataKeyRow).where(col(DataKeyRow.kek_version) < target_version)
        )
        return int(result.one())


async def _rewrap_batch(db: Database, provider: KeyProvider, clock: Clock, target: int, batch_size: int) -> int:
    async with db.transaction() as session:
        query = (
            select(DataKeyRow)
            .where(col(DataKeyRow.kek_version) < target)
            .order_by(col(DataKeyRow.id))
            .limit(batch_size)
        )
        if not db.settings.is_sqlite:
            # Skip rows another rotator holds; erasure deleting a key simply wins.
            query = query.with_for_update(skip_locked=True)
        rows = (await session.exec(query)).all()
        now = clock.now()
        for row in rows:
            fresh = await provider.rewrap(
                WrappedKey(row.kek_version, row.wrapped), wrap_context(row.subject_id, row.id, row.purpose)
            )
            row.kek_version, row.wrapped, row.rewrapped_at = fresh.kek_version, fresh.blob, now
        return len(rows)


async def rewrap_all(
    db: Database,
    provider: KeyProvider,
    clock: Clock,
    *,
    batch_size: int = 500,
    on_batch: Callable[[int], None] | None = None,
    on_retry: OnRetry | None = None,
    retry_delays: tuple[float, ...] = RETRY_DELAYS,
) -> RewrapResult:
    """Re-wrap every data key wrapped under an older KEK version than the current one.

    The current version is read again before every batch: a rotation that adds a newer version
    meanwhile is adopted (the run then re-wraps to that one), so the loop always ends. Raises
    :class:`RewrapInterrupted` if the database stays out of reach after the retries.
    """
    done = batches = 0
    while True:
        target = await provider.current_version()
        batch = functools.partial(_rewrap_batch, db, provider, clock, target, batch_size)
        try:
            count = await _retrying(batch, on_retry, retry_delays)
        except Exception as exc:
            if database_unavailable(exc):
                raise RewrapInterrupted(done, target) from exc
            raise
        if not count:
            break
        done += count
        batches += 1
        if on_batch is not None:
            on_batch(count)
        if db.settings.is_sqlite:
            # SQLite has one writer: step aside so requests queued behind this batch get their turn.
            await asyncio.sleep(0.02)
    return RewrapResult(target, done, batches)


async def acquire_rotation_lock(db: Database, on_wait: Callable[[], None] | None = None) -> RunLock:
    """The rotation lock, waiting (polling) while another rotation holds it."""
    while (lock := await try_acquire(db, key=ROTATION_LOCK_KEY, name=ROTATION_LOCK_NAME)) is None:
        if on_wait is not None:
            on_wait()
            on_wait = None
        await asyncio.sleep(LOCK_POLL_SECONDS)
    return lock


@dataclass(frozen=True, slots=True)
class RotationCallbacks:
    on_wait: Callable[[], None] | None = None  # another rotation holds the lock: waiting
    on_start: Callable[[int, int], None] | None = None  # (target version, data keys to re-wrap)
    on_batch: Callable[[int], None] | None = None
    on_retry: OnRetry | None = None


async def rotate_keys(
    db: Database,
    provider: KeyProvider,
    clock: Clock,
    *,
    resume: bool,
    batch_size: int,
    callbacks: RotationCallbacks | None = None,
    retry_delays: tuple[float, ...] = RETRY_DELAYS,
) -> RewrapResult:
    """``keys rotate [--resume]``: under the rotation lock, add a KEK version (unless ``resume``) and
    re-wrap every data key to the current version. Raises :class:`RotationInterrupted` (one line) if
    the database stays out of reach."""
    hooks = callbacks or RotationCallbacks()
    try:
        lock = await _retrying(lambda: acquire_rotation_lock(db, hooks.on_wait), hooks.on_retry, retry_delays)
    except Exception as exc:
        if database_unavailable(exc):
            raise RotationInterrupted("the database is out of reach; nothing was changed") from exc
        raise
    try:
        version = await provider.current_version() if resume else await provider.rotate()
        try:
            total = await _retrying(lambda: count_stale(db, version), hooks.on_retry, retry_delays)
        except Exception as exc:
            if database_unavailable(exc):
                added = "is current" if resume else "was added"
                raise RotationInterrupted(
                    f"the database is out of reach; KEK version {version} {added}, no data key re-wrapped yet; "
                    + RESUME_HINT
                ) from exc
            raise
        if hooks.on_start is not None:
            hooks.on_start(version, total)
        try:
            return await rewrap_all(
                db,
                provider,
                clock,
                batch_size=batch_size,
                on_batch=hooks.on_batch,
                on_retry=hooks.on_retry,
                retry_delays=retry_delays,
            )
        except RewrapInterrupted as exc:
            raise RotationInterrupted(
                f"the database connection was lost: {exc.rewrapped} of {total} data keys re-wrapped to KEK "
                f"version {exc.target_version} (those are kept); " + RESUME_HINT
            ) from exc
    finally:
        await lock.release()

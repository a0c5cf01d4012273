"""Online KEK rotation: re-wrap every data key under the current KEK, in small transactions.

Resumable by construction: each batch selects keys still wrapped under an older version and
commits; a crash loses at most the batch in flight, and a rerun continues where it stopped.
Only the small wrapped keys are rewritten; no record is decrypted or re-encrypted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import col, select

from privacy_service.clock import Clock
from privacy_service.crypto.keys import KeyProvider, WrappedKey
from privacy_service.crypto.models import DataKeyRow
from privacy_service.crypto.service import wrap_context
from privacy_service.db import Database


@dataclass(frozen=True, slots=True)
class RewrapResult:
    target_version: int
    rewrapped: int
    batches: int


async def count_stale(db: Database, target_version: int) -> int:
    async with db.transaction() as session:
        result = await session.exec(
            select(func.count()).select_from(DataKeyRow).where(col(DataKeyRow.kek_version) != target_version)
        )
        return int(result.one())


async def rewrap_all(
    db: Database,
    provider: KeyProvider,
    clock: Clock,
    *,
    batch_size: int = 500,
    on_batch: Callable[[int], None] | None = None,
) -> RewrapResult:
    target = await provider.current_version()
    done = batches = 0
    while True:
        async with db.transaction() as session:
            query = (
                select(DataKeyRow)
                .where(col(DataKeyRow.kek_version) != target)
                .order_by(col(DataKeyRow.id))
                .limit(batch_size)
            )
            if not db.settings.is_sqlite:
                # Skip rows another rotator holds; erasure deleting a key simply wins.
                query = query.with_for_update(skip_locked=True)
            rows = (await session.exec(query)).all()
            if not rows:
                break
            now = clock.now()
            for row in rows:
                fresh = await provider.rewrap(
                    WrappedKey(row.kek_version, row.wrapped),
                    wrap_context(row.subject_id, row.id, row.purpose),
                )
                row.kek_version, row.wrapped, row.rewrapped_at = fresh.kek_version, fresh.blob, now
        done += len(rows)
        batches += 1
        if on_batch is not None:
            on_batch(len(rows))
        if db.settings.is_sqlite:
            # SQLite has one writer: step aside so requests queued behind this batch get their turn.
            await asyncio.sleep(0.02)
    return RewrapResult(target, done, batches)

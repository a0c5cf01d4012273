"""Per-subject data keys: create, load, shred. Runs inside the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.clock import Clock
from privacy_service.crypto.fields import BlindIndexer, DataKey
from privacy_service.crypto.keys import KeyProvider, WrappedKey
from privacy_service.crypto.models import DataKeyRow

PRIMARY = "primary"
RETENTION = "retention"
REQUEST = "request"


class KeyShredded(Exception):
    """The subject's data key no longer exists: its data is unreadable by design."""


def wrap_context(subject_id: uuid.UUID, key_id: uuid.UUID, purpose: str) -> bytes:
    """Binds a wrapped DEK to its subject, id and purpose, so rows cannot be swapped."""
    return b"|".join((subject_id.bytes, key_id.bytes, purpose.encode()))


@dataclass(slots=True)
class KeyService:
    provider: KeyProvider
    indexer: BlindIndexer
    clock: Clock

    async def create_key(self, session: AsyncSession, subject_id: uuid.UUID, purpose: str = PRIMARY) -> DataKey:
        key = DataKey.generate()
        wrapped = await self.provider.wrap(key.material, wrap_context(subject_id, key.key_id, purpose))
        session.add(
            DataKeyRow(
                id=key.key_id,
                subject_id=subject_id,
                purpose=purpose,
                kek_version=wrapped.kek_version,
                wrapped=wrapped.blob,
                created_at=self.clock.now(),
            )
        )
        return key

    async def load_key(self, session: AsyncSession, subject_id: uuid.UUID, purpose: str = PRIMARY) -> DataKey:
        query = select(DataKeyRow).where(col(DataKeyRow.subject_id) == subject_id, col(DataKeyRow.purpose) == purpose)
        row = (await session.exec(query)).one_or_none()
        if row is None:
            raise KeyShredded(f"no {purpose} data key for subject")
        material = await self.provider.unwrap(
            WrappedKey(row.kek_version, row.wrapped), wrap_context(subject_id, row.id, purpose)
        )
        return DataKey(row.id, material)

    async def shred(self, session: AsyncSession, subject_id: uuid.UUID, purpose: str | None = None) -> int:
        """Destroy the owner's data keys (all, or one purpose). No copy of their ciphertext opens again."""
        statement = delete(DataKeyRow).where(col(DataKeyRow.subject_id) == subject_id)
        if purpose is not None:
            statement = statement.where(col(DataKeyRow.purpose) == purpose)
        result = await session.exec(statement)
        return int(result.rowcount or 0)


async def key_counts_by_kek(session: AsyncSession) -> dict[int, int]:
    rows = await session.exec(select(DataKeyRow.kek_version, func.count()).group_by(col(DataKeyRow.kek_version)))
    return {int(version): int(count) for version, count in rows.all()}

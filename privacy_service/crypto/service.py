"""Per-subject data keys: create, load, shred. Runs inside the caller's transaction."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import TypeVar, cast

from sqlalchemy import and_, bindparam, delete, func
from sqlalchemy import inspect as sa_inspect
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from privacy_service.clock import Clock
from privacy_service.crypto.fields import BlindIndexer, DataKey
from privacy_service.crypto.keys import KeyProvider, WrappedKey
from privacy_service.crypto.models import DataKeyRow
from privacy_service.db import append_row, carry_appended_rows

PRIMARY = "primary"
RETENTION = "retention"
REQUEST = "request"

RowT = TypeVar("RowT", bound=SQLModel)

# Hot-path statements are built once, with bind parameters: building a statement and computing its
# cache key costs the service more than PostgreSQL takes to run it (make bench, figure "read").
_KEY_ROW = select(DataKeyRow).where(
    col(DataKeyRow.subject_id) == bindparam("subject_id"), col(DataKeyRow.purpose) == bindparam("purpose")
)


@functools.cache
def _with_key_row(entity: type[SQLModel]) -> Select[SQLModel, DataKeyRow]:
    """Rows of ``entity`` by primary key (the subject id), each with that subject's key row or NULLs.

    Built once per entity, so queued rows (an audited read's event) can ride on it.
    """
    (id_column,) = sa_inspect(entity).primary_key
    key_matches = and_(
        col(DataKeyRow.subject_id) == bindparam("subject_id"), col(DataKeyRow.purpose) == bindparam("purpose")
    )
    return select(entity, DataKeyRow).outerjoin(DataKeyRow, key_matches).where(id_column == bindparam("subject_id"))


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
        append_row(
            session,
            DataKeyRow,
            {
                "id": key.key_id,
                "subject_id": subject_id,
                "purpose": purpose,
                "kek_version": wrapped.kek_version,
                "wrapped": wrapped.blob,
                "created_at": self.clock.now(),
            },
        )
        return key

    async def load_key(self, session: AsyncSession, subject_id: uuid.UUID, purpose: str = PRIMARY) -> DataKey:
        found = await session.exec(_KEY_ROW, params={"subject_id": subject_id, "purpose": purpose})
        return await self.unwrap_row(found.one_or_none(), subject_id, purpose)

    async def get_with_key_row(
        self, session: AsyncSession, entity: type[RowT], subject_id: uuid.UUID, purpose: str = PRIMARY
    ) -> tuple[RowT | None, DataKeyRow | None]:
        """``session.get(entity, subject_id)`` and the subject's key row, in one query instead of two.

        ``entity`` is a table whose primary key is the subject id; either part may be ``None``.
        Pass the key row to :meth:`unwrap_row`. A separate :meth:`load_key` round trip was the
        largest cost of an encrypted read (``make bench``, figure "read").
        """
        # Rows the transaction queued (an audit event) go in the same statement on PostgreSQL.
        query, params = carry_appended_rows(
            session, _with_key_row(entity), {"subject_id": subject_id, "purpose": purpose}
        )
        found = (await session.exec(query, params=params)).one_or_none()
        if found is None:
            return None, None
        row, key_row = found
        return cast(RowT, row), key_row

    async def unwrap_row(self, row: DataKeyRow | None, subject_id: uuid.UUID, purpose: str = PRIMARY) -> DataKey:
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

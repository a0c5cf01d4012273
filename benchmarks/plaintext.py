"""A plaintext stand-in for :class:`privacy_service.crypto.service.KeyService`.

The baseline of the vault figures: :class:`~privacy_service.subjects.service.SubjectService`
runs unchanged, but "sealing" returns the bytes as they are, lookups index the normalised value
itself, and no key rows are written or read. Whatever the real path costs beyond this is the
price of encryption (AEAD, per-subject keys and their rows, blind-index HMACs).
Never use it outside benchmarks.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TypeVar

from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.crypto.fields import Binding
from privacy_service.crypto.service import PRIMARY

_NO_KEY_ID = uuid.UUID(int=0)
RowT = TypeVar("RowT", bound=SQLModel)


class PlaintextKey:
    """Has a DataKey's interface; ``seal`` and ``open`` return their input unchanged."""

    __slots__ = ()

    key_id = _NO_KEY_ID

    def seal(self, plaintext: bytes, binding: Binding) -> bytes:
        return plaintext

    def open(self, blob: bytes, binding: Binding) -> bytes:
        return blob


class PlaintextIndexer:
    """Has a BlindIndexer's interface; the "index" is the normalised value itself."""

    def index(self, kind: str, normalised: str) -> bytes:
        return normalised.encode()


_KEY = PlaintextKey()


@dataclass(slots=True)
class PlaintextKeyService:
    """KeyService's interface (create_key, load_key, shred, indexer, ...) without keys or key rows."""

    indexer: PlaintextIndexer = field(default_factory=PlaintextIndexer)

    async def create_key(self, session: AsyncSession, subject_id: uuid.UUID, purpose: str = PRIMARY) -> PlaintextKey:
        return _KEY

    async def load_key(self, session: AsyncSession, subject_id: uuid.UUID, purpose: str = PRIMARY) -> PlaintextKey:
        return _KEY

    async def get_with_key_row(
        self, session: AsyncSession, entity: type[RowT], subject_id: uuid.UUID, purpose: str = PRIMARY
    ) -> tuple[RowT | None, None]:
        # What a plaintext store does: fetch the row by primary key, with no key row to join.
        return await session.get(entity, subject_id), None

    async def unwrap_row(self, row: object, subject_id: uuid.UUID, purpose: str = PRIMARY) -> PlaintextKey:
        return _KEY

    async def shred(self, session: AsyncSession, subject_id: uuid.UUID, purpose: str | None = None) -> int:
        return 0

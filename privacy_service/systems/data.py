"""Access data returned by systems: sealed under the subject's own key, read back for the export."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.crypto.fields import Binding, DataKey
from privacy_service.crypto.service import KeyService
from privacy_service.db import Database
from privacy_service.systems.models import DownstreamSystem, SystemData

TABLE = "system_data"


def data_binding(subject_id: uuid.UUID, row_id: uuid.UUID) -> Binding:
    return Binding(TABLE, subject_id, row_id, "data")


def store(
    session: AsyncSession,
    key: DataKey,
    *,
    request_id: uuid.UUID,
    delivery_id: uuid.UUID,
    system_id: uuid.UUID,
    subject_id: uuid.UUID,
    data: dict[str, Any] | list[Any],
    now: datetime,
) -> uuid.UUID:
    row_id = uuid.uuid4()
    session.add(
        SystemData(
            id=row_id,
            request_id=request_id,
            delivery_id=delivery_id,
            system_id=system_id,
            subject_id=subject_id,
            data_ct=key.seal(msgspec.json.encode(data), data_binding(subject_id, row_id)),
            received_at=now,
        )
    )
    return row_id


async def for_export(
    db: Database, keys: KeyService, request_id: uuid.UUID, subject_id: uuid.UUID
) -> list[dict[str, Any]]:
    """What each system returned for this request, labelled by system, oldest first."""
    async with db.transaction() as session:
        rows = (
            await session.exec(
                select(SystemData, DownstreamSystem.name)
                .join(DownstreamSystem, col(SystemData.system_id) == col(DownstreamSystem.id))
                .where(col(SystemData.request_id) == request_id, col(SystemData.subject_id) == subject_id)
                .order_by(col(SystemData.received_at), col(SystemData.id))
            )
        ).all()
        if not rows:
            return []
        key = await keys.load_key(session, subject_id)
    return [
        {
            "system": name,
            "received_at": row.received_at.isoformat(),
            "data": msgspec.json.decode(key.open(row.data_ct, data_binding(subject_id, row.id))),
        }
        for row, name in rows
    ]

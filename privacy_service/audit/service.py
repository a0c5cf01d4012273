"""Writing audit events inside the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit.models import AuditEvent


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: an operator (by id), a data subject, or the system itself."""

    type: str
    id: str

    @classmethod
    def system(cls, job: str = "system") -> Actor:
        return cls("system", job)


def record(
    session: AsyncSession,
    *,
    at: datetime,
    actor: Actor,
    action: str,
    subject_id: uuid.UUID | None = None,
    request_id: str | None = None,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an event to the current unit of work. ``detail`` must never hold PII."""
    session.add(
        AuditEvent(
            at=at,
            actor_type=actor.type,
            actor_id=actor.id,
            action=action,
            subject_id=subject_id,
            request_id=request_id,
            outcome=outcome,
            detail=detail or {},
        )
    )

"""API bodies for the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec


class AuditEventOut(msgspec.Struct):
    seq: int | None
    at: datetime
    actor_type: str
    actor_id: str
    action: str
    subject_id: uuid.UUID | None
    outcome: str
    request_id: str | None
    detail: dict[str, Any]
    hash: str | None


class AuditPage(msgspec.Struct):
    items: list[AuditEventOut]
    next_cursor: int | None

"""Queue a message in the caller's transaction; it leaves the process only after commit."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.crypto.fields import Binding, DataKey
from privacy_service.db import append_row
from privacy_service.notify.models import OutboxMessage
from privacy_service.notify.templates import render

OUTBOX = "outbox_messages"


def payload_binding(owner_id: uuid.UUID, message_id: uuid.UUID) -> Binding:
    return Binding(OUTBOX, owner_id, message_id, "payload")


def enqueue(
    session: AsyncSession,
    *,
    template: str,
    language: str,
    to: str | None,
    now: datetime,
    key: DataKey | None = None,
    owner_id: uuid.UUID | None = None,
    recipient: str | None = None,
    **context: Any,
) -> uuid.UUID:
    """Render and store a message. With ``key`` (the owner's), the payload is sealed at rest.

    Either ``to`` or ``recipient``: a rule of :mod:`notify.recipients` that finds the address when
    the message is delivered (the same work at queue time whoever it turns out to reach).
    """
    if (to is None) == (recipient is None):
        raise ValueError("give either an address or a recipient rule")
    subject, body = render(template, language, **context)
    message_id = uuid.uuid4()
    payload = msgspec.json.encode({"to": to, "recipient": recipient, "subject": subject, "body": body})
    if key is not None:
        if owner_id is None:
            raise ValueError("a sealed message needs its owner id")
        payload = key.seal(payload, payload_binding(owner_id, message_id))
    append_row(
        session,
        OutboxMessage,
        {
            "id": message_id,
            "template": template,
            "owner_id": owner_id if key is not None else None,
            "payload": payload,
            "next_attempt_at": now,
            "created_at": now,
        },
    )
    return message_id

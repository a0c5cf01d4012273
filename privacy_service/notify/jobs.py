"""Outbox delivery: claim due messages with a lease, send after the claim commits, record the outcome.

At-least-once: a process that dies between sending and recording leaves the lease to expire and the
message is sent again, with the same ``Message-ID`` (from the row id), so receivers can drop the
copy. Retries back off exponentially with jitter; after ``max_attempts`` the message is
dead-lettered (payload wiped, an audit event and an error log raised for operators). A message
that can never go out (its owner's key shredded, or a non-ASCII address and a server without
SMTPUTF8) is dead-lettered at once.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import timedelta

import msgspec
import structlog
from sqlmodel import col, or_, select

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.clock import Clock
from privacy_service.crypto.fields import DecryptionFailed
from privacy_service.crypto.service import REQUEST, KeyService, KeyShredded
from privacy_service.db import Database
from privacy_service.notify.mailer import Mail, Mailer, MailError
from privacy_service.notify.models import OutboxMessage
from privacy_service.notify.recipients import NoRecipient, resolve
from privacy_service.notify.service import payload_binding

log = structlog.get_logger("privacy_service.notify")
LEASE = timedelta(minutes=2)
DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    sent: int = 0
    retried: int = 0
    dead: int = 0
    dropped: int = 0  # no recipient when delivered (see notify.recipients): never sent, not retried


def backoff(attempts: int, base_seconds: float = 30.0, cap_seconds: float = 6 * 3600) -> timedelta:
    delay = min(cap_seconds, base_seconds * (2 ** max(0, attempts - 1)))
    return timedelta(seconds=delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not crypto


async def _claim(db: Database, clock: Clock, batch: int) -> list[uuid.UUID]:
    now = clock.now()
    async with db.transaction() as session:
        query = (
            select(OutboxMessage)
            .where(
                or_(col(OutboxMessage.status) == "pending", col(OutboxMessage.status) == "sending"),
                col(OutboxMessage.next_attempt_at) <= now,
            )
            .order_by(col(OutboxMessage.next_attempt_at))
            .limit(batch)
        )
        if not db.settings.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        rows = (await session.exec(query)).all()
        for row in rows:
            row.status, row.next_attempt_at = "sending", now + LEASE
            session.add(row)
        return [row.id for row in rows]


async def _open(keys: KeyService, db: Database, message: OutboxMessage) -> Mail:
    raw = message.payload or b""
    if message.owner_id is not None:
        async with db.transaction() as session:
            key = await keys.load_key(session, message.owner_id, REQUEST)
        raw = key.open(raw, payload_binding(message.owner_id, message.id))
    data = msgspec.json.decode(raw)
    to = data["to"]
    if to is None:
        to = await resolve(db, keys, str(data.get("recipient")), message.owner_id)
    return Mail(to=to, subject=data["subject"], body=data["body"], outbox_id=message.id)


async def deliver_pending(
    db: Database, keys: KeyService, mailer: Mailer, clock: Clock, *, batch: int = 50, max_attempts: int = 8
) -> DeliveryResult:
    sent = retried = dead = dropped = 0
    for message_id in await _claim(db, clock, batch):
        async with db.transaction() as session:
            message = await session.get(OutboxMessage, message_id)
        if message is None or message.status != "sending":
            continue
        error: str | None = None
        permanent = False
        try:
            await mailer.send(await _open(keys, db, message))
        except MailError as exc:
            error, permanent = str(exc), exc.permanent
        except (KeyShredded, DecryptionFailed) as exc:
            # The owner was erased or the payload is damaged: this message can never be sent.
            error, permanent = type(exc).__name__, True
        except NoRecipient:
            error = DROPPED  # nobody to write to (an unknown phone): expected, not a failure
        async with db.transaction() as session:
            message = await session.get(OutboxMessage, message_id)
            if message is None:
                continue
            now = clock.now()
            if error == DROPPED:
                message.status, message.payload = DROPPED, None
                dropped += 1
            elif error is None:
                message.status, message.sent_at, message.payload = "sent", now, None
                sent += 1
            else:
                message.attempts += 1
                message.last_error = error[:100]
                if permanent or message.attempts >= max_attempts:
                    message.status, message.payload = "dead", None
                    dead += 1
                    log.error(
                        "outbox_dead_letter", message_id=str(message.id), template=message.template, reason=error[:100]
                    )
                    audit.record(
                        session,
                        at=now,
                        actor=Actor.system("outbox"),
                        action="outbox.dead_letter",
                        outcome="failed",
                        detail={"message_id": str(message.id), "template": message.template},
                    )
                else:
                    message.status, message.next_attempt_at = "pending", now + backoff(message.attempts)
                    retried += 1
            session.add(message)
    return DeliveryResult(sent, retried, dead, dropped)

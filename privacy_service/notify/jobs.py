"""Outbox delivery: claim a batch with a lease, send it over one SMTP connection, record it in one go.

A run works in lanes (``concurrency``, PRIVACY_OUTBOX_CONCURRENCY): each claims up to ``batch`` due
messages in one statement (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so lanes, API processes and
workers never claim the same row; on SQLite the single ``UPDATE ... RETURNING`` runs under the
database's write lock, which does the same), sends them over one connection, records every outcome
of the batch in one transaction, and claims again until nothing is due. A claim sets the row's
``next_attempt_at`` to the end of its lease; the outcome is written only while that lease is still
the row's, so a lane that overran its lease never overwrites the run that took the row over.

At-least-once: a process killed between sending and recording leaves the lease to expire and the
message is sent again, with the same ``Message-ID`` (from the row id), so receivers can drop the
copy. A lane stopped by an error or a cancellation (not a kill) records what it sent before it stops.
Retries back off exponentially with jitter; after ``max_attempts`` the message is dead-lettered
(payload wiped, an audit event and an error log raised for operators). A message that can never go
out (its owner's key shredded, or a non-ASCII address and a server without SMTPUTF8) is
dead-lettered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from sqlalchemy import Table, bindparam, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.clock import Clock
from privacy_service.crypto.fields import DataKey, DecryptionFailed
from privacy_service.crypto.models import DataKeyRow
from privacy_service.crypto.service import REQUEST, KeyService, KeyShredded
from privacy_service.db import Database, UTCDateTime
from privacy_service.notify.mailer import Mail, MailConnection, Mailer, MailError
from privacy_service.notify.models import OutboxMessage
from privacy_service.notify.recipients import NoRecipient, resolve
from privacy_service.notify.service import payload_binding

if TYPE_CHECKING:
    from privacy_service.runtime import Runtime

log = structlog.get_logger("privacy_service.notify")
LEASE = timedelta(minutes=2)
DROPPED = "dropped"
SENT = "sent"
_OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    sent: int = 0
    retried: int = 0
    dead: int = 0
    dropped: int = 0  # no recipient when delivered (see notify.recipients): never sent, not retried

    def __add__(self, other: DeliveryResult) -> DeliveryResult:
        return DeliveryResult(
            self.sent + other.sent,
            self.retried + other.retried,
            self.dead + other.dead,
            self.dropped + other.dropped,
        )


def backoff(attempts: int, base_seconds: float = 30.0, cap_seconds: float = 6 * 3600) -> timedelta:
    delay = min(cap_seconds, base_seconds * (2 ** max(0, attempts - 1)))
    return timedelta(seconds=delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not crypto


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: uuid.UUID
    template: str
    owner_id: uuid.UUID | None
    payload: bytes | None
    attempts: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class _Outcome:
    message: _Claimed
    status: str  # SENT, DROPPED, or "failed"
    error: str | None = None
    permanent: bool = False


# Statements are built once (per dialect and batch size): building one costs more than running it.
@functools.cache
def _claim_statement(skip_locked: bool, size: int) -> Any:
    due = (
        select(_OUTBOX.c.id)
        .where(
            _OUTBOX.c.status.in_(("pending", "sending")),
            _OUTBOX.c.next_attempt_at <= bindparam("now", type_=UTCDateTime()),
        )
        .order_by(_OUTBOX.c.next_attempt_at)
        .limit(size)
    )
    if skip_locked:
        due = due.with_for_update(skip_locked=True)
    return (
        update(_OUTBOX)
        .where(_OUTBOX.c.id.in_(due.scalar_subquery()))
        .values(status="sending", next_attempt_at=bindparam("lease", type_=UTCDateTime()))
        .returning(
            _OUTBOX.c.id,
            _OUTBOX.c.template,
            _OUTBOX.c.owner_id,
            _OUTBOX.c.payload,
            _OUTBOX.c.attempts,
            _OUTBOX.c.created_at,
        )
    )


def _still_ours() -> Any:
    return (_OUTBOX.c.status == "sending", _OUTBOX.c.next_attempt_at == bindparam("lease", type_=UTCDateTime()))


_FINISH = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)), *_still_ours())
    .values(status=bindparam("final"), sent_at=bindparam("sent_at", type_=UTCDateTime()), payload=None)
)
_RETRY = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("message_id"), *_still_ours())
    .values(
        status="pending",
        attempts=bindparam("attempts"),
        last_error=bindparam("error"),
        next_attempt_at=bindparam("next_at", type_=UTCDateTime()),
    )
)
_DEAD = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("message_id"), *_still_ours())
    .values(status="dead", attempts=bindparam("attempts"), last_error=bindparam("error"), payload=None)
    .returning(_OUTBOX.c.id)
)


async def _claim(
    db: Database, keys: KeyService, clock: Clock, batch: int, lease_for: timedelta
) -> tuple[datetime, list[_Claimed], dict[uuid.UUID, DataKey]]:
    """Up to ``batch`` due messages, leased to this lane, and their owners' keys (one query each)."""
    now = clock.now()
    lease = now + lease_for
    async with db.transaction() as session:
        connection = await session.connection()
        rows = await connection.execute(
            _claim_statement(not db.settings.is_sqlite, batch), {"now": now, "lease": lease}
        )
        # RETURNING comes in no set order: mail to one person goes out in the order it was queued.
        claimed = sorted((_Claimed(*row) for row in rows.all()), key=lambda message: message.created_at)
        owners = {message.owner_id for message in claimed if message.owner_id is not None}
        key_rows: Sequence[DataKeyRow] = []
        if owners:
            found = await session.exec(
                select(DataKeyRow).where(col(DataKeyRow.subject_id).in_(owners), col(DataKeyRow.purpose) == REQUEST)
            )
            key_rows = found.all()
    opened = {row.subject_id: await keys.unwrap_row(row, row.subject_id, REQUEST) for row in key_rows}
    return lease, claimed, opened


async def _mail(db: Database, keys: KeyService, message: _Claimed, owner_keys: dict[uuid.UUID, DataKey]) -> Mail:
    raw = message.payload or b""
    if message.owner_id is not None:
        key = owner_keys.get(message.owner_id)
        if key is None:
            raise KeyShredded("no request data key for the message's owner")
        raw = key.open(raw, payload_binding(message.owner_id, message.id))
    data = msgspec.json.decode(raw)
    to = data["to"]
    if to is None:
        to = await resolve(db, keys, str(data.get("recipient")), message.owner_id)
    return Mail(to=to, subject=data["subject"], body=data["body"], outbox_id=message.id)


async def _send(
    db: Database,
    keys: KeyService,
    connection: MailConnection,
    message: _Claimed,
    owner_keys: dict[uuid.UUID, DataKey],
) -> _Outcome:
    try:
        await connection.send(await _mail(db, keys, message, owner_keys))
    except MailError as exc:
        return _Outcome(message, "failed", str(exc), exc.permanent)
    except (KeyShredded, DecryptionFailed) as exc:
        # The owner was erased or the payload is damaged: this message can never be sent.
        return _Outcome(message, "failed", type(exc).__name__, permanent=True)
    except NoRecipient:
        return _Outcome(message, DROPPED)  # nobody to write to (an unknown phone): expected, not a failure
    return _Outcome(message, SENT)


async def _record(
    db: Database, clock: Clock, lease: datetime, outcomes: Sequence[_Outcome], max_attempts: int
) -> DeliveryResult:
    """Every outcome of a batch in one transaction: one statement for the sent, one for the dropped.

    Only rows still under this lease change (and count): a run that took a message over owns its outcome.
    """
    if not outcomes:
        return DeliveryResult()
    now = clock.now()
    counts = {SENT: 0, DROPPED: 0, "retried": 0, "dead": 0}
    async with db.transaction() as session:
        connection = await session.connection()
        for final, sent_at in ((SENT, now), (DROPPED, None)):
            ids = [o.message.id for o in outcomes if o.status == final]
            if ids:
                done = await connection.execute(
                    _FINISH, {"ids": ids, "final": final, "sent_at": sent_at, "lease": lease}
                )
                counts[final] = done.rowcount
        for outcome in outcomes:
            if outcome.status != "failed":
                continue
            message, error = outcome.message, (outcome.error or "failed")[:100]
            attempts = message.attempts + 1
            values = {"message_id": message.id, "attempts": attempts, "error": error, "lease": lease}
            if not outcome.permanent and attempts < max_attempts:
                retried = await connection.execute(_RETRY, values | {"next_at": now + backoff(attempts)})
                counts["retried"] += retried.rowcount
                continue
            if (await connection.execute(_DEAD, values)).first() is None:
                continue  # another run holds the message now
            counts["dead"] += 1
            log.error("outbox_dead_letter", message_id=str(message.id), template=message.template, reason=error)
            audit.record(
                session,
                at=now,
                actor=Actor.system("outbox"),
                action="outbox.dead_letter",
                outcome="failed",
                detail={"message_id": str(message.id), "template": message.template},
            )
    return DeliveryResult(counts[SENT], counts["retried"], counts["dead"], counts[DROPPED])


async def _deliver_batch(
    db: Database, keys: KeyService, mailer: Mailer, clock: Clock, *, batch: int, max_attempts: int, lease: timedelta
) -> tuple[int, DeliveryResult]:
    lease_end, claimed, owner_keys = await _claim(db, keys, clock, batch, lease)
    outcomes: list[_Outcome] = []
    try:
        async with mailer.connect() as connection:
            for message in claimed:
                outcomes.append(await _send(db, keys, connection, message, owner_keys))
    except (Exception, asyncio.CancelledError):
        # Stopped, not killed: what already went out is recorded, so only the rest is sent again.
        with contextlib.suppress(SQLAlchemyError, OSError):
            await asyncio.shield(_record(db, clock, lease_end, outcomes, max_attempts))
        raise
    return len(claimed), await _record(db, clock, lease_end, outcomes, max_attempts)


async def deliver_pending(
    db: Database,
    keys: KeyService,
    mailer: Mailer,
    clock: Clock,
    *,
    batch: int = 50,
    max_attempts: int = 8,
    concurrency: int = 1,
    lease: timedelta = LEASE,
) -> DeliveryResult:
    """Send every message due now, in ``concurrency`` lanes of ``batch`` messages per connection.

    ``lease``: how long a claimed batch is this run's; a run killed mid-batch leaves its messages to
    be sent again after it (with the same Message-ID). It must exceed the time a batch takes to send.
    """

    async def one_batch() -> tuple[int, DeliveryResult]:
        return await _deliver_batch(db, keys, mailer, clock, batch=batch, max_attempts=max_attempts, lease=lease)

    # One batch first: a run woken for one message claims once, not once per lane.
    claimed, first = await one_batch()
    totals = [first]

    async def lane() -> None:
        while True:
            claimed, result = await one_batch()
            totals.append(result)
            if claimed < batch:
                return

    if claimed < batch:
        return first  # nothing more is due
    if concurrency <= 1:
        await lane()
    else:
        try:
            # If one lane fails the others stop too (each records what it sent), and the error is raised.
            async with asyncio.TaskGroup() as group:
                for _ in range(concurrency):
                    group.create_task(lane())
        except BaseExceptionGroup as failed:
            raise _first(failed) from None
    return sum(totals[1:], totals[0])


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    cause = group.exceptions[0]
    return _first(cause) if isinstance(cause, BaseExceptionGroup) else cause


async def deliver_mail(runtime: Runtime) -> DeliveryResult:
    settings = runtime.settings
    return await deliver_pending(
        runtime.db,
        runtime.keys,
        runtime.mailer,
        runtime.clock,
        batch=settings.outbox_batch_size,
        max_attempts=settings.outbox_max_attempts,
        concurrency=settings.outbox_concurrency,
        lease=timedelta(seconds=settings.outbox_lease_seconds),
    )


def delivers_in(runtime: Runtime, process: str) -> bool:
    """Does this kind of process (``api`` or ``worker``) send mail (PRIVACY_OUTBOX_DELIVERY)?"""
    return runtime.settings.outbox_delivery in (process, "both")


async def deliver_outbox_forever(runtime: Runtime, kick: asyncio.Event) -> None:
    """The API's sender: right after the transaction that queued mail commits (kicked), else every
    PRIVACY_OUTBOX_INTERVAL_SECONDS. Workers and other API processes claim other rows (see above)."""
    settings = runtime.settings
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(kick.wait(), timeout=settings.outbox_interval_seconds)
        kick.clear()
        try:
            await deliver_mail(runtime)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("outbox_delivery_failed", error=type(exc).__name__)

"""Outbox delivery: claim a batch with a lease, send it over one SMTP connection, record it in one go.

A run works in lanes (``concurrency``, PRIVACY_OUTBOX_CONCURRENCY): each claims up to ``batch`` due
messages in one statement (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so lanes, API processes and
workers never claim the same row; on SQLite the single ``UPDATE ... RETURNING`` runs under the
database's write lock, which does the same), sends them over one connection, records every outcome
of the batch in one transaction, and claims again until nothing is due. A claim sets the row's
``next_attempt_at`` to the end of its lease; the outcome is written only while that lease is still
the row's, so a lane that overran its lease never overwrites the run that took the row over.

A lane sends only within its lease: it starts a message only if, taking as long as the slowest
one of its batch so far, it would be out by three quarters of the lease (``SEND_SHARE``); it cuts off
a message still going out at nine tenths (``CUT_OFF_SHARE``: recorded as a failed attempt, retried
with backoff, as it may have reached the relay), and records the batch before closing the
connection. The messages it did not get to are released (due again at once, no attempt counted), so
a slow relay makes batches shorter and no message is sent by two live lanes. The last tenth is for
recording, and for clocks that differ a little between hosts.

At-least-once: a process killed between sending and recording leaves the lease to expire and the
message is sent again, with the same ``Message-ID`` (from the row id), so receivers can drop the
copy. A lane stopped by an error or a cancellation (not a kill) records what it sent before it stops.
Retries back off exponentially with jitter; after ``max_attempts`` the message is dead-lettered
(payload wiped, an audit event and an error log raised for operators). A message that can never go
out (its owner's key shredded, or a non-ASCII address and a server without SMTPUTF8) is
dead-lettered at once. A message that cannot be opened or read (its data key fails to unwrap, a
payload that does not decode) fails alone, like a refused one: retried with backoff, then dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
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
SEND_SHARE = 0.75  # of a lease: messages are started to be out by then
CUT_OFF_SHARE = 0.9  # of a lease: a message still going out is cut off; the rest is for recording
LEASE_DEADLINE = "lease_deadline: the message was still going out when the lane's sending time ended"
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


class Unreadable(Exception):
    """A claimed message that cannot be opened or decoded. The reason names only the kind of error
    (an exception's text could quote the payload)."""


@dataclass(frozen=True, slots=True)
class _Keys:
    """The owners' data keys of a claimed batch, and why those that failed to unwrap did."""

    opened: dict[uuid.UUID, DataKey]
    failed: dict[uuid.UUID, str]


@dataclass(frozen=True, slots=True)
class _Batch:
    claimed: int
    more: bool  # more may be due now: a full batch, or messages released at the lease deadline
    result: DeliveryResult


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
_RELEASE = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)), *_still_ours())
    .values(status="pending", next_attempt_at=bindparam("now", type_=UTCDateTime()))
)
_DEAD = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("message_id"), *_still_ours())
    .values(status="dead", attempts=bindparam("attempts"), last_error=bindparam("error"), payload=None)
    .returning(_OUTBOX.c.id)
)


async def _claim(
    db: Database, keys: KeyService, clock: Clock, batch: int, lease_for: timedelta
) -> tuple[datetime, list[_Claimed], _Keys]:
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
    owner_keys = _Keys({}, {})
    for row in key_rows:
        try:
            owner_keys.opened[row.subject_id] = await keys.unwrap_row(row, row.subject_id, REQUEST)
        except Exception as exc:  # one owner's key must not hold up the batch: its messages fail alone
            owner_keys.failed[row.subject_id] = type(exc).__name__
    return lease, claimed, owner_keys


class _Payload(msgspec.Struct):
    to: str | None
    subject: str
    body: str
    recipient: str | None = None


_decode_payload = msgspec.json.Decoder(_Payload).decode


async def _mail(db: Database, keys: KeyService, message: _Claimed, owner_keys: _Keys) -> Mail:
    raw = message.payload or b""
    if message.owner_id is not None:
        key = owner_keys.opened.get(message.owner_id)
        if key is None:
            failed = owner_keys.failed.get(message.owner_id)
            if failed is None:
                raise KeyShredded("no request data key for the message's owner")
            raise Unreadable(f"data key: {failed}")
        raw = key.open(raw, payload_binding(message.owner_id, message.id))
    try:
        data = _decode_payload(raw)
    except msgspec.DecodeError:  # the message (validation errors included) would quote the payload
        raise Unreadable("payload does not decode") from None
    to = data.to
    if to is None:
        to = await resolve(db, keys, str(data.recipient), message.owner_id)
    return Mail(to=to, subject=data.subject, body=data.body, outbox_id=message.id)


async def _send(
    db: Database,
    keys: KeyService,
    connection: MailConnection,
    message: _Claimed,
    owner_keys: _Keys,
) -> _Outcome:
    """One message's outcome. Whatever goes wrong with it stays with it: the batch goes on."""
    try:
        await connection.send(await _mail(db, keys, message, owner_keys))
    except MailError as exc:
        return _Outcome(message, "failed", str(exc), exc.permanent)
    except (KeyShredded, DecryptionFailed) as exc:
        # The owner was erased or the payload is damaged: this message can never be sent.
        return _Outcome(message, "failed", type(exc).__name__, permanent=True)
    except NoRecipient:
        return _Outcome(message, DROPPED)  # nobody to write to (an unknown phone): expected, not a failure
    except Unreadable as exc:
        return _unsendable(message, f"unreadable: {exc}")
    except Exception as exc:  # e.g. a header the mail library refuses: this message only
        return _unsendable(message, f"unsendable: {type(exc).__name__}")
    return _Outcome(message, SENT)


def _unsendable(message: _Claimed, reason: str) -> _Outcome:
    """A failure no transport caused: logged (kind only, no PII) and retried like a refused message, so
    a message that never opens is dead-lettered after the last attempt instead of stalling its batch."""
    log.warning("outbox_message_unsendable", message_id=str(message.id), template=message.template, reason=reason)
    return _Outcome(message, "failed", reason)


async def _record(
    db: Database,
    clock: Clock,
    lease: datetime,
    outcomes: Sequence[_Outcome],
    released: Sequence[_Claimed],
    max_attempts: int,
) -> DeliveryResult:
    """Every outcome of a batch in one transaction: one statement for the sent, one for the dropped, one
    for the ``released`` (not sent: due again now, no attempt counted).

    Only rows still under this lease change (and count): a run that took a message over owns its outcome.
    """
    if not outcomes and not released:
        return DeliveryResult()
    now = clock.now()
    counts = {SENT: 0, DROPPED: 0, "retried": 0, "dead": 0}
    async with db.transaction() as session:
        connection = await session.connection()
        if released:
            await connection.execute(_RELEASE, {"ids": [m.id for m in released], "now": now, "lease": lease})
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
) -> _Batch:
    lease_end, claimed, owner_keys = await _claim(db, keys, clock, batch, lease)
    send_until, cut_off = lease_end - lease * (1 - SEND_SHARE), lease_end - lease * (1 - CUT_OFF_SHARE)
    outcomes: list[_Outcome] = []
    started = 0  # messages handed to the connection (the last may be in flight when a lane is stopped)
    slowest = 0.0  # seconds, the slowest message of this batch so far
    result: DeliveryResult | None = None
    try:
        async with mailer.connect() as connection:
            for message in claimed:
                now = clock.now()
                if (send_until - now).total_seconds() <= slowest:
                    break
                started += 1
                began = time.monotonic()
                try:
                    async with asyncio.timeout((cut_off - now).total_seconds()):
                        outcomes.append(await _send(db, keys, connection, message, owner_keys))
                except TimeoutError:
                    # It may have reached the relay: an attempt, retried after a backoff, not released.
                    outcomes.append(_Outcome(message, "failed", LEASE_DEADLINE))
                    break
                slowest = max(slowest, time.monotonic() - began)
            # Recorded before the connection closes: a slow QUIT cannot carry the record past the lease.
            result = await _record(db, clock, lease_end, outcomes, claimed[started:], max_attempts)
    except (Exception, asyncio.CancelledError):
        # Stopped, not killed: what already went out is recorded and what was not started is released,
        # so only a message in flight waits out the lease.
        if result is None:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await asyncio.shield(_record(db, clock, lease_end, outcomes, claimed[started:], max_attempts))
        raise
    # More is due if the batch was full or cut short, unless the lane ran out of time before its first
    # message (claiming again at once would only repeat that).
    more = started > 0 and (len(claimed) >= batch or started < len(claimed))
    return _Batch(len(claimed), more, result)


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
    be sent again after it (with the same Message-ID). A lane sends for ``SEND_SHARE`` of it and
    releases the rest of its batch, so a batch that takes longer is cut short, not sent twice.
    """

    async def one_batch() -> _Batch:
        return await _deliver_batch(db, keys, mailer, clock, batch=batch, max_attempts=max_attempts, lease=lease)

    # One batch first: a run woken for one message claims once, not once per lane.
    first = await one_batch()
    totals = [first.result]

    async def lane() -> None:
        while True:
            done = await one_batch()
            totals.append(done.result)
            if not done.more:
                return

    if not first.more:
        return first.result  # nothing more is due
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
        except Exception as exc:  # the API's only sender must outlive any one run's failure
            # The kind only: an exception's text could quote an address or a payload.
            log.warning("outbox_delivery_failed", error=type(exc).__name__)

"""The audit trail: record events in the caller's transaction, seal them into a hash chain, verify.

Why sealing is a separate step: giving each event a gap-free sequence number and its predecessor's
hash at write time would make every transaction in the system queue on one row lock until commit,
and add three round trips to every audited read. Instead an event is inserted (one round trip, same
transaction, so it is durable exactly when the action is) and the chainer, single-flight and in
commit order, assigns ``seq``, ``prev_hash`` and ``hash`` moments later. Verification covers every
sealed event; ``audit verify`` seals pending ones first and reports any it could not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from privacy_service.clock import Clock
from privacy_service.db import Database, append_row
from privacy_service.security import constant_time_equals

GENESIS = bytes(32)
_CHECKPOINT_CONTEXT = b"privacy-service/audit-checkpoint/v1|"
# pg_advisory_xact_lock key: any constant unique to "audit chainer".
_CHAINER_LOCK = 0x5053_4155_4449_5401


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: an operator (by id), a data subject (by request id), or the system itself."""

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
    append_row(
        session,
        AuditEvent,
        {
            "at": at,
            "actor_type": actor.type,
            "actor_id": actor.id,
            "action": action,
            "subject_id": subject_id,
            "request_id": request_id,
            "outcome": outcome,
            "detail": detail or {},
        },
    )


class AuditSink(Protocol):
    """Where a service sends its audit events: :func:`record`, except in a benchmark's baseline."""

    def __call__(
        self,
        session: AsyncSession,
        *,
        at: datetime,
        actor: Actor,
        action: str,
        subject_id: uuid.UUID | None = None,
        request_id: str | None = None,
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> None: ...


def event_digest(prev_hash: bytes, event: AuditEvent) -> bytes:
    """SHA-256 over the predecessor's hash and the event's canonical content."""
    content = {
        "seq": event.seq,
        "at": event.at.isoformat(timespec="microseconds"),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "action": event.action,
        "subject_id": str(event.subject_id) if event.subject_id else None,
        "outcome": event.outcome,
        "request_id": event.request_id,
        "detail": event.detail,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(prev_hash + canonical).digest()


def checkpoint_mac(key: bytes, seq: int, chain_hash: bytes) -> bytes:
    return hmac.new(key, _CHECKPOINT_CONTEXT + struct.pack(">Q", seq) + chain_hash, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class SealResult:
    sealed: int
    head_seq: int
    checkpoint: int | None


async def seal_pending(
    db: Database,
    clock: Clock,
    audit_key: bytes,
    *,
    batch_size: int = 1000,
    checkpoint_every: int = 1000,
) -> SealResult:
    """Link unsealed events into the chain, in batches; single-flight across processes."""
    sealed = 0
    checkpoint: int | None = None
    head_seq = 0
    while True:
        async with db.transaction() as session:
            if not db.settings.is_sqlite:
                # Another chainer holds it: it will seal our events too.
                locked = (
                    await session.exec(text("SELECT pg_try_advisory_xact_lock(:k)").bindparams(k=_CHAINER_LOCK))  # type: ignore[call-overload]
                ).scalar_one()
                if not locked:
                    break
            head = (await session.exec(select(AuditHead).where(AuditHead.id == 1).with_for_update())).one()
            pending = (
                await session.exec(
                    select(AuditEvent)
                    .where(col(AuditEvent.seq).is_(None))
                    .order_by(col(AuditEvent.id))
                    .limit(batch_size)
                )
            ).all()
            head_seq = head.seq
            if not pending:
                break
            prev, seq = head.hash, head.seq
            for event in pending:
                seq += 1
                event.seq, event.prev_hash = seq, prev
                event.hash = prev = event_digest(prev, event)
                session.add(event)
            if seq // checkpoint_every > head.seq // checkpoint_every:
                session.add(
                    AuditCheckpoint(
                        seq=seq, hash=prev, mac=checkpoint_mac(audit_key, seq, prev), created_at=clock.now()
                    )
                )
                checkpoint = seq
            head.seq, head.hash = seq, prev
            session.add(head)
            head_seq = seq
            sealed += len(pending)
        if len(pending) < batch_size:
            break
    return SealResult(sealed, head_seq, checkpoint)


async def write_checkpoint(db: Database, clock: Clock, audit_key: bytes) -> int | None:
    """Sign the current head now (e.g. at the end of a purge run or on demand)."""
    async with db.transaction() as session:
        head = (await session.exec(select(AuditHead).where(AuditHead.id == 1))).one()
        if head.seq == 0:
            return None
        exists = await session.get(AuditCheckpoint, head.seq)
        if exists is None:
            session.add(
                AuditCheckpoint(
                    seq=head.seq,
                    hash=head.hash,
                    mac=checkpoint_mac(audit_key, head.seq, head.hash),
                    created_at=clock.now(),
                )
            )
        return head.seq


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    checked: int
    start_seq: int
    head_seq: int
    pending: int
    broken_seq: int | None = None
    broken_id: int | None = None
    problem: str | None = None


async def _events_from(db: Database, after_seq: int, batch: int = 2000) -> AsyncIterator[AuditEvent]:
    last = after_seq
    while True:
        async with db.transaction() as session:
            rows = (
                await session.exec(
                    select(AuditEvent).where(col(AuditEvent.seq) > last).order_by(col(AuditEvent.seq)).limit(batch)
                )
            ).all()
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        last = rows[-1].seq or last


async def verify_chain(db: Database, audit_key: bytes, *, from_checkpoint: bool = False) -> Verification:
    """Recompute the chain; report the first edited, deleted, inserted or reordered entry."""
    start_seq, prev = 0, GENESIS
    async with db.transaction() as session:
        head = (await session.exec(select(AuditHead).where(AuditHead.id == 1))).one()
        pending = int((await session.exec(select(func.count()).where(col(AuditEvent.seq).is_(None)))).one())
        checkpoints = (await session.exec(select(AuditCheckpoint).order_by(col(AuditCheckpoint.seq).desc()))).all()
        if from_checkpoint:
            for candidate in checkpoints:
                if constant_time_equals(candidate.mac, checkpoint_mac(audit_key, candidate.seq, candidate.hash)):
                    start_seq, prev = candidate.seq, candidate.hash
                    break
                return Verification(False, 0, 0, head.seq, pending, candidate.seq, None, "checkpoint signature invalid")
    signed_at = {checkpoint.seq: checkpoint for checkpoint in checkpoints}
    expected, checked = start_seq, 0
    async for event in _events_from(db, start_seq):
        expected += 1
        if event.seq != expected:
            return Verification(
                False,
                checked,
                start_seq,
                head.seq,
                pending,
                expected,
                event.id,
                f"entry seq {expected} is missing (next present is {event.seq}): deleted or reordered",
            )
        if event.prev_hash != prev:
            return Verification(
                False,
                checked,
                start_seq,
                head.seq,
                pending,
                event.seq,
                event.id,
                "prev_hash does not match the preceding entry: reordered or inserted",
            )
        if event.hash != event_digest(prev, event):
            return Verification(
                False,
                checked,
                start_seq,
                head.seq,
                pending,
                event.seq,
                event.id,
                "content does not match its hash: edited",
            )
        prev = event.hash
        checked += 1
        signed = signed_at.get(expected)
        if signed is not None and (
            not constant_time_equals(signed.mac, checkpoint_mac(audit_key, signed.seq, signed.hash))
            or signed.hash != prev
        ):
            # The chain alone has no key: whoever can write the table can recompute every hash after an
            # edit. A checkpoint signed with the audit key pins the chain as it was when it was signed.
            return Verification(
                False,
                checked,
                start_seq,
                head.seq,
                pending,
                expected,
                event.id,
                "the chain up to here no longer matches its signed checkpoint: rewritten",
            )
    if expected != head.seq or prev != head.hash:
        return Verification(
            False,
            checked,
            start_seq,
            head.seq,
            pending,
            expected + 1,
            None,
            f"chain ends at seq {expected} but the head says {head.seq}: trailing entries deleted",
        )
    return Verification(True, checked, start_seq, head.seq, pending)

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
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog
from sqlalchemy import func, text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit.checkpoints import CHECKPOINT_EVENT, SignedCheckpoint, checkpoint_mac, head_mac
from privacy_service.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from privacy_service.clock import Clock
from privacy_service.db import Database, append_row
from privacy_service.errors import DomainError
from privacy_service.security import constant_time_equals

GENESIS = bytes(32)
log = structlog.get_logger("privacy_service.audit")
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


def head_is_authentic(head: AuditHead, audit_key: bytes) -> bool:
    """The empty log's head, or one the sealer signed with the audit key."""
    if head.seq == 0 and head.hash == GENESIS:
        return True
    return head.mac is not None and constant_time_equals(head.mac, head_mac(audit_key, head.seq, head.hash))


class AuditHeadInvalid(DomainError):
    status = 409
    slug = "audit-head-invalid"
    title = "The audit chain's head is not signed with the audit key"

    def __init__(self) -> None:
        super().__init__(
            "the audit chain's head does not carry a valid signature (moved back, or the chain rewritten, by "
            "someone without the audit key); nothing was signed: run `privacy-service audit verify`"
        )


# The head this process last refused, so that a forged head is logged once, not at every seal interval.
_refused: dict[str, tuple[int, bytes]] = {}


def _refuse(head: AuditHead) -> None:
    if _refused.get("head") != (head.seq, head.hash):
        _refused["head"] = (head.seq, head.hash)
        log.error("audit_head_signature_invalid", head_seq=head.seq)


@dataclass(frozen=True, slots=True)
class SealResult:
    sealed: int
    head_seq: int
    checkpoint: int | None
    # The head's signature did not verify: nothing was sealed (see seal_pending).
    refused: bool = False


async def seal_pending(
    db: Database,
    clock: Clock,
    audit_key: bytes,
    *,
    batch_size: int = 1000,
    checkpoint_every: int = 1000,
) -> SealResult:
    """Link unsealed events into the chain, in batches; single-flight across processes.

    The sealer extends only a head it can authenticate: re-signing whatever head it found would bless
    a chain someone rewrote in the database. A head that does not verify is logged and left alone
    (events stay pending, durable and unsealed) until a person investigates.
    """
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
            head_seq = head.seq
            if not head_is_authentic(head, audit_key):
                _refuse(head)
                return SealResult(sealed, head_seq, checkpoint, refused=True)
            pending = (
                await session.exec(
                    select(AuditEvent)
                    .where(col(AuditEvent.seq).is_(None))
                    .order_by(col(AuditEvent.id))
                    .limit(batch_size)
                )
            ).all()
            if not pending:
                break
            prev, seq = head.hash, head.seq
            for event in pending:
                seq += 1
                event.seq, event.prev_hash = seq, prev
                event.hash = prev = event_digest(prev, event)
                session.add(event)
            signed: SignedCheckpoint | None = None
            if seq // checkpoint_every > head.seq // checkpoint_every:
                signed = SignedCheckpoint.sign(audit_key, seq, prev, clock.now())
                session.add(AuditCheckpoint(seq=seq, hash=prev, mac=signed.mac, created_at=clock.now()))
                checkpoint = seq
            head.seq, head.hash, head.mac = seq, prev, head_mac(audit_key, seq, prev)
            session.add(head)
            head_seq = seq
            sealed += len(pending)
        if signed is not None:
            # After the commit: a shipped log keeps a copy the database cannot take back.
            log.info(CHECKPOINT_EVENT, **signed.fields())
        if len(pending) < batch_size:
            break
    return SealResult(sealed, head_seq, checkpoint)


async def write_checkpoint(db: Database, clock: Clock, audit_key: bytes) -> SignedCheckpoint | None:
    """Sign the current head now (e.g. at the end of a purge run or on demand); None if the log is empty.

    Raises :class:`AuditHeadInvalid` rather than sign a head the sealer did not sign.
    """
    async with db.transaction() as session:
        head = (await session.exec(select(AuditHead).where(AuditHead.id == 1))).one()
        if head.seq == 0:
            return None
        if not head_is_authentic(head, audit_key):
            _refuse(head)
            raise AuditHeadInvalid
        signed = SignedCheckpoint.sign(audit_key, head.seq, head.hash, clock.now())
        if await session.get(AuditCheckpoint, head.seq) is None:
            session.add(AuditCheckpoint(seq=head.seq, hash=head.hash, mac=signed.mac, created_at=clock.now()))
    log.info(CHECKPOINT_EVENT, **signed.fields())
    return signed


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
    external: int = 0  # external checkpoints the chain was checked against


@asynccontextmanager
async def _snapshot(db: Database) -> AsyncIterator[AsyncSession]:
    """One consistent view of the head and the checkpoints. PostgreSQL's default (READ COMMITTED)
    gives each statement its own: a seal committing between two of them would put a checkpoint
    beyond the head just read. SQLite's transaction (BEGIN IMMEDIATE) is consistent already."""
    async with db.transaction() as session:
        if not db.settings.is_sqlite:
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        yield session


async def _events_between(db: Database, after_seq: int, until_seq: int, batch: int = 2000) -> AsyncIterator[AuditEvent]:
    """Sealed events after ``after_seq`` up to ``until_seq`` (the head seen in the snapshot), in batches.

    The bound keeps verification to one state of the chain while the sealer appends: everything up to
    the head committed with the head, and anything sealed later is past it.
    """
    last = after_seq
    while last < until_seq:
        async with db.transaction() as session:
            rows = (
                await session.exec(
                    select(AuditEvent)
                    .where(col(AuditEvent.seq) > last, col(AuditEvent.seq) <= until_seq)
                    .order_by(col(AuditEvent.seq))
                    .limit(batch)
                )
            ).all()
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        last = rows[-1].seq or last


async def _stored_hashes(db: Database, seqs: Sequence[int]) -> dict[int, bytes | None]:
    async with db.transaction() as session:
        rows = (await session.exec(select(AuditEvent.seq, AuditEvent.hash).where(col(AuditEvent.seq).in_(seqs)))).all()
    return {seq: digest for seq, digest in rows if seq is not None}


async def verify_chain(
    db: Database,
    audit_key: bytes,
    *,
    from_checkpoint: bool = False,
    external: Sequence[SignedCheckpoint] = (),
) -> Verification:
    """Recompute the chain; report the first edited, deleted, inserted or reordered entry, a head that
    was moved or not signed with the audit key, and any checkpoint (in the table, or ``external`` ones
    kept outside the database) that the chain no longer contains."""
    async with _snapshot(db) as session:
        head = (await session.exec(select(AuditHead).where(AuditHead.id == 1))).one()
        pending = int((await session.exec(select(func.count()).where(col(AuditEvent.seq).is_(None)))).one())
        last_sealed = (await session.exec(select(func.max(AuditEvent.seq)))).one()
        checkpoints = (await session.exec(select(AuditCheckpoint).order_by(col(AuditCheckpoint.seq)))).all()
    start_seq, prev, checked = 0, GENESIS, 0

    def broken(seq: int | None, problem: str, event_id: int | None = None) -> Verification:
        return Verification(False, checked, start_seq, head.seq, pending, seq, event_id, problem, len(external))

    pinned: dict[int, bytes] = {}
    for outside in sorted(external, key=lambda item: item.seq):
        if not outside.signed_with(audit_key):
            return broken(outside.seq, f"external checkpoint at seq {outside.seq} is not signed with this audit key")
        if pinned.setdefault(outside.seq, outside.hash) != outside.hash:
            return broken(outside.seq, f"external checkpoints disagree at seq {outside.seq}: the chain was rewritten")
    if from_checkpoint:
        for candidate in reversed(checkpoints):
            if candidate.seq > head.seq:
                continue  # reported below
            if not constant_time_equals(candidate.mac, checkpoint_mac(audit_key, candidate.seq, candidate.hash)):
                return broken(candidate.seq, "checkpoint signature invalid")
            start_seq, prev = candidate.seq, candidate.hash
            break
        # External checkpoints older than the starting point: compare with the stored hashes there.
        earlier = [seq for seq in pinned if seq <= start_seq]
        stored = await _stored_hashes(db, earlier) if earlier else {}
        for seq in earlier:
            if stored.get(seq) != pinned[seq]:
                return broken(seq, f"the chain no longer matches the external checkpoint at seq {seq}: rewritten")
    signed_at = {checkpoint.seq: checkpoint for checkpoint in checkpoints}
    expected = start_seq
    async for event in _events_between(db, start_seq, head.seq):
        expected += 1
        if event.seq != expected:
            return broken(
                expected,
                f"entry seq {expected} is missing (next present is {event.seq}): deleted or reordered",
                event.id,
            )
        if event.prev_hash != prev:
            return broken(event.seq, "prev_hash does not match the preceding entry: reordered or inserted", event.id)
        if event.hash != event_digest(prev, event):
            return broken(event.seq, "content does not match its hash: edited", event.id)
        prev = event.hash
        checked += 1
        signed = signed_at.get(expected)
        if signed is not None and (
            not constant_time_equals(signed.mac, checkpoint_mac(audit_key, signed.seq, signed.hash))
            or signed.hash != prev
        ):
            # The chain alone has no key: whoever can write the table can recompute every hash after an
            # edit. A checkpoint signed with the audit key pins the chain as it was when it was signed.
            return broken(expected, "the chain up to here no longer matches its signed checkpoint: rewritten", event.id)
        if expected in pinned and pinned[expected] != prev:
            return broken(
                expected, f"the chain up to here no longer matches the external checkpoint at seq {expected}: rewritten"
            )
    if expected != head.seq or prev != head.hash:
        return broken(
            expected + 1, f"chain ends at seq {expected} but the head says {head.seq}: trailing entries deleted"
        )
    if last_sealed is not None and last_sealed > head.seq:
        return broken(
            head.seq + 1, f"entries up to seq {last_sealed} lie beyond the head (seq {head.seq}): head moved back"
        )
    beyond = [checkpoint for checkpoint in checkpoints if checkpoint.seq > head.seq]
    if beyond:
        return broken(
            beyond[0].seq,
            f"a checkpoint at seq {beyond[0].seq} lies beyond the head (seq {head.seq}): "
            "entries after the head were deleted and the head moved back",
        )
    if not head_is_authentic(head, audit_key):
        return broken(
            head.seq,
            "the head's signature does not match: the head was moved or the chain rewritten without the audit key",
        )
    outrun = [seq for seq in pinned if seq > head.seq]
    if outrun:
        return broken(
            min(outrun),
            f"the chain ends at seq {head.seq} but an external checkpoint was signed at seq {min(outrun)}: "
            "entries deleted, or the database restored from an older copy",
        )
    return Verification(True, checked, start_seq, head.seq, pending, external=len(external))

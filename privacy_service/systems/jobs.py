"""Webhook delivery: the outbox pattern for downstream systems.

Deliveries are queue rows written in the transaction that moved the request to ``processing``. A
sender claims due rows with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), commits the claim,
signs and POSTs each body after the commit, then records each outcome and a log line as it arrives
(whatever finished meanwhile shares one commit). At-least-once: a sender that dies between POST and
record leaves the lease to expire and the webhook goes again with the same ``Idempotency-Key`` (the
delivery id), which a receiver uses to act once. Failures back off exponentially with jitter
(``notify.jobs.backoff``); after ``max_attempts`` the delivery is dead-lettered with an audit event
and an error log, and keeps its sealed body so an operator can retry it once the receiver is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service import __version__
from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.clock import Clock
from privacy_service.crypto.fields import DataKey, DecryptionFailed
from privacy_service.crypto.service import REQUEST, KeyService, KeyShredded
from privacy_service.db import Database
from privacy_service.notify.jobs import backoff
from privacy_service.opendsr.jobs import queue_results
from privacy_service.runtime import Runtime
from privacy_service.systems.events import emit
from privacy_service.systems.fanout import payload_binding
from privacy_service.systems.flows import QUEUED, DeliveryStatus
from privacy_service.systems.models import Delivery, DeliveryAttempt, DownstreamSystem
from privacy_service.systems.network import PinnedTransport, RefusedDestination, Resolver, SystemResolver
from privacy_service.systems.signing import IDEMPOTENCY_HEADER, sign
from privacy_service.systems.vault import open_secret

log = structlog.get_logger("privacy_service.systems")
# Longer than the longest allowed timeout (60 s): a live sender never loses its claim mid-POST.
LEASE = timedelta(minutes=2)
ACTOR = Actor.system("webhooks")
USER_AGENT = f"privacy-service/{__version__}"


class TransportError(Exception):
    """The POST did not get an HTTP answer; ``outcome`` is its class, never a network detail:
    ``refused_address`` (not a public destination, see ``systems.network``), ``timeout``, ``tls_error``,
    ``network_error`` (no connection, or it broke) or ``unsendable`` (httpx cannot send to the URL)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        """POST and return the status code (the response body is not read)."""
        ...


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class HttpTransport:
    """httpx, one connection pool per delivery run; redirects are not followed (the URL is registered).

    Every connection goes through :class:`PinnedTransport`: to public addresses only (unless
    ``allow_private_networks``), resolved and checked right before connecting.
    """

    def __init__(
        self,
        resolver: Resolver | None = None,
        *,
        allow_private_networks: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        pinned = PinnedTransport(
            resolver or SystemResolver(), allow_private=allow_private_networks, ssl_context=ssl_context
        )
        self._client = httpx.AsyncClient(transport=pinned, follow_redirects=False, trust_env=False)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        try:
            async with self._client.stream(
                "POST", url, content=body, headers=dict(headers), timeout=httpx.Timeout(timeout)
            ) as response:
                return response.status_code
        except RefusedDestination:
            raise TransportError("refused_address") from None
        except httpx.InvalidURL:  # not an httpx.HTTPError; a URL stored before registration refused such forms
            raise TransportError("unsendable") from None
        except httpx.TimeoutException:
            raise TransportError("timeout") from None
        except httpx.HTTPError as exc:
            raise TransportError("tls_error" if _tls_failure(exc) else "network_error") from None

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    delivered: int = 0
    retried: int = 0
    dead: int = 0


@dataclass(frozen=True, slots=True)
class _Job:
    delivery_id: uuid.UUID
    request_id: uuid.UUID
    system_id: uuid.UUID
    system_name: str
    attempt: int
    url: str
    timeout: float
    key_id: str
    secret: bytes | None
    body: bytes | None
    # Set when the body or key cannot be opened (request purged, system key shredded): never sendable.
    unsendable: str | None = None


@dataclass(frozen=True, slots=True)
class _Result:
    outcome: str  # delivered | http_error | refused_address | timeout | tls_error | network_error | unsendable
    status_code: int | None
    duration_ms: float


async def _claim(db: Database, keys: KeyService, clock: Clock, batch: int) -> list[_Job]:
    now = clock.now()
    jobs: list[_Job] = []
    async with db.transaction() as session:
        query = (
            select(Delivery, DownstreamSystem)
            .join(DownstreamSystem, col(Delivery.system_id) == col(DownstreamSystem.id))
            .where(col(Delivery.status).in_([s.value for s in QUEUED]), col(Delivery.next_attempt_at) <= now)
            .order_by(col(Delivery.next_attempt_at))
            .limit(batch)
        )
        if not db.settings.is_sqlite:
            query = query.with_for_update(skip_locked=True, of=Delivery)
        rows = (await session.exec(query)).all()
        secrets: dict[uuid.UUID, bytes | None] = {}
        request_keys: dict[uuid.UUID, DataKey | None] = {}
        for delivery, system in rows:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.SENDING, now + LEASE
            session.add(delivery)
            unsendable: str | None = None
            if system.id not in secrets:
                try:
                    secrets[system.id] = await open_secret(session, keys, system)
                except (KeyShredded, DecryptionFailed):
                    secrets[system.id] = None
            if delivery.request_id not in request_keys:
                try:
                    request_keys[delivery.request_id] = await keys.load_key(session, delivery.request_id, REQUEST)
                except KeyShredded:
                    request_keys[delivery.request_id] = None
            secret, key = secrets[system.id], request_keys[delivery.request_id]
            body: bytes | None = None
            if secret is None:
                unsendable = "system key unavailable"
            elif key is None or delivery.payload is None:
                unsendable = "request data purged"
            else:
                try:
                    body = key.open(delivery.payload, payload_binding(delivery.request_id, delivery.id))
                except DecryptionFailed:
                    unsendable = "payload damaged"
            jobs.append(
                _Job(
                    delivery_id=delivery.id,
                    request_id=delivery.request_id,
                    system_id=system.id,
                    system_name=system.name,
                    attempt=delivery.attempts + 1,
                    url=system.callback_url,
                    timeout=system.timeout_seconds,
                    key_id=system.key_id,
                    secret=secret,
                    body=body,
                    unsendable=unsendable,
                )
            )
    return jobs


async def _send(job: _Job, transport: Transport, clock: Clock) -> _Result:
    if job.unsendable is not None or job.secret is None or job.body is None:
        return _Result("unsendable", None, 0.0)
    headers = {
        **sign(job.secret, job.key_id, job.body, clock.now()),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        IDEMPOTENCY_HEADER: str(job.delivery_id),
    }
    started = time.perf_counter()
    try:
        status = await transport.post(job.url, job.body, headers, job.timeout)
    except TransportError as exc:
        return _Result(exc.outcome, None, (time.perf_counter() - started) * 1000)
    except Exception as exc:  # one system's failure must not stop the others' sends
        # Escaping, it would cancel every send of the batch, and the claim would come back to fail again.
        log.warning("webhook_send_failed", delivery_id=str(job.delivery_id), error=type(exc).__name__)
        return _Result("unsendable", None, (time.perf_counter() - started) * 1000)
    elapsed = (time.perf_counter() - started) * 1000
    return _Result("delivered" if 200 <= status < 300 else "http_error", status, elapsed)


def _apply(
    session: AsyncSession,
    delivery: Delivery | None,
    job: _Job,
    result: _Result,
    now: datetime,
    *,
    max_attempts: int,
    retry_base: float,
) -> str:
    """One attempt's log line and the delivery's new status: delivered | retried | dead | stale."""
    session.add(
        DeliveryAttempt(
            delivery_id=job.delivery_id,
            system_id=job.system_id,
            attempt=job.attempt,
            at=now,
            outcome=result.outcome,
            status_code=result.status_code,
            duration_ms=round(result.duration_ms, 3),
        )
    )
    fields: dict[str, Any] = {
        "delivery_id": str(job.delivery_id),
        "dsr_id": str(job.request_id),
        "system_id": str(job.system_id),
        "system": job.system_name,
        "attempt": job.attempt,
        "status_code": result.status_code,
        "duration_ms": round(result.duration_ms, 1),
    }
    # Answered (a callback proves arrival), cancelled or purged meanwhile: only the log line counts.
    if delivery is None or delivery.status != DeliveryStatus.SENDING:
        return "stale"
    delivery.attempts = job.attempt
    session.add(delivery)
    if result.outcome == "delivered":
        delivery.status, delivery.delivered_at, delivery.payload = DeliveryStatus.DELIVERED, now, None
        delivery.last_error = None
        emit("webhook_delivered", category="privacy.downstream", outcome="success", **fields)
        return "delivered"
    error = job.unsendable or (f"HTTP {result.status_code}" if result.status_code else result.outcome)
    delivery.last_error = error[:100]
    # Unsendable never becomes sendable by waiting: dead at once, for an operator to fix and retry.
    if job.unsendable is not None or result.outcome == "unsendable" or delivery.attempts >= max_attempts:
        delivery.status = DeliveryStatus.DEAD
        audit.record(
            session,
            at=now,
            actor=ACTOR,
            action="systems.delivery.dead_letter",
            outcome="failed",
            detail={**fields, "error": delivery.last_error},
        )
        emit("webhook_dead_letter", category="privacy.downstream", outcome="failure", alert=True, **fields)
        return "dead"
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = now + backoff(delivery.attempts, base_seconds=retry_base)
    emit("webhook_failed", category="privacy.downstream", outcome="failure", error=result.outcome, **fields)
    return "retried"


async def _record(
    db: Database, clock: Clock, done: list[tuple[_Job, _Result]], *, max_attempts: int, retry_base: float
) -> list[str]:
    """Record finished attempts in one transaction (a group commit)."""
    async with db.transaction() as session:
        now = clock.now()
        ids = [job.delivery_id for job, _ in done]
        rows = {d.id: d for d in (await session.exec(select(Delivery).where(col(Delivery.id).in_(ids)))).all()}
        return [
            _apply(
                session, rows.get(job.delivery_id), job, result, now, max_attempts=max_attempts, retry_base=retry_base
            )
            for job, result in done
        ]


async def deliver_webhooks(
    db: Database,
    keys: KeyService,
    clock: Clock,
    *,
    transport: Transport | None = None,
    resolver: Resolver | None = None,
    batch: int = 50,
    max_attempts: int = 8,
    retry_base: float = 30.0,
    concurrency: int = 8,
) -> DeliveryResult:
    """Send every due webhook once (up to ``batch``), ``concurrency`` at a time.

    Outcomes are recorded as they arrive, whatever has finished since the last commit in one
    transaction: a webhook is recorded moments after its answer, without a commit per delivery.
    """
    jobs = await _claim(db, keys, clock, batch)
    if not jobs:
        return DeliveryResult()
    own: HttpTransport | None = None
    if transport is None:
        transport = own = HttpTransport(resolver, allow_private_networks=db.settings.systems_allow_private_networks)
    sender = transport
    limit = asyncio.Semaphore(concurrency)
    finished: asyncio.Queue[tuple[_Job, _Result] | None] = asyncio.Queue()
    outcomes: list[str] = []

    async def run(job: _Job) -> None:
        async with limit:
            finished.put_nowait((job, await _send(job, sender, clock)))

    async def recorder() -> None:
        closing = False
        while not closing:
            first = await finished.get()
            pending = [] if first is None else [first]
            closing = first is None
            while not finished.empty():
                item = finished.get_nowait()
                if item is None:
                    closing = True
                else:
                    pending.append(item)
            if pending:
                outcomes.extend(await _record(db, clock, pending, max_attempts=max_attempts, retry_base=retry_base))

    async def send_all() -> None:
        async with asyncio.TaskGroup() as senders:
            for job in jobs:
                senders.create_task(run(job))
        finished.put_nowait(None)

    try:
        # Task groups: if one task dies, the rest stop too, as a killed process would; whatever was
        # claimed and not recorded is sent again once its lease expires.
        async with asyncio.TaskGroup() as group:
            group.create_task(recorder())
            group.create_task(send_all())
    except BaseExceptionGroup as group:
        raise _first(group) from None
    finally:
        if own is not None:
            await own.aclose()
    return DeliveryResult(outcomes.count("delivered"), outcomes.count("retried"), outcomes.count("dead"))


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    cause = group.exceptions[0]
    return _first(cause) if isinstance(cause, BaseExceptionGroup) else cause


async def deliver_from_runtime(runtime: Runtime) -> DeliveryResult:
    settings = runtime.settings
    await queue_results(runtime)  # answers owed to controller systems become webhooks first
    return await deliver_webhooks(
        runtime.db,
        runtime.keys,
        runtime.clock,
        resolver=runtime.resolver,
        max_attempts=settings.systems_max_attempts,
        retry_base=settings.systems_retry_base_seconds,
        concurrency=settings.systems_delivery_concurrency,
    )


async def deliver_webhooks_forever(runtime: Runtime, kick: asyncio.Event) -> None:
    """The API's sender: right after a commit that queued webhooks (kicked), else periodically.

    The worker runs the same delivery; claims are leased, so the two never send a webhook twice at once.
    """
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(kick.wait(), timeout=runtime.settings.outbox_interval_seconds)
        kick.clear()
        try:
            await deliver_from_runtime(runtime)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("webhook_delivery_failed", error=type(exc).__name__)

"""Downstream systems (issue 10): webhook fan-out throughput, and what the outbox adds to intake.

Fan-out: deliveries queued by real requests (``DsrService.submit_verified`` for customers in the
vault, four registered systems) are drained by ``deliver_webhooks`` — claim with a lease, open the
sealed body, sign, POST, record the outcome and a log line, one transaction each — to a local
receiver in its own process (asyncio, keep-alive, verifies every HMAC signature, answers 202).
Baseline: the same number of pre-signed bodies POSTed to the same receiver through the same httpx
transport and concurrency, with no database: what the queue machinery costs over the wire itself.
Rounds alternate measured/baseline, each over a fresh slice of the queue.

Intake: one ``DsrService.submit_verified`` (the OpenDSR intake: request, key, verification,
processing, the answer) per transaction, for an ``access`` request, for which one system is
registered (so the transaction also reads the identities, seals and queues one webhook), against a
``portability`` request, which runs the same processing with no system registered for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import multiprocessing
import socket
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select

from benchmarks.common import BenchContext, Figure, _env_int, interleaved_latency, percentiles, progress
from privacy_service.audit.service import Actor
from privacy_service.crypto.service import REQUEST
from privacy_service.dsr.service import DsrService
from privacy_service.logging import configure_logging
from privacy_service.runtime import Runtime
from privacy_service.subjects.schemas import SubjectCreate
from privacy_service.subjects.service import SubjectService
from privacy_service.systems.fanout import payload_binding
from privacy_service.systems.jobs import HttpTransport, deliver_webhooks
from privacy_service.systems.models import Delivery
from privacy_service.systems.schemas import SystemCreate
from privacy_service.systems.service import SystemService
from privacy_service.systems.signing import IDEMPOTENCY_HEADER, sign

OPERATOR = Actor("operator", "benchmark")
SYSTEMS = 4
CONCURRENCY = 8
FAR = datetime(2100, 1, 1, tzinfo=UTC)


# -- the receiver (its own process) -------------------------------------------------------------


def _serve_receiver(port: int, keys: dict[str, bytes], ready: Any) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip().decode()
                body = await reader.readexactly(int(headers.get(b"content-length", "0")))
                key = keys.get(headers.get(b"x-privacy-key-id", ""), b"")
                timestamp = headers.get(b"x-privacy-timestamp", "")
                expected = "v1=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
                good = hmac.compare_digest(expected, headers.get(b"x-privacy-signature", ""))
                writer.write(b"HTTP/1.1 202 Accepted\r\n" if good else b"HTTP/1.1 401 Unauthorized\r\n")
                writer.write(b"Content-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=256)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- set-up ---------------------------------------------------------------------------------------


def _dsr(runtime: Runtime, session: Any) -> DsrService:
    return DsrService(
        session, runtime.keys, runtime.policy, runtime.deadlines, runtime.clock, runtime.settings, OPERATOR
    )


def _systems(runtime: Runtime, session: Any) -> SystemService:
    # The receiver listens on 127.0.0.1: a development set-up, as PRIVACY_SYSTEMS_ALLOW_PRIVATE_NETWORKS allows.
    settings = runtime.settings.model_copy(update={"systems_allow_private_networks": True})
    return SystemService(session, runtime.keys, runtime.policy, runtime.clock, settings, OPERATOR)


async def _register(runtime: Runtime, name: str, url: str, types: list[str]) -> tuple[uuid.UUID, str, bytes]:
    body = SystemCreate(
        name=name,
        callback_url=url,
        request_types=types,
        categories=["user.name"],
        identities=["email"],
    )
    async with runtime.db.transaction() as session:
        created = await _systems(runtime, session).add(body)
    return created.system.id, created.system.key_id, created.signing_key.encode()


async def _remove(runtime: Runtime, system_ids: list[uuid.UUID]) -> None:
    async with runtime.db.transaction() as session:
        service = _systems(runtime, session)
        for system_id in system_ids:
            await service.remove(system_id)


async def _customers(runtime: Runtime, prefix: str, count: int) -> list[str]:
    emails = [f"{prefix}.{n}.{uuid.uuid4().hex[:6]}@example.com" for n in range(count)]
    for start in range(0, count, 50):
        chunk = emails[start : start + 50]
        async with runtime.db.transaction() as session:
            subjects = SubjectService(session, runtime.keys, runtime.policy, runtime.clock, OPERATOR)
            for email in chunk:
                await subjects.create(SubjectCreate(email=email, profile={"name": "Bench Customer"}))
    return emails


async def _intake(runtime: Runtime, email: str, type_: str) -> None:
    async with runtime.db.transaction() as session:
        await _dsr(runtime, session).submit_verified(
            request_id=uuid.uuid4(), type_=type_, kind="email", value=email, regime="gdpr", note="benchmark"
        )


# -- fan-out throughput ---------------------------------------------------------------------------


async def _drain(runtime: Runtime, ids: list[uuid.UUID]) -> float:
    """Make ``ids`` due and deliver until none is left; seconds taken."""
    async with runtime.db.transaction() as session:
        await session.exec(
            update(Delivery).where(col(Delivery.id).in_(ids)).values(next_attempt_at=runtime.clock.now())
        )
    transport = HttpTransport(allow_private_networks=True)
    started = time.perf_counter()
    try:
        delivered = 0
        while delivered < len(ids):
            result = await deliver_webhooks(
                runtime.db, runtime.keys, runtime.clock, transport=transport, batch=100, concurrency=CONCURRENCY
            )
            if result.retried or result.dead:
                raise RuntimeError("the benchmark receiver refused a webhook (signature?)")
            if not result.delivered:
                raise RuntimeError("deliveries vanished from the queue")
            delivered += result.delivered
    finally:
        await transport.aclose()
    return time.perf_counter() - started


async def _raw_posts(url: str, bodies: list[tuple[bytes, dict[str, str]]]) -> float:
    transport = HttpTransport(allow_private_networks=True)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(body: bytes, headers: dict[str, str]) -> None:
        async with limit:
            if await transport.post(url, body, headers, 10.0) != 202:
                raise RuntimeError("the benchmark receiver refused a pre-signed body")

    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for body, headers in bodies:
                group.create_task(one(body, headers))
    finally:
        await transport.aclose()
    return time.perf_counter() - started


async def _presigned(
    runtime: Runtime, ids: list[uuid.UUID], key_id: str, key: bytes
) -> list[tuple[bytes, dict[str, str]]]:
    """The same bodies the queue holds, opened and signed ahead of time."""
    found = []
    async with runtime.db.transaction() as session:
        rows = (await session.exec(select(Delivery).where(col(Delivery.id).in_(ids)))).all()
        for row in rows:
            request_key = await runtime.keys.load_key(session, row.request_id, REQUEST)
            body = request_key.open(row.payload or b"", payload_binding(row.request_id, row.id))
            headers = {**sign(key, key_id, body, runtime.clock.now()), IDEMPOTENCY_HEADER: str(row.id)}
            found.append((body, {**headers, "Content-Type": "application/json"}))
    return found


async def fanout_throughput(ctx: BenchContext) -> list[Figure]:
    runtime = ctx.runtime
    configure_logging(runtime.settings.log_level)  # no per-webhook event lines in the report
    per_round = _env_int("PRIVACY_BENCH_WEBHOOKS", 400)
    rounds = max(2, min(ctx.config.rounds, 4))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/hooks"
    registered = [await _register(runtime, f"bench-{n}", url, ["access"]) for n in range(SYSTEMS)]
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Event()
    receiver = spawn.Process(
        target=_serve_receiver, args=(port, {key_id: key for _, key_id, key in registered}, ready), daemon=True
    )
    receiver.start()
    try:
        if not await asyncio.to_thread(ready.wait, 30):
            raise RuntimeError("the benchmark receiver did not start")
        requests_needed = rounds * per_round // SYSTEMS
        progress.log(f"queueing {requests_needed * SYSTEMS} webhooks: {requests_needed} access requests x {SYSTEMS}")
        for email in await _customers(runtime, "fanout", requests_needed):
            await _intake(runtime, email, "access")
        async with runtime.db.transaction() as session:
            await session.exec(update(Delivery).values(next_attempt_at=FAR))
            ids = list((await session.exec(select(Delivery.id).order_by(col(Delivery.created_at)))).all())
        one_key_id, one_key = registered[0][1], registered[0][2]
        measured: list[float] = []
        baseline: list[float] = []
        for index in range(rounds):
            chunk = ids[index * per_round : (index + 1) * per_round]
            # Baseline bodies are signed with one system's key (the receiver checks it).
            bodies = [
                (body, {**headers, "X-Privacy-Key-Id": one_key_id})
                for body, headers in await _presigned(runtime, chunk, one_key_id, one_key)
            ]
            order: list[tuple[str, Callable[[], Awaitable[float]]]] = [
                ("queue", lambda chunk=chunk: _drain(runtime, chunk)),
                ("raw", lambda bodies=bodies: _raw_posts(url, bodies)),
            ]
            for name, run in order if index % 2 == 0 else order[::-1]:
                seconds = await run()
                rate = len(chunk) / seconds
                (measured if name == "queue" else baseline).append(rate)
                progress.log(f"fan-out round {index + 1}/{rounds} {name:>5}: {rate:8.1f} deliveries/s")
    finally:
        receiver.terminate()
        receiver.join(10)
        await _remove(runtime, [system_id for system_id, _, _ in registered])
    ratios = [m / b for m, b in zip(measured, baseline, strict=True)]
    return [
        Figure(
            figure=f"webhook fan-out ({SYSTEMS} systems, {CONCURRENCY} in flight)",
            unit="deliveries/s",
            measured=statistics.median(measured),
            baseline=statistics.median(baseline),
            ratio=statistics.median(ratios),
            spread=(min(ratios), max(ratios)),
            details={
                "deliveries_per_round": per_round,
                "rounds": rounds,
                "measured": "deliver_webhooks: claim (lease), unseal, sign, POST, record + log line per delivery",
                "baseline": "the same pre-signed bodies POSTed with the same transport and concurrency, no database",
                "receiver": "separate process, asyncio, HTTP/1.1 keep-alive, verifies each signature, answers 202",
                "round_rates_measured": measured,
                "round_rates_baseline": baseline,
            },
        )
    ]


# -- intake latency ---------------------------------------------------------------------------------


async def intake_overhead(ctx: BenchContext) -> list[Figure]:
    runtime = ctx.runtime
    configure_logging(runtime.settings.log_level)
    samples = _env_int("PRIVACY_BENCH_INTAKE_SAMPLES", 300)
    warmup = 20
    system_id, _, _ = await _register(runtime, "bench-intake", "http://127.0.0.1:9/unused", ["access"])
    try:
        progress.log(f"creating {2 * (samples + warmup)} customers")
        with_system = iter(await _customers(runtime, "with", samples + warmup))
        without = iter(await _customers(runtime, "without", samples + warmup))

        async def access() -> None:  # one system registered for access: one webhook queued
            await _intake(runtime, next(with_system), "access")

        async def portability() -> None:  # same processing; no system registered for it
            await _intake(runtime, next(without), "portability")

        latencies = await interleaved_latency({"with": access, "without": portability}, samples=samples, warmup=warmup)
        async with runtime.db.transaction() as session:
            queued = len((await session.exec(select(Delivery.id).where(col(Delivery.system_id) == system_id))).all())
        if queued != samples + warmup:
            raise RuntimeError(f"expected {samples + warmup} queued webhooks, found {queued}")
    finally:
        await _remove(runtime, [system_id])
    measured = {p: s * 1000 for p, s in percentiles(latencies["with"]).items()}
    base = {p: s * 1000 for p, s in percentiles(latencies["without"]).items()}
    details = {
        "samples": samples,
        "measured": "DsrService.submit_verified(access) + commit; one system registered for access",
        "baseline": "the same for portability (identical processing), no system registered for it",
        "with_ms": measured,
        "without_ms": base,
        "added_ms_p50": measured[50] - base[50],
    }
    return [
        Figure(
            f"intake p{point} with 1 system vs none",
            "ms",
            measured[point],
            base[point],
            measured[point] / base[point],
            details=details,
        )
        for point in (50, 95)
    ]

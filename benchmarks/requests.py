"""Data-subject requests (issues 5 and 19): intake and the status read, and both as the table grows.

Intake: ``POST /v1/requests`` through the whole application (middleware, rate-limit guards,
``DsrService.submit``: blind index, a per-request key, sealed identity, transitions, audit row and
the code mail queued in the outbox) against a bare Litestar app whose only endpoint parses a body
of the same shape and inserts one row into a table shaped like ``dsr_requests`` (same indexes).
Both run in process through ``httpx.ASGITransport`` on the same database, with the same number of
concurrent clients, in interleaved rounds; per-call latencies give the p95. Rate limits are raised
for the run (every call comes from one address).

Status read: ``GET /v1/requests/{id}`` with the subject's token against a bare endpoint reading the
same row; growth: both at ``PRIVACY_BENCH_DSR_GROWTH_SIZES`` requests in the table. The access
export and erasure are in :mod:`benchmarks.answers`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import re
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import msgspec
from litestar import Litestar, get, post
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED
from sqlalchemy import Column, DateTime, Index, LargeBinary, MetaData, String, Table, bindparam, insert, text
from sqlalchemy import Uuid as SqlUuid
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from benchmarks.common import (
    BenchContext,
    Figure,
    _env_int,
    percentiles,
    progress,
    verdict,
)
from privacy_service.app import create_app
from privacy_service.audit.service import Actor
from privacy_service.crypto.service import REQUEST
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.dsr.schemas import Identity, RequestCreate, RequestType
from privacy_service.dsr.service import DsrService
from privacy_service.notify.models import OutboxMessage
from privacy_service.notify.service import payload_binding
from privacy_service.runtime import Runtime

INTAKE_RATIO_TARGET = 0.8
STATUS_RATIO_TARGET = 0.8
STATUS_CPU_TARGET_MS = 1.0
GROWTH_FLAT_TARGET = 0.8  # a figure at the largest table over the same figure at the smallest
OPEN_LIMITS = {
    "intake": "1000000/min burst 100000",
    "intake_identity": "1000000/min burst 100000",
    "verify": "1000000/min burst 100000",
    "download": "1000000/min burst 100000",
    "operator": "1000000/min burst 100000",
}
OPERATOR = Actor("operator", "benchmark")
APPLICATION, BARE = "application", "bare"


@dataclasses.dataclass(frozen=True, slots=True)
class RequestBenchConfig:
    records: int = 10_000  # records held by the exported / erased subject
    export_runs: int = 8
    erase_runs: int = 5
    status_requests: int = 200  # verified requests the status-read figure reads at random
    # Rows in dsr_requests (each with two transitions) at which the growth figures are taken.
    growth_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    growth_rounds: int = 3

    @classmethod
    def from_env(cls) -> RequestBenchConfig:
        default = cls()
        return cls(
            records=_env_int("PRIVACY_BENCH_DSR_RECORDS", default.records),
            export_runs=_env_int("PRIVACY_BENCH_DSR_EXPORT_RUNS", default.export_runs, minimum=2),
            erase_runs=_env_int("PRIVACY_BENCH_DSR_ERASE_RUNS", default.erase_runs),
            status_requests=_env_int("PRIVACY_BENCH_DSR_STATUS_REQUESTS", default.status_requests),
            growth_sizes=_env_sizes("PRIVACY_BENCH_DSR_GROWTH_SIZES", default.growth_sizes),
            growth_rounds=_env_int("PRIVACY_BENCH_DSR_GROWTH_ROUNDS", default.growth_rounds),
        )


def _env_sizes(name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    sizes = tuple(sorted({int(part.strip().replace("_", "")) for part in raw.split(",") if part.strip()}))
    if not sizes or sizes[0] < 1:
        raise SystemExit(f"{name}: comma-separated row counts, each at least 1")
    return sizes


def _open_runtime(ctx: BenchContext) -> Runtime:
    """The bench runtime with rate limits out of the way (the database and keys are shared)."""
    found: Runtime | None = ctx.shared.get("requests.runtime")
    if found is None:
        limits = {**ctx.runtime.settings.rate_limits, **OPEN_LIMITS}
        found = dataclasses.replace(
            ctx.runtime, settings=ctx.runtime.settings.model_copy(update={"rate_limits": limits})
        )
        ctx.shared["requests.runtime"] = found
    return found


def _service_app(ctx: BenchContext, runtime: Runtime) -> Litestar:
    """The whole app, the collector then set as ``serve`` sets it once its app is built."""
    app = create_app(runtime=runtime)
    ctx.config.after_startup()
    return app


def _counter(ctx: BenchContext) -> itertools.count[int]:
    found: itertools.count[int] = ctx.shared.setdefault("requests.counter", itertools.count())
    return found


def _dsr(runtime: Runtime, session: Any, actor: Actor = OPERATOR) -> DsrService:
    return DsrService.for_runtime(runtime, session, actor)


# -- intake ------------------------------------------------------------------------------------

BARE_METADATA = MetaData()
BARE_TABLE = Table(
    "bench_bare_intake",
    BARE_METADATA,
    Column("id", SqlUuid, primary_key=True),
    Column("type", String(16), nullable=False),
    Column("status", String(24), nullable=False),
    Column("identity", LargeBinary, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Index("ix_bench_bare_identity_type", "identity", "type"),
    Index("ix_bench_bare_status_due", "status", "due_at"),
)


class BareIntake(msgspec.Struct):
    type: str
    identity: dict[str, str]


def _bare_app(runtime: Runtime) -> Litestar:
    """The baseline: Litestar, one endpoint, one INSERT, no middleware. The INSERT runs alone on a pooled
    connection in autocommit, as the service's intake does on PostgreSQL (``db.write_last``): one
    statement is atomic, and neither side pays BEGIN/COMMIT round trips."""

    autocommit = runtime.db.engine.execution_options(isolation_level="AUTOCOMMIT")

    @post("/requests", status_code=HTTP_202_ACCEPTED)
    async def intake(data: BareIntake) -> dict[str, str]:
        now = runtime.clock.now()
        row_id = uuid.uuid4()
        async with autocommit.connect() as conn:
            await conn.execute(
                insert(BARE_TABLE).values(
                    id=row_id,
                    type=data.type,
                    status="awaiting_verification",
                    identity=data.identity["email"].encode(),
                    received_at=now,
                    due_at=now + timedelta(days=30),
                )
            )
        return {"id": str(row_id), "status": "awaiting_verification"}

    return Litestar([intake], debug=False)


@dataclasses.dataclass(slots=True)
class LatencyRound:
    variant: str
    latencies: list[float]
    seconds: float
    cpu_seconds: float = 0.0  # this process: the client (httpx) and the server (app, ORM, driver) together

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def cpu_ms_per_op(self) -> float:
        return self.cpu_seconds * 1000 / len(self.latencies) if self.latencies else float("nan")


async def _timed_round(op: Callable[[], Awaitable[None]], clients: int, seconds: float, variant: str) -> LatencyRound:
    latencies: list[float] = []
    cpu_start = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            await op()
            latencies.append(time.perf_counter() - began)

    async with asyncio.TaskGroup() as group:
        for _ in range(clients):
            group.create_task(client())
    return LatencyRound(variant, latencies, time.perf_counter() - start, time.process_time() - cpu_start)


async def _interleaved(
    label: str,
    variants: dict[str, Callable[[], Awaitable[None]]],
    *,
    clients: int,
    rounds: int,
    seconds: float,
    warmup: float,
) -> dict[str, list[LatencyRound]]:
    """Rounds of each variant, alternating A/B then B/A, so slow drift hits both sides of a pair."""
    if warmup > 0:
        for name, op in variants.items():
            await _timed_round(op, clients, warmup, name)
    results: dict[str, list[LatencyRound]] = {name: [] for name in variants}
    for index in range(rounds):
        for name in list(variants) if index % 2 == 0 else list(variants)[::-1]:
            result = await _timed_round(variants[name], clients, seconds, name)
            results[name].append(result)
            p95 = percentiles(result.latencies)[95] * 1000
            progress.log(
                f"{label} round {index + 1}/{rounds} {name:>11}: {result.rate:8.1f} req/s, p95 {p95:.1f} ms, "
                f"process CPU {result.cpu_ms_per_op:.2f} ms/req"
            )
    return results


def _latency_ms(rounds: list[LatencyRound]) -> dict[int, float]:
    return {p: v * 1000 for p, v in percentiles([x for r in rounds for x in r.latencies]).items()}


def _pair_ratios(measured: list[LatencyRound], baseline: list[LatencyRound]) -> list[float]:
    return [a.rate / b.rate for a, b in zip(measured, baseline, strict=True)]


async def intake_throughput(ctx: BenchContext) -> list[Figure]:
    config = ctx.config
    runtime = _open_runtime(ctx)
    async with runtime.db.engine.begin() as conn:
        await conn.run_sync(BARE_METADATA.create_all)
    counter = _counter(ctx)
    app_transport = httpx.ASGITransport(app=_service_app(ctx, runtime))
    bare_transport = httpx.ASGITransport(app=_bare_app(runtime))
    async with (
        httpx.AsyncClient(transport=app_transport, base_url="http://bench") as app_client,
        httpx.AsyncClient(transport=bare_transport, base_url="http://bench") as bare_client,
    ):
        results = await _interleaved(
            "intake",
            _intake_ops(app_client, bare_client, counter),
            clients=config.intake_clients,
            rounds=config.rounds,
            seconds=config.round_seconds,
            warmup=config.warmup_seconds,
        )
    async with runtime.db.engine.begin() as conn:
        stored = (await conn.execute(text("SELECT count(*) FROM dsr_requests"))).scalar_one()
    ratios = _pair_ratios(results[APPLICATION], results[BARE])
    ratio = statistics.median(ratios)
    latency = {name: _latency_ms(rounds) for name, rounds in results.items()}
    details = {
        "clients": config.intake_clients,
        "path": "HTTP app in process (httpx.ASGITransport) -> RequestController.submit -> DsrService.submit",
        "baseline": "bare Litestar app, same transport and database: parse the body, one INSERT into a table shaped "
        "like dsr_requests (same two indexes) in autocommit, as the service's intake on PostgreSQL",
        "statistic": "req/s: median of rounds; ratio: median of back-to-back round pairs",
        "pair_ratios": ratios,
        "latency_ms": latency,
        "process_cpu_ms_per_request": {
            name: statistics.median(r.cpu_ms_per_op for r in rounds) for name, rounds in results.items()
        },
        "dsr_requests_rows": stored,
    }
    return [
        Figure(
            f"request intake, {config.intake_clients} clients",
            "ops/s",
            statistics.median(r.rate for r in results[APPLICATION]),
            statistics.median(r.rate for r in results[BARE]),
            ratio,
            target=f"≥ {INTAKE_RATIO_TARGET:.1f}x",
            verdict=verdict(ratio >= INTAKE_RATIO_TARGET),
            spread=(min(ratios), max(ratios)),
            details=details,
        ),
        Figure(
            f"request intake p95, {config.intake_clients} clients",
            "ms",
            latency[APPLICATION][95],
            latency[BARE][95],
            latency[APPLICATION][95] / latency[BARE][95],
            details=details,
        ),
    ]


# -- status read -------------------------------------------------------------------------------

_REQUEST_ROWS: Table = PrivacyRequest.__table__  # type: ignore[attr-defined]
BARE_STATUS = sa_select(
    _REQUEST_ROWS.c.id,
    _REQUEST_ROWS.c.type,
    _REQUEST_ROWS.c.status,
    _REQUEST_ROWS.c.regime,
    _REQUEST_ROWS.c.received_at,
    _REQUEST_ROWS.c.due_at,
).where(_REQUEST_ROWS.c.id == bindparam("id"))


def _bare_status_app(runtime: Runtime) -> Litestar:
    """The baseline: Litestar, one endpoint, one SELECT of the request's row by primary key (the same
    table and rows), no middleware, no authorisation. The SELECT runs alone on a pooled connection in
    autocommit, as the service's subject read does: no BEGIN/COMMIT round trips on either side."""

    autocommit = runtime.db.engine.execution_options(isolation_level="AUTOCOMMIT")

    @get("/requests/{request_id:uuid}")
    async def status(request_id: uuid.UUID) -> dict[str, Any]:
        async with autocommit.connect() as conn:
            row = (await conn.execute(BARE_STATUS, {"id": request_id})).one()
        return {
            "id": str(row.id),
            "type": row.type,
            "status": row.status,
            "regime": row.regime,
            "received_at": row.received_at.isoformat(),
            "due_at": row.due_at.isoformat(),
        }

    return Litestar([status], debug=False)


async def _status_requests(ctx: BenchContext, runtime: Runtime, count: int) -> list[tuple[uuid.UUID, str]]:
    """Verified access requests with their subject tokens (made once per run, through the service)."""
    found: list[tuple[uuid.UUID, str]] | None = ctx.shared.get("requests.status")
    if found is None:
        counter = _counter(ctx)
        found = [
            await _verified_request(runtime, f"bench.status.{next(counter)}@example.com", "access")
            for _ in range(count)
        ]
        ctx.shared["requests.status"] = found
    return found


Ops = dict[str, Callable[[], Awaitable[None]]]


def _status_ops(
    app_client: httpx.AsyncClient, bare_client: httpx.AsyncClient, made: list[tuple[uuid.UUID, str]]
) -> Ops:
    chooser = random.Random(19)

    async def app_read() -> None:
        request_id, token = chooser.choice(made)
        response = await app_client.get(f"/v1/requests/{request_id}", headers={"authorization": f"Bearer {token}"})
        if response.status_code != HTTP_200_OK:
            raise RuntimeError(f"GET /v1/requests/{{id}} answered {response.status_code}: {response.text[:200]}")

    async def bare_read() -> None:
        request_id, _ = chooser.choice(made)
        response = await bare_client.get(f"/requests/{request_id}")
        if response.status_code != HTTP_200_OK:
            raise RuntimeError(f"GET /requests/{{id}} answered {response.status_code}")

    return {APPLICATION: app_read, BARE: bare_read}


def _intake_ops(app_client: httpx.AsyncClient, bare_client: httpx.AsyncClient, counter: itertools.count[int]) -> Ops:
    def poster(client: httpx.AsyncClient, path: str) -> Callable[[], Awaitable[None]]:
        async def submit() -> None:
            body = {"type": "access", "identity": {"email": f"bench.intake.{next(counter)}@example.com"}}
            response = await client.post(path, json=body)
            if response.status_code != HTTP_202_ACCEPTED:
                raise RuntimeError(f"POST {path} answered {response.status_code}: {response.text[:200]}")

        return submit

    return {APPLICATION: poster(app_client, "/v1/requests"), BARE: poster(bare_client, "/requests")}


async def status_throughput(ctx: BenchContext) -> list[Figure]:
    config = ctx.config
    dsr_config = RequestBenchConfig.from_env()
    runtime = _open_runtime(ctx)
    started = time.perf_counter()
    made = await _status_requests(ctx, runtime, dsr_config.status_requests)
    progress.log(f"{len(made)} verified requests in {time.perf_counter() - started:.1f} s")
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=_service_app(ctx, runtime)), base_url="http://b") as app,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=_bare_status_app(runtime)), base_url="http://b") as bare,
    ):
        results = await _interleaved(
            "status",
            _status_ops(app, bare, made),
            clients=config.intake_clients,
            rounds=config.rounds,
            seconds=config.round_seconds,
            warmup=config.warmup_seconds,
        )
    ratios = _pair_ratios(results[APPLICATION], results[BARE])
    ratio = statistics.median(ratios)
    cpu = {name: statistics.median(r.cpu_ms_per_op for r in rounds) for name, rounds in results.items()}
    details = {
        "clients": config.intake_clients,
        "requests_read": len(made),
        "path": "HTTP app in process (httpx.ASGITransport) -> RequestController.status: the subject token checked, "
        "the request, its history and its downstream systems read, RequestView encoded",
        "baseline": "bare Litestar app, same transport and database: one SELECT of the same row by primary key in "
        "autocommit (no BEGIN/COMMIT, as the service's read), six fields as JSON",
        "statistic": "req/s: median of rounds; ratio: median of back-to-back round pairs",
        "pair_ratios": ratios,
        "latency_ms": {name: _latency_ms(rounds) for name, rounds in results.items()},
        "process_cpu_ms_per_request": cpu,
        "cpu_note": "CPU of the whole bench process (client and server): an upper bound on the server's share",
    }
    return [
        Figure(
            f"request status read, {config.intake_clients} clients",
            "ops/s",
            statistics.median(r.rate for r in results[APPLICATION]),
            statistics.median(r.rate for r in results[BARE]),
            ratio,
            target=f"≥ {STATUS_RATIO_TARGET:.1f}x",
            verdict=verdict(ratio >= STATUS_RATIO_TARGET),
            spread=(min(ratios), max(ratios)),
            details=details,
        ),
        Figure(
            "request status read CPU per request (client + server)",
            "ms",
            cpu[APPLICATION],
            cpu[BARE],
            cpu[APPLICATION] / cpu[BARE],
            target=f"≤ {STATUS_CPU_TARGET_MS:g} ms",
            verdict=verdict(cpu[APPLICATION] <= STATUS_CPU_TARGET_MS),
            details=details,
        ),
    ]


# -- growth ------------------------------------------------------------------------------------

_GROW_BATCH = 200_000
# Requests as years of traffic leave them: every type and status, random identities (so intake's
# duplicate check and the indexes work on a realistic spread), received over the past ~3 years,
# each with the two transitions every request has. One statement per batch, all in PostgreSQL.
_GROW_SQL = text(
    """
    WITH made AS (
        INSERT INTO dsr_requests (id, type, status, regime, language, identity_kind, identity_bidx,
                                  received_at, due_at, acknowledged_at, code_attempts, resends)
        SELECT gen_random_uuid(),
               (ARRAY['access', 'erase', 'rectify', 'portability'])[1 + g % 4],
               (ARRAY['completed', 'expired', 'completed', 'verification_failed', 'denied',
                      'completed', 'awaiting_verification', 'processing'])[1 + g % 8],
               (ARRAY['gdpr', 'ccpa', 'pipl'])[1 + g % 3],
               'en', 'email',
               sha256(convert_to(CAST(:seed AS text) || ':' || g, 'UTF8')),
               now() - make_interval(secs => g % 94608000),
               now() - make_interval(secs => g % 94608000) + interval '30 days',
               now() - make_interval(secs => g % 94608000),
               0, 0
        FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint)) AS g
        RETURNING id, received_at
    )
    INSERT INTO dsr_transitions (request_id, from_status, to_status, at, actor_type, actor_id)
    SELECT id, NULL, 'received', received_at, 'subject', 'bench' FROM made
    UNION ALL
    SELECT id, 'received', 'awaiting_verification', received_at, 'subject', 'bench' FROM made
    """
)


async def _grow_to(runtime: Runtime, rows: int, seed: str) -> tuple[int, float]:
    """Add generated requests until dsr_requests holds ``rows``; the rows there now, and seconds taken."""
    started = time.perf_counter()
    async with runtime.db.engine.begin() as conn:
        have = (await conn.execute(text("SELECT count(*) FROM dsr_requests"))).scalar_one()
    for start in range(have + 1, rows + 1, _GROW_BATCH):
        async with runtime.db.engine.begin() as conn:
            await conn.execute(_GROW_SQL, {"seed": seed, "start": start, "stop": min(rows, start + _GROW_BATCH - 1)})
    async with runtime.db.engine.connect() as conn:
        await conn.execute(text("ANALYZE dsr_requests"))
        await conn.execute(text("ANALYZE dsr_transitions"))
        await conn.commit()
        have = (await conn.execute(text("SELECT count(*) FROM dsr_requests"))).scalar_one()
    return have, time.perf_counter() - started


# Status reads at a size read rows spread over the whole table, not the few the service made: a
# random sample of the generated requests is given subject tokens (hashed as the service hashes them).
_SAMPLE_TOKENS_SQL = text(
    """
    UPDATE dsr_requests
    SET token_hash = sha256(convert_to('psr_bench_' || id::text, 'UTF8')),
        token_expires_at = now() + interval '30 days'
    WHERE id IN (SELECT id FROM dsr_requests WHERE token_hash IS NULL ORDER BY random() LIMIT :n)
    RETURNING id
    """
)


async def _sampled_tokens(runtime: Runtime, count: int) -> list[tuple[uuid.UUID, str]]:
    async with runtime.db.engine.begin() as conn:
        ids = (await conn.execute(_SAMPLE_TOKENS_SQL, {"n": count})).scalars().all()
    return [(request_id, f"psr_bench_{request_id}") for request_id in ids]


def _size_label(rows: int) -> str:
    if rows >= 1_000_000 and rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows >= 1000 and rows % 1000 == 0:
        return f"{rows // 1000}k"
    return f"{rows:,}"


async def growth(ctx: BenchContext) -> list[Figure]:
    """Intake and status read with PRIVACY_BENCH_DSR_GROWTH_SIZES requests already in the table.

    At each size both run against their bare baselines (interleaved, as above); a figure's ratio to
    its baseline at the largest size over that ratio at the smallest says whether it stays flat
    (normalising by the baseline keeps other load on the machine out of the comparison).
    """
    config = ctx.config
    dsr_config = RequestBenchConfig.from_env()
    runtime = _open_runtime(ctx)
    async with runtime.db.engine.begin() as conn:
        await conn.run_sync(BARE_METADATA.create_all)
    counter = _counter(ctx)
    seed = uuid.uuid4().hex
    measured: dict[str, dict[int, dict[str, list[LatencyRound]]]] = {"intake": {}, "status": {}}
    filled: dict[int, tuple[int, float]] = {}
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=_service_app(ctx, runtime)), base_url="http://b") as app,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=_bare_app(runtime)), base_url="http://b") as bare,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=_bare_status_app(runtime)), base_url="http://b") as bare_s,
    ):
        for size in dsr_config.growth_sizes:
            filled[size] = await _grow_to(runtime, size, seed)
            progress.log(f"dsr_requests at {filled[size][0]:,} rows (filled in {filled[size][1]:.1f} s)")
            readable = await _sampled_tokens(runtime, dsr_config.status_requests)
            workloads = {"intake": _intake_ops(app, bare, counter), "status": _status_ops(app, bare_s, readable)}
            for name, ops in workloads.items():
                measured[name][size] = await _interleaved(
                    f"{name} @{_size_label(size)}",
                    ops,
                    clients=config.intake_clients,
                    rounds=dsr_config.growth_rounds,
                    seconds=config.round_seconds,
                    warmup=config.warmup_seconds / 2,
                )
    figures: list[Figure] = []
    smallest, largest = dsr_config.growth_sizes[0], dsr_config.growth_sizes[-1]
    for name, by_size in measured.items():
        ratios = {size: statistics.median(_pair_ratios(r[APPLICATION], r[BARE])) for size, r in by_size.items()}
        for size, results in by_size.items():
            latency = _latency_ms(results[APPLICATION])
            pair = _pair_ratios(results[APPLICATION], results[BARE])
            figures.append(
                Figure(
                    f"request {name} @{_size_label(size)} requests in the table",
                    "ops/s",
                    statistics.median(r.rate for r in results[APPLICATION]),
                    statistics.median(r.rate for r in results[BARE]),
                    ratios[size],
                    spread=(min(pair), max(pair)),
                    details={
                        "rows": filled[size][0],
                        "fill_seconds": round(filled[size][1], 1),
                        "clients": config.intake_clients,
                        "latency_ms": latency,
                        "pair_ratios": pair,
                        "process_cpu_ms_per_request": statistics.median(r.cpu_ms_per_op for r in results[APPLICATION]),
                    },
                )
            )
        if largest != smallest:
            flat = ratios[largest] / ratios[smallest]
            figures.append(
                Figure(
                    f"request {name} @{_size_label(largest)} vs @{_size_label(smallest)} (ratio to bare, flatness)",
                    "x",
                    ratios[largest],
                    ratios[smallest],
                    flat,
                    target=f"≥ {GROWTH_FLAT_TARGET:.1f}x",
                    verdict=verdict(flat >= GROWTH_FLAT_TARGET),
                    details={"sizes": list(dsr_config.growth_sizes), "ratio_to_bare": ratios},
                )
            )
    return figures


# -- verified requests ---------------------------------------------------------------------------


_CODE = re.compile(r"\b(\d{6})\b")


async def _code_from_outbox(runtime: Runtime, request_id: uuid.UUID) -> str:
    """The code the subject would read in the mail: the queued message, opened with the request's key."""
    async with runtime.db.transaction() as session:
        message = (
            await session.exec(
                select(OutboxMessage).where(
                    col(OutboxMessage.owner_id) == request_id, col(OutboxMessage.template) == "verification_code"
                )
            )
        ).one()
        key = await runtime.keys.load_key(session, request_id, REQUEST)
    mail = msgspec.json.decode(key.open(message.payload or b"", payload_binding(request_id, message.id)))
    match = _CODE.search(mail["body"])
    if match is None:
        raise RuntimeError("no code in the verification mail")
    return match.group(1)


async def _verified_request(runtime: Runtime, email: str, type_: RequestType) -> tuple[uuid.UUID, str]:
    async with runtime.db.transaction() as session:
        accepted = await _dsr(runtime, session, Actor("subject", "bench")).submit(
            RequestCreate(type=type_, identity=Identity(email=email))
        )
    code = await _code_from_outbox(runtime, accepted.id)
    async with runtime.db.transaction() as session:
        outcome = await _dsr(runtime, session, Actor("subject", "bench")).verify(accepted.id, code)
    if outcome.verified is None:
        raise RuntimeError("verification failed")
    return accepted.id, outcome.verified.token

"""Answering data-subject requests (issue 5): the access export and erasure by crypto-shredding.

Export: ``GET /v1/requests/{id}/export`` for a subject holding ``PRIVACY_BENCH_DSR_RECORDS`` records,
driven over raw ASGI so that the body is consumed chunk by chunk as a server would send it (httpx's
ASGITransport would buffer it). Peak memory growth is measured with tracemalloc on a separate
download (tracing slows Python down, so it is not timed).

Erasure: ``DsrService.approve`` of a verified erasure request, one transaction each, timed with its
commit, for subjects holding 100 and ``PRIVACY_BENCH_DSR_RECORDS`` non-AML records; once more
for records an AML duty keeps (those are re-sealed under the retention key, not shredded).

Intake, the status read and their growth with the table are in :mod:`benchmarks.requests`.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import tracemalloc
import uuid
from datetime import timedelta
from typing import Any

import httpx
import msgspec
from litestar import Litestar
from sqlalchemy import insert
from sqlmodel import col, select

from benchmarks.common import (
    BenchContext,
    Figure,
    percentiles,
    progress,
    verdict,
)
from benchmarks.requests import OPERATOR, RequestBenchConfig, _counter, _dsr, _open_runtime, _verified_request
from privacy_service.app import create_app
from privacy_service.crypto.fields import Binding, DataKey
from privacy_service.runtime import Runtime
from privacy_service.subjects.models import Record
from privacy_service.subjects.schemas import SubjectCreate
from privacy_service.subjects.service import RECORDS, SubjectService

EXPORT_P95_TARGET_MS = 1000.0
EXPORT_MEMORY_TARGET_MB = 50.0
ERASE_TARGET_MS = 200.0
BULK_BATCH = 5000
MB = 1024 * 1024

# -- subjects with many records ---------------------------------------------------------------------


def _record_data(n: int) -> dict[str, Any]:
    return {
        "reference": f"TX-{n:08d}",
        "amount": f"{(n * 37) % 100_000 / 100:.2f}",
        "currency": "EUR",
        "counterparty": f"Merchant {n % 500}",
        "iban": f"DE89370400440532{n:06d}",
        "channel": "card",
        "country": "DE",
        "note": "groceries and household items",
    }


async def _subject_with_records(runtime: Runtime, n: int, records: int, category: str) -> tuple[uuid.UUID, str]:
    """A subject created by SubjectService, then ``records`` really encrypted records in bulk
    (Core executemany, sealed exactly as SubjectService.add_record seals them)."""
    email = f"bench.dsr.{n}@example.com"
    async with runtime.db.transaction() as session:
        service = SubjectService(session, runtime.keys, runtime.policy, runtime.clock, OPERATOR)
        subject_id = await service.create(
            SubjectCreate(email=email, profile={"name": f"Bench Subject {n}", "date_of_birth": "1980-01-01"})
        )
    async with runtime.db.transaction() as session:
        key: DataKey = await runtime.keys.load_key(session, subject_id)
    table = Record.__table__
    for offset in range(0, records, BULK_BATCH):
        now = runtime.clock.now()
        batch = []
        for i in range(offset, min(records, offset + BULK_BATCH)):
            record_id = uuid.uuid4()
            batch.append(
                {
                    "id": record_id,
                    "subject_id": subject_id,
                    "kind": "transaction",
                    "category": category,
                    "occurred_at": now - timedelta(minutes=i),
                    "created_at": now,
                    "data_ct": key.seal(
                        msgspec.json.encode(_record_data(i)), Binding(RECORDS, subject_id, record_id, "data")
                    ),
                    "restricted": False,
                }
            )
        async with runtime.db.engine.begin() as conn:
            await conn.execute(insert(table), batch)
    return subject_id, email


# -- export ------------------------------------------------------------------------------------


async def _asgi_get(app: Litestar, path: str, headers: dict[str, str]) -> tuple[int, int]:
    """GET through raw ASGI, counting body bytes as they are sent and keeping none of them."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
        "state": {},
    }
    requested = False
    finished = asyncio.Event()
    status, size = 0, 0

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()

    await app(scope, receive, send)  # type: ignore[arg-type]
    finished.set()
    return status, size


async def export_latency(ctx: BenchContext) -> list[Figure]:
    dsr_config = RequestBenchConfig.from_env()
    runtime = _open_runtime(ctx)
    n = next(_counter(ctx))
    started = time.perf_counter()
    subject_id, email = await _subject_with_records(runtime, n, dsr_config.records, "user.financial.transaction")
    progress.log(f"subject with {dsr_config.records:,} encrypted records in {time.perf_counter() - started:.1f} s")
    request_id, token = await _verified_request(runtime, email, "access")
    app = create_app(runtime=runtime)
    path, headers = f"/v1/requests/{request_id}/export", {"authorization": f"Bearer {token}"}

    # Correctness once, through httpx: every record is in the answer.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        body = (await client.get(path, headers=headers)).json()
    if len(body["records"]) != dsr_config.records or not body["processing"]["categories"]:
        raise RuntimeError(f"export held {len(body['records'])} records, expected {dsr_config.records}")
    del body

    # Baseline: the same rows fetched in one SELECT, neither decrypted nor encoded nor sent.
    async def select_rows() -> None:
        async with runtime.db.transaction() as session:
            rows = (await session.exec(select(Record.data_ct).where(col(Record.subject_id) == subject_id))).all()
        if len(rows) != dsr_config.records:
            raise RuntimeError("baseline read the wrong number of rows")

    timings: dict[str, list[float]] = {"export": [], "select": []}
    size = 0
    for _ in range(dsr_config.export_runs):
        began = time.perf_counter()
        status, size = await _asgi_get(app, path, headers)
        timings["export"].append(time.perf_counter() - began)
        if status != 200:
            raise RuntimeError(f"export answered {status}")
        began = time.perf_counter()
        await select_rows()
        timings["select"].append(time.perf_counter() - began)
    progress.log("export runs (ms): " + ", ".join(f"{t * 1000:.0f}" for t in timings["export"]))

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        status, _ = await _asgi_get(app, path, headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth_mb = (peak - before) / MB
    export_p95 = percentiles(timings["export"])[95] * 1000
    select_p95 = percentiles(timings["select"])[95] * 1000
    details = {
        "records": dsr_config.records,
        "runs": dsr_config.export_runs,
        "export_bytes": size,
        "export_ms": [round(t * 1000, 1) for t in timings["export"]],
        "baseline": "SELECT of the same records' ciphertext in one query (no decryption, encoding or sending)",
        "baseline_ms": [round(t * 1000, 1) for t in timings["select"]],
        "memory": "tracemalloc peak minus the level before one download, body consumed chunk by chunk",
    }
    label = f"{dsr_config.records // 1000}k" if dsr_config.records >= 1000 else str(dsr_config.records)
    return [
        Figure(
            f"access export p95 @{label} records",
            "ms",
            export_p95,
            select_p95,
            export_p95 / select_p95,
            target=f"p95 < {EXPORT_P95_TARGET_MS:g} ms",
            verdict=verdict(export_p95 < EXPORT_P95_TARGET_MS),
            details=details,
        ),
        Figure(
            f"access export peak memory growth @{label} (vs body size)",
            "MB",
            growth_mb,
            size / MB,
            growth_mb / (size / MB),
            target=f"< {EXPORT_MEMORY_TARGET_MB:g} MB",
            verdict=verdict(growth_mb < EXPORT_MEMORY_TARGET_MB),
            details=details,
        ),
    ]


# -- erasure -----------------------------------------------------------------------------------


async def _timed_erasures(
    ctx: BenchContext, runtime: Runtime, records: int, category: str, runs: int
) -> tuple[list[float], list[str]]:
    seconds: list[float] = []
    statuses: list[str] = []
    for _ in range(runs):
        _, email = await _subject_with_records(runtime, next(_counter(ctx)), records, category)
        request_id, _ = await _verified_request(runtime, email, "erase")
        began = time.perf_counter()
        async with runtime.db.transaction() as session:
            request = await _dsr(runtime, session).approve(request_id)
            statuses.append(request.status)
        seconds.append(time.perf_counter() - began)
    return seconds, statuses


async def erasure_latency(ctx: BenchContext) -> list[Figure]:
    dsr_config = RequestBenchConfig.from_env()
    runtime = _open_runtime(ctx)
    behaviour, aml = "user.behavior", "user.financial.transaction"
    figures: list[Figure] = []
    cases = [
        (behaviour, dsr_config.erase_runs, True),
        # Records an AML duty keeps are each re-sealed under the retention key: not flat.
        (aml, 1, False),
    ]
    label = f"{dsr_config.records // 1000}k" if dsr_config.records >= 1000 else str(dsr_config.records)
    for category, runs, has_target in cases:
        small, small_status = await _timed_erasures(ctx, runtime, 100, category, runs)
        large, large_status = await _timed_erasures(ctx, runtime, dsr_config.records, category, runs)
        measured, baseline = statistics.median(large) * 1000, statistics.median(small) * 1000
        progress.log(f"erasure {category}: 100 records {baseline:.0f} ms, {dsr_config.records:,} {measured:.0f} ms")
        kind = "shredded" if has_target else "AML-kept, re-sealed"
        figure = Figure(
            f"erasure @{label} {kind} records (vs 100)",
            "ms",
            measured,
            baseline,
            measured / baseline,
            details={
                "category": category,
                "path": "DsrService.approve of a verified erasure request, one transaction, commit included",
                "runs": runs,
                "ms_100_records": [round(s * 1000, 1) for s in small],
                f"ms_{dsr_config.records}_records": [round(s * 1000, 1) for s in large],
                "statuses": sorted(set(small_status + large_status)),
                "statistic": "median of runs",
            },
        )
        if has_target:
            figure.target = f"< {ERASE_TARGET_MS:g} ms"
            figure.verdict = verdict(measured < ERASE_TARGET_MS)
        figures.append(figure)
    return figures

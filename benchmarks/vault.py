"""The PII vault (issue 3): what encryption costs on writes, reads and blind-index lookups.

Write and read figures run ``SubjectService`` twice over the same PostgreSQL database: with the
real ``KeyService`` (per-subject DEK wrapped by the keyring, AES-GCM fields, HMAC blind indexes)
and with :class:`benchmarks.plaintext.PlaintextKeyService`. Each operation is its own
transaction, exactly as an HTTP request would run it.
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
import uuid
from typing import Any

import msgspec
from sqlalchemy import func, insert, text
from sqlmodel import col, select

from benchmarks.common import (
    BenchContext,
    Figure,
    Op,
    Round,
    interleaved_latency,
    interleaved_throughput,
    median_rate,
    pair_ratios,
    percentiles,
    progress,
    verdict,
)
from benchmarks.plaintext import PlaintextKeyService
from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.crypto.fields import NORMALISERS, Binding, DataKey
from privacy_service.crypto.models import DataKeyRow
from privacy_service.crypto.service import PRIMARY, wrap_context
from privacy_service.subjects.models import Subject, SubjectStatus
from privacy_service.subjects.schemas import SubjectCreate
from privacy_service.subjects.service import SUBJECTS, SubjectService

ENCRYPTED = "encrypted"
PLAINTEXT = "plaintext"
RATIO_TARGET = 0.85
LOOKUP_P95_TARGET_MS = 5.0
BULK_BATCH = 5000
ACTOR = Actor("operator", "benchmark")


# -- test data -----------------------------------------------------------------------------


class Identities:
    """Unique, valid identifiers for the whole run (the blind-index columns are unique)."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def take(self) -> tuple[int, str, str]:
        n = next(self._counter)
        return n, f"bench.subject.{n}@example.com", f"+4474{n:08d}"


def _identities(ctx: BenchContext) -> Identities:
    found: Identities = ctx.shared.setdefault("vault.identities", Identities())
    return found


def profile(n: int) -> dict[str, Any]:
    """A 20-field KYC profile; every field is one the policy knows."""
    return {
        "name": f"Alex Example {n}",
        "given_name": "Alex",
        "family_name": f"Example{n}",
        "former_name": f"Alex Sample {n}",
        "date_of_birth": f"19{n % 80 + 20}-{n % 12 + 1:02d}-{n % 28 + 1:02d}",
        "place_of_birth": "Manchester",
        "nationality": "GB",
        "occupation": "Software engineer",
        "gender": "prefer not to say",
        "address_line1": f"{n % 300 + 1} High Street",
        "address_line2": f"Flat {n % 40 + 1}",
        "city": "London",
        "postal_code": "SW1A 1AA",
        "region": "Greater London",
        "country": "GB",
        "secondary_email": f"alt.{n}@example.org",
        "secondary_phone": f"+4475{n:08d}",
        "national_id": f"QQ{n % 1_000_000:06d}C",
        "passport_number": f"{n:09d}",
        "iban": f"GB82WEST1234{n:010d}",
    }


# -- the two variants ----------------------------------------------------------------------


def _variants(ctx: BenchContext) -> dict[str, Any]:
    found: dict[str, Any] | None = ctx.shared.get("vault.keys")
    if found is None:
        found = {ENCRYPTED: ctx.runtime.keys, PLAINTEXT: PlaintextKeyService()}
        ctx.shared["vault.keys"] = found
    return found


def _created(ctx: BenchContext) -> dict[str, list[uuid.UUID]]:
    found: dict[str, list[uuid.UUID]] = ctx.shared.setdefault("vault.created", {ENCRYPTED: [], PLAINTEXT: []})
    return found


def _service(ctx: BenchContext, keys: Any, session: Any) -> SubjectService:
    rt = ctx.runtime
    return SubjectService(session=session, keys=keys, policy=rt.policy, clock=rt.clock, actor=ACTOR)


def _writer(ctx: BenchContext, variant: str) -> Op:
    db, keys, identities = ctx.runtime.db, _variants(ctx)[variant], _identities(ctx)
    created = _created(ctx)[variant]

    async def create_one() -> None:
        n, email, phone = identities.take()
        body = SubjectCreate(email=email, phone=phone, profile=profile(n))
        async with db.transaction() as session:
            subject_id = await _service(ctx, keys, session).create(body)
        created.append(subject_id)

    return create_one


def _reader(ctx: BenchContext, variant: str, pool: list[uuid.UUID]) -> Op:
    db, keys = ctx.runtime.db, _variants(ctx)[variant]

    async def read_one() -> None:
        async with db.transaction() as session:
            await _service(ctx, keys, session).read(random.choice(pool))

    return read_one


def _throughput_figure(name: str, results: dict[str, list[Round]], workers: int) -> Figure:
    ratios = pair_ratios(results[ENCRYPTED], results[PLAINTEXT])
    ratio = statistics.median(ratios)
    return Figure(
        figure=name,
        unit="ops/s",
        measured=median_rate(results[ENCRYPTED]),
        baseline=median_rate(results[PLAINTEXT]),
        ratio=ratio,
        target=f"≥ {RATIO_TARGET:.2f}x",
        verdict=verdict(ratio >= RATIO_TARGET),
        spread=(min(ratios), max(ratios)),
        details={
            "workers": workers,
            "statistic": "ops/s: median of rounds; ratio: median of back-to-back round pairs",
            "baseline": "plaintext KeyService stand-in (benchmarks/plaintext.py), same SubjectService",
            "pair_ratios": ratios,
            "client_cpu_ms_per_op": {v: statistics.median(r.cpu_ms_per_op for r in rs) for v, rs in results.items()},
            "rounds": {
                v: [{"ops": r.ops, "seconds": round(r.seconds, 4), "cpu_seconds": round(r.cpu_seconds, 4)} for r in rs]
                for v, rs in results.items()
            },
        },
    )


def _concurrency_levels(ctx: BenchContext) -> list[tuple[str, int]]:
    workers = ctx.config.workers
    levels = [(f"{workers} workers", workers)]
    if workers != 1:
        levels.append(("1 stream", 1))
    return levels


# -- figures -------------------------------------------------------------------------------


async def write_throughput(ctx: BenchContext) -> list[Figure]:
    """Figure 1: SubjectService.create, encrypted vs plaintext, one transaction per subject."""
    config = ctx.config
    variants = {ENCRYPTED: _writer(ctx, ENCRYPTED), PLAINTEXT: _writer(ctx, PLAINTEXT)}
    figures = []
    for label, workers in _concurrency_levels(ctx):
        results = await interleaved_throughput(
            f"write {label}",
            variants,
            workers=workers,
            rounds=config.rounds,
            seconds=config.round_seconds,
            warmup=config.warmup_seconds,
        )
        figures.append(_throughput_figure(f"write, {label}", results, workers))
    return figures


async def _ensure_subjects(ctx: BenchContext, count: int) -> list[list[uuid.UUID]]:
    """At least ``count`` subjects per variant (reusing the write figure's); equal-sized pools."""
    created = _created(ctx)
    for variant in (ENCRYPTED, PLAINTEXT):
        missing = count - len(created[variant])
        if missing > 0:
            progress.log(f"creating {missing} {variant} subjects to read")
            create_one = _writer(ctx, variant)
            for _ in range(missing):
                await create_one()
    size = min(len(created[ENCRYPTED]), len(created[PLAINTEXT]))
    return [created[ENCRYPTED][-size:], created[PLAINTEXT][-size:]]


async def _check_read(ctx: BenchContext, variant: str, subject_id: uuid.UUID) -> None:
    async with ctx.runtime.db.transaction() as session:
        out = await _service(ctx, _variants(ctx)[variant], session).read(subject_id)
    if not (out.email or "").startswith("bench.subject.") or len(out.profile) != len(profile(0)):
        raise RuntimeError(f"{variant} read returned something other than what was written")


async def read_throughput(ctx: BenchContext) -> list[Figure]:
    """Figure 2: SubjectService.read (decrypts, writes an audit row) on subjects created above."""
    config = ctx.config
    encrypted_pool, plaintext_pool = await _ensure_subjects(ctx, config.read_subjects)
    await _check_read(ctx, ENCRYPTED, encrypted_pool[0])
    await _check_read(ctx, PLAINTEXT, plaintext_pool[0])
    variants = {
        ENCRYPTED: _reader(ctx, ENCRYPTED, encrypted_pool),
        PLAINTEXT: _reader(ctx, PLAINTEXT, plaintext_pool),
    }
    figures = []
    for label, workers in _concurrency_levels(ctx):
        results = await interleaved_throughput(
            f"read {label}",
            variants,
            workers=workers,
            rounds=config.rounds,
            seconds=config.round_seconds,
            warmup=config.warmup_seconds,
        )
        figure = _throughput_figure(f"read, {label}", results, workers)
        figure.details["subjects_per_variant"] = len(encrypted_pool)
        figures.append(figure)
    return figures


async def bulk_load(ctx: BenchContext, count: int) -> tuple[list[uuid.UUID], list[str]]:
    """Insert ``count`` really encrypted subjects with Core executemany, 5k per transaction.

    Rows are built the way SubjectService.create builds them (same normalisers, bindings,
    blind indexer and key wrapping) but skip the ORM, so 100k subjects load in seconds.
    """
    rt = ctx.runtime
    identities = _identities(ctx)
    subjects_table, keys_table = Subject.__table__, DataKeyRow.__table__
    profile_fields = {name: rt.policy.profile_fields[name] for name in profile(0)}
    ids: list[uuid.UUID] = []
    emails: list[str] = []
    started = time.perf_counter()
    for offset in range(0, count, BULK_BATCH):
        subject_rows: list[dict[str, Any]] = []
        key_rows: list[dict[str, Any]] = []
        now = rt.clock.now()
        for _ in range(min(BULK_BATCH, count - offset)):
            n, raw_email, raw_phone = identities.take()
            email, phone = NORMALISERS["email"](raw_email), NORMALISERS["phone"](raw_phone)
            subject_id, key = uuid.uuid4(), DataKey.generate()
            wrapped = await rt.provider.wrap(key.material, wrap_context(subject_id, key.key_id, PRIMARY))
            subject_rows.append(
                {
                    "id": subject_id,
                    "status": SubjectStatus.ACTIVE.value,
                    "language": "en",
                    "email_bidx": rt.indexer.index("email", email),
                    "phone_bidx": rt.indexer.index("phone", phone),
                    "email_ct": key.seal(email.encode(), Binding(SUBJECTS, subject_id, None, "email")),
                    "phone_ct": key.seal(phone.encode(), Binding(SUBJECTS, subject_id, None, "phone")),
                    "profile_ct": key.seal(
                        msgspec.json.encode(profile(n)), Binding(SUBJECTS, subject_id, None, "profile")
                    ),
                    "profile_fields": profile_fields,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            key_rows.append(
                {
                    "id": key.key_id,
                    "subject_id": subject_id,
                    "purpose": PRIMARY,
                    "kek_version": wrapped.kek_version,
                    "wrapped": wrapped.blob,
                    "created_at": now,
                }
            )
            ids.append(subject_id)
            emails.append(raw_email)
        async with rt.db.engine.begin() as conn:
            await conn.execute(insert(subjects_table), subject_rows)
            await conn.execute(insert(keys_table), key_rows)
        done = offset + len(subject_rows)
        rate = done / (time.perf_counter() - started)
        progress.log(f"bulk load {done:,}/{count:,} subjects ({rate:,.0f}/s)")
    async with rt.db.engine.begin() as conn:
        await conn.execute(text("ANALYZE subjects"))
        await conn.execute(text("ANALYZE keystore.data_keys"))
    return ids, emails


async def lookup_latency(ctx: BenchContext) -> list[Figure]:
    """Figure 3: SubjectService.lookup("email", ...) at N subjects vs a primary-key SELECT."""
    config, rt = ctx.config, ctx.runtime
    db, keys = rt.db, _variants(ctx)[ENCRYPTED]
    started = time.perf_counter()
    ids, emails = await bulk_load(ctx, config.subjects)
    load_seconds = time.perf_counter() - started
    await _check_read(ctx, ENCRYPTED, ids[0])
    async with db.transaction() as session:
        total = (await session.exec(select(func.count()).select_from(Subject))).one()

    async def lookup_email() -> None:
        async with db.transaction() as session:
            found = await _service(ctx, keys, session).lookup("email", random.choice(emails))
        if len(found) != 1:
            raise RuntimeError("a loaded e-mail address was not found through its blind index")

    async def select_by_id() -> None:
        async with db.transaction() as session:
            (await session.exec(select(Subject).where(col(Subject.id) == random.choice(ids)))).one()

    async def select_by_id_audited() -> None:
        # The primary-key read plus the audit row a lookup writes: what remains is the blind index.
        async with db.transaction() as session:
            row = (await session.exec(select(Subject).where(col(Subject.id) == random.choice(ids)))).one()
            audit.record(session, at=rt.clock.now(), actor=ACTOR, action="subject.lookup", subject_id=row.id)

    progress.log(f"timing {config.lookups} each of lookups and two primary-key reads over {total:,} subjects")
    latencies = await interleaved_latency(
        {"lookup": lookup_email, "pk": select_by_id, "pk_audited": select_by_id_audited},
        samples=config.lookups,
        warmup=min(200, config.lookups),
    )
    lookup, pk, pk_audited = (
        {point: seconds * 1000 for point, seconds in percentiles(latencies[name]).items()}
        for name in ("lookup", "pk", "pk_audited")
    )
    details = {
        "subjects_loaded": len(ids),
        "subjects_in_table": total,
        "bulk_load_seconds": round(load_seconds, 2),
        "samples": config.lookups,
        "lookup_ms": lookup,
        "baseline": "SELECT subject by primary key, own transaction, same session machinery",
        "baseline_ms": pk,
        "audited_pk_read_ms": pk_audited,
        "note": "a lookup also writes its audit row, so its commit waits for a WAL flush; the baseline commits "
        "nothing. audited_pk_read adds that audit row to the baseline, isolating the blind index itself.",
    }
    size = f"{len(ids) // 1000}k" if len(ids) >= 1000 else str(len(ids))
    figures = []
    for point in (50, 95, 99):
        ratio = lookup[point] / pk[point]
        figure = Figure(f"email lookup p{point} @{size}", "ms", lookup[point], pk[point], ratio, details=details)
        if point == 95:
            figure.target = f"p95 < {LOOKUP_P95_TARGET_MS:g} ms"
            figure.verdict = verdict(lookup[point] < LOOKUP_P95_TARGET_MS)
        figures.append(figure)
    figures.append(
        Figure(
            f"email lookup p95 @{size} vs audited PK read",
            "ms",
            lookup[95],
            pk_audited[95],
            lookup[95] / pk_audited[95],
            details=details,
        )
    )
    return figures

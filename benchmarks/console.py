"""The operator console (issue 17): p95 of every console page with 10,000 open requests and 100,000
subjects on PostgreSQL, against a bare one-SELECT endpoint measured in the same run.

Data (topped up to the sizes, whatever earlier benches left; the counts found are in the details):

- Through the service, over the app's own HTTP API in process: ``PRIVACY_BENCH_CONSOLE_SERVICE_REQUESTS``
  (default 200) requests filed as a customer files them (``POST /v1/requests``: intake, code mail queued),
  20 subjects with records and a legal hold, three breaches (one assessed), a downstream system, a
  retention dry run. These are the rows the pages with an id are opened on.
- The bulk by SQL, shaped as the service writes it and readable by it: subjects as
  ``benchmarks.vault.bulk_load`` writes them (``SubjectService.create``'s rows: sealed identifiers and
  profile, blind indexes, a wrapped data key each; Core executemany), and open requests as
  ``Intake.submit`` writes them (a wrapped request key each, the identity sealed under it, rectify
  changes sealed too), spread over every open status, type and regime, due from 10 days ago to 60
  days ahead (so some are overdue), each with its transitions; verified ones linked to a subject.

Pages: every GET route under ``/console`` in the app's routes (so pages added later are measured too)
but sign-in; path parameters are filled by name from the seeded rows (``request_id``, ``subject_id``,
``breach_id``, ``run_id``, ``system_id``, ``hold_id``, ``language``, or ``<name>_id`` found as a table
``<name>s``), rotating over up to 20 rows each. A page whose parameter has no seeded row, that does
not answer 200 HTML, or that redirects, is listed as skipped with the reason. Each page is read by one
client at a time (an operator's browser), signed in with every scope, ``PRIVACY_BENCH_CONSOLE_SAMPLES``
(default 100) times after 5 warm-up reads, each read followed by one of the baseline (alternating
order), through ``httpx.ASGITransport`` in process: the whole app (middleware, session resume,
CSRF cookie, page queries, template) on the bench's PostgreSQL.

Baseline: the same bare Litestar app as the status-read figure (``benchmarks.requests``): one endpoint,
one SELECT of a request row by primary key in autocommit, six fields as JSON.

Runs in ``make bench``, or alone: ``make bench-console`` (``PRIVACY_BENCH_ONLY=console``).
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import random
import re
import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import msgspec
from litestar import Litestar
from litestar.routes import HTTPRoute
from sqlalchemy import event, func, insert, select, text
from sqlmodel import col

from benchmarks.common import BenchContext, Figure, _env_int, console, percentiles, progress, verdict
from benchmarks.requests import _bare_status_app
from benchmarks.vault import bulk_load
from privacy_service.app import create_app
from privacy_service.audit.service import Actor
from privacy_service.crypto.fields import NORMALISERS, Binding, DataKey
from privacy_service.crypto.models import DataKeyRow
from privacy_service.crypto.service import REQUEST, wrap_context
from privacy_service.dsr.context import TABLE as REQUESTS_TABLE
from privacy_service.dsr.flows import OPEN, Status
from privacy_service.dsr.models import PrivacyRequest, RequestTransition
from privacy_service.operators.service import SCOPES, create_operator
from privacy_service.retention.jobs import RunOptions, run_purge
from privacy_service.runtime import Runtime
from privacy_service.subjects.models import Subject

P95_TARGET_MS = 100.0
WARMUP = 5
ROTATE = 20  # rows each path parameter rotates over
BATCH = 2000
OPERATOR = Actor("operator", "benchmark")
OPEN_LIMITS = {
    "intake": "1000000/min burst 100000",
    "intake_identity": "1000000/min burst 100000",
    "verify": "1000000/min burst 100000",
    "operator": "1000000/min burst 100000",
    "console_sign_in": "1000000/min burst 100000",
}
_PARAM = re.compile(r"\{([A-Za-z_]+)(?::[a-z]+)?\}")
_CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]*)"')
_NEXT_PAGE = re.compile(r'href="(/console/[^"?]*\?[^"]*after=[^"]+)"')
# Filters an operator uses daily on the list pages (each measured as a page of its own when it answers 200).
_FILTERS = {
    "/console/requests": ("?overdue=yes", "?status=processing&type=erase", "?regime=ccpa"),
    "/console/audit": ("?action=subject.read",),
    "/console/breaches": ("?status=open",),
}
# Open statuses the bulk spreads over, with their path from intake (RECEIVED first, always).
_PATHS: dict[Status, tuple[Status, ...]] = {
    Status.AWAITING_VERIFICATION: (Status.RECEIVED, Status.AWAITING_VERIFICATION),
    Status.VERIFIED: (Status.RECEIVED, Status.AWAITING_VERIFICATION, Status.VERIFIED),
    Status.AWAITING_REVIEW: (Status.RECEIVED, Status.AWAITING_VERIFICATION, Status.VERIFIED, Status.AWAITING_REVIEW),
    Status.PROCESSING: (Status.RECEIVED, Status.AWAITING_VERIFICATION, Status.VERIFIED, Status.PROCESSING),
}
_TYPES = ("access", "erase", "rectify", "portability")
_REGIMES = ("gdpr", "ccpa", "pipl")


@dataclasses.dataclass(frozen=True, slots=True)
class ConsoleBenchConfig:
    open_requests: int = 10_000
    subjects: int = 100_000
    service_requests: int = 200
    samples: int = 100

    @classmethod
    def from_env(cls) -> ConsoleBenchConfig:
        default = cls()
        return cls(
            open_requests=_env_int("PRIVACY_BENCH_CONSOLE_REQUESTS", default.open_requests),
            subjects=_env_int("PRIVACY_BENCH_CONSOLE_SUBJECTS", default.subjects),
            service_requests=_env_int("PRIVACY_BENCH_CONSOLE_SERVICE_REQUESTS", default.service_requests),
            samples=_env_int("PRIVACY_BENCH_CONSOLE_SAMPLES", default.samples, minimum=20),
        )


def _runtime(ctx: BenchContext) -> Runtime:
    """The bench runtime with rate limits out of the way and local systems allowed (same database, keys)."""
    settings = ctx.runtime.settings.model_copy(
        update={
            "rate_limits": {**ctx.runtime.settings.rate_limits, **OPEN_LIMITS},
            "systems_allow_private_networks": True,
        }
    )
    return dataclasses.replace(ctx.runtime, settings=settings)


async def _count(runtime: Runtime, statement: Any) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(statement)).scalar_one())


def _open_count() -> Any:
    return (
        select(func.count()).select_from(PrivacyRequest).where(col(PrivacyRequest.status).in_([s.value for s in OPEN]))
    )


# -- seeding ---------------------------------------------------------------------------------


async def _through_the_api(client: httpx.AsyncClient, auth: dict[str, str], config: ConsoleBenchConfig) -> None:
    """The share the service writes itself: what a customer and an operator would do over HTTP."""
    run = uuid.uuid4().hex[:8]
    for n in range(config.service_requests):
        kind = _TYPES[n % 4]
        body: dict[str, Any] = {"type": kind, "identity": {"email": f"console.{run}.{n}@example.com"}}
        body["regime"] = _REGIMES[n % 3]
        if kind == "rectify":
            body["changes"] = {"profile": {"city": "Leeds"}}
        filed = await client.post("/v1/requests", json=body)
        if filed.status_code != 202:
            raise RuntimeError(f"POST /v1/requests answered {filed.status_code}: {filed.text[:200]}")
    for n in range(20):
        made = await client.post(
            "/v1/subjects",
            json={"email": f"console.subject.{run}.{n}@example.com", "profile": {"city": "London"}},
            headers=auth,
        )
        if made.status_code != 201:
            raise RuntimeError(f"POST /v1/subjects answered {made.status_code}: {made.text[:200]}")
        subject_id = made.json()["id"]
        for category in ("user.device", "user.financial.transaction"):
            record = {"kind": "event", "category": category, "occurred_at": "2025-01-02T03:04:05Z", "data": {"n": n}}
            added = await client.post(f"/v1/subjects/{subject_id}/records", json=record, headers=auth)
            if added.status_code != 201:
                raise RuntimeError(f"POST records answered {added.status_code}: {added.text[:200]}")
        if n % 2 == 0:
            hold = await client.post(
                f"/v1/subjects/{subject_id}/holds", json={"reason": "Litigation LIT-2026-7"}, headers=auth
            )
            if hold.status_code != 201:
                raise RuntimeError(f"POST holds answered {hold.status_code}: {hold.text[:200]}")
    for n, title in enumerate(("Lost laptop", "Mis-sent statement e-mails", "Support mailbox forwarding")):
        breach = await client.post(
            "/v1/breaches",
            json={
                "title": f"{title} ({run})",
                "description": "A mailbox rule forwarded support tickets to an external address for two days.",
                "nature": ["confidentiality"],
                "categories": ["user.name", "user.contact.email", "user.financial.transaction"],
                "affected": {"estimated_count": 40 * (n + 1)},
                "malicious": True,
                "exfiltration_known": True,
                "mitigation": "The rule was removed and the mailbox password reset.",
                "consequences": "Phishing e-mails that quote real support conversations.",
                "advice": "Ignore messages asking for your password; we never ask for it.",
            },
            headers=auth,
        )
        if breach.status_code != 201:
            raise RuntimeError(f"POST /v1/breaches answered {breach.status_code}: {breach.text[:200]}")
        if n == 0:  # assessed and notified to the authority: the Art. 33 document has a page to open
            breach_id = breach.json()["id"]
            for path, body in (
                ("assessment", {"ease_of_identification": "maximum"}),
                ("authority-notification", {"recipient": "breach.reports@authority.example"}),
            ):
                answer = await client.post(f"/v1/breaches/{breach_id}/{path}", json=body, headers=auth)
                if answer.status_code >= 300:
                    progress.log(
                        f"[yellow]POST /v1/breaches/{{id}}/{path}: {answer.status_code} {answer.text[:300]}[/]"
                    )
    system = await client.post(
        "/v1/systems",
        json={
            "name": f"crm-{run}",
            "callback_url": "http://127.0.0.1:9/privacy-hook",
            "request_types": ["access", "erase"],
            "categories": ["user.contact.email"],
        },
        headers=auth,
    )
    if system.status_code != 201:
        progress.log(f"[yellow]POST /v1/systems answered {system.status_code}: no system to open[/]")


async def _bulk_requests(runtime: Runtime, count: int, subject_ids: list[uuid.UUID]) -> None:
    """Open requests as ``Intake.submit`` writes them (request key, sealed identity), by Core executemany."""
    keys_table, requests_table = DataKeyRow.__table__, PrivacyRequest.__table__  # type: ignore[attr-defined]
    transitions_table = RequestTransition.__table__  # type: ignore[attr-defined]
    statuses = list(_PATHS)
    chooser = random.Random(17)
    serial = itertools.count()
    started = time.perf_counter()
    for offset in range(0, count, BATCH):
        now = runtime.clock.now()
        key_rows: list[dict[str, Any]] = []
        request_rows: list[dict[str, Any]] = []
        transition_rows: list[dict[str, Any]] = []
        for _ in range(min(BATCH, count - offset)):
            n = next(serial)
            request_id, key = uuid.uuid4(), DataKey.generate()
            wrapped = await runtime.provider.wrap(key.material, wrap_context(request_id, key.key_id, REQUEST))
            identity = NORMALISERS["email"](f"bulk.{request_id.hex[:12]}@example.com")
            kind, regime, status = _TYPES[n % 4], _REGIMES[n % 3], statuses[n % len(statuses)]
            due = now + timedelta(days=chooser.uniform(-10, 60))
            received = due - timedelta(days=30)

            def seal(name: str, value: bytes, request_id: uuid.UUID = request_id, key: DataKey = key) -> bytes:
                return key.seal(value, Binding(REQUESTS_TABLE, request_id, None, name))

            verified = status != Status.AWAITING_VERIFICATION
            request_rows.append(
                {
                    "id": request_id,
                    "type": kind,
                    "status": status.value,
                    "regime": regime,
                    "language": "zh" if n % 5 == 0 else "en",
                    "identity_kind": "email",
                    "identity_bidx": runtime.indexer.index("email", identity),
                    "identity_ct": seal("identity", identity.encode()),
                    "changes_ct": seal("changes", msgspec.json.encode({"profile": {"city": "Leeds"}}))
                    if kind == "rectify"
                    else None,
                    "reason_ct": None,
                    "subject_id": chooser.choice(subject_ids) if verified and subject_ids else None,
                    "duplicate_of": None,
                    "received_at": received,
                    "due_at": due,
                    "acknowledged_at": received,
                    "verified_at": received + timedelta(hours=1) if verified else None,
                    "code_attempts": 0,
                    "resends": 0,
                }
            )
            key_rows.append(
                {
                    "id": key.key_id,
                    "subject_id": request_id,
                    "purpose": REQUEST,
                    "kek_version": wrapped.kek_version,
                    "wrapped": wrapped.blob,
                    "created_at": received,
                }
            )
            path = _PATHS[status]
            for step, (before, after) in enumerate(zip((None, *path[:-1]), path, strict=True)):
                transition_rows.append(
                    {
                        "request_id": request_id,
                        "from_status": before.value if before else None,
                        "to_status": after.value,
                        "at": received + timedelta(minutes=step),
                        "actor_type": "subject" if step < 3 else "operator",
                        "actor_id": str(request_id) if step < 3 else "benchmark",
                        "note": None,
                    }
                )
        async with runtime.db.engine.begin() as conn:
            await conn.execute(insert(keys_table), key_rows)
            await conn.execute(insert(requests_table), request_rows)
            await conn.execute(insert(transitions_table), transition_rows)
        done = offset + len(request_rows)
        progress.log(f"bulk load {done:,}/{count:,} open requests ({done / (time.perf_counter() - started):,.0f}/s)")


async def _seed(ctx: BenchContext, runtime: Runtime, app: Litestar, config: ConsoleBenchConfig) -> dict[str, Any]:
    started = time.perf_counter()
    async with runtime.db.transaction() as session:
        _, key = await create_operator(
            session, name=f"bench-console-{uuid.uuid4().hex[:6]}", scopes=frozenset(SCOPES), now=runtime.clock.now()
        )
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        await _through_the_api(client, auth, config)
    have_subjects = await _count(runtime, select(func.count()).select_from(Subject))
    bulk_subjects = max(0, config.subjects - have_subjects)
    if bulk_subjects:
        await bulk_load(ctx, bulk_subjects)
    async with runtime.db.engine.connect() as conn:
        sample = (await conn.execute(text("SELECT id FROM subjects ORDER BY random() LIMIT 5000"))).scalars().all()
    bulk_requests = max(0, config.open_requests - await _count(runtime, _open_count()))
    if bulk_requests:
        await _bulk_requests(runtime, bulk_requests, list(sample))
    # A retention dry run: the report pages have a run to open (reads every subject's records, writes nothing).
    await run_purge(runtime, RunOptions(dry_run=True, actor=OPERATOR))
    async with runtime.db.engine.connect() as conn:
        for table in ("subjects", "dsr_requests", "dsr_transitions", "keystore.data_keys", "audit_events"):
            await conn.execute(text(f"ANALYZE {table}"))
        await conn.commit()
    seeded = {
        "open_requests": await _count(runtime, _open_count()),
        "requests": await _count(runtime, select(func.count()).select_from(PrivacyRequest)),
        "subjects": await _count(runtime, select(func.count()).select_from(Subject)),
        "through_the_service": f"{config.service_requests} requests (POST /v1/requests), 20 subjects with records "
        "and 10 legal holds, 3 breaches, 1 system, 1 retention dry run",
        "bulk_by_sql": f"{bulk_subjects:,} subjects (vault.bulk_load) and {bulk_requests:,} open requests "
        "(Intake.submit's rows), Core executemany, sealed with the service's own keys (readable)",
        "seconds": round(time.perf_counter() - started, 1),
        "key": key,
    }
    progress.log(
        f"seeded in {seeded['seconds']} s: {seeded['open_requests']:,} open requests ({seeded['requests']:,} in all), "
        f"{seeded['subjects']:,} subjects; through the service: {seeded['through_the_service']}; "
        f"bulk by SQL: {seeded['bulk_by_sql']}"
    )
    return seeded


# -- the pages ---------------------------------------------------------------------------------


def console_pages(app: Litestar) -> list[str]:
    """Every GET route under /console but sign-in, as declared (path parameters unfilled)."""
    found = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "GET" not in route.methods:
            continue
        if (route.path == "/console" or route.path.startswith("/console/")) and route.path != "/console/sign-in":
            found.add(route.path)
    return sorted(found)


_KNOWN_IDS = {
    # Service-made rows first: those are the pages an operator opens from a list.
    "request_id": "SELECT id FROM dsr_requests WHERE status = ANY(:open) ORDER BY due_at LIMIT :n",
    "subject_id": "SELECT DISTINCT subject_id FROM legal_holds LIMIT :n",
    "breach_id": "SELECT id FROM breaches LIMIT :n",
    "run_id": "SELECT id FROM retention_runs LIMIT :n",
    "system_id": "SELECT id FROM systems LIMIT :n",
    "hold_id": "SELECT id FROM legal_holds LIMIT :n",
}
# Parameters that only make sense together (a hold of its subject, a notice of its breach).
_PAIRS = {
    ("subject_id", "hold_id"): "SELECT subject_id, id FROM legal_holds LIMIT :n",
    ("breach_id", "seq"): "SELECT breach_id, seq FROM breach_authority_notices LIMIT :n",
}
# A parameter named otherwise (``/console/requests/{ref}``) is read by the collection it follows.
_SEGMENTS = {
    "requests": "request_id",
    "subjects": "subject_id",
    "breaches": "breach_id",
    "runs": "run_id",
    "systems": "system_id",
    "holds": "hold_id",
    "authority-notifications": "seq",
}


def _canonical(template: str) -> list[tuple[str, str]]:
    """Each path parameter as (its name in the path, the seeded rows' name for it)."""
    found = []
    for match in _PARAM.finditer(template):
        name = match.group(1)
        before = template[: match.start()].rstrip("/").rpartition("/")[2]
        canonical = name if name in _KNOWN_IDS or name in ("seq", "language", "lang") else _SEGMENTS.get(before, name)
        found.append((name, canonical))
    return found


async def _values(runtime: Runtime, name: str) -> list[tuple[str, ...]]:
    """Values to fill a path parameter with, from the seeded rows; empty if none is known."""
    if name in ("language", "lang"):
        return [("en",), ("zh",)]
    statement = _KNOWN_IDS.get(name)
    async with runtime.db.engine.connect() as conn:
        if statement is None and name.endswith("_id"):
            base = name.removesuffix("_id")
            for table in (f"{base}s", f"{base}es", f"dsr_{base}s", f"system_{base}s", f"breach_{base}s"):
                if await conn.scalar(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}):
                    statement = f"SELECT id FROM {table} LIMIT :n"  # noqa: S608 - a name from this list
                    break
        if statement is None:
            return []
        rows = (await conn.execute(text(statement), {"n": ROTATE, "open": [s.value for s in OPEN]})).all()
    return [tuple(str(value) for value in row) for row in rows]


async def _paths(runtime: Runtime, template: str) -> tuple[list[str], str | None]:
    """Concrete paths for a page (rotated over), or none and why."""
    params = _canonical(template)
    if not params:
        return [template], None
    canonical = [name for _, name in params]
    columns: list[tuple[tuple[str, ...], list[tuple[str, ...]]]] = []
    left = list(canonical)
    for pair, statement in _PAIRS.items():
        if all(name in left for name in pair):
            async with runtime.db.engine.connect() as conn:
                rows = (await conn.execute(text(statement), {"n": ROTATE})).all()
            columns.append((pair, [tuple(str(value) for value in row) for row in rows]))
            left = [name for name in left if name not in pair]
    for name in left:
        columns.append(((name,), await _values(runtime, name)))
    for names, rows in columns:
        if not rows:
            return [], "no seeded row for " + ", ".join(f"{{{name}}}" for name in names)
    paths = set()
    for index in range(ROTATE):
        chosen: dict[str, str] = {}
        for names, rows in columns:
            chosen.update(zip(names, rows[index % len(rows)], strict=True))
        by_name = {name: chosen[canonical_name] for name, canonical_name in params}
        paths.add(_PARAM.sub(lambda match, by_name=by_name: by_name[match.group(1)], template))
    return sorted(paths), None


async def _signed_in(client: httpx.AsyncClient, key: str) -> None:
    form = await client.get("/console/sign-in")
    token = _CSRF_FIELD.search(form.text)
    if token is None:
        raise RuntimeError(f"no CSRF field on the sign-in page ({form.status_code})")
    answer = await client.post("/console/sign-in", data={"key": key, "_csrf_token": token.group(1)})
    if answer.status_code != 303 or answer.headers.get("location") != "/console":
        raise RuntimeError(f"console sign-in answered {answer.status_code}")


async def console_pages_latency(ctx: BenchContext) -> list[Figure]:
    config = ConsoleBenchConfig.from_env()
    runtime = _runtime(ctx)
    app = create_app(runtime=runtime)
    seeded = await _seed(ctx, runtime, app, config)
    async with runtime.db.engine.connect() as conn:
        bare_ids = (await conn.execute(text("SELECT id FROM dsr_requests LIMIT 200"))).scalars().all()
    pages = console_pages(app)
    statements = [0]

    def count(*_: Any) -> None:
        statements[0] += 1

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", count)
    progress.log(f"{len(pages)} console GET pages found: {', '.join(pages)}")
    chooser = random.Random(23)
    figures: list[Figure] = []
    skipped: dict[str, str] = {}
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=_bare_status_app(runtime)), base_url="http://b") as bare,
    ):
        await _signed_in(client, str(seeded["key"]))

        async def baseline() -> None:
            response = await bare.get(f"/requests/{chooser.choice(bare_ids)}")
            if response.status_code != 200:
                raise RuntimeError(f"bare endpoint answered {response.status_code}")

        async def measure(label: str, paths: list[str], *, follow: bool = True) -> str | None:
            """One figure for ``label`` read over ``paths``; or why it was not measured."""
            before = statements[0]
            first = await client.get(paths[0])
            queries = statements[0] - before  # SQL statements one read of the page runs (an N+1 shows here)
            kind = first.headers.get("content-type", "")
            if first.status_code != 200:
                return f"answered {first.status_code} on {paths[0]}"
            if not kind.startswith("text/html"):
                return f"not a page ({kind.split(';')[0]})"
            rotation = itertools.cycle(paths)

            async def page() -> None:
                path = next(rotation)
                response = await client.get(path)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path} answered {response.status_code}")

            for _ in range(WARMUP):
                await page()
                await baseline()
            timings: dict[str, list[float]] = {"page": [], "bare": []}
            for index in range(config.samples):
                for name, call in (("page", page), ("bare", baseline))[:: 1 if index % 2 == 0 else -1]:
                    started = time.perf_counter()
                    await call()
                    timings[name].append(time.perf_counter() - started)
            measured = {point: seconds * 1000 for point, seconds in percentiles(timings["page"]).items()}
            base = {point: seconds * 1000 for point, seconds in percentiles(timings["bare"]).items()}
            progress.log(
                f"{label}: p50 {measured[50]:.1f} ms, p95 {measured[95]:.1f} ms, p99 {measured[99]:.1f} ms "
                f"(bare p95 {base[95]:.2f} ms; {len(paths)} path(s), {len(first.content):,} bytes, "
                f"{queries} SQL statements)"
            )
            figures.append(
                Figure(
                    f"console GET {label} p95",
                    "ms",
                    measured[95],
                    base[95],
                    measured[95] / base[95],
                    target=f"p95 < {P95_TARGET_MS:g} ms",
                    verdict=verdict(measured[95] < P95_TARGET_MS),
                    details={
                        "page_ms": measured,
                        "baseline_ms": base,
                        "median_ms": statistics.median(timings["page"]) * 1000,
                        "samples": config.samples,
                        "paths_rotated": len(paths),
                        "bytes": len(first.content),
                        "sql_statements": queries,
                        "seeded": {k: v for k, v in seeded.items() if k != "key"},
                        "path": "whole app in process (httpx.ASGITransport), one client, signed in with every scope",
                        "baseline": "bare Litestar app, same transport and database: one SELECT of a request row by "
                        "primary key in autocommit (benchmarks.requests)",
                    },
                )
            )
            # A list's second page, by the keyset link the page itself offers.
            following = _NEXT_PAGE.search(first.text)
            if following and follow:
                reason = await measure(f"{label} (next page)", [html.unescape(following.group(1))], follow=False)
                if reason:
                    skipped[f"{label} (next page)"] = reason
            return None

        for template in pages:
            paths, reason = await _paths(runtime, template)
            label = _PARAM.sub(lambda match: "{" + match.group(1) + "}", template)
            if reason is None:
                reason = await measure(label, paths)
            if reason is not None:
                skipped[template] = reason
                progress.log(f"[yellow]skipped {template}: {reason}[/]")
                continue
            for query in _FILTERS.get(template, ()):
                reason = await measure(f"{label}{query}", [f"{path}{query}" for path in paths], follow=False)
                if reason is not None:
                    skipped[f"{template}{query}"] = reason
    event.remove(runtime.db.engine.sync_engine, "before_cursor_execute", count)
    out = console()
    out.print(
        f"[bold]console bench data[/]: {seeded['open_requests']:,} open requests ({seeded['requests']:,} in all), "
        f"{seeded['subjects']:,} subjects. Through the service: {seeded['through_the_service']}. "
        f"Bulk by SQL: {seeded['bulk_by_sql']}."
    )
    out.print(f"[bold]console pages found[/] ({len(pages)}): {', '.join(pages)}")
    for template, why in skipped.items():
        out.print(f"[yellow]console page not measured[/]: {template}: {why}")
    if figures:
        figures[0].details["skipped_pages"] = skipped
        figures[0].details["pages_found"] = pages
    return figures


def main() -> int:
    """``python -m benchmarks.console``: this bench alone, with the report and JSON of ``make bench``."""
    import asyncio
    import os

    from benchmarks.__main__ import _run, _selected
    from benchmarks.common import BenchConfig

    os.environ["PRIVACY_BENCH_ONLY"] = "console"
    config = BenchConfig.from_env()
    return asyncio.run(_run(config, _selected(config)))


if __name__ == "__main__":
    raise SystemExit(main())

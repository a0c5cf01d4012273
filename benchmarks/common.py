"""What every benchmark shares: configuration, a throw-away database, timing helpers, results."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console

from privacy_service.config import Settings
from privacy_service.gc_tuning import tune_after_startup
from privacy_service.migrations.runner import upgrade
from privacy_service.runtime import Runtime, build_runtime

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def console(*, stderr: bool = False) -> Console:
    """A rich console; when piped (CI logs, `| tee`) wide enough that table rows do not wrap."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, log_path=False, width=None if stream.isatty() else 140)


# Progress goes to stderr so stdout carries only the report.
progress = console(stderr=True)

Op = Callable[[], Awaitable[object]]


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = int(raw.replace("_", ""))
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}")
    return value


def _env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (os.environ.get(name) or default).strip()
    if value not in choices:
        raise SystemExit(f"{name} must be one of {', '.join(choices)}")
    return value


def _env_float(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = float(raw)
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}")
    return value


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Run size. The defaults keep `make bench` within about five minutes on two cores."""

    postgres_url: str = DEFAULT_POSTGRES_URL
    workers: int = 8  # concurrent asyncio workers for the "realistic concurrency" figures
    intake_clients: int = 16  # concurrent clients of the request-intake figure (the 16)
    rounds: int = 8  # timed rounds per variant; the variants alternate A/B then B/A
    round_seconds: float = 1.0  # short rounds: a burst of outside load hits both rounds of a pair
    warmup_seconds: float = 1.0
    read_subjects: int = 1000  # subjects per variant the read figures pick from
    subjects: int = 100_000  # table size for the blind-index lookup figure
    lookups: int = 2000
    only: tuple[str, ...] = ()  # bench names (or name prefixes) to run; empty = all
    output: Path = ROOT / "bench-results" / "latest.json"
    # The collector as `serve` and `worker` set it after start-up (privacy_service.gc_tuning), since this
    # process stands in for them; "default" leaves CPython's (to measure what the tuning gives).
    gc: str = "serve"

    @classmethod
    def from_env(cls) -> BenchConfig:
        only = os.environ.get("PRIVACY_BENCH_ONLY", "")
        default = cls()
        return cls(
            postgres_url=os.environ.get("PRIVACY_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL,
            workers=_env_int("PRIVACY_BENCH_WORKERS", default.workers),
            intake_clients=_env_int("PRIVACY_BENCH_DSR_CLIENTS", default.intake_clients),
            rounds=_env_int("PRIVACY_BENCH_ROUNDS", default.rounds),
            round_seconds=_env_float("PRIVACY_BENCH_ROUND_SECONDS", default.round_seconds, 0.1),
            warmup_seconds=_env_float("PRIVACY_BENCH_WARMUP_SECONDS", default.warmup_seconds, 0.0),
            read_subjects=_env_int("PRIVACY_BENCH_READ_SUBJECTS", default.read_subjects),
            subjects=_env_int("PRIVACY_BENCH_SUBJECTS", default.subjects),
            lookups=_env_int("PRIVACY_BENCH_LOOKUPS", default.lookups),
            only=tuple(name.strip() for name in only.split(",") if name.strip()),
            output=Path(os.environ.get("PRIVACY_BENCH_OUTPUT") or default.output),
            gc=_env_choice("PRIVACY_BENCH_GC", default.gc, ("serve", "default")),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "postgres_server": self.postgres_url.rpartition("@")[2].rpartition("/")[0],
            "workers": self.workers,
            "intake_clients": self.intake_clients,
            "rounds": self.rounds,
            "round_seconds": self.round_seconds,
            "warmup_seconds": self.warmup_seconds,
            "read_subjects": self.read_subjects,
            "subjects": self.subjects,
            "lookups": self.lookups,
            "only": list(self.only),
            "gc": self.gc,
        }

    def after_startup(self) -> None:
        """What ``serve`` does once its app is built: call it where a bench has built its app."""
        if self.gc == "serve":
            tune_after_startup()


@dataclass(slots=True)
class Figure:
    """One line of the report: a measurement, its same-run baseline and the target it is held to."""

    figure: str
    unit: str  # "ops/s" or "ms"
    measured: float
    baseline: float
    ratio: float  # measured / baseline (for throughput: the median over interleaved round pairs)
    target: str = "-"
    verdict: str = "info"  # PASS, FAIL or info (no target)
    spread: tuple[float, float] | None = None  # lowest and highest pair ratio, when there are pairs
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "unit": self.unit,
            "measured": self.measured,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "ratio_range": list(self.spread) if self.spread else None,
            "target": self.target,
            "verdict": self.verdict,
            "details": self.details,
        }


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


@dataclass(slots=True)
class BenchContext:
    """Handed to every bench: the run's configuration and a runtime on the throw-away database."""

    config: BenchConfig
    runtime: Runtime
    database: str
    shared: dict[str, Any] = field(default_factory=dict)  # state benches may reuse across figures


# -- the throw-away database ---------------------------------------------------------------


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def bench_context(config: BenchConfig) -> AsyncIterator[BenchContext]:
    """A migrated database ``ps_bench_<pid>`` and a temporary keyring; both gone afterwards."""
    name = f"ps_bench_{os.getpid()}"
    await _admin(config.postgres_url, f'CREATE DATABASE "{name}"')
    progress.log(f"created database {name}")
    try:
        with tempfile.TemporaryDirectory(prefix="ps-bench-") as folder:
            settings = Settings(
                database_url=_with_database(config.postgres_url, name),
                keyring_path=Path(folder) / "keyring.json",
                policy_dir=ROOT / "policies",
                log_level="WARNING",
                # Room for every concurrent client: a pool smaller than the load opens and closes
                # connections all the time (a server process each), which no deployment would run.
                db_pool_size=max(config.workers, config.intake_clients) + 2,
            )
            # upgrade() calls asyncio.run, which cannot nest inside this loop.
            await asyncio.to_thread(upgrade, settings)
            runtime = build_runtime(settings)
            config.after_startup()
            try:
                yield BenchContext(config=config, runtime=runtime, database=name)
            finally:
                await runtime.close()
    finally:
        await _admin(config.postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        progress.log(f"dropped database {name}")


async def machine_info(ctx: BenchContext) -> dict[str, Any]:
    conn = await asyncpg.connect(_dsn(ctx.runtime.settings.database_url), timeout=10)
    try:
        server_version = await conn.fetchval("SHOW server_version")
        synchronous_commit = await conn.fetchval("SHOW synchronous_commit")
        autovacuum = await conn.fetchval("SHOW autovacuum")
    finally:
        await conn.close()
    versions = {}
    for package in ("sqlalchemy", "sqlmodel", "asyncpg", "cryptography"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "?"
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(terse=True),
        "postgres": server_version,
        "postgres_synchronous_commit": synchronous_commit,
        # Off (some test machines), dead rows pile up in the busiest tables (the outbox: two updates
        # per mail) and long runs slow down as no production server would: mail.sustained shows it.
        "postgres_autovacuum": autovacuum,
        "packages": versions,
        "load_average_at_start": load_average(),
    }


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages: other work on the machine shows up here, and as noise."""
    return [round(value, 2) for value in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# -- timing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Round:
    variant: str
    ops: int
    seconds: float
    cpu_seconds: float  # this process only (the client side: service, ORM, driver, crypto)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    @property
    def cpu_ms_per_op(self) -> float:
        return self.cpu_seconds * 1000 / self.ops if self.ops else float("nan")


async def run_round(op: Op, workers: int, seconds: float, variant: str = "") -> Round:
    """``workers`` tasks call ``op`` back to back until ``seconds`` have passed."""
    cpu_start = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    counts = [0] * workers

    async def worker(slot: int) -> None:
        while time.perf_counter() < deadline:
            await op()
            counts[slot] += 1

    async with asyncio.TaskGroup() as group:
        for slot in range(workers):
            group.create_task(worker(slot))
    # Elapsed runs until the last in-flight operation finished, so every counted op is inside it.
    return Round(variant, sum(counts), time.perf_counter() - start, time.process_time() - cpu_start)


async def interleaved_throughput(
    label: str, variants: Mapping[str, Op], *, workers: int, rounds: int, seconds: float, warmup: float
) -> dict[str, list[Round]]:
    """Timed rounds per variant, alternating A/B then B/A so slow drift hits both sides equally."""
    names = list(variants)
    for name in names:
        if warmup > 0:
            await run_round(variants[name], workers, warmup)
    results: dict[str, list[Round]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            result = await run_round(variants[name], workers, seconds, name)
            results[name].append(result)
            progress.log(
                f"{label} round {index + 1}/{rounds} {name:>9}: {result.rate:8.1f} ops/s, "
                f"client CPU {result.cpu_ms_per_op:.2f} ms/op"
            )
    return results


def ratio_figure(
    name: str,
    measured: Sequence[Round],
    baseline: Sequence[Round],
    *,
    target: float | None,
    target_text: str,
    details: dict[str, Any],
) -> Figure:
    """A throughput figure from interleaved rounds: median rates, median pair ratio, graded if ``target``."""
    ratios = pair_ratios(measured, baseline)
    ratio = statistics.median(ratios)
    return Figure(
        figure=name,
        unit="ops/s",
        measured=median_rate(measured),
        baseline=median_rate(baseline),
        ratio=ratio,
        target=target_text if target is not None else "-",
        verdict=verdict(ratio >= target) if target is not None else "info",
        spread=(min(ratios), max(ratios)),
        details={
            "statistic": "ops/s: median of rounds; ratio: median of back-to-back round pairs",
            "pair_ratios": ratios,
        }
        | details,
    )


def median_rate(rounds: Sequence[Round]) -> float:
    return statistics.median(r.rate for r in rounds)


def pair_ratios(measured: Sequence[Round], baseline: Sequence[Round]) -> list[float]:
    """Rate ratios of the rounds that ran back to back, so a slow spell hits both sides of a pair."""
    return [m.rate / b.rate for m, b in zip(measured, baseline, strict=True)]


async def interleaved_latency(variants: Mapping[str, Op], *, samples: int, warmup: int) -> dict[str, list[float]]:
    """Per-call latency in seconds, one call of each variant in turn (order alternating)."""
    names = list(variants)
    for name in names:
        for _ in range(warmup):
            await variants[name]()
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for index in range(samples):
        for name in names if index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            await variants[name]()
            latencies[name].append(time.perf_counter() - start)
    return latencies


def percentiles(samples: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[int, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {point: cuts[point - 1] for point in points}

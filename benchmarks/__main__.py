"""`make bench`: run the registered benches against a throw-away PostgreSQL database.

To add a figure, write ``async def my_bench(ctx: BenchContext) -> list[Figure]`` in the module of
its area and register it in ``BENCHES``. ``PRIVACY_BENCH_ONLY=vault.read,vault.lookup`` runs a
subset. A FAIL verdict is part of the report, not an error: the exit status is non-zero only
when a bench could not run.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from benchmarks import answers, audit, breaches, connections, mail, policy, requests, retention, systems, vault
from benchmarks import console as console_bench
from benchmarks.common import (
    BenchConfig,
    BenchContext,
    Figure,
    bench_context,
    console,
    load_average,
    machine_info,
    progress,
)
from benchmarks.report import render, write_json


@dataclass(frozen=True, slots=True)
class Bench:
    name: str
    description: str
    run: Callable[[BenchContext], Awaitable[list[Figure]]]


BENCHES: tuple[Bench, ...] = (
    Bench("vault.write", "encrypted vs plaintext SubjectService.create (issue 3)", vault.write_throughput),
    Bench("vault.read", "encrypted vs plaintext SubjectService.read (issue 3)", vault.read_throughput),
    Bench("vault.lookup", "blind-index lookup latency at PRIVACY_BENCH_SUBJECTS (issue 3)", vault.lookup_latency),
    Bench("audit.read", "SubjectService.read with vs without the audit recorder (issue 8)", audit.read_overhead),
    Bench("policy.serve", "GET /v1/policy vs a bare constant-JSON endpoint (issue 4)", policy.policy_throughput),
    Bench(
        "requests.intake",
        "POST /v1/requests vs a bare one-INSERT Litestar endpoint (issue 5)",
        requests.intake_throughput,
    ),
    Bench(
        "requests.status",
        "GET /v1/requests/{id} with the subject token vs a bare one-SELECT Litestar endpoint (issue 19)",
        requests.status_throughput,
    ),
    Bench("requests.export", "access export of PRIVACY_BENCH_DSR_RECORDS records (issue 5)", answers.export_latency),
    Bench("requests.erase", "erasure at 100 vs PRIVACY_BENCH_DSR_RECORDS records (issue 5)", answers.erasure_latency),
    Bench(
        "retention.purge",
        "purge of PRIVACY_BENCH_PURGE_SIZES expired records vs a raw DELETE of the same rows (issue 6)",
        retention.purge_throughput,
    ),
    Bench(
        "breaches.notify",
        "subject notices to PRIVACY_BENCH_BREACH_SUBJECTS (10,000) subjects over SMTP vs raw aiosmtplib (issue 7)",
        breaches.subject_notification_throughput,
    ),
    Bench("mail.deliver", "CPU per code mail delivered vs a bare aiosmtplib loop (issue 19)", mail.cpu_per_mail),
    Bench(
        "mail.sustained",
        "16 clients posting requests for PRIVACY_BENCH_MAIL_SECONDS: intake to code mail, backlog, CPU (issue 19)",
        mail.sustained,
    ),
    Bench("systems.fanout", "webhook fan-out to a local receiver vs raw POSTs (issue 10)", systems.fanout_throughput),
    Bench("systems.intake", "intake latency with one registered system vs none (issue 10)", systems.intake_overhead),
    Bench(
        "connections",
        "connected PostgreSQL database: access p95 across 8 collections (PRIVACY_BENCH_CONN_ROWS rows) and an "
        "erasure of 1,000 rows, vs the same queries written by hand (issue 18)",
        connections.connected_databases,
    ),
    Bench(
        "console",
        "p95 of every console page at 10,000 open requests and 100,000 subjects vs a bare one-SELECT endpoint "
        "(issue 17)",
        console_bench.console_pages_latency,
    ),
    # Last: it leaves a million generated requests behind, which no other bench should have to wade through.
    Bench(
        "requests.growth",
        "intake and status read at PRIVACY_BENCH_DSR_GROWTH_SIZES requests in the table (issue 19)",
        requests.growth,
    ),
)


def _selected(config: BenchConfig) -> list[Bench]:
    if not config.only:
        return list(BENCHES)
    chosen = [bench for bench in BENCHES if any(bench.name.startswith(prefix) for prefix in config.only)]
    if not chosen:
        names = ", ".join(bench.name for bench in BENCHES)
        raise SystemExit(f"PRIVACY_BENCH_ONLY matches no bench; known: {names}")
    return chosen


async def _run(config: BenchConfig, benches: list[Bench]) -> int:
    # Client libraries log every request at INFO; the progress lines are what matters here.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.perf_counter()
    figures: list[Figure] = []
    errors: list[str] = []
    machine: dict[str, Any] = {}
    async with bench_context(config) as ctx:
        machine = await machine_info(ctx)
        for bench in benches:
            progress.rule(f"{bench.name}: {bench.description}")
            bench_started = time.perf_counter()
            # One bench failing must not hide the others' figures; its traceback is shown and
            # the run still exits non-zero.
            try:
                figures.extend(await bench.run(ctx))
            except Exception:
                progress.print_exception()
                errors.append(bench.name)
            progress.log(f"{bench.name} took {time.perf_counter() - bench_started:.1f} s")
    seconds = time.perf_counter() - started
    machine["load_average_at_end"] = load_average()
    render(console(), figures, machine, errors)
    write_json(config.output, figures, machine, config.as_dict(), errors, seconds)
    progress.log(f"wrote {config.output} ({seconds:.0f} s in all)")
    return 1 if errors else 0


def main() -> int:
    config = BenchConfig.from_env()
    return asyncio.run(_run(config, _selected(config)))


if __name__ == "__main__":
    sys.exit(main())

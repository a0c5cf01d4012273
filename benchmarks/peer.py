"""The request intake and status-read workload against any running service, over real HTTP.

One command compares this service with another (Fides, or anything with a "file a privacy request"
and a "read its status" endpoint): run it against each base URL on the same machine, one after the
other, ideally in interleaved repeats (``--repeat``). Each workload runs at every ``--clients`` count
for ``--seconds``; the figures are requests per second, p50/p95/p99 latency, errors and, with
``--server-pid`` (repeatable; each process is counted with every process below it, so the pid of
``privacy-service serve --workers N`` counts all N workers), the server's CPU per request from /proc.

    python -m benchmarks.peer --base-url http://127.0.0.1:8000 --target privacy-service \\
        --header "Authorization: Bearer psk_..." --server-pid 1234
    python -m benchmarks.peer --base-url http://127.0.0.1:8080 --target fides \\
        --header "Authorization: Bearer <client token>" --server-pid 5678

The mapping of the workload onto a service's endpoints (``TARGETS``; see docs/benchmarks.md):

- ``privacy-service``: intake ``POST /v1/requests`` ``{"type": "access", "identity": {"email": E}}``
  (202, ``id`` in the body); status ``GET /v1/requests/{id}`` (200) with the ``--header`` given, an
  operator key with ``requests:manage`` (a subject token exists only after the mailed code is entered).
- ``fides``: intake ``POST /api/v1/privacy-request`` ``[{"identity": {"email": E}, "policy_key": P}]``
  (200, the id in ``succeeded[0].id``; a 200 with the request under ``failed`` counts as an error, status
  -1); status ``GET /api/v1/privacy-request?request_id={id}`` (200),
  both with an OAuth bearer token allowed to create and read privacy requests.

Each intake uses a new e-mail address (``peer.<run>.<n>@example.com``); status reads pick at random
among the requests the intake of the same run filed. Intake needs the target's per-address rate
limits raised for the run (every call comes from one address): for this service start it with
``PRIVACY_RATE_LIMITS='{"intake": "1000000/min burst 100000", "verify": "1000000/min burst 100000",
"operator": "1000000/min burst 100000"}'``, as the in-process bench does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class Target:
    """How the workload maps onto one service's endpoints."""

    intake_path: str
    intake_body: Callable[[str, argparse.Namespace], Any]
    intake_ok: int
    intake_id: Callable[[Any], str | None]  # None: answered intake_ok but filed nothing
    status_path: Callable[[str], str]
    status_ok: int = 200


TARGETS: dict[str, Target] = {
    "privacy-service": Target(
        intake_path="/v1/requests",
        intake_body=lambda email, _args: {"type": "access", "identity": {"email": email}},
        intake_ok=202,
        intake_id=lambda body: str(body["id"]),
        status_path=lambda request_id: f"/v1/requests/{request_id}",
    ),
    "fides": Target(
        intake_path="/api/v1/privacy-request",
        intake_body=lambda email, args: [{"identity": {"email": email}, "policy_key": args.fides_policy}],
        intake_ok=200,
        # Fides answers 200 for a batch even when it files nothing, listing the request under "failed".
        intake_id=lambda body: str(body["succeeded"][0]["id"]) if body.get("succeeded") else None,
        status_path=lambda request_id: f"/api/v1/privacy-request?request_id={request_id}",
    ),
}


NOT_FILED = -1  # the status counted for an intake answered with intake_ok that filed nothing


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def with_descendants(pids: Sequence[int]) -> list[int]:
    """The given processes and every process below them (uvicorn --workers: the supervisor's workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))  # field 4: the parent's pid
    found: list[int] = []
    pending = list(pids)
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.append(pid)
            pending.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of the given processes (each counted once), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is None:
            raise SystemExit(f"server process {pid} is gone")
        # utime and stime are fields 14 and 15 of the stat line (11 and 12 after the ")").
        total += int(fields[11]) + int(fields[12])
    return total / ticks


@dataclass(slots=True)
class Result:
    workload: str
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    server_cpu_seconds: float | None = None

    def summary(self) -> dict[str, Any]:
        ok = sorted(self.latencies)
        cuts = statistics.quantiles(ok, n=100, method="inclusive") if len(ok) >= 2 else [float("nan")] * 99
        return {
            "workload": self.workload,
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "requests": len(ok),
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "req_per_s": round(len(ok) / self.seconds, 1),
            "p50_ms": round(cuts[49] * 1000, 2),
            "p95_ms": round(cuts[94] * 1000, 2),
            "p99_ms": round(cuts[98] * 1000, 2),
            "server_cpu_ms_per_request": (
                round(self.server_cpu_seconds * 1000 / len(ok), 3)
                if self.server_cpu_seconds is not None and ok
                else None
            ),
        }


async def run_workload(
    name: str, op: Callable[[], Awaitable[int]], ok_status: int, clients: int, seconds: float, pids: Sequence[int]
) -> Result:
    result = Result(name, clients, 0.0)
    cpu_before = cpu_seconds(pids) if pids else None
    start = time.perf_counter()
    deadline = start + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                status = await op()
            except httpx.HTTPError:
                status = 0
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == ok_status:
                result.latencies.append(time.perf_counter() - began)
            else:
                result.errors += 1

    async with asyncio.TaskGroup() as group:
        for _ in range(clients):
            group.create_task(client())
    result.seconds = time.perf_counter() - start
    if cpu_before is not None:
        result.server_cpu_seconds = cpu_seconds(pids) - cpu_before
    return result


def _headers(raw: Sequence[str]) -> dict[str, str]:
    headers = {}
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep:
            raise SystemExit(f"--header {item!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    target = TARGETS[args.target]
    run = uuid.uuid4().hex[:8]
    counter = iter(range(10**12))
    filed: list[str] = []
    chooser = random.Random(args.seed)
    limits = httpx.Limits(max_connections=max(args.clients) * 2, max_keepalive_connections=max(args.clients) * 2)
    summaries: list[dict[str, Any]] = []
    pids = with_descendants(args.server_pid)
    if pids:
        print(f"counting the CPU of processes {', '.join(map(str, pids))}", file=sys.stderr)
    async with httpx.AsyncClient(
        base_url=args.base_url.rstrip("/"), headers=_headers(args.header), timeout=args.timeout, limits=limits
    ) as client:

        async def intake() -> int:
            email = f"peer.{run}.{next(counter)}@example.com"
            response = await client.post(target.intake_path, json=target.intake_body(email, args))
            if response.status_code == target.intake_ok:
                request_id = target.intake_id(response.json())
                if request_id is None:
                    return NOT_FILED
                filed.append(request_id)
            return response.status_code

        async def status() -> int:
            response = await client.get(target.status_path(chooser.choice(filed)))
            return response.status_code

        workloads = {"intake": (intake, target.intake_ok), "status": (status, target.status_ok)}
        chosen = [w.strip() for w in args.workload.split(",") if w.strip()]
        for name in chosen:
            if name not in workloads:
                raise SystemExit(f"--workload {name!r}: choose from {', '.join(workloads)}")
        if "status" in chosen and "intake" not in chosen:
            raise SystemExit("the status workload reads requests the intake workload filed: run both")
        for repeat in range(args.repeat):
            for clients in args.clients:
                for name in chosen:
                    op, ok = workloads[name]
                    if args.warmup > 0:
                        await run_workload(name, op, ok, clients, args.warmup, ())
                    result = await run_workload(name, op, ok, clients, args.seconds, pids)
                    summary = result.summary() | {"repeat": repeat + 1, "target": args.target}
                    summaries.append(summary)
                    cpu = summary["server_cpu_ms_per_request"]
                    print(
                        f"{args.target} {name:>6} {clients:>3} clients: {summary['req_per_s']:8.1f} req/s  "
                        f"p50 {summary['p50_ms']:7.2f} ms  p95 {summary['p95_ms']:7.2f} ms  "
                        f"errors {summary['errors']}" + (f"  server CPU {cpu:.2f} ms/req" if cpu is not None else ""),
                        file=sys.stderr,
                    )
                    if not result.latencies:
                        raise SystemExit(f"{name}: no request succeeded; statuses {summary['statuses']}")
    return summaries


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peer",
        description="Request intake and status read against a running service (see docs/benchmarks.md).",
    )
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--target", choices=sorted(TARGETS), default="privacy-service", help="endpoint mapping")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable (credentials)")
    parser.add_argument(
        "--clients", type=lambda raw: [int(x) for x in raw.split(",")], default=[16, 1], help="e.g. 16,1"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per workload and client count")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds before each timed run")
    parser.add_argument("--repeat", type=int, default=1, help="repeat the whole sequence (for medians)")
    parser.add_argument("--workload", default="intake,status", help="intake, status or both")
    parser.add_argument(
        "--server-pid", type=int, action="append", default=[], help="count this process's CPU (and its children's)"
    )
    parser.add_argument("--fides-policy", default="default_access_policy", help="policy_key for --target fides")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--json", dest="json_path", help="also write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    summaries = asyncio.run(main_async(args))
    text = json.dumps({"base_url": args.base_url, "target": args.target, "results": summaries}, indent=2)
    if args.json_path:
        with open(args.json_path, "w") as out:
            out.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

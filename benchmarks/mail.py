"""Mail (issue 19): what a code mail costs to deliver, and whether delivery keeps up with intake.

``mail.deliver``: code mails queued as intake queues them (each sealed under its own request key) and
delivered by ``deliver_pending`` as the processes run it (batches of PRIVACY_OUTBOX_BATCH_SIZE over one
SMTP connection each, PRIVACY_OUTBOX_CONCURRENCY lanes: claim, unwrap keys, open, compose, send,
record) to an in-process aiosmtpd server, against the same number of the same mails composed and sent
by a bare aiosmtplib loop over one connection, in interleaved rounds. CPU is the bench process's,
less the SMTP server thread's (its own clock), so each side is charged only for its own work.

``mail.sustained``: ``privacy-service serve`` and ``privacy-service worker`` as real processes on the
bench database (the API with PRIVACY_OUTBOX_DELIVERY=worker, so the figures split the intake's CPU
from the mail's), 16 clients posting requests for PRIVACY_BENCH_MAIL_SECONDS (default 30; the issue's
run is 300), each to its own address. The SMTP server notes when each code mail arrives: the time
from a request being sent to its code mail reaching the server (median, p95), the outbox backlog
once a second, the time to drain it after the load stops, and the server CPU (both processes, from
/proc) per *delivered* intake next to the API's CPU per accepted intake.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
from aiosmtpd.controller import Controller
from sqlalchemy import text

from benchmarks.common import ROOT, BenchContext, Figure, _env_int, percentiles, progress, verdict
from privacy_service.crypto.service import REQUEST
from privacy_service.notify.jobs import deliver_pending
from privacy_service.notify.mailer import SmtpMailer
from privacy_service.notify.service import enqueue
from privacy_service.runtime import Runtime

CPU_PER_MAIL_TARGET_MS = 1.0
LATENCY_TARGET_MS = 5000.0
DRAIN_TARGET_SECONDS = 15.0
OPEN_LIMITS = {
    "intake": "1000000/min burst 100000",
    "intake_identity": "1000000/min burst 100000",
    "verify": "1000000/min burst 100000",
    "resend": "1000000/min burst 100000",
    "download": "1000000/min burst 100000",
    "operator": "1000000/min burst 100000",
}
START_TIMEOUT = 90.0
_TICKS = os.sysconf("SC_CLK_TCK")


class Sink:
    """aiosmtpd handler: what arrived, when (perf_counter, the bench's clock), to whom, with which id."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}  # To -> first arrival
        self.ids: Counter[str] = Counter()
        self.received: list[tuple[str, str, str]] = []  # (To, Subject, body)
        self.keep = False
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        at = time.perf_counter()
        message = message_from_bytes(envelope.original_content or envelope.content, policy=default_policy)
        to = str(message["To"])
        with self._lock:
            self.arrivals.setdefault(to, at)
            self.ids[str(message["Message-ID"])] += 1
            if self.keep and isinstance(message, EmailMessage):
                self.received.append((to, str(message["Subject"]), str(message.get_content())))
        return "250 OK"

    def count(self) -> int:
        with self._lock:
            return sum(self.ids.values())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[Sink, Controller]]:
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield sink, controller
    finally:
        controller.stop()


class SinkProcess:
    """:mod:`benchmarks.smtp_sink` in its own process: what arrived, when (``time.monotonic()``), to whom,
    with which Message-ID, read back from the file it writes."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.path = directory / f"smtp-sink-{self.port}.tsv"
        self._process: subprocess.Popen[str] | None = None
        self._read = 0
        self._lines = 0

    def __enter__(self) -> SinkProcess:
        self.path.unlink(missing_ok=True)
        self._process = subprocess.Popen(  # noqa: S603 - this interpreter running a bench module
            [sys.executable, "-m", "benchmarks.smtp_sink", str(self.port), str(self.path)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "ready":
            raise RuntimeError("the SMTP sink did not start")
        return self

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def count(self) -> int:
        """Messages arrived so far (reads only what was appended since the last call)."""
        with self.path.open("rb") as found:
            found.seek(self._read)
            chunk = found.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._read += len(complete)
        self._lines += complete.count(b"\n")
        return self._lines

    def arrivals(self) -> tuple[dict[str, float], Counter[str]]:
        """To -> first arrival, and how often each Message-ID arrived."""
        first: dict[str, float] = {}
        ids: Counter[str] = Counter()
        for line in self.path.read_text(encoding="utf-8").splitlines():
            at, to, message_id = line.split("\t")
            first.setdefault(to, float(at))
            ids[message_id] += 1
        return first, ids


class CpuClock:
    """This process's CPU time less one thread's (the SMTP server's), in seconds."""

    def __init__(self, excluded: threading.Thread) -> None:
        ident = excluded.ident
        if ident is None:
            raise RuntimeError("the SMTP server thread is not running")
        self._excluded = time.pthread_getcpuclockid(ident)

    def __call__(self) -> float:
        return time.process_time() - time.clock_gettime(self._excluded)


async def _clear_outbox(runtime: Runtime) -> None:
    """The bench database is shared: mail other benches queued is neither sent nor counted here."""
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE outbox_messages SET status = 'sent', payload = NULL WHERE status IN ('pending', 'sending')")
        )


async def queue_code_mails(runtime: Runtime, addresses: list[str]) -> None:
    """Code mails as intake queues them: rendered, sealed under a new per-request key."""
    now = runtime.clock.now()
    for start in range(0, len(addresses), 500):
        async with runtime.db.transaction() as session:
            for address in addresses[start : start + 500]:
                owner = uuid.uuid4()
                key = await runtime.keys.create_key(session, owner, REQUEST)
                enqueue(
                    session,
                    template="verification_code",
                    language="en",
                    to=address,
                    now=now,
                    key=key,
                    owner_id=owner,
                    action="see",
                    code="123456",
                    minutes=15,
                    status_url="https://privacy.example/requests/status",
                    request_id=str(owner),
                    due_date="2030-01-01",
                )


# -- CPU per mail ------------------------------------------------------------------------------


async def _service_round(
    ctx: BenchContext, sink: Sink, cpu: CpuClock, round_no: int, count: int
) -> tuple[float, float]:
    runtime, settings = ctx.runtime, ctx.runtime.settings
    await queue_code_mails(runtime, [f"r{round_no}-{n}@mail.bench.example" for n in range(count)])
    before = sink.count()
    sink.keep, sink.received = True, []
    cpu_start, started = cpu(), time.perf_counter()
    result = await deliver_pending(
        runtime.db,
        runtime.keys,
        runtime.mailer,
        runtime.clock,
        batch=settings.outbox_batch_size,
        concurrency=settings.outbox_concurrency,
        max_attempts=settings.outbox_max_attempts,
    )
    cpu_used, seconds = cpu() - cpu_start, time.perf_counter() - started
    sink.keep = False
    if result.sent != count or sink.count() - before != count:
        raise RuntimeError(f"service round sent {result.sent}, server got {sink.count() - before}, of {count}")
    return cpu_used, seconds


async def _bare_round(
    messages: list[tuple[str, str, str]], port: int, sender: str, cpu: CpuClock
) -> tuple[float, float]:
    cpu_start, started = cpu(), time.perf_counter()
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
    await smtp.connect()
    for n, (to, subject, body) in enumerate(messages):
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = sender, to, subject
        message["Message-ID"] = f"<bare-{n}-{uuid.uuid4()}@mail.bench.example>"
        message.set_content(body)
        await smtp.send_message(message)
    await smtp.quit()
    return cpu() - cpu_start, time.perf_counter() - started


async def cpu_per_mail(ctx: BenchContext) -> list[Figure]:
    count = _env_int("PRIVACY_BENCH_MAIL_COUNT", 1000)
    rounds = _env_int("PRIVACY_BENCH_MAIL_ROUNDS", 3)
    await _clear_outbox(ctx.runtime)
    with smtp_server() as (sink, controller):
        if controller._thread is None:
            raise RuntimeError("the SMTP server did not start")
        cpu = CpuClock(controller._thread)
        mailer = SmtpMailer(host="127.0.0.1", port=controller.port, sender=ctx.runtime.settings.smtp_from)
        service_ctx = dataclasses.replace(ctx, runtime=dataclasses.replace(ctx.runtime, mailer=mailer))
        service: list[tuple[float, float]] = []
        bare: list[tuple[float, float]] = []
        await _service_round(service_ctx, sink, cpu, 0, min(count, 200))  # warm-up
        # The bare loop sends the same mail (as the server received it) to as many addresses.
        _, subject, body = sink.received[0]
        for round_no in range(1, rounds + 1):
            order = ("service", "bare") if round_no % 2 else ("bare", "service")
            for side in order:
                if side == "service":
                    service.append(await _service_round(service_ctx, sink, cpu, round_no, count))
                else:
                    messages = [(f"b{round_no}-{n}@mail.bench.example", subject, body) for n in range(count)]
                    bare.append(await _bare_round(messages, controller.port, ctx.runtime.settings.smtp_from, cpu))
            s_cpu, s_wall = service[-1]
            b_cpu, b_wall = bare[-1]
            progress.log(
                f"mail round {round_no}/{rounds}: service {s_cpu * 1000 / count:.3f} ms CPU/mail "
                f"({count / s_wall:,.0f} mails/s), bare loop {b_cpu * 1000 / count:.3f} ms CPU/mail "
                f"({count / b_wall:,.0f} mails/s)"
            )
        duplicates = sum(n - 1 for n in sink.ids.values() if n > 1)
    measured = statistics.median(c * 1000 / count for c, _ in service)
    baseline = statistics.median(c * 1000 / count for c, _ in bare)
    return [
        Figure(
            figure=f"mail: CPU per code mail delivered ({count:,} per round)",
            unit="ms",
            measured=measured,
            baseline=baseline,
            ratio=measured / baseline,
            target=f"≤ {CPU_PER_MAIL_TARGET_MS:.1f} ms",
            verdict=verdict(measured <= CPU_PER_MAIL_TARGET_MS and duplicates == 0),
            details={
                "statistic": "median of rounds (service and bare loop alternating); CPU of the bench process "
                "less the SMTP server thread",
                "mails_per_round": count,
                "rounds": rounds,
                "service_mails_per_second": statistics.median(count / wall for _, wall in service),
                "bare_mails_per_second": statistics.median(count / wall for _, wall in bare),
                "batch_size": ctx.runtime.settings.outbox_batch_size,
                "concurrency": ctx.runtime.settings.outbox_concurrency,
                "duplicates": duplicates,
                "measured": "deliver_pending: claim (SKIP LOCKED), unwrap per-request keys, open, compose, "
                "send over one connection per batch, record per batch",
                "baseline": "the same mails composed (EmailMessage) and sent by a bare aiosmtplib loop over one "
                "connection",
            },
        )
    ]


# -- sustained intake ----------------------------------------------------------------------------


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _env(ctx: BenchContext, smtp_port: int, name: str, **extra: str) -> dict[str, str]:
    settings = ctx.runtime.settings
    values = {key: value for key, value in os.environ.items() if not key.startswith("PRIVACY_")}
    values.update(
        PRIVACY_DATABASE_URL=settings.database_url,
        PRIVACY_KEYRING_PATH=str(settings.keyring_path),
        PRIVACY_POLICY_DIR=str(ROOT / "policies"),
        PRIVACY_SMTP_PORT=str(smtp_port),
        PRIVACY_RATE_LIMITS=json.dumps(OPEN_LIMITS),
        PRIVACY_LOG_LEVEL="WARNING",
        PRIVACY_OUTBOX_DELIVERY="worker",
        PRIVACY_WORKER_HEARTBEAT_PATH=str(Path(settings.keyring_path).parent / f"{name}-heartbeat.json"),
        PRIVACY_DB_POOL_SIZE="20",
    )
    values.update(extra)
    return values


@contextlib.contextmanager
def _process(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(  # noqa: S603 - this interpreter running this package
        [sys.executable, "-m", "privacy_service", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _backlog(runtime: Runtime) -> int:
    async with runtime.db.engine.connect() as conn:
        found = await conn.execute(text("SELECT count(*) FROM outbox_messages WHERE status IN ('pending', 'sending')"))
        return int(found.scalar_one())


async def sustained(ctx: BenchContext) -> list[Figure]:
    seconds = _env_int("PRIVACY_BENCH_MAIL_SECONDS", 30)
    delivery = os.environ.get("PRIVACY_BENCH_MAIL_DELIVERY", "worker")
    clients = ctx.config.intake_clients
    runtime = ctx.runtime
    await _clear_outbox(runtime)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with SinkProcess(Path(runtime.settings.keyring_path).parent) as sink:
        env = _env(ctx, sink.port, "bench-mail", PRIVACY_OUTBOX_DELIVERY=delivery)
        with (
            _process(env, "serve", "--host", "127.0.0.1", "--port", str(port)) as api,
            _process(env, "worker") as worker,
        ):
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
                deadline = time.monotonic() + START_TIMEOUT
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    if time.monotonic() > deadline or api.poll() is not None:
                        raise RuntimeError("the API did not start")
                    await asyncio.sleep(0.2)
                await asyncio.sleep(2)  # the worker's first runs
                sent_at: dict[str, float] = {}
                intake_latencies: list[float] = []
                counter = itertools.count()
                backlog: list[tuple[float, int]] = []
                start = time.monotonic()
                end = start + seconds

                async def client() -> None:
                    while time.monotonic() < end:
                        address = f"load{next(counter)}@mail.bench.example"
                        began = time.monotonic()
                        response = await http.post(
                            "/v1/requests", json={"type": "access", "identity": {"email": address}}
                        )
                        if response.status_code != 202:
                            raise RuntimeError(f"intake answered {response.status_code}: {response.text[:200]}")
                        sent_at[address] = began
                        intake_latencies.append(time.monotonic() - began)

                async def sample() -> None:
                    while time.monotonic() < end:
                        backlog.append((round(time.monotonic() - start, 1), await _backlog(runtime)))
                        await asyncio.sleep(1.0)

                cpu_before = {"api": _process_cpu(api.pid), "worker": _process_cpu(worker.pid)}
                progress.log(f"mail.sustained: {clients} clients posting for {seconds} s")
                async with asyncio.TaskGroup() as group:
                    for _ in range(clients):
                        group.create_task(client())
                    group.create_task(sample())
                load_seconds = time.monotonic() - start
                cpu_at_end = {"api": _process_cpu(api.pid), "worker": _process_cpu(worker.pid)}
                drain_started = time.monotonic()
                while sink.count() < len(sent_at) and time.monotonic() - drain_started < 120:
                    await asyncio.sleep(0.2)
                drain_seconds = time.monotonic() - drain_started
                cpu_after = {"api": _process_cpu(api.pid), "worker": _process_cpu(worker.pid)}
    accepted = len(sent_at)
    arrivals, ids = sink.arrivals()
    delivered = [arrivals[address] - began for address, began in sent_at.items() if address in arrivals]
    if not delivered:
        raise RuntimeError("no code mail arrived")
    latency = percentiles(delivered, (50, 95, 99))
    intake = percentiles(intake_latencies, (50, 95))
    api_cpu = cpu_at_end["api"] - cpu_before["api"]
    total_cpu = sum(cpu_after[name] - cpu_before[name] for name in cpu_after)
    per_delivered_ms = total_cpu * 1000 / len(delivered)
    per_accepted_api_ms = api_cpu * 1000 / accepted
    peak = max(n for _, n in backlog)
    drained = len(delivered) == accepted and drain_seconds <= DRAIN_TARGET_SECONDS
    step = max(1, len(backlog) // 60)
    common = {
        "clients": clients,
        "load_seconds": round(load_seconds, 1),
        "accepted": accepted,
        "accepted_per_second": round(accepted / load_seconds, 1),
        "delivered": len(delivered),
        "duplicates": sum(n - 1 for n in ids.values() if n > 1),
        "processes": f"1 API + 1 worker (PRIVACY_OUTBOX_DELIVERY={delivery}), defaults otherwise; the SMTP server "
        "in a process of its own (benchmarks.smtp_sink)",
    }
    progress.log(
        f"mail.sustained: {accepted:,} accepted ({accepted / load_seconds:,.0f}/s), intake→mail median "
        f"{latency[50] * 1000:,.0f} ms, p95 {latency[95] * 1000:,.0f} ms, backlog peak {peak}, drained in "
        f"{drain_seconds:.1f} s, {per_delivered_ms:.2f} ms CPU per delivered intake"
    )
    return [
        Figure(
            figure=f"mail: intake → code mail at the SMTP server, median ({clients} clients, {seconds} s)",
            unit="ms",
            measured=latency[50] * 1000,
            baseline=intake[50] * 1000,
            ratio=latency[50] / intake[50],
            target=f"< {LATENCY_TARGET_MS:.0f} ms",
            verdict=verdict(latency[50] * 1000 < LATENCY_TARGET_MS),
            details=common
            | {
                "baseline": "median latency of the intake POST itself (same run)",
                "p95_ms": round(latency[95] * 1000, 1),
                "p99_ms": round(latency[99] * 1000, 1),
                "intake_p95_ms": round(intake[95] * 1000, 1),
            },
        ),
        Figure(
            figure=f"mail: intake → code mail, p95 ({clients} clients, {seconds} s)",
            unit="ms",
            measured=latency[95] * 1000,
            baseline=intake[95] * 1000,
            ratio=latency[95] / intake[95],
            details=common | {"baseline": "p95 latency of the intake POST itself (same run)"},
        ),
        Figure(
            figure=f"mail: outbox backlog peak, then drained after the load ({seconds} s)",
            unit="msgs",
            measured=peak,
            baseline=accepted / load_seconds,
            ratio=peak / (accepted / load_seconds),
            target=f"drained ≤ {DRAIN_TARGET_SECONDS:.0f} s",
            verdict=verdict(drained),
            details=common
            | {
                "baseline": "mails queued per second (the ratio: seconds of intake the backlog held at its peak)",
                "drain_seconds": round(drain_seconds, 2),
                "backlog_every_second": backlog[::step],
            },
        ),
        Figure(
            figure="mail: server CPU per delivered intake (intake + code mail)",
            unit="ms",
            measured=per_delivered_ms,
            baseline=per_accepted_api_ms,
            ratio=per_delivered_ms / per_accepted_api_ms,
            details=common
            | {
                "measured": "API + worker process CPU (from /proc, load and drain) per code mail delivered",
                "baseline": "API process CPU per accepted intake during the load (its mail sent by the worker)",
                "api_cpu_seconds": round(api_cpu, 2),
                "total_cpu_seconds": round(total_cpu, 2),
                "worker_cpu_ms_per_mail": round(
                    (cpu_after["worker"] - cpu_before["worker"]) * 1000 / len(delivered), 3
                ),
            },
        ),
    ]

"""The ``worker`` process: scheduled jobs (APScheduler, cron in UTC) and the outbox/audit loops.

Every job is safe to run in several replicas at once: the outbox claims rows with SKIP LOCKED,
the audit chainer and scheduled runs take PostgreSQL advisory locks, and the database is the queue.

A run that did nothing (no mail to send, nothing to seal) is logged at debug: an idle worker is
silent at info. The worker also writes a heartbeat file from inside its scheduler; ``worker --check``
(the container's healthcheck) reads it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import SQLAlchemyError

from privacy_service.audit.jobs import scheduled_verify
from privacy_service.audit.service import seal_pending
from privacy_service.breaches.jobs import scheduled_jobs as breach_jobs
from privacy_service.connections.runner import run_connection_tasks
from privacy_service.dsr.jobs import expire_unverified, send_digest, watch_acknowledgements
from privacy_service.gc_tuning import tune_after_startup
from privacy_service.logging import configure_logging
from privacy_service.notify.jobs import deliver_mail, delivers_in
from privacy_service.retention.jobs import scheduled_purge
from privacy_service.runtime import Runtime
from privacy_service.systems.jobs import deliver_from_runtime
from privacy_service.vacuum import vacuum_queue_tables

log = structlog.get_logger("privacy_service.worker")

# Members of a job's result that say where things stand, not what the run did.
POSITION_FIELDS = frozenset({"head_seq"})
# A heartbeat older than this many intervals means the scheduler has stopped running jobs.
STALE_AFTER_INTERVALS = 3


def outcome(result: object) -> tuple[bool, dict[str, object]]:
    """A job's result as log members (counts, ids, statuses: never a payload), and whether it did anything."""
    if result is None:
        return False, {}
    if isinstance(result, bool | int):
        return bool(result), {"count": int(result)}
    if not dataclasses.is_dataclass(result) or isinstance(result, type):
        return True, {"result": type(result).__name__}
    members: dict[str, object] = {}
    busy = False
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if isinstance(value, list | tuple | set | frozenset):
            value = len(value)
        elif isinstance(value, uuid.UUID):
            value = str(value)
        elif not isinstance(value, int | float | str | None):
            continue  # nested reports stay out of the line; the job logs what matters itself
        members[field.name] = value
        busy = busy or (field.name not in POSITION_FIELDS and value not in (0, None, ""))
    return busy, members


class Heartbeat:
    """A small JSON file rewritten by a scheduled job: proof that the scheduler still runs jobs.

    It holds the pid, when it was written (wall clock), and each job's last good and failed run.
    It is written atomically (a temporary file, then rename), so a reader never sees half of it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started_at = time.time()
        self.jobs: dict[str, dict[str, float]] = {}
        self.removed = False

    def job_ran(self, name: str, ok: bool) -> None:
        self.jobs.setdefault(name, {})["ok_at" if ok else "failed_at"] = time.time()

    def beat(self) -> None:
        if self.removed:
            return  # a beat already queued when the worker began to stop would bring the file back
        document = {"pid": os.getpid(), "at": time.time(), "started_at": self.started_at, "jobs": self.jobs}
        try:
            # A fresh name (O_EXCL) beside the file, then a rename: in a shared temp directory nobody can
            # plant a link at a name the worker would write through.
            with tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", dir=self.path.parent, prefix=f".{self.path.name}.", delete=False
            ) as partial:
                written = Path(partial.name)
                try:
                    partial.write(json.dumps(document))
                except OSError:
                    written.unlink(missing_ok=True)
                    raise
            written.replace(self.path)
        except OSError as exc:
            log.warning("heartbeat_failed", path=str(self.path), error=type(exc).__name__)
            return
        log.debug("heartbeat", path=str(self.path))

    def remove(self) -> None:
        self.removed = True
        self.path.unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True, slots=True)
class HeartbeatStatus:
    ok: bool
    reason: str
    path: str
    pid: int | None = None
    age_seconds: float | None = None
    failing_jobs: tuple[str, ...] = ()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def check_heartbeat(path: Path, interval: float, now: float | None = None) -> HeartbeatStatus:
    """``worker --check``: is a worker's scheduler running jobs (fresh heartbeat, live process)?"""
    limit = STALE_AFTER_INTERVALS * interval
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        pid, at = int(document["pid"]), float(document["at"])
        jobs = document.get("jobs") or {}
    except FileNotFoundError:
        return HeartbeatStatus(False, "no heartbeat: the worker is not running (or not yet started)", str(path))
    except (OSError, ValueError, KeyError, TypeError):
        return HeartbeatStatus(False, "the heartbeat file cannot be read", str(path))
    age = round((time.time() if now is None else now) - at, 1)
    failing = tuple(sorted(name for name, runs in jobs.items() if runs.get("failed_at", 0) > runs.get("ok_at", 0)))
    if not _alive(pid):
        return HeartbeatStatus(False, f"the worker that wrote the heartbeat (pid {pid}) is gone", str(path), pid, age)
    if age > limit:
        reason = f"the last heartbeat is {age:g} s old (limit {limit:g} s): the scheduler is stuck"
        return HeartbeatStatus(False, reason, str(path), pid, age, failing)
    return HeartbeatStatus(True, "running", str(path), pid, age, failing)


# Job runs in flight: a stopping worker lets them finish before the runtime (database, mailer) closes,
# instead of leaving them to fail against a closed engine after "worker_stopped".
_RUNNING: dict[asyncio.Task[object], str] = {}  # the runs in flight, by their job's name
STOP_GRACE_SECONDS = 30.0
# How long a stop waits for cancelled runs to finish their cleanup (one awaiting a database that is
# gone could hang the stop): the worker goes on without them after that.
STOP_CLEANUP_SECONDS = 5.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def guarded(
    name: str, job: Callable[[], Awaitable[object]], heartbeat: Heartbeat | None = None
) -> Callable[[], Awaitable[None]]:
    """Log a job's outcome; a failing run is reported and retried at its next slot.

    Nothing escapes to APScheduler: it logs whatever a job raises, a cancellation included, as "Job ...
    raised an exception" with a traceback (exception messages can hold personal data; lines here carry types).
    """

    def failed(exc: BaseException, expected: bool) -> None:
        if heartbeat is not None:
            heartbeat.job_ran(name, ok=False)
        if expected:  # the database or the network is away: it comes back, the next slot retries
            log.warning("job_failed", job=name, error=type(exc).__name__)
            return
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        at = f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
        log.error("job_failed", job=name, error=type(exc).__name__, at=at)

    async def run() -> None:
        task = asyncio.current_task()
        if task is not None:
            _RUNNING[task] = name
            task.add_done_callback(lambda done: _RUNNING.pop(done, None))
        try:
            result = await job()
        except asyncio.CancelledError as exc:
            if task is not None and task.cancelling():
                # Only a stopping worker cancels a run, once it has outlasted the grace: a stop, not a
                # failure. Ending here (rather than re-raising) ends this run's task, which nobody awaits.
                log.info("job_cancelled", job=name)
                return
            failed(exc, expected=False)  # something under the job was cancelled (a closing pool): a failure
            return
        except (SQLAlchemyError, OSError) as exc:
            failed(exc, expected=True)
            return
        except Exception as exc:
            # The job's boundary, as APScheduler's own catch was: a bug in one run is reported with its
            # type and place (at error), and the run is tried again at its next slot.
            failed(exc, expected=False)
            return
        if heartbeat is not None:
            heartbeat.job_ran(name, ok=True)
        busy, members = outcome(result)
        (log.info if busy else log.debug)("job_done", job=name, **members)

    return run


def build_scheduler(runtime: Runtime, heartbeat: Heartbeat | None = None) -> AsyncIOScheduler:
    settings = runtime.settings
    # A run whose time came while the loop was busy runs late rather than not at all: APScheduler's
    # default (1 s of grace) skips it with a warning, and a daily job skipped waits a whole day.
    scheduler = AsyncIOScheduler(timezone="UTC", job_defaults={"misfire_grace_time": None})
    jobs: list[tuple[str, Callable[[], Awaitable[object]], object]] = [
        (
            "webhooks",
            lambda: deliver_from_runtime(runtime),
            IntervalTrigger(seconds=settings.outbox_interval_seconds),
        ),
        (
            "connection-tasks",
            lambda: run_connection_tasks(runtime),
            IntervalTrigger(seconds=settings.outbox_interval_seconds),
        ),
        (
            "audit-seal",
            lambda: seal_pending(runtime.db, runtime.clock, runtime.audit_key),
            IntervalTrigger(seconds=settings.audit_seal_interval_seconds),
        ),
        (
            "audit-verify",
            lambda: scheduled_verify(runtime),
            CronTrigger.from_crontab(settings.audit_verify_cron, timezone="UTC"),
        ),
        (
            "dsr-expiry",
            lambda: expire_unverified(runtime.db, runtime.clock, settings),
            CronTrigger.from_crontab(settings.worker_expiry_cron, timezone="UTC"),
        ),
        (
            "dsr-acknowledgements",
            lambda: watch_acknowledgements(runtime.db, runtime.clock, settings, runtime.deadlines),
            CronTrigger.from_crontab(settings.worker_acknowledgement_cron, timezone="UTC"),
        ),
        (
            "dsr-digest",
            lambda: send_digest(runtime.db, runtime.clock, settings),
            CronTrigger.from_crontab(settings.worker_digest_cron, timezone="UTC"),
        ),
        (
            "retention-purge",
            lambda: scheduled_purge(runtime),
            CronTrigger.from_crontab(settings.retention_cron, timezone="UTC"),
        ),
    ]
    jobs.extend(breach_jobs(runtime))
    if settings.queue_vacuum_seconds > 0 and not settings.is_sqlite:
        jobs.append(
            (
                "queue-vacuum",
                lambda: vacuum_queue_tables(runtime.db, settings),
                IntervalTrigger(seconds=settings.queue_vacuum_seconds),
            )
        )
    if delivers_in(runtime, "worker"):
        # Each run sends everything due (notify.jobs); a short poll keeps a code's wait short.
        jobs.insert(0, ("outbox", lambda: deliver_mail(runtime), IntervalTrigger(seconds=settings.outbox_poll_seconds)))
    for name, job, trigger in jobs:
        scheduler.add_job(guarded(name, job, heartbeat), trigger, id=name, max_instances=1, coalesce=True)
    if heartbeat is not None:

        async def beat() -> None:
            # On the event loop itself (APScheduler runs plain functions in a thread pool): a blocked
            # loop stops the heartbeat too.
            heartbeat.beat()

        scheduler.add_job(
            beat,
            IntervalTrigger(seconds=settings.worker_heartbeat_seconds),
            id="heartbeat",
            max_instances=1,
            coalesce=True,
        )
    return scheduler


async def stop_scheduler(scheduler: AsyncIOScheduler, heartbeat: Heartbeat, hurry: asyncio.Event | None = None) -> None:
    """Start no more runs, let the runs in flight end (cancelled after STOP_GRACE_SECONDS, or at once
    when ``hurry`` is set), then shut down.

    The order matters: APScheduler's own shutdown cancels every run still going (AsyncIOExecutor.shutdown,
    on the loop's next turn) and logs each one as "raised an exception" (a CancelledError). So it comes
    last, when no run is left to cancel, or none that ended within STOP_CLEANUP_SECONDS of its cancel.
    """
    scheduler.pause()  # at once: no run starts from here on
    heartbeat.remove()  # a stopped worker is not healthy, at once
    # A run submitted just before the pause has not taken its first step (which puts it in _RUNNING) yet.
    await asyncio.sleep(0)
    in_flight = {task for task in _RUNNING if not task.done()}
    if in_flight:
        await _grace(in_flight, hurry or asyncio.Event())
        unfinished = {task for task in in_flight if not task.done()}
        for task in unfinished:
            task.cancel()
        if unfinished:
            # Their cleanup, too, runs before the runtime closes, unless it hangs (a dead database).
            _, stuck = await asyncio.wait(unfinished, timeout=STOP_CLEANUP_SECONDS)
            for task in stuck:
                log.warning("job_not_stopped", job=_RUNNING.get(task, task.get_name()))
    scheduler.shutdown(wait=False)


async def _grace(in_flight: set[asyncio.Task[object]], hurry: asyncio.Event) -> None:
    """Until every run in flight has ended, STOP_GRACE_SECONDS have passed, or ``hurry`` is set."""
    ended = asyncio.ensure_future(asyncio.wait(in_flight))  # cancelling this wait cancels no run
    hurried = asyncio.ensure_future(hurry.wait())
    await asyncio.wait({ended, hurried}, timeout=STOP_GRACE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    ended.cancel()
    hurried.cancel()


async def run_worker(runtime: Runtime) -> None:
    # The same lines as the API's (shipped logs keep the sealer's audit checkpoints).
    configure_logging(runtime.settings.log_level, runtime.settings.log_json)
    heartbeat = Heartbeat(runtime.settings.worker_heartbeat_path)
    scheduler = build_scheduler(runtime, heartbeat)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    scheduler.start()
    tune_after_startup()  # what start-up built is never walked again by a full collection
    heartbeat.beat()
    log.info(
        "worker_started",
        jobs=[job.id for job in scheduler.get_jobs()],
        heartbeat=str(heartbeat.path),
    )
    hurry = asyncio.Event()
    try:
        await stop.wait()
    finally:
        # A second SIGTERM or SIGINT while the runs in flight finish: cancel them now, not at the grace's end.
        for sig in SIGNALS:
            loop.add_signal_handler(sig, hurry.set)
        await stop_scheduler(scheduler, heartbeat, hurry)
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
        log.info("worker_stopped")

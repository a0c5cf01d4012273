"""The ``worker`` process: scheduled jobs (APScheduler, cron in UTC) and the outbox/audit loops.

Every job is safe to run in several replicas at once: the outbox claims rows with SKIP LOCKED,
the audit chainer and scheduled runs take PostgreSQL advisory locks, and the database is the queue.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import SQLAlchemyError

from privacy_service.audit.service import seal_pending
from privacy_service.breaches.jobs import scheduled_jobs as breach_jobs
from privacy_service.dsr.jobs import expire_unverified, send_digest
from privacy_service.logging import configure_logging
from privacy_service.notify.jobs import deliver_pending
from privacy_service.retention.jobs import scheduled_purge
from privacy_service.runtime import Runtime
from privacy_service.systems.jobs import deliver_from_runtime

log = structlog.get_logger("privacy_service.worker")


def guarded(name: str, job: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    """Log a job's outcome; a failing run is reported and retried at its next slot."""

    async def run() -> None:
        try:
            result = await job()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("job_failed", job=name, error=type(exc).__name__)
            return
        log.info("job_done", job=name, result=repr(result))

    return run


def build_scheduler(runtime: Runtime) -> AsyncIOScheduler:
    settings = runtime.settings
    scheduler = AsyncIOScheduler(timezone="UTC")
    jobs: list[tuple[str, Callable[[], Awaitable[object]], object]] = [
        (
            "outbox",
            lambda: deliver_pending(
                runtime.db, runtime.keys, runtime.mailer, runtime.clock, max_attempts=settings.outbox_max_attempts
            ),
            IntervalTrigger(seconds=settings.outbox_interval_seconds),
        ),
        (
            "webhooks",
            lambda: deliver_from_runtime(runtime),
            IntervalTrigger(seconds=settings.outbox_interval_seconds),
        ),
        (
            "audit-seal",
            lambda: seal_pending(runtime.db, runtime.clock, runtime.audit_key),
            IntervalTrigger(seconds=settings.audit_seal_interval_seconds),
        ),
        (
            "dsr-expiry",
            lambda: expire_unverified(runtime.db, runtime.clock, settings),
            CronTrigger.from_crontab(settings.worker_expiry_cron, timezone="UTC"),
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
    for name, job, trigger in jobs:
        scheduler.add_job(guarded(name, job), trigger, id=name, max_instances=1, coalesce=True)
    return scheduler


async def run_worker(runtime: Runtime) -> None:
    # The same JSON lines as the API's (shipped logs keep the sealer's audit checkpoints).
    configure_logging(runtime.settings.log_level, runtime.settings.log_json)
    scheduler = build_scheduler(runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    scheduler.start()
    log.info("worker_started", jobs=[job.id for job in scheduler.get_jobs()])
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
        log.info("worker_stopped")

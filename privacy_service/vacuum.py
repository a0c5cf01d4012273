"""Vacuum the queue tables when their dead rows pile up (PostgreSQL; a worker job).

Every code mail updates its outbox row twice (claimed, then sent), every audit event is updated once
when the sealer links it, every webhook delivery several times. Each update leaves a dead row and a
dead index entry behind, and the claims scan the dead entries of their index range until a vacuum
removes them: without one, delivery slows as the dead rows grow (measured: after about 200 s of 16
clients filing requests, mail fell behind by ~40 a second; see docs/benchmarks.md).

PostgreSQL's autovacuum does this on a production server. It may be off (a test server), or slow to
start on a large table (its default trigger is a fifth of the table dead). This job looks at each
queue table's dead rows in ``pg_stat_user_tables`` and vacuums the tables past
``queue_vacuum_dead_rows``. A vacuum running already (autovacuum's, another worker's) is left to
finish: this one waits a moment for the table's lock, then gives up until the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from sqlalchemy import bindparam, text

from privacy_service.config import Settings
from privacy_service.db import Database

log = structlog.get_logger(__name__)

# Updated after they are written, the busiest first.
QUEUE_TABLES = ("outbox_messages", "audit_events", "system_deliveries")

_DEAD_ROWS = text(
    "SELECT relname, n_dead_tup FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname IN :names"
).bindparams(bindparam("names", expanding=True))


@dataclass(slots=True)
class VacuumResult:
    vacuumed: dict[str, int] = field(default_factory=dict)  # table: dead rows it had
    skipped: list[str] = field(default_factory=list)  # past the threshold, but a vacuum was running


async def vacuum_queue_tables(db: Database, settings: Settings) -> VacuumResult:
    """Vacuum (and analyse) each queue table with at least ``queue_vacuum_dead_rows`` dead rows."""
    result = VacuumResult()
    if settings.is_sqlite:
        return result  # no dead rows to speak of: SQLite rewrites pages in place
    autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")  # VACUUM runs outside a transaction
    async with autocommit.connect() as connection:
        rows = (await connection.execute(_DEAD_ROWS, {"names": list(QUEUE_TABLES)})).all()
        due = [(name, dead) for name, dead in rows if dead >= settings.queue_vacuum_dead_rows]
        if not due:
            return result
        await connection.exec_driver_sql(f"SET lock_timeout = {int(settings.queue_vacuum_lock_wait_ms)}")
        for name, dead in sorted(due, key=lambda row: QUEUE_TABLES.index(row[0])):
            try:
                await connection.exec_driver_sql(f"VACUUM (ANALYZE) {name}")
            except Exception as exc:  # a lock timeout leaves the connection usable (autocommit)
                if getattr(getattr(exc, "orig", None), "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                    raise
                result.skipped.append(name)
                continue
            result.vacuumed[name] = int(dead)
        await connection.exec_driver_sql("RESET lock_timeout")
    if result.vacuumed:
        log.info("queue_tables_vacuumed", tables=result.vacuumed)
    return result


_LOCK_NOT_AVAILABLE = "55P03"

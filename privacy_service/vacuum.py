"""Vacuum the queue tables when their dead rows pile up (PostgreSQL; a worker job).

Every code mail updates its outbox row twice (claimed, then sent), every audit event is updated once
when the sealer links it, every webhook delivery several times. Each update leaves a dead row and a
dead index entry behind, and the claims scan the dead entries of their index range until a vacuum
removes them: without one, delivery slows as the dead rows grow (measured: after about 200 s of 16
clients filing requests, mail fell behind by ~40 a second; see docs/benchmarks.md).

PostgreSQL's autovacuum does this on a production server. It may be off (a test server), or slow to
start on a large table (its default trigger is a fifth of the table dead). This job looks at each
queue table's dead rows in ``pg_stat_user_tables`` and vacuums the tables past
``queue_vacuum_dead_rows``, with ``SKIP_LOCKED``: a table a vacuum holds already (autovacuum's,
another worker's) is left to it, without waiting and without cancelling it, and tried again next run.
A partitioned table would show no dead rows of its own: its partitions are not looked at here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from sqlalchemy import text

from privacy_service.config import Settings
from privacy_service.db import Database

log = structlog.get_logger(__name__)

# Updated after they are written, the busiest first.
QUEUE_TABLES = ("outbox_messages", "audit_events", "system_deliveries")

# Each table as the search path finds it (the name VACUUM is then given, quoted as need be), with its
# dead rows and how many times it has been vacuumed by hand.
_TABLES = text(
    "SELECT s.relid::regclass::text AS name, s.n_dead_tup, s.vacuum_count "
    "FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS wanted(name, position) "
    "JOIN pg_stat_user_tables AS s ON s.relid = to_regclass(wanted.name) ORDER BY wanted.position"
)


@dataclass(slots=True)
class VacuumResult:
    vacuumed: dict[str, int] = field(default_factory=dict)  # table: dead rows it had
    # Past the threshold but not vacuumed: a vacuum held it, or the database user may not vacuum it.
    skipped: list[str] = field(default_factory=list)


async def vacuum_queue_tables(db: Database, settings: Settings) -> VacuumResult:
    """Vacuum (and analyse) each queue table with at least ``queue_vacuum_dead_rows`` dead rows."""
    result = VacuumResult()
    counts: dict[str, int] = {}
    if settings.is_sqlite:
        return result  # no dead rows to speak of: SQLite rewrites pages in place
    autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")  # VACUUM runs outside a transaction
    async with autocommit.connect() as connection:
        names = list(QUEUE_TABLES)
        due = [
            row
            for row in (await connection.execute(_TABLES, {"names": names})).all()
            if row.n_dead_tup >= settings.queue_vacuum_dead_rows
        ]
        for row in due:
            # Skipped (with a warning, not an error) when the table is locked or not ours to vacuum.
            await connection.exec_driver_sql(f"VACUUM (SKIP_LOCKED, ANALYZE) {row.name}")
        if due:
            # A vacuum that ran counted itself (PostgreSQL reports it as it ends); a skipped one did not.
            counts = {now.name: now.vacuum_count for now in (await connection.execute(_TABLES, {"names": names})).all()}
    for row in due:
        if counts.get(row.name, row.vacuum_count) > row.vacuum_count:
            result.vacuumed[row.name] = int(row.n_dead_tup)
        else:
            result.skipped.append(row.name)
    if result.vacuumed:
        log.info("queue_tables_vacuumed", tables=result.vacuumed)
    if result.skipped:
        log.info("queue_tables_not_vacuumed", tables=result.skipped, reason="locked, or not the owner")
    return result

"""A subject's event times in the future (``account_closed_at``, ``last_activity_at``) are clamped.

Retention rules start at these events (triggers ``account_closed`` and ``last_activity``), and a
subject event whose ``at`` lies more than the clock-skew allowance in the future is now refused on
write. Events posted before could carry any future time (up to the year 2999), which keeps the
subject's data long after the period the notice promises. 0011 clamped ``records.occurred_at``; this
does the same for the subject's columns. Such a time is not the time of an event (nothing was posted
after it happened), so it becomes the subject row's last write (``updated_at``: the event post set
it), or the migration time if that too lies in the future.

Only values more than 5 minutes (the default allowance) after the migration time change.
Downgrade leaves the clamped times as they are: the schema is unchanged, and the original future
values are not kept (restoring them would only bring back the over-long retention).

Revision ID: 0015_subject_times
Revises: 0014_audit_verify
Create Date: 2026-12-03
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from privacy_service.db import UTCDateTime

revision = "0015_subject_times"
down_revision = "0014_audit_verify"
branch_labels = None
depends_on = None

SKEW = timedelta(minutes=5)
BATCH = 1000
COLUMNS = ("last_activity_at", "account_closed_at")

subjects = sa.table(
    "subjects",
    sa.column("id", sa.Uuid()),
    sa.column("updated_at", UTCDateTime()),
    sa.column("last_activity_at", UTCDateTime()),
    sa.column("account_closed_at", UTCDateTime()),
)


def upgrade() -> None:
    connection = op.get_bind()
    now = datetime.now(UTC)
    # The limit is a bound parameter, so the comparison is the same plain SQL on both backends.
    limit = now + SKEW
    for name in COLUMNS:
        column = subjects.c[name]
        rows = connection.execute(sa.select(subjects.c.id, subjects.c.updated_at).where(column > limit)).all()
        clamped = [{"row_id": row_id, "at": min(updated, now)} for row_id, updated in rows]
        statement = subjects.update().where(subjects.c.id == sa.bindparam("row_id")).values({name: sa.bindparam("at")})
        for start in range(0, len(clamped), BATCH):
            connection.execute(statement, clamped[start : start + BATCH])


def downgrade() -> None:
    """Nothing to undo in the schema; the clamped times stay (see the module docstring)."""

"""Retention runs from the event (``records.occurred_at``): existing future event times are clamped.

From this release a record's retention period runs from its ``occurred_at`` (policy trigger
``occurred_at``), and a write whose ``occurred_at`` lies more than the clock-skew allowance in the
future is refused. Rows written before could carry any future time (up to the year 2999), which
would now keep them until long after the period the notice promises. Such a time is not the time of
an event (nothing was recorded before it happened), so it becomes the time the vault stored the row
(``created_at``): those rows keep exactly the retention they had before the upgrade.

Only rows whose ``occurred_at`` is more than 5 minutes (the default allowance) after their
``created_at`` change. No index is added: the purge walks ``records`` in physical ranges and tests
the anchor as a plain column comparison, and per-subject reads use ``ix_records_subject_category``.
Downgrade leaves the clamped times as they are (the original values are not kept).

Revision ID: 0011_retention_anchor
Revises: 0009_opendsr
Create Date: 2026-12-03
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

from privacy_service.db import UTCDateTime

revision = "0011_retention_anchor"
down_revision = "0009_opendsr"
branch_labels = None
depends_on = None

SKEW = timedelta(minutes=5)
BATCH = 1000

records = sa.table(
    "records",
    sa.column("id", sa.Uuid()),
    sa.column("occurred_at", UTCDateTime()),
    sa.column("created_at", UTCDateTime()),
)


def upgrade() -> None:
    connection = op.get_bind()
    # The comparison narrows the rows in SQL on both backends; the allowance is applied here, in
    # Python, so no dialect-specific interval arithmetic is needed.
    rows = connection.execute(
        sa.select(records.c.id, records.c.occurred_at, records.c.created_at).where(
            records.c.occurred_at > records.c.created_at
        )
    ).all()
    clamped = [{"row_id": row_id, "at": created} for row_id, occurred, created in rows if occurred > created + SKEW]
    statement = records.update().where(records.c.id == sa.bindparam("row_id")).values(occurred_at=sa.bindparam("at"))
    for start in range(0, len(clamped), BATCH):
        connection.execute(statement, clamped[start : start + BATCH])


def downgrade() -> None:
    """Nothing to undo in the schema; the clamped times stay (see the module docstring)."""

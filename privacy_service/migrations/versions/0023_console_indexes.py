"""Indexes for the operator console's searches (issue 17): audit events by action and by actor in chain
order, and recent deliveries; a console chain check names its operator.

Searching the audit log for an action that matches few or no events walked the whole chain (0.2-0.5 s
at 1M events on PostgreSQL), and so did a search for a rare actor. A time range needs no index of its
own (``audit.queries.seq_bounds`` turns it into ``seq`` bounds from the checkpoints): every intake
writes audit events, so each index there is paid on every request. The systems page and the
dashboard count the live deliveries (through the existing ``(status, next_attempt_at)`` index) and
those delivered in the last days, a range of ``(status, delivered_at)``. ``audit_verifications.actor``
is widened from 16 to 80 characters: a check run from the console records which operator ran it
(``operator:<id>``), not just "console".

Revision ID: 0023_console_indexes
Revises: 0022_merge
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_console_indexes"
down_revision = "0022_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_action_seq", "audit_events", ["action", "seq"])
    op.create_index("ix_audit_actor_seq", "audit_events", ["actor_id", "seq"])
    op.create_index("ix_system_deliveries_status_delivered", "system_deliveries", ["status", "delivered_at"])
    with op.batch_alter_table("audit_verifications") as batch:  # SQLite rebuilds the table
        batch.alter_column("actor", existing_type=sa.String(16), type_=sa.String(80), existing_nullable=False)


def downgrade() -> None:
    # An operator's check was recorded as "console" before: back to that, so the value fits again.
    op.execute(sa.text("UPDATE audit_verifications SET actor = 'console' WHERE actor LIKE 'operator:%'"))
    with op.batch_alter_table("audit_verifications") as batch:
        batch.alter_column("actor", existing_type=sa.String(80), type_=sa.String(16), existing_nullable=False)
    op.drop_index("ix_system_deliveries_status_delivered", table_name="system_deliveries")
    op.drop_index("ix_audit_actor_seq", table_name="audit_events")
    op.drop_index("ix_audit_action_seq", table_name="audit_events")

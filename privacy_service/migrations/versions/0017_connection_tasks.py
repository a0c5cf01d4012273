"""Connection tasks: a request's work on a connected database (access or erasure), run by the worker.

Revision ID: 0017_connection_tasks
Revises: 0016_connections
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from privacy_service.db import UTCDateTime

revision = "0017_connection_tasks"
down_revision = "0016_connections"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connection_tasks",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("request_id", sa.Uuid(), sa.ForeignKey("dsr_requests.id", ondelete="CASCADE"), nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("connection_name", sa.String(100), nullable=False),
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_problem", sa.String(200)),
        sa.Column("collections", sa.JSON(), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("kept", sa.JSON(), nullable=False),
        sa.Column("identities_ct", sa.LargeBinary()),
        sa.Column("result_ct", sa.LargeBinary()),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.UniqueConstraint("request_id", "connection_id", "kind", name="uq_connection_tasks_request_connection"),
    )
    op.create_index("ix_connection_tasks_status_next", "connection_tasks", ["status", "next_attempt_at"])
    op.create_index("ix_connection_tasks_request", "connection_tasks", ["request_id"])
    op.create_index("ix_connection_tasks_connection", "connection_tasks", ["connection_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_connection_tasks_connection", table_name="connection_tasks")
    op.drop_index("ix_connection_tasks_request", table_name="connection_tasks")
    op.drop_index("ix_connection_tasks_status_next", table_name="connection_tasks")
    op.drop_table("connection_tasks")

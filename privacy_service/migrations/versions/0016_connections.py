"""Connected data stores (issue 18): the connection registry.

Revision ID: 0016_connections
Revises: 0015_subject_times
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from privacy_service.db import UTCDateTime

revision = "0016_connections"
down_revision = "0015_subject_times"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("dialect", sa.String(16), nullable=False),
        sa.Column("url_ct", sa.LargeBinary(), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("last_test_at", UTCDateTime()),
        sa.Column("last_test_ok", sa.Boolean()),
        sa.Column("last_test_problem", sa.String(500)),
        sa.Column("removed_at", UTCDateTime()),
    )
    # A removed connection keeps its row (tasks name it); its name may be registered again.
    op.create_index(
        "uq_connections_active_name",
        "connections",
        ["name"],
        unique=True,
        sqlite_where=sa.text("removed_at IS NULL"),
        postgresql_where=sa.text("removed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_connections_active_name", table_name="connections")
    op.drop_table("connections")

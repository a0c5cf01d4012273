"""Operator console sessions (issue 17): a signed-in browser, by the hash of its session token.

Revision ID: 0021_console_sessions
Revises: 0015_subject_times
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from privacy_service.db import UTCDateTime

revision = "0021_console_sessions"
down_revision = "0015_subject_times"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("operator_id", sa.Uuid(), sa.ForeignKey("operators.id"), nullable=False),
        sa.Column("scopes", sa.String(500), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime()),
        sa.Column("end_reason", sa.String(16)),
    )
    op.create_index("ix_console_sessions_token_hash", "console_sessions", ["token_hash"], unique=True)
    op.create_index("ix_console_sessions_operator_id", "console_sessions", ["operator_id"])


def downgrade() -> None:
    op.drop_index("ix_console_sessions_operator_id", table_name="console_sessions")
    op.drop_index("ix_console_sessions_token_hash", table_name="console_sessions")
    op.drop_table("console_sessions")

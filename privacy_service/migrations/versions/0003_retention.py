"""Retention: legal holds, purge runs, anonymised aggregates.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from privacy_service.db import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("subject_id", sa.Uuid(), sa.ForeignKey("subjects.id"), nullable=False),
        sa.Column("reason_ct", sa.LargeBinary()),
        sa.Column("reason_key", sa.String(20), nullable=False),
        sa.Column("placed_by", sa.String(64), nullable=False),
        sa.Column("placed_at", UTCDateTime(), nullable=False),
        sa.Column("until", UTCDateTime()),
        sa.Column("released_at", UTCDateTime()),
        sa.Column("released_by", sa.String(64)),
    )
    op.create_index("ix_legal_holds_subject", "legal_holds", ["subject_id"])
    op.create_table(
        "retention_runs",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("as_of", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("policy_hash", sa.String(64), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("holds", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(200)),
    )
    op.create_index("ix_retention_runs_started", "retention_runs", ["started_at", "id"])
    op.create_table(
        "retention_aggregates",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("category", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("amount_band", sa.String(24), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("category", "kind", "month", "amount_band", name="uq_retention_aggregates_key"),
    )
    # Restricted rows (kept under a legal duty after erasure) are found by their end date.
    op.create_index(
        "ix_records_restricted_until",
        "records",
        ["retain_until"],
        postgresql_where=sa.text("restricted"),
        sqlite_where=sa.text("restricted"),
    )


def downgrade() -> None:
    op.drop_index("ix_records_restricted_until", table_name="records")
    op.drop_table("retention_aggregates")
    op.drop_table("retention_runs")
    op.drop_index("ix_legal_holds_subject", table_name="legal_holds")
    op.drop_table("legal_holds")

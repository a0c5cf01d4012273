"""Audit chain checks (``audit_verifications``): one row per ``audit verify`` or worker ``audit-verify`` run.

Kept outside the hash chain so that checking the log never adds to it; ``GET /metrics`` reads the last
successful check from here (``privacy_audit_chain_last_verified_timestamp_seconds``).

Also the merge point of the four revisions made side by side on 0009 (breach factors, retention
anchor, deadline clocks, portal answer access): they touch different tables.

Revision ID: 0014_audit_verify
Revises: 0010_breach_factors, 0011_retention_anchor, 0012_clocks, 0013_answer_access
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from privacy_service.db import UTCDateTime

revision = "0014_audit_verify"
down_revision = ("0010_breach_factors", "0011_retention_anchor", "0012_clocks", "0013_answer_access")
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_verifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(16), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("from_checkpoint", sa.Boolean(), nullable=False),
        sa.Column("checked", sa.BigInteger(), nullable=False),
        sa.Column("start_seq", sa.BigInteger(), nullable=False),
        sa.Column("head_seq", sa.BigInteger(), nullable=False),
        sa.Column("external", sa.Integer(), nullable=False),
        sa.Column("broken_seq", sa.BigInteger()),
        sa.Column("problem", sa.String(200)),
    )
    op.create_index("ix_audit_verifications_at", "audit_verifications", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_verifications_at", table_name="audit_verifications")
    op.drop_table("audit_verifications")

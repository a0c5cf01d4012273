"""Downstream systems: registry, webhook deliveries and their log, callback nonces, data they returned.

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from privacy_service.db import UTCDateTime

revision = "0005"
down_revision = "0002"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "systems",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("callback_url", sa.String(2000), nullable=False),
        sa.Column("request_types", sa.JSON(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("identities", sa.JSON(), nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=False),
        sa.Column("required", sa.Boolean(), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False, unique=True),
        sa.Column("secret_ct", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("removed_at", UTCDateTime()),
    )
    # A removed system keeps its row (the delivery log names it); its name may be registered again.
    op.create_index(
        "uq_systems_active_name",
        "systems",
        ["name"],
        unique=True,
        sqlite_where=sa.text("removed_at IS NULL"),
        postgresql_where=sa.text("removed_at IS NULL"),
    )
    op.create_table(
        "system_deliveries",
        sa.Column("id", sa.Uuid(), primary_key=True),
        # Purging a request (retention) takes its deliveries, their log and returned data with it.
        sa.Column("request_id", sa.Uuid(), sa.ForeignKey("dsr_requests.id", ondelete="CASCADE"), nullable=False),
        sa.Column("system_id", sa.Uuid(), sa.ForeignKey("systems.id"), nullable=False),
        sa.Column("required", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.String(100)),
        sa.Column("payload", sa.LargeBinary()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime()),
        sa.Column("answer", sa.String(12)),
        sa.Column("answered_at", UTCDateTime()),
        sa.Column("answer_due_at", UTCDateTime(), nullable=False),
        sa.Column("escalated_at", UTCDateTime()),
    )
    op.create_index("ix_system_deliveries_status_next", "system_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_system_deliveries_request", "system_deliveries", ["request_id"])
    op.create_index("ix_system_deliveries_system", "system_deliveries", ["system_id", "created_at"])
    op.create_table(
        "system_delivery_attempts",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.Uuid(), sa.ForeignKey("system_deliveries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("system_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("duration_ms", sa.Float(), nullable=False),
    )
    op.create_index("ix_system_delivery_attempts_delivery", "system_delivery_attempts", ["delivery_id", "id"])
    op.create_table(
        "system_callback_nonces",
        sa.Column("digest", sa.LargeBinary(), primary_key=True),
        sa.Column("system_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_system_callback_nonces_received", "system_callback_nonces", ["system_id", "received_at"])
    op.create_table(
        "system_data",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("request_id", sa.Uuid(), sa.ForeignKey("dsr_requests.id", ondelete="CASCADE"), nullable=False),
        sa.Column("delivery_id", sa.Uuid(), sa.ForeignKey("system_deliveries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("system_id", sa.Uuid(), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("data_ct", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_system_data_request", "system_data", ["request_id", "received_at"])
    op.create_table(
        "system_fanouts",
        sa.Column(
            "request_id",
            sa.Uuid(),
            sa.ForeignKey("dsr_requests.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("recipient_ct", sa.LargeBinary()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("system_fanouts")
    op.drop_table("system_data")
    op.drop_table("system_callback_nonces")
    op.drop_table("system_delivery_attempts")
    op.drop_table("system_deliveries")
    op.drop_index("uq_systems_active_name", table_name="systems")
    op.drop_table("systems")

"""OpenDSR requests bound to the registered controller system their answer is sent to.

Revision ID: 0009_opendsr
Revises: 0008_dsr
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from privacy_service.db import UTCDateTime

revision = "0009_opendsr"
down_revision = "0008_dsr"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "opendsr_requests",
        sa.Column("request_id", sa.Uuid(), sa.ForeignKey("dsr_requests.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("system_id", sa.Uuid(), sa.ForeignKey("systems.id"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("results_delivery_id", sa.Uuid()),
    )


def downgrade() -> None:
    op.drop_table("opendsr_requests")

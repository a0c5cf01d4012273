"""Count the codes sent again for each data-subject request (``dsr_requests.resends``).

Resends are capped per request (``PRIVACY_DSR_RESEND_MAX_PER_REQUEST``); existing requests start at 0.

Revision ID: 0008_dsr
Revises: 0007_audit
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_dsr"
down_revision = "0007_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("dsr_requests", sa.Column("resends", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("dsr_requests") as batch:
        batch.drop_column("resends")

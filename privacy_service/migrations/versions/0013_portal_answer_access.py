"""Codes that open a confirmed request in another browser, and the read-only access they gave
(``dsr_answer_access``, issue 20 item 1).

Revision ID: 0013_answer_access
Revises: 0009_opendsr
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from privacy_service.db import UTCDateTime

revision = "0013_answer_access"
down_revision = "0009_opendsr"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dsr_answer_access",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("request_id", sa.Uuid(), sa.ForeignKey("dsr_requests.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("code_hash", sa.LargeBinary()),
        sa.Column("code_expires_at", UTCDateTime()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("token_hash", sa.LargeBinary(), unique=True),
        sa.Column("token_expires_at", UTCDateTime()),
    )
    op.create_index("ix_dsr_answer_access_request", "dsr_answer_access", ["request_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_dsr_answer_access_request", table_name="dsr_answer_access")
    op.drop_table("dsr_answer_access")

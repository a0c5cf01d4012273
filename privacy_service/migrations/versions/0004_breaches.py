"""Breach incidents: register, history (Art. 33(5)), authority notices, per-subject delivery.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from privacy_service.db import UTCDateTime

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "breaches",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("signal", sa.String(120)),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("detected_at", UTCDateTime(), nullable=False),
        sa.Column("aware_at", UTCDateTime()),
        sa.Column("occurred_from", UTCDateTime()),
        sa.Column("occurred_to", UTCDateTime()),
        sa.Column("nature", sa.JSON(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("affected_kind", sa.String(16), nullable=False),
        sa.Column("affected_selector", sa.JSON()),
        sa.Column("affected_count", sa.Integer(), nullable=False),
        sa.Column("approx_records", sa.Integer()),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("key_compromised", sa.Boolean(), nullable=False),
        sa.Column("backup_exists", sa.Boolean(), nullable=False),
        sa.Column("exfiltration_known", sa.Boolean(), nullable=False),
        sa.Column("malicious", sa.Boolean(), nullable=False),
        sa.Column("mitigation", sa.Text()),
        sa.Column("consequences", sa.Text()),
        sa.Column("measures_proposed", sa.Text()),
        sa.Column("advice", sa.Text()),
        sa.Column("translations", sa.JSON(), nullable=False),
        sa.Column("facts_version", sa.Integer(), nullable=False),
        sa.Column("assessment", sa.JSON()),
        sa.Column("assessed_version", sa.Integer()),
        sa.Column("severity", sa.Float()),
        sa.Column("band", sa.String(16)),
        sa.Column("notify_authority", sa.Boolean()),
        sa.Column("notify_subjects", sa.Boolean()),
        sa.Column("public_communication", sa.Boolean()),
        sa.Column("authority_deadline", UTCDateTime()),
        sa.Column("authority_notified_at", UTCDateTime()),
        sa.Column("authority_notified_late", sa.Boolean(), nullable=False),
        sa.Column("reminders_sent", sa.JSON(), nullable=False),
        sa.Column("subject_notice", sa.JSON()),
        sa.Column("public_notice", sa.JSON()),
        sa.Column("closing_note", sa.Text()),
        sa.Column("closed_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_breaches_status_deadline", "breaches", ["status", "authority_deadline"])
    op.create_index("ix_breaches_signal", "breaches", ["signal", "detected_at"])
    op.create_table(
        "breach_transitions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("breach_id", sa.Uuid(), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("note", sa.String(200)),
    )
    op.create_index("ix_breach_transitions_breach", "breach_transitions", ["breach_id", "id"])
    op.create_table(
        "breach_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("breach_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("changed", sa.JSON(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
    )
    op.create_index("ix_breach_versions_breach", "breach_versions", ["breach_id", "version"], unique=True)
    op.create_table(
        "breach_authority_notices",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("breach_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("authority", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("delay_reason", sa.Text()),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_breach_authority_notices_breach", "breach_authority_notices", ["breach_id", "seq"], unique=True)
    op.create_table(
        "breach_subjects",
        sa.Column("breach_id", sa.Uuid(), primary_key=True),
        sa.Column("subject_id", sa.Uuid(), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("outbox_message_id", sa.Uuid()),
        sa.Column("error", sa.String(100)),
        sa.Column("updated_at", UTCDateTime()),
    )
    op.create_index("ix_breach_subjects_status", "breach_subjects", ["breach_id", "status"])


def downgrade() -> None:
    op.drop_table("breach_subjects")
    op.drop_table("breach_authority_notices")
    op.drop_table("breach_versions")
    op.drop_table("breach_transitions")
    op.drop_table("breaches")

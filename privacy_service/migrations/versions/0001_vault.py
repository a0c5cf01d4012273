"""Foundation: subjects, records, operators, audit log, requests, outbox, and the separate key store.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from privacy_service.db import KEYSTORE_SCHEMA, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subjects",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("email_bidx", sa.LargeBinary(), unique=True),
        sa.Column("phone_bidx", sa.LargeBinary(), unique=True),
        sa.Column("external_id_bidx", sa.LargeBinary(), unique=True),
        sa.Column("email_ct", sa.LargeBinary()),
        sa.Column("phone_ct", sa.LargeBinary()),
        sa.Column("external_id_ct", sa.LargeBinary()),
        sa.Column("profile_ct", sa.LargeBinary()),
        sa.Column("profile_fields", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("last_activity_at", UTCDateTime()),
        sa.Column("account_closed_at", UTCDateTime()),
        sa.Column("erased_at", UTCDateTime()),
        sa.Column("retained_ct", sa.LargeBinary()),
        sa.Column("retained_until", UTCDateTime()),
    )
    op.create_table(
        "records",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("subject_id", sa.Uuid(), sa.ForeignKey("subjects.id"), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("category", sa.String(80), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("data_ct", sa.LargeBinary(), nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("retain_until", UTCDateTime()),
    )
    op.create_index("ix_records_subject_category", "records", ["subject_id", "category"])
    op.create_table(
        "operators",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("key_id", sa.String(32), nullable=False, unique=True),
        sa.Column("key_hash", sa.LargeBinary(), nullable=False),
        sa.Column("scopes", sa.String(500), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("revoked_at", UTCDateTime()),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger()),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.Uuid()),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(64)),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary()),
        sa.Column("hash", sa.LargeBinary()),
    )
    op.create_index("ix_audit_seq", "audit_events", ["seq"], unique=True)
    op.create_index(
        "ix_audit_pending",
        "audit_events",
        ["id"],
        postgresql_where=sa.text("seq IS NULL"),
        sqlite_where=sa.text("seq IS NULL"),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
    )
    op.bulk_insert(
        sa.table("audit_head", sa.column("id"), sa.column("seq"), sa.column("hash", sa.LargeBinary())),
        [{"id": 1, "seq": 0, "hash": bytes(32)}],
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column("mac", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_audit_subject_at", "audit_events", ["subject_id", "at"])
    op.create_table(
        "dsr_requests",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("regime", sa.String(8), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("identity_kind", sa.String(16), nullable=False),
        sa.Column("identity_bidx", sa.LargeBinary(), nullable=False),
        sa.Column("identity_ct", sa.LargeBinary()),
        sa.Column("changes_ct", sa.LargeBinary()),
        sa.Column("reason_ct", sa.LargeBinary()),
        sa.Column("subject_id", sa.Uuid()),
        sa.Column("duplicate_of", sa.Uuid()),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("acknowledged_at", UTCDateTime()),
        sa.Column("extended_at", UTCDateTime()),
        sa.Column("verified_at", UTCDateTime()),
        sa.Column("completed_at", UTCDateTime()),
        sa.Column("escalated_at", UTCDateTime()),
        sa.Column("code_hash", sa.LargeBinary()),
        sa.Column("code_expires_at", UTCDateTime()),
        sa.Column("code_sent_at", UTCDateTime()),
        sa.Column("code_attempts", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), unique=True),
        sa.Column("token_expires_at", UTCDateTime()),
        sa.Column("export_expires_at", UTCDateTime()),
        sa.Column("decision_ct", sa.LargeBinary()),
        sa.Column("result", sa.JSON()),
    )
    op.create_index("ix_dsr_identity_type", "dsr_requests", ["identity_bidx", "type"])
    op.create_index("ix_dsr_status_due", "dsr_requests", ["status", "due_at"])
    op.create_table(
        "dsr_transitions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("from_status", sa.String(24)),
        sa.Column("to_status", sa.String(24), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("note", sa.String(200)),
    )
    op.create_index("ix_dsr_transitions_request", "dsr_transitions", ["request_id", "id"])
    op.create_table(
        "outbox_messages",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("template", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.Uuid()),
        sa.Column("payload", sa.LargeBinary()),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.String(100)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime()),
    )
    op.create_index("ix_outbox_status_next", "outbox_messages", ["status", "next_attempt_at"])
    op.create_table(
        "data_keys",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(20), nullable=False),
        sa.Column("kek_version", sa.Integer(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("rewrapped_at", UTCDateTime()),
        schema=KEYSTORE_SCHEMA,
    )
    op.create_index("ix_data_keys_subject", "data_keys", ["subject_id"], schema=KEYSTORE_SCHEMA)
    op.create_index("ix_data_keys_kek_version", "data_keys", ["kek_version"], schema=KEYSTORE_SCHEMA)


def downgrade() -> None:
    op.drop_table("data_keys", schema=KEYSTORE_SCHEMA)
    op.drop_table("outbox_messages")
    op.drop_table("dsr_transitions")
    op.drop_table("dsr_requests")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_head")
    op.drop_table("audit_events")
    op.drop_table("operators")
    op.drop_table("records")
    op.drop_table("subjects")

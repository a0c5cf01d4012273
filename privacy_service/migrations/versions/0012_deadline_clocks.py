"""Deadline clocks: the CCPA acknowledgement of a request (``dsr_requests``).

* ``receipt_confirmed_at``: when the confirmation of receipt actually went out (the code mail or
  another mail to the subject delivered by the outbox, or the answer itself), as the clock found it;
* ``acknowledge_reminded_at`` / ``acknowledge_escalated_at``: the operators' reminder before the
  deadline and the escalation once it passed without a confirmation.

Requests that exist at upgrade keep the intake's ``acknowledged_at`` (the moment the code mail was
queued) as their confirmation: the clock watches requests received from now on.

Revision ID: 0012_clocks
Revises: 0009_opendsr
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from privacy_service.db import UTCDateTime

revision = "0012_clocks"
down_revision = "0009_opendsr"
branch_labels = None
depends_on = None

COLUMNS = ("receipt_confirmed_at", "acknowledge_reminded_at", "acknowledge_escalated_at")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("dsr_requests", sa.Column(name, UTCDateTime(), nullable=True))
    op.execute("UPDATE dsr_requests SET receipt_confirmed_at = acknowledged_at")


def downgrade() -> None:
    with op.batch_alter_table("dsr_requests") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)

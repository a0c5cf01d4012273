"""Breach assessment factors: data types of the breach taxonomy and the affected people's countries.

* ``breaches.data_types``: data types named from ``policies/breach.yaml`` (``enisa.taxonomy``) beside the
  policy's categories (data the vault never held: CVs, health data in an attachment, insurance data);
* ``breaches.affected_countries``: where the affected people reside, for the supervisory authorities
  concerned when the controller has no main establishment in the EU (EDPB Guidelines 9/2022).

The recipient and the likely consequences are assessment inputs, kept in ``breaches.assessment`` (JSON).
Existing incidents get empty lists: their assessments are unchanged.

Revision ID: 0010_breach_factors
Revises: 0009_opendsr
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_breach_factors"
down_revision = "0009_opendsr"
branch_labels = None
depends_on = None

COLUMNS = ("data_types", "affected_countries")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("breaches", sa.Column(name, sa.JSON(), nullable=False, server_default=sa.text("'[]'")))


def downgrade() -> None:
    with op.batch_alter_table("breaches") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)

"""Join the feature branches (retention, breaches, downstream systems) into one head.

0003, 0004 and 0005 each branch from 0002 and touch separate tables, so they apply in any order;
from here on there is a single head, and a new migration revises this one.

Revision ID: 0006
Revises: 0003, 0004, 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

revision = "0006"
down_revision = ("0003", "0004", "0005")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: a merge point only."""


def downgrade() -> None:
    """Nothing to change: a merge point only."""

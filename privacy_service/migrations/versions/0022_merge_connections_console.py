"""Join the connected data stores (0016-0017) and the console sessions (0021) into one head.

Both branch from 0015 and create separate tables, so they apply in any order; from here on there
is a single head again, and a new migration revises this one. (0018-0020 were numbers reserved
for work that needed no migration.)

Revision ID: 0022_merge
Revises: 0017_connection_tasks, 0021_console_sessions
Create Date: 2026-12-04
"""

from __future__ import annotations

revision = "0022_merge"
down_revision = ("0017_connection_tasks", "0021_console_sessions")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: a merge point only."""


def downgrade() -> None:
    """Nothing to change: a merge point only."""

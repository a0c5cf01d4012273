"""Migration 0011_retention_anchor: a record written before the upgrade with an ``occurred_at`` in
the future (no longer accepted) gets its storage time, so anchoring retention on ``occurred_at``
cannot keep it longer than before; every other record keeps its event time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from alembic import command

from privacy_service.config import Settings
from privacy_service.db import UTCDateTime
from privacy_service.migrations.runner import alembic_config
from tests.conftest import ROOT, isolated

STORED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SUBJECTS = sa.table(
    "subjects",
    sa.column("id", sa.Uuid()),
    sa.column("status", sa.String()),
    sa.column("language", sa.String()),
    sa.column("profile_fields", sa.JSON()),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
RECORDS = sa.table(
    "records",
    sa.column("id", sa.Uuid()),
    sa.column("subject_id", sa.Uuid()),
    sa.column("kind", sa.String()),
    sa.column("category", sa.String()),
    sa.column("occurred_at", UTCDateTime()),
    sa.column("created_at", UTCDateTime()),
    sa.column("data_ct", sa.LargeBinary()),
    sa.column("restricted", sa.Boolean()),
)


def test_future_event_times_written_before_the_upgrade_become_storage_times(tmp_path: Path) -> None:
    path = tmp_path / "upgrade.db"
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{path}", keystore_path=tmp_path / "keys.db", policy_dir=ROOT / "policies"
    )
    config = alembic_config(settings)
    isolated(command.upgrade, config, "0009_opendsr")

    subject = uuid.uuid4()
    times = {
        "history": STORED - timedelta(days=3650),  # imported: kept as is (purged from its event)
        "same": STORED,
        "skew": STORED + timedelta(minutes=4),  # within the allowance: kept
        "hour": STORED + timedelta(hours=1),
        "far": datetime(2999, 12, 31, 23, 59, tzinfo=UTC),
    }
    ids = {name: uuid.uuid4() for name in times}
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(
            SUBJECTS.insert().values(
                id=subject, status="active", language="en", profile_fields={}, created_at=STORED, updated_at=STORED
            )
        )
        for name, at in times.items():
            connection.execute(
                RECORDS.insert().values(
                    id=ids[name],
                    subject_id=subject,
                    kind="note",
                    category="system.support_ticket",
                    occurred_at=at,
                    created_at=STORED,
                    data_ct=b"x",
                    restricted=False,
                )
            )

    isolated(command.upgrade, config, "0011_retention_anchor")

    with engine.connect() as connection:
        found = dict(connection.execute(sa.select(RECORDS.c.id, RECORDS.c.occurred_at)).all())
    engine.dispose()
    assert found[ids["history"]] == times["history"]
    assert found[ids["same"]] == STORED
    assert found[ids["skew"]] == times["skew"]
    assert found[ids["hour"]] == STORED
    assert found[ids["far"]] == STORED

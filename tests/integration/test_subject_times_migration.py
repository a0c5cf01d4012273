"""Migration 0015_subject_times: a subject's ``account_closed_at`` or ``last_activity_at`` written
before the upgrade with a time in the future (no longer accepted) gets the row's ``updated_at`` (the
last write, never later than the migration), so a retention rule starting at that event cannot keep
the data longer than its period; past times and times within the clock-skew allowance stay. Runs on
SQLite and, with a server, on a fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from privacy_service.config import Settings
from privacy_service.db import UTCDateTime
from privacy_service.migrations.runner import alembic_config
from tests.conftest import BACKENDS, ROOT, _dsn, _with_database, isolated

WRITTEN = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SUBJECTS = sa.table(
    "subjects",
    sa.column("id", sa.Uuid()),
    sa.column("status", sa.String()),
    sa.column("language", sa.String()),
    sa.column("profile_fields", sa.JSON()),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
    sa.column("last_activity_at", UTCDateTime()),
    sa.column("account_closed_at", UTCDateTime()),
)


@pytest.fixture(params=BACKENDS)
def fresh_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """An empty database of the backend, not migrated (each test picks its starting revision)."""
    if request.param == "sqlite":
        yield Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'upgrade.db'}",
            keystore_path=tmp_path / "keys.db",
            policy_dir=ROOT / "policies",
        )
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    name = f"ps_mig_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(_dsn(admin_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    isolated(asyncio.run, admin(f'CREATE DATABASE "{name}"'))
    try:
        yield Settings(database_url=_with_database(admin_url, name), policy_dir=ROOT / "policies")
    finally:
        isolated(asyncio.run, admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _write(url: str, rows: list[dict[str, object]]) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(SUBJECTS.insert(), rows)
    finally:
        await engine.dispose()


async def _read(url: str) -> dict[uuid.UUID, tuple[datetime | None, datetime | None]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                sa.select(SUBJECTS.c.id, SUBJECTS.c.last_activity_at, SUBJECTS.c.account_closed_at)
            )
            return {row_id: (active, closed) for row_id, active, closed in result.all()}
    finally:
        await engine.dispose()


def test_future_subject_event_times_written_before_the_upgrade_become_the_last_write(fresh_settings: Settings) -> None:
    config = alembic_config(fresh_settings)
    isolated(command.upgrade, config, "0014_audit_verify")

    now = datetime.now(UTC)
    far = datetime(2999, 12, 31, 23, 59, tzinfo=UTC)
    cases: dict[str, tuple[datetime | None, datetime | None]] = {
        "none": (None, None),
        "past": (WRITTEN - timedelta(days=30), WRITTEN),
        "skew": (now + timedelta(minutes=2), now + timedelta(minutes=2)),  # within the allowance: kept
        "far_activity": (far, None),
        "far_closed": (WRITTEN, far),
        "both_far": (far, now + timedelta(days=3)),
    }
    ids = {name: uuid.uuid4() for name in cases}
    isolated(
        asyncio.run,
        _write(
            fresh_settings.database_url,
            [
                {
                    "id": ids[name],
                    "status": "active",
                    "language": "en",
                    "profile_fields": {},
                    "created_at": WRITTEN - timedelta(days=60),
                    "updated_at": WRITTEN,
                    "last_activity_at": active,
                    "account_closed_at": closed,
                }
                for name, (active, closed) in cases.items()
            ],
        ),
    )

    isolated(command.upgrade, config, "0015_subject_times")

    found = isolated(asyncio.run, _read(fresh_settings.database_url))
    assert found[ids["none"]] == (None, None)
    assert found[ids["past"]] == cases["past"]
    assert found[ids["skew"]] == cases["skew"]
    assert found[ids["far_activity"]] == (WRITTEN, None)
    assert found[ids["far_closed"]] == (WRITTEN, WRITTEN)
    assert found[ids["both_far"]] == (WRITTEN, WRITTEN)

    # Downgrade changes nothing: the clamped times stay (the original future values are not kept).
    isolated(command.downgrade, config, "0014_audit_verify")
    assert isolated(asyncio.run, _read(fresh_settings.database_url)) == found


def test_an_updated_at_in_the_future_is_not_used_as_the_clamp(fresh_settings: Settings) -> None:
    """A row whose last write time is itself in the future (a skewed writer clock) gets the migration time."""
    config = alembic_config(fresh_settings)
    isolated(command.upgrade, config, "0014_audit_verify")
    subject = uuid.uuid4()
    far = datetime(2999, 1, 1, tzinfo=UTC)
    isolated(
        asyncio.run,
        _write(
            fresh_settings.database_url,
            [
                {
                    "id": subject,
                    "status": "active",
                    "language": "en",
                    "profile_fields": {},
                    "created_at": WRITTEN,
                    "updated_at": far,
                    "last_activity_at": far,
                    "account_closed_at": None,
                }
            ],
        ),
    )
    before = datetime.now(UTC)
    isolated(command.upgrade, config, "0015_subject_times")
    after = datetime.now(UTC)
    active, closed = isolated(asyncio.run, _read(fresh_settings.database_url))[subject]
    assert closed is None
    assert active is not None
    assert before <= active <= after

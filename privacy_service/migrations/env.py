"""Alembic environment: runs migrations through the service's own engine (SQLite key store attached)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from privacy_service.config import load_settings
from privacy_service.db import KEYSTORE_SCHEMA, Database

config = context.config


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {KEYSTORE_SCHEMA}")
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    settings = config.attributes.get("settings") or load_settings()
    database = Database(settings)
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await database.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `privacy-service db upgrade`")
asyncio.run(_main())

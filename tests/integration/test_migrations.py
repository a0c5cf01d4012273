"""Migrations: one head, the migrated schema is exactly what the models declare (both backends), and
on a fresh database every migration downgrades and applies again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

import privacy_service.app  # noqa: F401 - imports every model, so the metadata is complete
from privacy_service.config import Settings
from privacy_service.migrations.runner import alembic_config
from privacy_service.runtime import Runtime
from tests.conftest import ROOT, isolated


def test_the_migrations_have_one_head(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", policy_dir=ROOT / "policies")
    heads = ScriptDirectory.from_config(alembic_config(settings)).get_heads()
    assert len(heads) == 1, f"several heads {heads}: add a merge revision (alembic merge)"


async def test_the_migrated_schema_is_what_the_models_declare(runtime: Runtime) -> None:
    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "include_schemas": True})
        return list(compare_metadata(context, SQLModel.metadata))

    async with runtime.db.engine.connect() as connection:
        found = await connection.run_sync(differences)
    assert found == [], "the models and the migrations disagree; write a migration"


def test_every_migration_downgrades_and_applies_again(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}",
        keystore_path=tmp_path / "fresh-keys.db",
        policy_dir=ROOT / "policies",
    )
    config = alembic_config(settings)
    isolated(command.upgrade, config, "heads")
    isolated(command.downgrade, config, "base")
    isolated(command.upgrade, config, "heads")

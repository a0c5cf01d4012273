"""Run Alembic migrations programmatically (``privacy-service db upgrade``, tests)."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config

from privacy_service.config import Settings


def alembic_config(settings: Settings) -> Config:
    config = Config(str(files("privacy_service.migrations").joinpath("alembic.ini")))
    config.set_main_option("script_location", str(files("privacy_service").joinpath("migrations")))
    config.attributes["settings"] = settings
    return config


def upgrade(settings: Settings, revision: str = "heads") -> None:
    """Upgrade to every head: feature migrations may branch from a common parent and apply independently."""
    command.upgrade(alembic_config(settings), revision)


def current(settings: Settings) -> None:
    command.current(alembic_config(settings))

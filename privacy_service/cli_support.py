"""Helpers shared by the CLI's domain sub-commands: settings, runtime, one-line errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from privacy_service.config import ConfigError, Settings, load_settings
from privacy_service.errors import DomainError
from privacy_service.logging import configure_logging
from privacy_service.runtime import Runtime, build_runtime

T = TypeVar("T")
stderr = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    # soft_wrap: the error stays one line whatever the terminal width (scripts grep it).
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def configure_cli_logging() -> None:
    """PRIVACY_LOG_LEVEL and PRIVACY_LOG_JSON for a command's logs (on stderr, never stdout).

    Settings that do not load leave the defaults: the command then says which one is wrong, in its
    one-line error.
    """
    try:
        settings = load_settings()
    except ConfigError:
        configure_logging()
        return
    configure_logging(settings.log_level, settings.log_json)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise fail(str(exc)) from None


def with_runtime(work: Callable[[Runtime], Awaitable[T]], *, create_keyring: bool = False) -> T:
    """Build the runtime, run ``work``, close it; config and domain errors become one line."""

    async def runner() -> T:
        runtime = build_runtime(settings_or_exit(), create_keyring=create_keyring)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    try:
        return asyncio.run(runner())
    except ConfigError as exc:
        raise fail(str(exc)) from None
    except DomainError as exc:
        raise fail(exc.detail, 1) from None


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)

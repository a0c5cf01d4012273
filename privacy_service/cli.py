"""The ``privacy-service`` command line."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from privacy_service.cli_support import configure_cli_logging, fail, settings_or_exit, stderr, with_runtime
from privacy_service.config import ConfigError
from privacy_service.gc_tuning import tune_after_startup
from privacy_service.runtime import Runtime

if TYPE_CHECKING:
    from litestar import Litestar

T = TypeVar("T")

app = typer.Typer(help="privacy-service: encrypted PII vault and privacy-rights service.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
operators_app = typer.Typer(help="Operator API keys.", no_args_is_help=True)
keys_app = typer.Typer(help="Key-encryption keys and data-key rotation.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(operators_app, name="operators")
app.add_typer(keys_app, name="keys")

out = Console()
err = stderr


@app.callback()
def _every_command() -> None:
    """Logs of every command go to stderr in the configured format; stdout carries results only."""
    configure_cli_logging()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default PRIVACY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default PRIVACY_PORT).")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="API processes sharing the port (uvicorn workers; docs/operations/scaling.md). More than 1 "
            "needs PostgreSQL, and PRIVACY_REDIS_URL so that every limit counts once for all of them.",
        ),
    ] = 1,
    per_process_limits: Annotated[
        bool,
        typer.Option(
            "--per-process-limits",
            help="Accept --workers > 1 without PRIVACY_REDIS_URL: each process then counts every rate limit, "
            "lock-out and code-mail quota on its own (N workers let N times as much through).",
        ),
    ] = False,
) -> None:
    """Start the HTTP API (uvicorn)."""
    import uvicorn

    from privacy_service.app import create_app

    settings = settings_or_exit()
    if workers > 1 and settings.is_sqlite:
        raise fail("--workers > 1 needs PostgreSQL (PRIVACY_DATABASE_URL): SQLite takes one writer at a time")
    if workers > 1 and settings.redis_url is None:
        if not per_process_limits:
            raise fail(
                f"--workers {workers} without PRIVACY_REDIS_URL would count every rate limit, lock-out and "
                f"code-mail quota per process ({workers} times looser): set PRIVACY_REDIS_URL, or accept "
                "that with --per-process-limits"
            )
        err.print(
            f"[bold yellow]warning:[/] {workers} workers without PRIVACY_REDIS_URL: every limit counts per process "
            f"({workers} times looser)",
            highlight=False,
        )
    try:
        application = create_app(settings)  # several workers: checks the configuration before they start
    except ConfigError as exc:
        raise fail(str(exc)) from None
    options: dict[str, Any] = {
        "host": host or settings.host,
        "port": port or settings.port,
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "log_level": settings.log_level.lower(),
        # uvicorn's own handlers print plain text: its records go to the root handler instead, which
        # renders them like every other line (privacy_service.logging).
        "log_config": None,
    }
    if workers == 1:
        tune_after_startup()
        uvicorn.run(application, **options)
    else:
        # Each worker process builds its own app from the same settings (the environment).
        uvicorn.run("privacy_service.cli:serving_app", factory=True, workers=workers, **options)


def serving_app() -> Litestar:
    """The app of one of ``serve --workers N``'s processes, its collector set once it is built."""
    from privacy_service.app import create_app

    application = create_app()
    tune_after_startup()
    return application


@app.command()
def worker(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Do not start a worker: exit 0 if a running one's scheduler is alive (fresh heartbeat file, "
            "live process), else 1. Prints the verdict as JSON. The container healthcheck.",
        ),
    ] = False,
) -> None:
    """Run scheduled work: mail and webhook delivery, audit sealing and daily verification, request
    expiry and digest, breach clock and monitoring, and the daily retention purge."""
    from privacy_service.worker import check_heartbeat, run_worker

    if not check:
        with_runtime(run_worker)
        return
    settings = settings_or_exit()
    status = check_heartbeat(settings.worker_heartbeat_path, settings.worker_heartbeat_seconds)
    sys.stdout.write(json.dumps(dataclasses.asdict(status)) + "\n")
    if not status.ok:
        raise fail(f"worker unhealthy: {status.reason}", 1)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision (default: all heads).")] = "heads",
) -> None:
    """Apply database migrations (SQLite or PostgreSQL); on first set-up, create the local keyring."""
    from privacy_service.config import KeyProviderKind
    from privacy_service.migrations.runner import upgrade
    from privacy_service.runtime import build_key_provider

    settings = settings_or_exit()
    try:
        upgrade(settings, revision)
    except ConfigError as exc:  # a migration that needs a key it cannot find
        raise fail(str(exc)) from None
    err.print(f"database at revision {revision}")
    if settings.key_provider is KeyProviderKind.LOCAL and not settings.keyring_path.exists():
        try:
            build_key_provider(settings, create_keyring=True)
        except ConfigError as exc:
            raise fail(str(exc)) from None
        err.print(f"created local keyring {settings.keyring_path} (mode 0600); back it up separately from the database")


@operators_app.command("create")
def operators_create(
    name: Annotated[str, typer.Option(help="Unique operator name.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated scopes, e.g. subjects:read,subjects:write.")],
    expires_in_days: Annotated[int | None, typer.Option(min=1, help="Key lifetime in days.")] = None,
) -> None:
    """Create an operator; prints its API key once, alone on the last line."""
    from privacy_service.operators.service import create_operator, parse_scopes

    async def work(runtime: Runtime) -> str:
        now = runtime.clock.now()
        expires = now + timedelta(days=expires_in_days) if expires_in_days else None
        async with runtime.db.transaction() as session:
            _, key = await create_operator(session, name=name, scopes=parse_scopes(scopes), now=now, expires_at=expires)
        return key

    key = with_runtime(work)
    err.print(f"operator {name!r} created; store this key now, it is not shown again:")
    sys.stdout.write(key + "\n")


@operators_app.command("list")
def operators_list() -> None:
    """List operators (never their keys)."""
    from privacy_service.operators.service import list_operators

    async def work(runtime: Runtime) -> Table:
        table = Table("name", "key id", "scopes", "created", "expires", "revoked")
        async with runtime.db.transaction() as session:
            for operator in await list_operators(session):
                table.add_row(
                    operator.name,
                    operator.key_id,
                    operator.scopes,
                    operator.created_at.isoformat(timespec="seconds"),
                    operator.expires_at.isoformat(timespec="seconds") if operator.expires_at else "-",
                    operator.revoked_at.isoformat(timespec="seconds") if operator.revoked_at else "-",
                )
        return table

    out.print(with_runtime(work))


@operators_app.command("revoke")
def operators_revoke(name: Annotated[str, typer.Option(help="Operator to revoke.")]) -> None:
    """Revoke an operator's key (takes effect within a few seconds on running servers)."""
    from privacy_service.operators.service import revoke_operator

    async def work(runtime: Runtime) -> None:
        async with runtime.db.transaction() as session:
            await revoke_operator(session, name=name, now=runtime.clock.now())

    with_runtime(work)
    err.print(f"operator {name!r} revoked")


@keys_app.command("rotate")
def keys_rotate(
    batch_size: Annotated[int | None, typer.Option(min=1, help="Data keys per transaction.")] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Do not add a KEK version; finish re-wrapping to the current one."),
    ] = False,
) -> None:
    """Add a KEK version and re-wrap every data key under it, online, in batches (resumable).

    One rotation at a time: a second one waits for the first, then adds its own version. If the
    database goes away mid-run (after a few retries), says how far it got; `--resume` finishes.
    """
    from privacy_service.crypto.jobs import RewrapResult, RotationCallbacks, RotationInterrupted, rotate_keys
    from privacy_service.progress import reporter

    progress = reporter(err, unit="keys")

    def start(version: int, total: int) -> None:
        progress.note(f"{'resuming re-wrap to' if resume else 'new'} KEK version {version}")
        progress.add("keys.rewrap", total, "re-wrapping data keys")

    callbacks = RotationCallbacks(
        on_wait=lambda: progress.note("another key rotation is running; waiting for it to finish"),
        on_start=start,
        on_batch=lambda n: progress.advance("keys.rewrap", n),
        on_retry=lambda n, delay: progress.note(f"database out of reach; retry {n} in {delay:g} s"),
    )

    async def work(runtime: Runtime) -> RewrapResult | RotationInterrupted:
        with progress:
            try:
                return await rotate_keys(
                    runtime.db,
                    runtime.provider,
                    runtime.clock,
                    resume=resume,
                    batch_size=batch_size or runtime.settings.rotation_batch_size,
                    callbacks=callbacks,
                )
            except RotationInterrupted as exc:
                return exc

    outcome = with_runtime(work)
    if isinstance(outcome, RotationInterrupted):  # said after the bar, as the last line
        raise fail(str(outcome), 1)
    err.print(f"done: {outcome.rewrapped} data keys now under KEK version {outcome.target_version}", highlight=False)


@keys_app.command("status")
def keys_status() -> None:
    """Show KEK versions and how many data keys each one wraps."""
    from privacy_service.crypto.service import key_counts_by_kek

    async def work(runtime: Runtime) -> Table:
        versions = await runtime.provider.versions()
        async with runtime.db.transaction() as session:
            counts = await key_counts_by_kek(session)
        table = Table("KEK version", "current", "created", "data keys", title=f"provider: {runtime.provider.name}")
        for info in versions:
            table.add_row(
                str(info.version),
                "yes" if info.current else "",
                info.created_at.isoformat(timespec="seconds") if info.created_at else "-",
                str(counts.pop(info.version, 0)),
            )
        for version, count in sorted(counts.items()):
            table.add_row(str(version), "MISSING", "-", str(count))
        return table

    out.print(with_runtime(work))


@keys_app.command("retire")
def keys_retire(version: Annotated[int, typer.Argument(help="Old KEK version to destroy.")]) -> None:
    """Destroy an old KEK version once no data key is wrapped under it."""
    from privacy_service.crypto.service import key_counts_by_kek

    async def work(runtime: Runtime) -> None:
        current = await runtime.provider.current_version()
        if version == current:
            raise fail("the current KEK version cannot be retired", 1)
        if version > current:
            raise fail(f"KEK version {version} does not exist (current is {current})", 1)
        async with runtime.db.transaction() as session:
            counts = await key_counts_by_kek(session)
        # Vault retires a version by raising min_decryption_version, which retires every older one too.
        still = sum(count for kek, count in counts.items() if kek <= version)
        if still:
            raise fail(
                f"{still} data keys still use KEK version {version} or older; run `keys rotate --resume` first", 1
            )
        await runtime.provider.retire(version)

    with_runtime(work)
    err.print(f"KEK version {version} retired")


def _register_domain_commands() -> None:
    """Domain packages own their sub-commands (``<domain>/cli.py``); this only mounts them."""
    from privacy_service.audit.cli import audit_app
    from privacy_service.connections.cli import connections_app
    from privacy_service.policy.cli import policy_app
    from privacy_service.retention.cli import purge
    from privacy_service.systems.cli import systems_app

    app.add_typer(audit_app, name="audit")
    app.add_typer(policy_app, name="policy")
    app.command("purge")(purge)
    app.add_typer(systems_app, name="systems")
    app.add_typer(connections_app, name="connections")


_register_domain_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

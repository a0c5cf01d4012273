"""``privacy-service connections``: the registry (add|test|list|remove) and its work (dry-run|tasks|retry).

The URL holds a password: ``add`` reads it from an environment variable (``--url-env``) or a hidden
prompt (stdin when piped), so it does not land in shell history or the process list. ``--url`` is
accepted for scripts that have no other way, with a warning. Piped, the URL is stdin's first line.
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Annotated

import msgspec
import typer
from rich.console import Console
from rich.table import Table
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit.service import Actor
from privacy_service.cli_support import fail, stderr, with_runtime
from privacy_service.connections import schemas
from privacy_service.connections.service import ConnectionService
from privacy_service.runtime import Runtime

connections_app = typer.Typer(
    help="Databases the service reaches itself, described by Fides datasets (policies/datasets/).",
    no_args_is_help=True,
)
# Piped (scripts, CI): wide enough that rows stay on one line.
out = Console(width=None if sys.stdout.isatty() else 220)
CLI_ACTOR = Actor("operator", "cli")


def _service(runtime: Runtime, session: AsyncSession) -> ConnectionService:
    return ConnectionService(session, runtime.keys, runtime.clock, runtime.settings, CLI_ACTOR)


def _read_url(url: str | None, url_env: str | None) -> str:
    if url is not None and url_env is not None:
        raise fail("give --url-env or --url, not both")
    if url_env is not None:
        from_env = os.environ.get(url_env)
        if not from_env:
            raise fail(f"the environment variable {url_env} is not set or empty")
        return from_env
    if url is not None:
        stderr.print(
            "warning: --url puts the password in shell history and the process list; prefer --url-env",
            soft_wrap=True,
        )
        return url
    if not sys.stdin.isatty():  # piped: the first line, with no prompt or terminal warning around it
        return sys.stdin.readline().strip()
    prompted: str = typer.prompt("Database URL (not echoed)", hide_input=True, err=True)
    return prompted.strip()


@connections_app.command("add")
def connections_add(
    name: Annotated[str, typer.Option(help="Unique connection name (lower case, digits, - and _), e.g. wallet-ops.")],
    dataset: Annotated[str, typer.Option(help="fides_key of the dataset in policies/datasets/ describing it.")],
    url_env: Annotated[
        str | None, typer.Option(help="Name of an environment variable holding the URL (else a hidden prompt).")
    ] = None,
    url: Annotated[str | None, typer.Option(help="The URL itself (lands in shell history: prefer --url-env).")] = None,
    max_concurrency: Annotated[int, typer.Option(min=1, max=32, help="Tasks run at once against it.")] = 2,
) -> None:
    """Register a connection; its URL is sealed and never shown again. Prints the id on stdout."""
    raw = _read_url(url, url_env)
    try:
        body = msgspec.convert(
            {"name": name, "dataset": dataset, "url": raw, "max_concurrency": max_concurrency},
            type=schemas.ConnectionCreate,
        )
    except msgspec.ValidationError as exc:
        # The message names the field and the rule, never the value; the URL is left out all the same.
        raise fail("url must be 8 to 2000 characters" if "$.url" in str(exc) else str(exc)) from None

    async def work(runtime: Runtime) -> schemas.ConnectionOut:
        async with runtime.db.transaction() as session:
            return await _service(runtime, session).add(body)

    added = with_runtime(work)
    stderr.print(f"connection {name!r} registered ({added.dialect}, dataset {added.dataset}); test it with:")
    stderr.print(f"  privacy-service connections test --name {name}")
    sys.stdout.write(f"{added.id}\n")


@connections_app.command("test")
def connections_test(name: Annotated[str, typer.Option(help="Connection to test.")]) -> None:
    """Connect and check that every collection and field of its dataset exists (exit 1 if not)."""

    async def work(runtime: Runtime) -> schemas.ConnectionTest:
        async with runtime.db.transaction() as session:
            service = _service(runtime, session)
            return await service.test(await service.find(name))

    result = with_runtime(work)
    if result.ok:
        stderr.print(f"connection {name!r} ok: {result.collections} collections checked in {result.duration_ms:g} ms")
        return
    stderr.print(f"[bold red]error:[/] connection {name!r} failed: {result.problem}", highlight=False, soft_wrap=True)
    for missing in result.missing:
        stderr.print(f"  missing: {missing}", highlight=False)
    raise typer.Exit(1)


@connections_app.command("list")
def connections_list(all_: Annotated[bool, typer.Option("--all", help="Include removed connections.")] = False) -> None:
    """List connections: dialect, host, database and the last test (never a user name or password)."""

    async def work(runtime: Runtime) -> schemas.ConnectionPage:
        async with runtime.db.transaction() as session:
            return await _service(runtime, session).list_connections(include_removed=all_)

    page = with_runtime(work)
    table = Table()
    for column in ("name", "id", "dataset", "dialect", "host", "database", "tasks at once", "last test"):
        table.add_column(column, overflow="fold")
    for item in page.items:
        if item.removed_at is not None:
            last = f"removed {item.removed_at.isoformat(timespec='seconds')}"
        elif item.last_test_at is None:
            last = "never"
        else:
            verdict = "ok" if item.last_test_ok else f"failed: {item.last_test_problem}"
            last = f"{item.last_test_at.isoformat(timespec='seconds')} {verdict}"
        host = f"{item.host}:{item.port}" if item.host else "-"
        table.add_row(
            item.name,
            str(item.id),
            item.dataset,
            item.dialect,
            host,
            item.database or "-",
            str(item.max_concurrency),
            last,
        )
    out.print(table)


@connections_app.command("remove")
def connections_remove(name: Annotated[str, typer.Option(help="Connection to remove.")]) -> None:
    """Remove a connection: its sealed URL's key is shredded; the name may be registered again."""

    async def work(runtime: Runtime) -> schemas.ConnectionRemoved:
        async with runtime.db.transaction() as session:
            service = _service(runtime, session)
            return await service.remove(await service.find(name))

    with_runtime(work)
    stderr.print(f"connection {name!r} removed")


@connections_app.command("dry-run")
def connections_dry_run(
    request: Annotated[str, typer.Option("--request", help="The erasure request's id.")],
    json_: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """Per connection and collection, how many rows an erasure of this request's customer would touch
    (nothing is written; names and counts only)."""
    from privacy_service.connections.dryrun import DryRunLine, dry_run

    request_id = _request_id(request)

    async def work(runtime: Runtime) -> list[DryRunLine]:
        return await dry_run(runtime, request_id)

    lines = with_runtime(work)
    if json_:
        for line in lines:
            typer.echo(msgspec.json.encode(line).decode())
        return
    if not lines:
        stderr.print("no connection holds data this request reaches")
        return
    table = Table()
    for column in ("connection", "collection", "rows found", "rows touched", "erasure"):
        table.add_column(column, overflow="fold")
    for line in lines:
        table.add_row(line.connection, line.collection, str(line.rows), str(line.touched), line.action)
    out.print(table)


def _request_id(request: str) -> uuid.UUID:
    try:
        return uuid.UUID(request)
    except ValueError:
        raise fail("--request must be a request id (a UUID)") from None


@connections_app.command("tasks")
def connections_tasks(
    request: Annotated[str, typer.Option("--request", help="The request's id.")],
) -> None:
    """A request's tasks on the connected databases: per collection, done or failed and why (no data)."""
    from privacy_service.connections.flow import progress
    from privacy_service.connections.schemas import TaskProgress

    request_id = _request_id(request)

    async def work(runtime: Runtime) -> list[TaskProgress]:
        async with runtime.db.transaction() as session:
            return await progress(session, request_id)

    found = with_runtime(work)
    if not found:
        stderr.print("this request has no task on a connected database")
        return
    table = Table()
    for column in ("connection", "kind", "task", "attempts", "collection", "status", "rows", "problem"):
        table.add_column(column, overflow="fold")
    for task in found:
        for name, item in task.collections.items() or {"-": None}.items():
            table.add_row(
                task.connection,
                task.kind,
                task.status,
                str(task.attempts),
                name,
                item.status if item else "-",
                str(item.rows) if item else "-",
                (item.problem if item else task.problem) or "",
            )
    out.print(table)


@connections_app.command("retry")
def connections_retry(
    request: Annotated[str, typer.Option("--request", help="The request's id.")],
) -> None:
    """Queue again a request's tasks that need an operator, once the cause is fixed (audited)."""
    from privacy_service.connections.flow import retry

    request_id = _request_id(request)

    async def work(runtime: Runtime) -> int:
        async with runtime.db.transaction() as session:
            return await retry(session, request_id, now=runtime.clock.now(), actor=CLI_ACTOR)

    count = with_runtime(work)
    stderr.print(f"{count} task(s) queued again" if count else "no task of this request needs an operator")

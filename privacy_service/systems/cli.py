"""``privacy-service systems add|list|remove``: the downstream-system registry from the command line."""

from __future__ import annotations

import sys
from typing import Annotated

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from privacy_service.audit.service import Actor
from privacy_service.cli_support import fail, stderr, with_runtime
from privacy_service.runtime import Runtime

systems_app = typer.Typer(help="Downstream systems that receive signed webhooks.", no_args_is_help=True)
# Piped (scripts, CI): wide enough that rows stay on one line.
out = Console(width=None if sys.stdout.isatty() else 220)
CLI_ACTOR = Actor("operator", "cli")


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


@systems_app.command("add")
def systems_add(
    name: Annotated[str, typer.Option(help="Unique system name, e.g. crm.")],
    url: Annotated[str, typer.Option(help="Where webhooks are POSTed (https; http only to loopback).")],
    types: Annotated[str, typer.Option(help="Request types it handles: access,portability,rectify,erase.")],
    categories: Annotated[str, typer.Option(help="Policy data categories it holds, comma-separated.")],
    identities: Annotated[
        str, typer.Option(help="Identities it needs: email, email_sha256, phone, phone_sha256, controller_customer_id.")
    ] = "controller_customer_id",
    timeout: Annotated[float, typer.Option(min=0.1, max=60, help="Seconds to wait for each POST.")] = 10.0,
    required: Annotated[bool, typer.Option("--required/--optional", help="Requests wait for its answer.")] = True,
) -> None:
    """Register a system; prints its signing key once, alone on the last line."""
    from privacy_service.systems.schemas import SystemCreate
    from privacy_service.systems.service import SystemService

    try:
        body = msgspec.convert(
            {
                "name": name,
                "callback_url": url,
                "request_types": _split(types),
                "categories": _split(categories),
                "identities": _split(identities),
                "timeout_seconds": timeout,
                "required": required,
            },
            type=SystemCreate,
        )
    except msgspec.ValidationError as exc:
        raise fail(str(exc)) from None

    async def work(runtime: Runtime) -> tuple[str, str, str]:
        async with runtime.db.transaction() as session:
            service = SystemService(
                session,
                runtime.keys,
                runtime.policy,
                runtime.clock,
                runtime.settings,
                CLI_ACTOR,
                resolver=runtime.resolver,
            )
            created = await service.add(body)
        return str(created.system.id), created.system.key_id, created.signing_key

    system_id, key_id, key = with_runtime(work)
    stderr.print(f"system {name!r} registered (id {system_id}, key id {key_id}).")
    stderr.print("Give the receiver this signing key now; it is not shown again:")
    sys.stdout.write(key + "\n")


@systems_app.command("list")
def systems_list(
    all_: Annotated[bool, typer.Option("--all", help="Include removed systems.")] = False,
) -> None:
    """List registered systems (never their keys)."""
    from privacy_service.systems.service import SystemService

    async def work(runtime: Runtime) -> Table:
        table = Table()
        names = ["name", "id", "url", "types", "categories", "identities", "timeout", "required", "key id"]
        for name in [*names, "removed"] if all_ else names:
            table.add_column(name, overflow="fold")  # wrapped, never cut: ids and URLs are copied from here
        async with runtime.db.transaction() as session:
            service = SystemService(session, runtime.keys, runtime.policy, runtime.clock, runtime.settings, CLI_ACTOR)
            page = await service.list_systems(include_removed=all_)
        for system in page.items:
            row = [
                system.name,
                str(system.id),
                system.callback_url,
                ",".join(system.request_types),
                ",".join(system.categories),
                ",".join(system.identities),
                f"{system.timeout_seconds:g} s",
                "yes" if system.required else "no",
                system.key_id,
            ]
            if all_:
                row.append(system.removed_at.isoformat(timespec="seconds") if system.removed_at else "-")
            table.add_row(*row)
        return table

    out.print(with_runtime(work))


@systems_app.command("remove")
def systems_remove(name: Annotated[str, typer.Option(help="System to remove.")]) -> None:
    """Remove a system: its key is shredded and open requests stop waiting for it."""
    from privacy_service.dsr.service import DsrService
    from privacy_service.systems.schemas import Removed
    from privacy_service.systems.service import SystemService

    async def work(runtime: Runtime) -> Removed:
        async with runtime.db.transaction() as session:
            dsr = DsrService.for_runtime(runtime, session, CLI_ACTOR)
            service = SystemService(
                session, runtime.keys, runtime.policy, runtime.clock, runtime.settings, CLI_ACTOR, dsr=dsr
            )
            return await service.remove(await service.find(name))

    removed = with_runtime(work)
    stderr.print(
        f"system {name!r} removed: {removed.cancelled_deliveries} open deliveries cancelled, "
        f"{removed.completed_requests} requests completed"
    )

"""``privacy-service audit ...`` commands."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from privacy_service.audit.queries import AuditFilter, stream
from privacy_service.audit.service import Verification, seal_pending, verify_chain, write_checkpoint
from privacy_service.cli_support import fail, stderr, with_runtime
from privacy_service.runtime import Runtime

audit_app = typer.Typer(help="Tamper-evident audit log: verify, export, checkpoint.", no_args_is_help=True)


@audit_app.command("verify")
def verify(
    from_checkpoint: Annotated[
        bool, typer.Option("--from-checkpoint", help="Start at the newest validly signed checkpoint.")
    ] = False,
) -> None:
    """Seal pending entries, then recompute the hash chain; exit 1 naming the first broken entry."""

    async def work(runtime: Runtime) -> Verification:
        await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
        return await verify_chain(runtime.db, runtime.audit_key, from_checkpoint=from_checkpoint)

    result = with_runtime(work)
    if not result.ok:
        where = f"seq {result.broken_seq}" + (f" (row id {result.broken_id})" if result.broken_id else "")
        raise fail(f"audit chain broken at {where}: {result.problem}", 1)
    stderr.print(
        f"audit chain intact: {result.checked} entries verified from seq {result.start_seq + 1} "
        f"to {result.head_seq}; {result.pending} pending"
    )


@audit_app.command("export")
def export(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")] = None,
    subject: Annotated[str | None, typer.Option(help="Only this subject id.")] = None,
    since: Annotated[datetime | None, typer.Option(help="Only events at or after (ISO 8601, UTC).")] = None,
) -> None:
    """Write sealed audit events as JSON lines."""
    try:
        subject_id = uuid.UUID(subject) if subject else None
    except ValueError:
        raise fail("--subject must be a UUID") from None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    where = AuditFilter(subject_id=subject_id, since=since)
    encoder = msgspec.json.Encoder()

    async def work(runtime: Runtime) -> int:
        await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
        count = 0
        handle = output.open("wb") if output else sys.stdout.buffer
        try:
            async for event in stream(runtime.db, where):
                handle.write(encoder.encode(event) + b"\n")
                count += 1
        finally:
            if output:
                handle.close()
            else:
                handle.flush()
        return count

    count = with_runtime(work)
    stderr.print(f"exported {count} audit events")


@audit_app.command("checkpoint")
def checkpoint() -> None:
    """Seal pending entries and sign the chain head now."""

    async def work(runtime: Runtime) -> int | None:
        await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
        return await write_checkpoint(runtime.db, runtime.clock, runtime.audit_key)

    seq = with_runtime(work)
    stderr.print("audit log is empty; nothing to sign" if seq is None else f"checkpoint signed at seq {seq}")

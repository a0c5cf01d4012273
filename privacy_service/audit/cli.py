"""``privacy-service audit ...`` commands."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from privacy_service.audit.checkpoints import CheckpointFileError, SignedCheckpoint, parse_checkpoints
from privacy_service.audit.jobs import verify_and_record
from privacy_service.audit.queries import AuditFilter, stream
from privacy_service.audit.service import Verification, seal_pending, write_checkpoint
from privacy_service.cli_support import fail, stderr, with_runtime
from privacy_service.runtime import Runtime

audit_app = typer.Typer(
    help=(
        "Tamper-evident audit log: verify the hash chain, export events, sign checkpoints. "
        "Keep `audit checkpoint` output outside the database and pass it to `audit verify --checkpoints`: "
        "that is what catches a chain rolled back or rewritten by someone who can write the database."
    ),
    no_args_is_help=True,
)


def _read_checkpoints(paths: list[Path]) -> list[SignedCheckpoint]:
    found: list[SignedCheckpoint] = []
    for path in paths:
        try:
            found.extend(parse_checkpoints(path.read_text(encoding="utf-8"), str(path)))
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"cannot read {path}: {type(exc).__name__}") from None
        except CheckpointFileError as exc:
            raise fail(str(exc)) from None
    return found


@audit_app.command("verify")
def verify(
    from_checkpoint: Annotated[
        bool,
        typer.Option(
            "--from-checkpoint",
            help="Start at the newest validly signed checkpoint in the database instead of the first entry "
            "(faster; entries before it are not re-checked).",
        ),
    ] = False,
    checkpoints: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoints",
            "-c",
            metavar="FILE",
            exists=True,
            dir_okay=False,
            help="A file of checkpoints kept outside the database (lines written by `audit checkpoint`, or a "
            "shipped log with `audit_checkpoint` lines); fail unless the chain still contains every one. "
            "Repeatable.",
        ),
    ] = None,
) -> None:
    """Seal pending entries, recompute the hash chain, check the signed head and checkpoints; record the verdict.

    Exit 0: intact. Exit 1: broken, naming the first bad entry or checkpoint. Exit 2: usage or config error.
    """
    external = _read_checkpoints(checkpoints or [])

    async def work(runtime: Runtime) -> Verification:
        # The verdict is recorded (audit_verifications): /metrics reports when the chain was last verified.
        return await verify_and_record(runtime, actor="cli", from_checkpoint=from_checkpoint, external=external)

    result = with_runtime(work)
    if not result.ok:
        where = f"seq {result.broken_seq}" + (f" (row id {result.broken_id})" if result.broken_id else "")
        raise fail(f"audit chain broken at {where}: {result.problem}", 1)
    against = f"; matches {result.external} external checkpoints" if result.external else ""
    stderr.print(
        f"audit chain intact: {result.checked} entries verified from seq {result.start_seq + 1} "
        f"to {result.head_seq}; {result.pending} pending{against}",
        soft_wrap=True,  # one line whatever the terminal width (scripts grep it)
    )


@audit_app.command("export")
def export(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")] = None,
    subject: Annotated[str | None, typer.Option(help="Only this subject id.")] = None,
    since: Annotated[datetime | None, typer.Option(help="Only events at or after (ISO 8601, UTC).")] = None,
) -> None:
    """Seal pending entries, then write sealed audit events as JSON lines, in chain order."""
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
def checkpoint(
    append: Annotated[
        Path | None,
        typer.Option(
            "--append",
            "-a",
            metavar="FILE",
            dir_okay=False,
            help="Also append the signed line to this file (created if missing). Keep it where the database's "
            "users cannot write, e.g. another host or write-once storage.",
        ),
    ] = None,
) -> None:
    """Seal pending entries and sign the chain head now, in the database and as one JSON line on stdout.

    The line (seq, hash, HMAC under the audit key) is what `audit verify --checkpoints` checks against.
    """

    async def work(runtime: Runtime) -> SignedCheckpoint | None:
        await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
        return await write_checkpoint(runtime.db, runtime.clock, runtime.audit_key)

    signed = with_runtime(work)
    if signed is None:
        stderr.print("audit log is empty; nothing to sign")
        return
    line = signed.line()
    if append is not None:
        try:
            with append.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError as exc:
            raise fail(f"cannot append to {append}: {type(exc).__name__}") from None
    sys.stdout.write(line + "\n")
    done = f"checkpoint signed at seq {signed.seq}" + (f"; appended to {append}" if append else "")
    stderr.print(done, soft_wrap=True, highlight=False)

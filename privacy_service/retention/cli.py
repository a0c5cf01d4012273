"""``privacy-service purge``: apply the retention rules now; progress per rule, then a summary.

Progress goes to stderr: bars (rows done, rate, time left) on a terminal, JSON lines elsewhere. The
summary table (or ``--json``) is the only thing on stdout.

Exit status: 0 done (or skipped because another run is active, said on stderr and in ``--json``
as ``"status": "skipped"``: single-flight is normal operation, not a failure); 1 the run failed;
2 bad usage (e.g. ``--now`` too far in the future); 3 refused by a safety threshold (nothing
changed; check the policy, then rerun with ``--force``).
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from privacy_service.audit.service import Actor
from privacy_service.cli_support import fail, stderr, with_runtime
from privacy_service.errors import InvalidInput
from privacy_service.progress import reporter
from privacy_service.retention import schemas
from privacy_service.retention.jobs import SKIPPED, RunOptions, RunResult, run_purge
from privacy_service.retention.models import RunStatus
from privacy_service.runtime import Runtime

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
# Piped (scripts, logs): wide enough that rule names are not wrapped inside the table.
out = Console(width=None if sys.stdout.isatty() else 160)


class PurgeProgress:
    """jobs.Progress on stderr: a note per stage, a task per rule with something to do; bars with the
    rows done, rate and time left on a terminal, JSON lines elsewhere (privacy_service.progress)."""

    def __init__(self, console: Console) -> None:
        self._reporter = reporter(console, unit="rows")

    def __enter__(self) -> PurgeProgress:
        self._reporter.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self._reporter.__exit__()

    def stage(self, text: str) -> None:
        self._reporter.note(text)

    def bars(self, entries: list[schemas.RuleReport]) -> None:
        for entry in entries:
            counts = entry.counts
            # A real run's report carries what was done (nothing yet) in place of the plan's actions;
            # the plan's rows to act on are those selected less the held and the legally kept ones.
            planned = counts.selected - counts.skipped_hold - counts.skipped_legal_duty
            total = max(planned, counts.purged + counts.anonymised + counts.restricted)
            if total > 0:
                self._reporter.add(entry.key, total)

    def advance(self, key: str, amount: int) -> None:
        self._reporter.advance(key, amount)


# The report's counts after what was (or would be) done, as the report names them: a refused run's
# rows appear under whatever the report counts them as.
ACTED = ("selected", "purged", "anonymised", "restricted")
HEADINGS = {"skipped_hold": "held", "skipped_legal_duty": "legal duty"}


def summary(report: schemas.RunReport, result: RunResult, dry_run: bool) -> Table:
    would = "would be " if dry_run else ""
    table = Table(title=f"retention run {result.run_id}: {result.status}{' (dry run)' if dry_run else ''}")
    table.add_column("rule")
    table.add_column("action")
    others = [name for name in schemas.Counts.__struct_fields__ if name not in ACTED]
    for name in ("selected", f"{would}purged", f"{would}anonymised", f"{would}restricted"):
        table.add_column(name, justify="right")
    for name in others:
        table.add_column(HEADINGS.get(name, name.replace("_", " ")), justify="right")

    def cells(counts: schemas.Counts) -> list[str]:
        return [str(getattr(counts, name)) for name in (*ACTED, *others)]

    for entry in report.rules:
        if any(getattr(entry.counts, name) for name in entry.counts.__struct_fields__):
            table.add_row(entry.key, entry.action, *cells(entry.counts))
    table.add_row("[bold]total[/]", "", *cells(report.totals))
    return table


def _print_report(result: RunResult, dry_run: bool) -> None:
    report = result.report
    if report is None:
        return
    out.print(summary(report, result, dry_run))
    holds = report.holds
    stderr.print(f"legal holds active: {holds.active}" + (" (list truncated)" if holds.truncated else ""))
    for alert in report.alerts:
        what = f"{alert.planned} of {alert.total} rows" if alert.kind == "rows_per_run" else f"{alert.percent}%"
        stderr.print(
            f"[bold red]alert:[/] {escape(alert.kind)} {escape(alert.table)}: {what} (threshold {alert.threshold:g})",
            highlight=False,
        )
    for category, count in sorted(report.unknown_categories.items()):
        stderr.print(f"kept {count} records of category {escape(category)}, which the policy no longer has")


def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what a run would do; change nothing.")] = False,
    now: Annotated[
        str | None,
        typer.Option(help="Decide as of this ISO 8601 instant with offset (not beyond a small skew ahead)."),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, max=100_000, help="Rows per transaction (default PRIVACY_RETENTION_BATCH_SIZE)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result and report as JSON on stdout.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Run even if a safety threshold is exceeded.")] = False,
) -> None:
    """Purge what the retention policy says is due (legal holds and legal duties are respected)."""
    at: datetime | None = None
    if now is not None:
        try:
            at = datetime.fromisoformat(now)
        except ValueError:
            raise fail("--now: not an ISO 8601 date-time such as 2026-01-31T03:00:00Z", EXIT_USAGE) from None
    options = RunOptions(dry_run=dry_run, now=at, batch_size=batch_size, force=force, actor=Actor.system("cli"))

    async def work(runtime: Runtime) -> RunResult:
        # Logs (alerts included) and progress go to stderr, so stdout carries only the table or the JSON.
        try:
            with PurgeProgress(stderr) as progress:
                return await run_purge(runtime, options, progress)
        except InvalidInput as exc:
            raise fail(f"--now: {exc.detail}", EXIT_USAGE) from None

    result = with_runtime(work)
    if as_json:
        document = {
            "status": result.status,
            "run_id": result.run_id,
            "message": result.message,
            "active_run_id": result.active_run_id,
            "error": result.error,
            "report": result.report,
        }
        sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
    else:
        _print_report(result, dry_run)
    if result.status == SKIPPED:
        stderr.print(escape(result.message), highlight=False, soft_wrap=True)
        return
    if result.status == RunStatus.FAILED:
        raise fail(result.message, EXIT_FAILED)
    if result.status == RunStatus.REFUSED:
        raise fail(result.message, EXIT_REFUSED)
    stderr.print(escape(result.message), highlight=False)

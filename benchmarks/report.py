"""The report: a table on stdout and the same figures as JSON (bench-results/latest.json)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.common import Figure

_VERDICT_STYLE = {"PASS": "bold green", "FAIL": "bold red", "ERROR": "bold red"}


# A throughput figure whose back-to-back round pairs disagree by more than this was measured on a
# busy machine: its ratio is still the best estimate, but worth re-running.
_NOISY_SPREAD = 1.5


def _amount(value: float, unit: str) -> str:
    if unit == "x":  # a ratio compared with another ratio
        return f"{value:.2f}x"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:,.0f} {unit}"


def _ratio(figure: Figure) -> str:
    text = f"{figure.ratio:.2f}x"
    if figure.spread is not None:
        text += f" [dim]({figure.spread[0]:.2f}-{figure.spread[1]:.2f})[/]"
    return text


def render(console: Console, figures: Sequence[Figure], machine: dict[str, Any], errors: Sequence[str]) -> None:
    console.print(
        f"[bold]machine[/]: {machine.get('cores')} cores ({machine.get('cpu')}), {machine.get('python')}, "
        f"PostgreSQL {machine.get('postgres')} (synchronous_commit={machine.get('postgres_synchronous_commit')}, "
        f"autovacuum={machine.get('postgres_autovacuum')}), "
        f"{machine.get('platform')}; load average at start {machine.get('load_average_at_start')}, "
        f"at end {machine.get('load_average_at_end')}"
    )
    table = Table(title="privacy-service benchmarks: ratio = measured / baseline, both from this run")
    table.add_column("figure")
    for name in ("measured", "baseline", "ratio"):
        table.add_column(name, justify="right")
    table.add_column("target")
    table.add_column("verdict")
    for figure in figures:
        table.add_row(
            figure.figure,
            _amount(figure.measured, figure.unit),
            _amount(figure.baseline, figure.unit),
            _ratio(figure),
            figure.target,
            f"[{_VERDICT_STYLE.get(figure.verdict, 'dim')}]{figure.verdict}[/]",
        )
    for name in errors:
        table.add_row(name, "-", "-", "-", "-", "[bold red]ERROR[/]")
    console.print(table)
    console.print(
        "[dim]write/read: measured = real KeyService, baseline = plaintext stand-in, same SubjectService, one "
        "transaction per operation; ops/s = median of rounds, ratio = median of back-to-back round pairs "
        "(lowest-highest pair in brackets). lookup: baseline = primary-key SELECT in its own transaction; "
        "the audited PK read adds the audit row a lookup writes.[/]"
    )
    noisy = [f.figure for f in figures if f.spread is not None and f.spread[1] > _NOISY_SPREAD * f.spread[0]]
    if noisy:
        console.print(
            f"[yellow]noisy: round pairs disagree by more than {_NOISY_SPREAD}x in {', '.join(noisy)}; "
            "other work is competing for the machine. Re-run when it is idle, or raise PRIVACY_BENCH_ROUNDS.[/]"
        )


def write_json(
    path: Path,
    figures: Sequence[Figure],
    machine: dict[str, Any],
    config: dict[str, Any],
    errors: Sequence[str],
    seconds: float,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "finished_at": datetime.now(UTC).isoformat(),
        "seconds": round(seconds, 1),
        "machine": machine,
        "config": config,
        "figures": [figure.as_dict() for figure in figures],
        "errors": list(errors),
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")

"""Progress of long runs (issue 20 item 12): JSON lines off a terminal, rich bars on one."""

from __future__ import annotations

import io
import json
import time

from rich.console import Console

from privacy_service import progress
from privacy_service.progress import JsonReporter, TerminalReporter, reporter
from privacy_service.retention import schemas
from privacy_service.retention.cli import summary
from privacy_service.retention.jobs import RunResult


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_at_the_start_each_tenth_every_interval_and_the_end() -> None:
    stream, clock = io.StringIO(), FakeClock()
    with JsonReporter(stream, unit="keys", clock=clock) as report:
        report.note("new KEK version 2")
        report.add("rewrap", 1000, "re-wrapping data keys")
        for _ in range(9):  # 90 keys in 0.9 s: below a tenth, within the interval: silent
            clock.now += 0.1
            report.advance("rewrap", 10)
        clock.now += 0.1
        report.advance("rewrap", 10)  # 100 keys: the first tenth
        clock.now += progress.JSON_INTERVAL  # a slow batch: the interval has passed
        report.advance("rewrap", 1)
        clock.now += 1
        report.advance("rewrap", 899)  # the end
    said = lines(stream)
    assert [line["event"] for line in said] == ["stage", "progress", "progress", "progress", "progress"]
    assert said[0]["message"] == "new KEK version 2"
    assert [line["done"] for line in said[1:]] == [0, 100, 101, 1000]
    first_tenth = said[2]
    assert first_tenth["rate_per_second"] == 100.0
    assert first_tenth["seconds_left"] == 9.0
    assert first_tenth["percent"] == 10.0
    assert first_tenth["unit"] == "keys"
    assert said[-1]["seconds_left"] == 0
    assert said[-1]["percent"] == 100.0
    assert said[1]["rate_per_second"] is None  # nothing done yet: no rate, no estimate
    assert said[1]["seconds_left"] is None
    for line in said:
        assert {"level", "timestamp"} <= set(line)


def test_the_choice_follows_the_stream() -> None:
    assert isinstance(reporter(Console(file=io.StringIO(), force_terminal=False)), JsonReporter)
    assert isinstance(reporter(Console(file=io.StringIO(), force_terminal=True)), TerminalReporter)


def test_a_terminal_bar_shows_rows_rate_and_time_left() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160)
    with TerminalReporter(console, unit="rows") as bars:
        bars.add("records:user.device", 200)
        for _ in range(4):
            time.sleep(0.05)  # rich estimates the rate from timed samples
            bars.advance("records:user.device", 50)
    text = screen.getvalue()
    assert "200/200" in text
    assert "rows/s" in text
    assert "left" in text
    assert "elapsed" in text


def test_the_purge_summary_has_a_column_for_every_count_the_report_has() -> None:
    """Whatever the report counts a row as (refused, deferred, held...), the table shows it."""
    counts = schemas.Counts(**{name: index + 1 for index, name in enumerate(schemas.Counts.__struct_fields__)})
    report = schemas.RunReport(totals=counts)
    table = summary(report, RunResult("refused", None, "refused"), dry_run=False)
    console = Console(file=io.StringIO(), width=400)
    console.print(table)
    rendered = console.file.getvalue()  # type: ignore[attr-defined]
    total_row = next(line for line in rendered.splitlines() if "total" in line)
    cells = [cell.strip() for cell in total_row.strip().strip("│").split("│")][2:]
    assert cells == [str(getattr(counts, name)) for name in ("selected", "purged", "anonymised", "restricted")] + [
        str(getattr(counts, name))
        for name in schemas.Counts.__struct_fields__
        if name not in ("selected", "purged", "anonymised", "restricted")
    ]

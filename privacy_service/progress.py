"""Progress of long command-line runs (``keys rotate``, ``purge``), on stderr.

On a terminal: rich bars, redrawn in place, with the rows done, the rate and the time left. Anywhere
else (a pipe, CI, a container's log driver, cron mail), where a redrawn bar would show nothing until
the end: JSON lines, one when a task's size is known, then one every 5 seconds at most (and one at each tenth
of the way), and one when it is done. A log therefore shows a long run moving and when it will end.
The lines have the members of a log line (``event``, ``level``, ``timestamp``) so log shippers take
them as they are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# Seconds between two JSON lines of one task (besides its start, each tenth and its end).
JSON_INTERVAL = 5.0


class Reporter(Protocol):
    """What a long run reports: tasks (one per bar) with a size, work done on them, and notes."""

    def __enter__(self) -> Reporter: ...

    def __exit__(self, *_: object) -> None: ...

    def add(self, key: str, total: int, description: str | None = None) -> None: ...

    def advance(self, key: str, amount: int) -> None: ...

    def note(self, text: str) -> None: ...


class RateColumn(ProgressColumn):
    """``1,234 rows/s``: the recent rate (rich's moving estimate), the average once finished."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self._unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        text = "-" if speed is None else f"{speed:,.0f} {self._unit}/s"
        return Text(text, style="progress.data.speed")


class TerminalReporter:
    """rich bars: description, bar, done/total, percent, rate, elapsed, time left."""

    def __init__(self, console: Console, unit: str = "rows") -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            RateColumn(unit),
            TimeElapsedColumn(),
            TextColumn("elapsed,"),
            TimeRemainingColumn(),
            TextColumn("left"),
            console=console,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> TerminalReporter:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def add(self, key: str, total: int, description: str | None = None) -> None:
        self._tasks[key] = self._progress.add_task(escape(description or key), total=total)

    def advance(self, key: str, amount: int) -> None:
        task = self._tasks.get(key)
        if task is not None:
            self._progress.advance(task, amount)

    def note(self, text: str) -> None:
        self._progress.console.print(f"[dim]{escape(text)}[/]", highlight=False, soft_wrap=True)


@dataclass
class _Task:
    description: str
    total: int
    started: float
    done: int = 0
    last_line: float = 0.0
    last_tenth: int = 0


class JsonReporter:
    """One JSON line per step worth telling (see the module docstring), flushed at once."""

    def __init__(self, stream: IO[str], unit: str = "rows", clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._unit = unit
        self._clock = clock
        self._tasks: dict[str, _Task] = {}

    def __enter__(self) -> JsonReporter:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def _write(self, event: str, **members: object) -> None:
        line = {"event": event, **members, "level": "info", "timestamp": datetime.now(UTC).isoformat()}
        self._stream.write(json.dumps(line) + "\n")
        self._stream.flush()

    def _line(self, key: str, task: _Task, now: float) -> None:
        elapsed = now - task.started
        rate = task.done / elapsed if elapsed > 0 else None
        left = task.total - task.done
        self._write(
            "progress",
            task=key,
            description=task.description,
            done=task.done,
            total=task.total,
            unit=self._unit,
            percent=round(100 * task.done / task.total, 1) if task.total else 100.0,
            rate_per_second=round(rate, 1) if rate is not None else None,
            elapsed_seconds=round(elapsed, 1),
            seconds_left=0 if left <= 0 else (round(left / rate, 1) if rate else None),
        )
        task.last_line = now

    def add(self, key: str, total: int, description: str | None = None) -> None:
        now = self._clock()
        task = _Task(description or key, max(total, 0), now)
        self._tasks[key] = task
        self._line(key, task, now)

    def advance(self, key: str, amount: int) -> None:
        task = self._tasks.get(key)
        if task is None or amount <= 0:
            return
        task.done += amount
        now = self._clock()
        tenth = min(10, 10 * task.done // task.total) if task.total else 10
        if tenth > task.last_tenth or now - task.last_line >= JSON_INTERVAL:
            task.last_tenth = tenth
            self._line(key, task, now)

    def note(self, text: str) -> None:
        self._write("stage", message=text)


def reporter(console: Console, unit: str = "rows") -> TerminalReporter | JsonReporter:
    """Bars on a terminal, JSON lines elsewhere; both on ``console``'s stream (stderr)."""
    if console.is_terminal:
        return TerminalReporter(console, unit)
    return JsonReporter(console.file, unit)

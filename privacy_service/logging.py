"""Structured logs, one format for every process (``serve``, ``worker``, every CLI command), on stderr.

structlog's own events and the standard library's records (uvicorn, APScheduler, Alembic, SQLAlchemy,
Python warnings) go through the same processors and the same renderer: with ``PRIVACY_LOG_JSON=true``
every line a process logs is one JSON object with ``event``, ``level`` and ``timestamp`` (records from
the standard library also name their ``logger``). ``PRIVACY_LOG_LEVEL`` filters both. Standard output
is never used for logs: it carries a command's result (a key, a table, a JSON document) alone.

Nothing here ever receives PII: callers log ids, counts and types.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from typing import IO, TextIO, cast

import structlog

# The root handler this module installs (found again, and replaced, when logging is reconfigured).
HANDLER_NAME = "privacy_service"
# Libraries whose INFO lines are routine chatter: APScheduler says "Running job" and "executed
# successfully" for every run, i.e. several lines a second in an idle worker; Alembic lists its
# plugins on every start. Their warnings and errors (a job that raised) still show; at DEBUG
# everything does.
QUIET_LIBRARIES = ("apscheduler", "alembic.runtime.plugins")
# Libraries that trace every operation at DEBUG (aiosqlite: a line per cursor call): INFO at most,
# so that PRIVACY_LOG_LEVEL=DEBUG shows the service's own detail rather than a flood.
TRACING_LIBRARIES = ("aiosqlite", "asyncio", "tzlocal", "httpcore", "hpack")


class _WholeLines:
    """A stream that writes whole lines only, each in one call under one lock.

    structlog's PrintLogger prints a message and then its newline (two writes); the standard library's
    handler writes a record in one. From two threads (APScheduler runs plain functions in a thread
    pool) the two would interleave, gluing two JSON objects on one line. Text is held per thread
    until its newline, then written whole.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._pending = threading.local()

    def write(self, text: str) -> int:
        pending: str = getattr(self._pending, "text", "") + text
        complete, newline, rest = pending.rpartition("\n")
        if newline:
            with self._lock:
                self._stream.write(complete + newline)
                self._stream.flush()
        self._pending.text = rest
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


# One wrapper per stream, so that loggers structlog cached under an earlier configuration and the
# handler of a later one still share a lock.
_WRAPPED: weakref.WeakKeyDictionary[IO[str], _WholeLines] = weakref.WeakKeyDictionary()


def _whole_lines(stream: IO[str]) -> TextIO:
    wrapped = _WRAPPED.get(stream)
    if wrapped is None:
        wrapped = _WRAPPED[stream] = _WholeLines(stream)
    return cast(TextIO, wrapped)


class _SkippedRuns(logging.Filter):
    """APScheduler warns when an interval job's slot comes while its previous run is still going; the
    slot is skipped (max_instances=1) and the next one runs. Normal under load, so kept below INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in str(record.msg)


def _renderer(json: bool) -> structlog.typing.Processor:
    return structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """Route structlog and the standard library's logging through one renderer to stderr."""
    threshold: int = logging.getLevelName(level)
    stream = _whole_lines(sys.stderr)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # JSON: a traceback becomes one string member, so a failure stays one line. The console renderer
    # prints exc_info itself.
    tracebacks: list[structlog.typing.Processor] = [structlog.processors.format_exc_info] if json else []
    structlog.configure(
        processors=[*shared, *tracebacks, _renderer(json)],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )

    handler = logging.StreamHandler(stream)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tracebacks, _renderer(json)],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(threshold if threshold <= logging.DEBUG else max(threshold, logging.WARNING))
    scheduler = logging.getLogger("apscheduler.scheduler")
    for skipped in [f for f in scheduler.filters if isinstance(f, _SkippedRuns)]:
        scheduler.removeFilter(skipped)
    if threshold > logging.DEBUG:
        scheduler.addFilter(_SkippedRuns())
    for name in TRACING_LIBRARIES:
        logging.getLogger(name).setLevel(max(threshold, logging.INFO))
    logging.captureWarnings(True)
    # uvicorn's access log prints full URLs, query strings included: the middleware's ``http_request``
    # line omits them.
    logging.getLogger("uvicorn.access").disabled = True

"""Log hygiene: no test PII in any log line or error body while the API tests run.

Markers register themselves: every request a test sends through ``httpx.ASGITransport`` (the
``client`` fixture and any app a test builds) is read, and the string values it submits as personal
data are added to a session-wide registry, with the normalised forms the service stores (lower-cased
e-mail, E.164 phone). The personal members are those of the public contract: identifiers (``email``,
``phone``, ``external_id``), free text (``reason``) and everything under ``profile``, ``data``,
``identity`` and ``changes``; plus the identifier query parameters.

For each test under ``tests/api`` everything the service logs (structlog lines and stdlib records, at
INFO and above whatever the test's settings say) and every 4xx/5xx body it answers is scanned, after
the test's teardown, for every marker seen so far; a hit fails the test with the offending line.
Loggers of the test harness itself (the httpx test client, the aiosmtpd test mail server) are not
the service's and are not scanned.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import structlog

import privacy_service.app
from privacy_service.crypto.fields import InvalidIdentifier, normalise_email, normalise_phone

API_TESTS = Path(__file__).resolve().parent / "api"
PII_MEMBERS = frozenset({"email", "phone", "external_id", "reason", "profile", "data", "identity", "changes"})
PII_QUERY = frozenset({"email", "phone", "external_id"})
MIN_LENGTH = 6
HARNESS_LOGGERS = ("httpx", "httpcore", "mail.log", "hypothesis")
SCANNED_LEVEL = logging.INFO
_HAS_LETTER = re.compile(r"[^\W\d_]")
_VOCABULARY = re.compile(r"[a-z_.]+")
_PRINT_METHODS = (
    "msg",
    "log",
    "debug",
    "info",
    "warn",
    "warning",
    "fatal",
    "failure",
    "err",
    "error",
    "critical",
    "exception",
)


@dataclass
class Watch:
    """What one API test made the service say: log lines and error bodies, each with its source."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, source: str, text: str) -> None:
        self.lines.append((source, text))


MARKERS: set[str] = set()
_watch: Watch | None = None


def _plausible(value: str) -> bool:
    # Short values and bare numbers ("12.50", "100000") would match durations and counts by chance;
    # lower-case words ("transaction", "user.behavior") are the service's own vocabulary, which logs
    # may name. Names, e-mail addresses, phone numbers and document numbers are none of these.
    if len(value) < MIN_LENGTH or _VOCABULARY.fullmatch(value):
        return False
    return len(value) >= 8 or bool(_HAS_LETTER.search(value))


def _variants(value: str) -> Iterator[str]:
    yield value
    yield value.strip()
    yield value.strip().lower()
    for normalise in (normalise_email, normalise_phone):
        try:
            yield normalise(value)
        except InvalidIdentifier:
            pass


def register(value: str) -> None:
    """Add a PII value (and the forms the service normalises it to) to the registry."""
    MARKERS.update(variant for variant in _variants(value) if _plausible(variant))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _harvest(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in PII_MEMBERS:
                for text in _strings(item):
                    register(text)
            else:
                _harvest(item)
    elif isinstance(value, list):
        for item in value:
            _harvest(item)


def harvest_request(request: httpx.Request) -> None:
    for key, value in parse_qsl(request.url.query.decode("latin-1"), keep_blank_values=False):
        if key in PII_QUERY:
            register(value)
    try:
        body = request.content
    except httpx.RequestNotRead:
        return
    if body:
        try:
            _harvest(json.loads(body))
        except (ValueError, RecursionError):
            pass  # not JSON: nothing the contract calls personal


# -- capture ----------------------------------------------------------------------------------


def _record_print(original: Any) -> Any:
    def method(self: structlog.PrintLogger, message: str) -> None:
        if _watch is not None:
            _watch.add("structlog", message)
        original(self, message)

    return method


class _RecordingHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if _watch is None or record.name.startswith(HARNESS_LOGGERS):
            return
        text = f"{record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        _watch.add(f"logging:{record.name}", text)


def _scanned_level(configure: Any) -> Any:
    """The service's ``configure_logging``, at INFO or finer whatever the test's settings ask."""

    def configure_logging(level: str = "INFO", json: bool = True) -> None:
        finer = min(logging.getLevelName(level), SCANNED_LEVEL)
        configure(logging.getLevelName(finer), json)

    return configure_logging


def _record_errors(original: Any) -> Any:
    async def handle_async_request(self: httpx.ASGITransport, request: httpx.Request) -> httpx.Response:
        watch = _watch
        if watch is not None:
            harvest_request(request)
        response: httpx.Response = await original(self, request)
        if watch is not None and response.status_code >= 400:
            body = (await response.aread()).decode("utf-8", "replace")
            headers = " ".join(f"{name}: {value}" for name, value in response.headers.items())
            watch.add(f"{response.status_code} body of {request.method} {request.url.path}", f"{body}\n{headers}")
        return response

    return handle_async_request


_HANDLER = _RecordingHandler(level=SCANNED_LEVEL)


def pytest_configure(config: pytest.Config) -> None:
    patches = pytest.MonkeyPatch()
    config.stash[_PATCHES] = patches
    for name in _PRINT_METHODS:
        patches.setattr(structlog.PrintLogger, name, _record_print(getattr(structlog.PrintLogger, name)))
    patches.setattr(privacy_service.app, "configure_logging", _scanned_level(privacy_service.app.configure_logging))
    patches.setattr(
        httpx.ASGITransport, "handle_async_request", _record_errors(httpx.ASGITransport.handle_async_request)
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    config.stash[_PATCHES].undo()


_PATCHES = pytest.StashKey[pytest.MonkeyPatch]()


# -- the check --------------------------------------------------------------------------------


def _without_timestamp(source: str, text: str) -> str:
    """structlog's wall-clock timestamp could equal a date a test submits; it is never PII."""
    if source != "structlog":
        return text
    try:
        event = json.loads(text)
    except ValueError:
        return text
    if isinstance(event, dict):
        event.pop("timestamp", None)
        return json.dumps(event, ensure_ascii=False)
    return text


def leaks(watch: Watch, markers: set[str]) -> list[str]:
    found = []
    for source, text in watch.lines:
        scanned = _without_timestamp(source, text)
        decoded = scanned
        if source != "structlog" and "\\u" in scanned:  # JSON bodies escape non-ASCII
            decoded = scanned.encode("ascii", "backslashreplace").decode("unicode_escape", "replace")
        hits = sorted(marker for marker in markers if marker in scanned or marker in decoded)
        if hits:
            found.append(f"{source}: {hits!r} in {text[:400]!r}")
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    global _watch
    if API_TESTS not in item.path.parents:
        return (yield)
    _watch = Watch()
    item.stash[_WATCH] = _watch
    # basicConfig cannot lower the root level once pytest has added its own handler.
    root = logging.getLogger()
    level = root.level
    root.setLevel(min(level, SCANNED_LEVEL))
    try:
        return (yield)
    finally:
        root.removeHandler(_HANDLER)
        root.setLevel(level)
        _watch = None


def _attach_handler() -> None:
    # Before each phase: alembic's fileConfig (run by the migration fixtures) replaces the root handlers.
    root = logging.getLogger()
    if _watch is not None and _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _attach_handler()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    _attach_handler()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _attach_handler()
    result = yield
    watch = item.stash.get(_WATCH, None)
    if watch is not None:
        found = leaks(watch, MARKERS)
        if found:
            pytest.fail("test PII reached a log line or an error body:\n" + "\n".join(found), pytrace=False)
    return result


_WATCH = pytest.StashKey[Watch]()

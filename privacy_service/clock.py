"""Injected time: everything inside is timezone-aware UTC, and tests can travel."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from privacy_service.errors import InvalidInput


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


# Client timestamps outside this window are not customer events, and adding a retention period to
# one near datetime.max would overflow in the purge job or an erasure (a 500 long after the write).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def as_utc(value: datetime, field: str) -> datetime:
    """A timestamp from a client, in UTC: it must carry an offset and lie within [EARLIEST, LATEST)."""
    if value.tzinfo is None:
        raise InvalidInput(f"{field} must include a timezone offset (e.g. 2026-01-31T10:00:00Z)")
    utc: datetime | None
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # no UTC equivalent, e.g. 0001-01-01T00:00:00+05:00
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise InvalidInput(f"{field} must lie between {EARLIEST.year} and {LATEST.year - 1}")
    return utc

"""API bodies for the published policy."""

from __future__ import annotations

from datetime import date, datetime

import msgspec


class VersionSummary(msgspec.Struct):
    version: str
    effective_date: date
    published_at: datetime
    content_hash: str
    languages: list[str]


class VersionList(msgspec.Struct):
    current: str  # the version this server is applying now (its files)
    items: list[VersionSummary]  # newest first

"""API bodies for legal holds and purge runs, and the run report stored with every run.

A report holds category keys, ids and numbers only: it is stored, returned and audited as is.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
BatchSize = Annotated[int, msgspec.Meta(ge=1, le=100_000)]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Request bodies: unknown fields are a 400, not silently ignored."""


# -- legal holds ------------------------------------------------------------------------------


class HoldCreate(Strict):
    # Free text for operators (case reference, matter); stored sealed, never logged or audited.
    reason: Reason
    # Timezone-aware and in the future; without it the hold lasts until released.
    until: datetime | None = None


class HoldOut(msgspec.Struct):
    id: uuid.UUID
    subject_id: uuid.UUID
    active: bool
    # None once the subject's data key that sealed it was shredded (reason_readable is then false).
    reason: str | None
    reason_readable: bool
    placed_by: str
    placed_at: datetime
    until: datetime | None
    released_at: datetime | None
    released_by: str | None


class HoldList(msgspec.Struct):
    items: list[HoldOut]


# -- runs -------------------------------------------------------------------------------------


class RunCreate(Strict):
    dry_run: bool = False
    # The instant decisions are taken at (default: now); at most a small skew in the future.
    now: datetime | None = None
    # Run even if a safety threshold (share of a table, rows per run) is exceeded.
    force: bool = False
    batch_size: BatchSize | None = None


class RunAccepted(msgspec.Struct):
    id: uuid.UUID
    status: str
    dry_run: bool
    as_of: datetime


class Counts(msgspec.Struct):
    """What a rule found and did. A dry run reports what a real run at the same ``as_of`` would do."""

    # Whose retention period has ended (held and legally kept data included).
    selected: int = 0
    purged: int = 0
    anonymised: int = 0
    # Whole subjects erased except data a legal duty keeps (restricted until the duty ends).
    restricted: int = 0
    skipped_hold: int = 0
    skipped_legal_duty: int = 0
    errors: int = 0
    # Planned but not done: it became protected or changed while the run was going (next run).
    deferred: int = 0
    # Planned but not done because a safety threshold refused the whole run (nothing was changed).
    refused: int = 0


class RuleReport(msgspec.Struct):
    key: str
    # records | subject_fields | subjects | restricted_records | restricted_subjects | requests |
    # request_codes | request_tokens | request_exports | outbox
    target: str
    category: str | None
    action: str
    period: str | None
    trigger: str | None
    legal_duty: str | None
    counts: Counts


class HoldRef(msgspec.Struct):
    hold_id: uuid.UUID
    subject_id: uuid.UUID
    until: datetime | None


class HoldsSummary(msgspec.Struct):
    active: int = 0
    items: list[HoldRef] = msgspec.field(default_factory=list)
    truncated: bool = False


class Alert(msgspec.Struct):
    # "share_of_table" (more than retention_alert_percent of a table) or "rows_per_run".
    kind: str
    table: str
    planned: int
    total: int
    percent: float
    threshold: float


class ItemError(msgspec.Struct):
    key: str
    id: uuid.UUID
    error: str


class RunReport(msgspec.Struct):
    rules: list[RuleReport] = msgspec.field(default_factory=list)
    totals: Counts = msgspec.field(default_factory=Counts)
    holds: HoldsSummary = msgspec.field(default_factory=HoldsSummary)
    alerts: list[Alert] = msgspec.field(default_factory=list)
    # A real run without --force would refuse (a dry run says so without refusing).
    would_refuse: bool = False
    # Records whose category the policy no longer has: kept, reported so the policy can be fixed.
    unknown_categories: dict[str, int] = msgspec.field(default_factory=dict)
    item_errors: list[ItemError] = msgspec.field(default_factory=list)


class RunView(msgspec.Struct):
    id: uuid.UUID
    status: str
    dry_run: bool
    forced: bool
    as_of: datetime
    started_at: datetime
    finished_at: datetime | None
    requested_by: str
    policy_version: str
    batch_size: int
    error: str | None
    report: RunReport


class RunSummary(msgspec.Struct):
    id: uuid.UUID
    status: str
    dry_run: bool
    as_of: datetime
    started_at: datetime
    finished_at: datetime | None
    totals: Counts


class RunPage(msgspec.Struct):
    items: list[RunSummary]
    next_cursor: str | None

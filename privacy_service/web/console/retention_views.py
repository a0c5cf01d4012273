"""What the console's retention pages read and show, from the runs the purge itself records.

Nothing here decides what a purge does: the counts are the run's own report (``retention.runs``), written
by ``retention.jobs`` in the transaction of each batch it reports. This module only picks runs (the
newest dry run is the preview, the newest real run the last outcome), names categories in the policy's
own words, and turns a running run's report into a progress figure.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.operators.models import Operator
from privacy_service.policy.document import PolicyDocument
from privacy_service.retention import schemas
from privacy_service.retention.models import RetentionRun, RunStatus
from privacy_service.retention.runs import run_view

RUNS_SHOWN = 20  # runs per page of the list, newest first (keyset: retention.runs.list_runs)
# The counts a rule's row shows, in order (schemas.Counts' names; "acted" ones are what was or would be done).
ACTED = ("purged", "anonymised", "restricted")
OTHER = ("skipped_hold", "skipped_legal_duty", "deferred", "refused", "errors")


async def latest_run(session: AsyncSession, *, dry_run: bool) -> schemas.RunView | None:
    """The newest dry run (the preview) or real run (the last outcome): one row by the runs' index."""
    query = (
        select(RetentionRun)
        .where(col(RetentionRun.dry_run).is_(dry_run))
        .order_by(col(RetentionRun.started_at).desc(), col(RetentionRun.id).desc())
        .limit(1)
    )
    run = (await session.exec(query)).first()
    return run_view(run) if run is not None else None


async def requested_by(session: AsyncSession, run: schemas.RunView) -> str:
    """Who asked for the run: an operator's name (the audit trail keeps the id), or the system job."""
    kind, _, actor_id = run.requested_by.partition(":")
    if kind == "operator":
        try:
            found = await session.get(Operator, uuid.UUID(actor_id))
        except ValueError:
            found = None
        if found is not None:
            return found.name
    return run.requested_by


@dataclass(frozen=True, slots=True)
class RuleRow:
    key: str
    category: str | None  # the policy's name for it, in the page's language
    category_key: str | None
    target: str
    action: str
    legal_duty: str | None
    counts: schemas.Counts


def rule_rows(report: schemas.RunReport, policy: PolicyDocument, language: str) -> tuple[list[RuleRow], int]:
    """The rules that found something (and how many found nothing), categories named as the notice names them."""
    names = policy.notices[language].data_categories
    rows, quiet = [], 0
    for entry in report.rules:
        counts = entry.counts
        if not any(getattr(counts, name) for name in counts.__struct_fields__):
            quiet += 1
            continue
        named = names.get(entry.category) if entry.category else None
        rows.append(
            RuleRow(
                key=entry.key,
                category=named.name if named is not None else entry.category,
                category_key=entry.category,
                target=entry.target,
                action=entry.action,
                legal_duty=entry.legal_duty,
                counts=counts,
            )
        )
    return rows, quiet


@dataclass(frozen=True, slots=True)
class Progress:
    running: bool
    phase: str  # "planning" (counting what is due), "purging", or "finished"
    done: int
    planned: int

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.done / self.planned)) if self.planned else 0


def progress_of(run: schemas.RunView) -> Progress:
    """How far a run is. A real run's stored report holds, per rule, the plan's counts with what was done
    so far in place of the plan's actions; the rows to act on are those selected less the held and the
    legally kept ones (as the CLI's progress bars count them)."""
    rules = run.report.rules
    done = sum(sum(getattr(e.counts, name) for name in ACTED) + e.counts.errors for e in rules)
    planned = sum(max(e.counts.selected - e.counts.skipped_hold - e.counts.skipped_legal_duty, 0) for e in rules)
    if run.status != RunStatus.RUNNING:
        return Progress(False, "finished", done, max(planned, done))
    if run.dry_run or not rules:
        return Progress(True, "planning", 0, 0)
    return Progress(True, "purging", done, max(planned, done))


def progress_document(run: schemas.RunView, words: dict[str, Any]) -> dict[str, Any]:
    """The JSON the run page's script polls: the figures and their sentence in the page's language."""
    progress = progress_of(run)
    if progress.phase == "purging":
        text = words["progress_purging"].format(done=progress.done, planned=progress.planned)
    else:
        text = words[f"progress_{progress.phase}"]
    return {
        "status": run.status,
        "running": progress.running,
        "phase": progress.phase,
        "done": progress.done,
        "planned": progress.planned,
        "percent": progress.percent,
        "text": text,
    }

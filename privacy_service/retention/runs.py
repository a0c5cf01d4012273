"""Reading retention runs: one run's view and report, and the newest-first list."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec
from sqlalchemy import (
    and_,
    or_,
)
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.errors import InvalidInput, NotFound
from privacy_service.retention import schemas
from privacy_service.retention.models import RetentionRun


def run_view(run: RetentionRun) -> schemas.RunView:
    return schemas.RunView(
        id=run.id,
        status=run.status,
        dry_run=run.dry_run,
        forced=run.forced,
        as_of=run.as_of,
        started_at=run.started_at,
        finished_at=run.finished_at,
        requested_by=f"{run.actor_type}:{run.actor_id}",
        policy_version=run.policy_version,
        batch_size=run.batch_size,
        error=run.error,
        report=msgspec.convert({**run.report, "holds": run.holds or {}}, schemas.RunReport),
    )


async def get_run(session: AsyncSession, run_id: uuid.UUID) -> schemas.RunView:
    run = await session.get(RetentionRun, run_id)
    if run is None:
        raise NotFound("no retention run with this id")
    return run_view(run)


async def list_runs(session: AsyncSession, *, after: str | None, limit: int) -> schemas.RunPage:
    """Newest first; ``after`` is the ``next_cursor`` of the previous page."""
    query = select(RetentionRun)
    if after is not None:
        started_text, _, id_text = after.partition("_")
        try:
            started, run_id = datetime.fromisoformat(started_text), uuid.UUID(id_text)
        except ValueError:
            raise InvalidInput("after: not a cursor returned by this endpoint") from None
        if started.tzinfo is None:
            raise InvalidInput("after: not a cursor returned by this endpoint")
        query = query.where(
            or_(
                col(RetentionRun.started_at) < started,
                and_(col(RetentionRun.started_at) == started, col(RetentionRun.id) < run_id),
            )
        )
    rows = (
        await session.exec(
            query.order_by(col(RetentionRun.started_at).desc(), col(RetentionRun.id).desc()).limit(limit + 1)
        )
    ).all()
    page = rows[:limit]
    return schemas.RunPage(
        items=[
            schemas.RunSummary(
                id=run.id,
                status=run.status,
                dry_run=run.dry_run,
                as_of=run.as_of,
                started_at=run.started_at,
                finished_at=run.finished_at,
                totals=msgspec.convert(run.report.get("totals", {}), schemas.Counts),
            )
            for run in page
        ],
        next_cursor=f"{page[-1].started_at.isoformat()}_{page[-1].id}" if len(rows) > limit else None,
    )

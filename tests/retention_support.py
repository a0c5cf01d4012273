"""Building retention scenarios through the real services (real keys, real ciphertext), and reading
back the state a purge leaves, for before/after comparisons."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlmodel import col, select

from privacy_service.audit.service import Actor
from privacy_service.crypto.models import DataKeyRow
from privacy_service.retention import schemas
from privacy_service.retention.holds import HoldService
from privacy_service.retention.jobs import RunOptions, RunResult, run_purge
from privacy_service.retention.models import RetentionAggregate
from privacy_service.runtime import Runtime
from privacy_service.subjects.models import Record, Subject
from privacy_service.subjects.schemas import RecordCreate, SubjectCreate
from privacy_service.subjects.service import Retention, SubjectService

TEST_ACTOR = Actor("operator", "retention-test")
NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)  # in the past: a run's now may not be in the future


def years(n: float) -> timedelta:
    return timedelta(days=round(365.25 * n))


@dataclass(frozen=True, slots=True)
class FixedClock:
    at: datetime

    def now(self) -> datetime:
        return self.at


@dataclass(frozen=True, slots=True)
class Vault:
    """Writes test data through the real services inside one transaction (``building``)."""

    runtime: Runtime
    session: Any

    def _service(self, at: datetime) -> SubjectService:
        return SubjectService(self.session, self.runtime.keys, self.runtime.policy, FixedClock(at), TEST_ACTOR)

    async def subject(
        self,
        *,
        created_at: datetime,
        profile: dict[str, Any] | None = None,
        email: str | None = None,
        closed_at: datetime | None = None,
        activity: datetime | None = None,
    ) -> uuid.UUID:
        new_id = await self._service(created_at).create(SubjectCreate(email=email, profile=profile or {}))
        subject = await self.session.get(Subject, new_id)
        assert subject is not None
        subject.account_closed_at, subject.last_activity_at = closed_at, activity
        self.session.add(subject)
        await self.session.flush()
        return new_id

    async def record(
        self,
        subject_id: uuid.UUID,
        *,
        category: str,
        created_at: datetime,
        kind: str = "note",
        occurred_at: datetime | None = None,
        data: dict[str, Any] | None = None,
    ) -> uuid.UUID:
        body = RecordCreate(kind=kind, category=category, occurred_at=occurred_at or created_at, data=data or {"n": 1})
        return await self._service(created_at).add_record(subject_id, body)

    async def restrict(self, subject_id: uuid.UUID, keep: dict[str, Retention], at: datetime) -> None:
        await self._service(at).erase(subject_id, keep)

    async def hold(
        self, subject_id: uuid.UUID, *, until: datetime | None = None, at: datetime = NOW, release: bool = False
    ) -> uuid.UUID:
        service = HoldService(self.session, self.runtime.keys, FixedClock(at), TEST_ACTOR)
        placed = await service.place(subject_id, schemas.HoldCreate(reason="matter 2030-17", until=until))
        if release:
            await service.release(subject_id, placed.id)
        return placed.id


@asynccontextmanager
async def building(runtime: Runtime) -> AsyncIterator[Vault]:
    async with runtime.db.transaction() as session:
        yield Vault(runtime, session)


async def add_subject(runtime: Runtime, **fields: Any) -> uuid.UUID:
    async with building(runtime) as vault:
        return await vault.subject(**fields)


async def add_record(runtime: Runtime, subject_id: uuid.UUID, **fields: Any) -> uuid.UUID:
    async with building(runtime) as vault:
        return await vault.record(subject_id, **fields)


async def restrict(runtime: Runtime, subject_id: uuid.UUID, keep: dict[str, Retention], at: datetime) -> None:
    async with building(runtime) as vault:
        await vault.restrict(subject_id, keep, at)


async def hold(runtime: Runtime, subject_id: uuid.UUID, **fields: Any) -> uuid.UUID:
    async with building(runtime) as vault:
        return await vault.hold(subject_id, **fields)


async def purge(runtime: Runtime, now: datetime = NOW, **options: Any) -> RunResult:
    options.setdefault("actor", TEST_ACTOR)
    result = await run_purge(runtime, RunOptions(now=now, **options))
    assert result.report is not None, result
    return result


def counts(result: RunResult) -> dict[str, dict[str, int]]:
    """Per entry, every count except ``deferred`` (what a dry run cannot know)."""
    assert result.report is not None
    return {
        entry.key: {k: v for k, v in msgspec.to_builtins(entry.counts).items() if k != "deferred"}
        for entry in result.report.rules
    }


def entry(result: RunResult, key: str) -> schemas.Counts:
    assert result.report is not None
    return next(e.counts for e in result.report.rules if e.key == key)


async def state(runtime: Runtime) -> dict[str, Any]:
    """Everything a purge may change, by id (times and ciphertext excluded)."""
    async with runtime.db.transaction() as session:
        subjects = {
            s.id: (s.status, tuple(sorted(s.profile_fields.items())), s.email_ct is not None, s.retained_until)
            for s in (await session.exec(select(Subject))).all()
        }
        records = {
            r.id: (r.subject_id, r.category, r.restricted, r.retain_until)
            for r in (await session.exec(select(Record))).all()
        }
        keys = sorted((str(k.subject_id), k.purpose) for k in (await session.exec(select(DataKeyRow))).all())
        aggregates = sorted(
            (a.category, a.kind, a.month, a.amount_band, a.count)
            for a in (await session.exec(select(RetentionAggregate))).all()
        )
    return {"subjects": subjects, "records": records, "keys": keys, "aggregates": aggregates}


async def record_ids(runtime: Runtime) -> set[uuid.UUID]:
    async with runtime.db.transaction() as session:
        return set((await session.exec(select(col(Record.id)))).all())


async def count_rows(runtime: Runtime, table: str) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())  # noqa: S608

"""What every step of a retention run shares: the rules' bounds at the run's ``now``, holds, audit,
aggregates and the report's frame. The steps live by concept (``records``, ``subjects``, ``kept``,
``housekeeping``); :class:`~privacy_service.retention.service.RetentionEngine` joins them.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    func,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.clock import Clock
from privacy_service.config import Settings
from privacy_service.crypto.service import KeyService
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.policy.document import PolicyDocument, RetentionRule
from privacy_service.retention import schemas
from privacy_service.retention.models import LegalHold, RetentionAggregate
from privacy_service.retention.rules import (
    RECORD_ANCHORS,
    REQUEST_CATEGORY,
    Bound,
    RuleSql,
    rule_sql,
)
from privacy_service.retention.tally import (
    OUTBOX_KEY,
    REQUESTS_KEY,
    RESTRICTED_RECORDS_KEY,
    RESTRICTED_SUBJECTS_KEY,
    SECRET_KEYS,
    SUBJECTS_KEY,
    Totals,
    field_key,
    record_key,
)
from privacy_service.subjects.models import Record, Subject, SubjectStatus

ACTOR = Actor.system("retention")
MAX_REPORTED_HOLDS = 1000


@dataclass(slots=True)
class EngineBase:
    """Every decision of one run, taken at ``now``; each method works inside the caller's transaction."""

    policy: PolicyDocument
    keys: KeyService
    clock: Clock
    settings: Settings
    now: datetime
    run_id: uuid.UUID
    postgres: bool
    _bounds: dict[str, Bound] = field(init=False)
    _records_sql: dict[str, RuleSql] | None = field(default=None, init=False)
    _statements: dict[str, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._bounds = {key: Bound.of(rule, self.now) for key, rule in sorted(self.policy.retention_rules().items())}

    # -- what the report lists ------------------------------------------------------------

    @property
    def subject_level_categories(self) -> list[str]:
        known = set(self.policy.profile_fields.values()) | set(self.policy.identifier_fields.values())
        return sorted(category for category in known if category in self._bounds)

    @property
    def request_rule(self) -> RetentionRule | None:
        bound = self._bounds.get(REQUEST_CATEGORY)
        return bound.rule if bound else None

    def entries(self) -> list[schemas.RuleReport]:
        def from_rule(key: str, target: str, rule: RetentionRule) -> schemas.RuleReport:
            return schemas.RuleReport(
                key=key,
                target=target,
                category=rule.category,
                action=rule.action,
                period=str(rule.period),
                trigger=rule.trigger,
                legal_duty=rule.legal_duty.basis if rule.legal_duty else None,
                counts=schemas.Counts(),
            )

        def housekeeping(key: str, action: str) -> schemas.RuleReport:
            return schemas.RuleReport(key, key, None, action, None, None, None, schemas.Counts())

        out = [from_rule(record_key(k), "records", b.rule) for k, b in self._bounds.items()]
        out += [from_rule(field_key(k), "subject_fields", self._bounds[k].rule) for k in self.subject_level_categories]
        out.append(housekeeping(SUBJECTS_KEY, "erase"))
        out.append(housekeeping(RESTRICTED_RECORDS_KEY, "delete"))
        out.append(housekeeping(RESTRICTED_SUBJECTS_KEY, "erase"))
        out += [housekeeping(key, "clear") for key in SECRET_KEYS]
        out.append(housekeeping(OUTBOX_KEY, "delete"))
        if self.request_rule is not None:
            out.append(from_rule(REQUESTS_KEY, "requests", self.request_rule))
        return out

    # -- shared pieces --------------------------------------------------------------------

    def _held_ids(self) -> Any:
        return select(col(LegalHold.subject_id)).where(LegalHold.active_at(self.now))

    async def held_among(self, session: AsyncSession, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        wanted = list(set(ids))
        if not wanted:
            return set()
        rows = await session.exec(
            select(col(LegalHold.subject_id)).where(
                col(LegalHold.subject_id).in_(wanted), LegalHold.active_at(self.now)
            )
        )
        return set(rows.all())

    def _record_sql(self) -> dict[str, RuleSql]:
        # Built once per run: building and cache-keying these expressions costs more than running them.
        if self._records_sql is None:
            self._records_sql = {
                key: rule_sql(b, RECORD_ANCHORS, col(Record.category) == key) for key, b in self._bounds.items()
            }
        return self._records_sql

    @property
    def has_windows(self) -> bool:
        return any(not b.exact for b in self._bounds.values())

    def _actor_request_id(self) -> str:
        return f"retention-run:{self.run_id}"

    def _audit(self, session: AsyncSession, action: str, subject_id: uuid.UUID | None = None, **detail: Any) -> None:
        audit.record(
            session,
            at=self.clock.now(),
            actor=ACTOR,
            action=action,
            subject_id=subject_id,
            request_id=self._actor_request_id(),
            detail={"run_id": str(self.run_id), **detail},
        )

    async def _aggregate(self, session: AsyncSession, counted: Counter[tuple[str, str, str, str]]) -> None:
        if not counted:
            return
        now = self.clock.now()
        rows = [
            {"category": c, "kind": k, "month": m, "amount_band": b, "count": n, "updated_at": now}
            for (c, k, m, b), n in sorted(counted.items())
        ]
        dialect_insert = postgresql.insert if self.postgres else sqlite.insert
        statement = dialect_insert(RetentionAggregate).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=["category", "kind", "month", "amount_band"],
            set_={
                "count": col(RetentionAggregate.count) + statement.excluded["count"],
                "updated_at": statement.excluded["updated_at"],
            },
        )
        await session.exec(statement)

    # -- totals, holds, unknown categories (the report's frame) -----------------------------

    async def table_totals(self, session: AsyncSession, by_category: dict[str, int]) -> Totals:
        """Row counts of the tables a run may purge, and the records whose category the policy no
        longer has (kept, and reported so the policy can be fixed). ``by_category``: records per
        category, counted by the plan's scan of records (:meth:`RecordSteps.plan_records`)."""
        subjects = (await session.exec(select(func.count()).where(col(Subject.status) != SubjectStatus.ERASED))).one()
        requests = (await session.exec(select(func.count()).select_from(PrivacyRequest))).one()
        return Totals(
            tables={"records": sum(by_category.values()), "subjects": int(subjects), "dsr_requests": int(requests)},
            records=by_category,
            unknown={category: count for category, count in by_category.items() if category not in self._bounds},
        )

    async def holds_summary(self, session: AsyncSession) -> schemas.HoldsSummary:
        active = LegalHold.active_at(self.now)
        total = int((await session.exec(select(func.count()).select_from(LegalHold).where(active))).one())
        rows = (
            await session.exec(
                select(LegalHold)
                .where(active)
                .order_by(col(LegalHold.placed_at), col(LegalHold.id))
                .limit(MAX_REPORTED_HOLDS)
            )
        ).all()
        items = [schemas.HoldRef(row.id, row.subject_id, row.until) for row in rows]
        return schemas.HoldsSummary(active=total, items=items, truncated=total > len(items))

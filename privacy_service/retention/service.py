"""The retention rules engine and the legal-hold use cases. Never commits: jobs.py owns transactions.

What a rule makes due. Each policy category has one rule: ``period`` after ``trigger``, then
``action``, unless a ``legal_duty`` still runs. The trigger's time (the *anchor*) is:

- ``collected_at``: when the vault stored the data (``records.created_at``; a subject's
  ``created_at`` for profile fields and identifiers). Not the client-supplied ``occurred_at``:
  the notice promises "N after we collect it", and a future ``occurred_at`` must not be able to
  stretch retention.
- ``account_closed_at``: the subject's; while the account is open, never.
- ``last_activity_at``: the subject's, or its ``created_at`` if no activity was ever recorded.
- ``request_completed_at``: a privacy request's ``completed_at``; for a record filed under such a
  category, its ``created_at`` (it is written when the request is answered).

Each item is then *live* (period running), *duty* (period over, a legal duty still keeps it) or
*due* (both over). Due data of a subject under an active legal hold is skipped, like duty data.

What a run does, in order (each step batched, each batch one transaction):

1. ``records``: due records are deleted; for ``anonymise`` rules their (category, kind, month,
   amount decade) is counted into ``retention_aggregates`` in the same statement's transaction.
   Records are visited in physical order (PostgreSQL ``ctid`` pages, SQLite ``rowid`` ranges), so
   a batch is one range scan however the rows are spread.
2. ``subject_fields`` / ``subjects``: a subject with nothing live left is erased with
   :meth:`SubjectService.erase` (crypto-shredding); categories under a legal duty are kept,
   restricted, until the duty ends. A subject that still has live data loses only the profile
   fields and identifiers whose category is due.
3. ``restricted_records`` / ``restricted_subjects``: data kept after erasure whose date has
   passed is deleted; a subject whose last kept data goes loses its "retention" key too.
4. ``request_codes`` / ``request_tokens`` / ``request_exports``: expired credentials and export
   links are cleared; ``outbox``: sent and dead-lettered mail older than the configured age.
5. ``requests``: completed privacy requests, per the rule of :data:`REQUEST_CATEGORY` (row,
   history, queued mail and the request's data key).

No step removes what a later step counts, so a dry run (which changes nothing) counts exactly
what the real run does.

The SQL conditions are built from :mod:`retention.cutoffs`, so they agree exactly with
:func:`classify`, the per-item reference; the rare month-end anchors a bound cannot settle are
read and classified one by one.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import msgspec
from sqlalchemy import (
    ColumnElement,
    SQLColumnExpression,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    delete,
    false,
    func,
    literal_column,
    not_,
    or_,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import UserDefinedType
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.clock import Clock
from privacy_service.config import Settings
from privacy_service.crypto.fields import Binding, DataKey, DecryptionFailed
from privacy_service.crypto.keys import KeyError_
from privacy_service.crypto.service import PRIMARY, REQUEST, KeyService, KeyShredded
from privacy_service.dsr.models import PrivacyRequest, RequestTransition
from privacy_service.errors import DataIntegrityError, InvalidInput, NotFound
from privacy_service.notify.models import OutboxMessage
from privacy_service.policy.document import PolicyDocument, RetentionRule
from privacy_service.retention import schemas
from privacy_service.retention.cutoffs import Cut, cut, due
from privacy_service.retention.models import LegalHold, RetentionAggregate, RetentionRun
from privacy_service.subjects.models import Record, Subject, SubjectStatus
from privacy_service.subjects.service import IDENTIFIERS, SUBJECTS, Retention, SubjectService

RECORDS: Table = Record.metadata.tables["records"]
# The data category of privacy-request rows (dsr_requests); its rule says how long they are kept.
REQUEST_CATEGORY = "system.privacy_request"
ACTOR = Actor.system("retention")
MAX_REPORTED_HOLDS = 1000
MAX_ITEM_ERRORS = 100

Anchor = SQLColumnExpression[Any]


class Tid(UserDefinedType[Any]):
    """PostgreSQL's physical row address; asyncpg binds it from a (page, item) tuple."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "tid"

    def literal_processor(self, dialect: Any) -> Callable[[Any], str]:
        return lambda value: f"'({int(value[0])},{int(value[1])})'"


class State(StrEnum):
    LIVE = "live"
    DUTY = "duty"
    DUE = "due"


def classify(rule: RetentionRule, anchors: Mapping[str, datetime | None], now: datetime) -> State:
    """The reference decision for one item: every SQL condition below agrees with it."""
    if not due(rule.period, anchors.get(rule.trigger), now):
        return State.LIVE
    duty = rule.legal_duty
    if duty is not None and not due(duty.period, anchors.get(duty.trigger), now):
        return State.DUTY
    return State.DUE


def wide_select(*columns: Any) -> Any:
    """sqlmodel's select() is typed for up to four columns; wider row queries are built here."""
    return select(*columns)


def end_of_day(moment: datetime) -> datetime:
    return moment.replace(hour=23, minute=59, second=59, microsecond=999_999)


def amount_band(data: Any) -> str:
    """The decade a record's numeric ``amount`` falls in ("" if it has none): enough for statistics."""
    amount = data.get("amount") if isinstance(data, dict) else None
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount):
        return ""
    magnitude = abs(float(amount))
    if magnitude < 1:
        return "0-1"
    exponent = min(math.floor(math.log10(magnitude)), 12)
    return f"{10**exponent}-{10 ** (exponent + 1)}"


# -- counting ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """Counts per report entry (the keys of schemas.RuleReport), added up batch by batch."""

    counts: dict[str, schemas.Counts] = field(default_factory=dict)
    errors: list[schemas.ItemError] = field(default_factory=list)

    def __getitem__(self, key: str) -> schemas.Counts:
        found = self.counts.get(key)
        if found is None:
            found = self.counts[key] = schemas.Counts()
        return found

    def add(self, other: Tally) -> None:
        for key, counts in other.counts.items():
            mine = self[key]
            for name in counts.__struct_fields__:
                setattr(mine, name, getattr(mine, name) + getattr(counts, name))
        self.errors.extend(other.errors)

    def error(self, key: str, item_id: uuid.UUID, exc: BaseException) -> None:
        self[key].errors += 1
        self.errors.append(schemas.ItemError(key, item_id, type(exc).__name__))

    def acted(self) -> int:
        return sum(c.purged + c.anonymised + c.restricted for c in self.counts.values())


def record_key(category: str) -> str:
    return f"records:{category}"


def field_key(category: str) -> str:
    return f"subject_fields:{category}"


SUBJECTS_KEY = "subjects"
RESTRICTED_RECORDS_KEY = "restricted_records"
RESTRICTED_SUBJECTS_KEY = "restricted_subjects"
REQUESTS_KEY = f"requests:{REQUEST_CATEGORY}"
OUTBOX_KEY = "outbox"
SECRET_KEYS = ("request_codes", "request_tokens", "request_exports")


# -- SQL conditions ------------------------------------------------------------------------------


def _le(anchor: Anchor | None, bound: datetime | None) -> ColumnElement[bool]:
    # NULL (trigger not happened) compares as unknown: never true in WHERE, CASE WHEN, AND or OR.
    if anchor is None or bound is None:
        return false()
    return anchor <= bound


def _after(anchor: Anchor | None, bound: datetime | None) -> ColumnElement[bool]:
    if anchor is None or bound is None:
        return true()
    return or_(anchor.is_(None), anchor > bound)


def _between(anchor: Anchor | None, bounds: Cut) -> ColumnElement[bool]:
    if anchor is None or bounds.lo is None or bounds.hi is None or bounds.exact:
        return false()
    return and_(anchor > bounds.lo, anchor <= bounds.hi)


def _activity() -> Anchor:
    return func.coalesce(col(Subject.last_activity_at), col(Subject.created_at))


# Anchors of each trigger, per kind of row (None: the trigger never applies to it).
RECORD_ANCHORS: Mapping[str, Callable[[], Anchor | None]] = {
    "collected_at": lambda: col(Record.created_at),
    "request_completed_at": lambda: col(Record.created_at),
    "account_closed_at": lambda: col(Subject.account_closed_at),
    "last_activity_at": _activity,
}
SUBJECT_ANCHORS: Mapping[str, Callable[[], Anchor | None]] = {
    "collected_at": lambda: col(Subject.created_at),
    "request_completed_at": lambda: None,
    "account_closed_at": lambda: col(Subject.account_closed_at),
    "last_activity_at": _activity,
}
REQUEST_ANCHORS: Mapping[str, Callable[[], Anchor | None]] = {
    "collected_at": lambda: col(PrivacyRequest.received_at),
    "request_completed_at": lambda: col(PrivacyRequest.completed_at),
    "account_closed_at": lambda: col(Subject.account_closed_at),
    "last_activity_at": _activity,
}


SUBJECT_TRIGGERS = frozenset({"account_closed_at", "last_activity_at"})


def subject_anchors(subject: Subject) -> dict[str, datetime | None]:
    return {
        "collected_at": subject.created_at,
        "request_completed_at": None,
        "account_closed_at": subject.account_closed_at,
        "last_activity_at": subject.last_activity_at or subject.created_at,
    }


@dataclass(frozen=True, slots=True)
class Bound:
    """One rule's cut-offs at the run's ``now``."""

    rule: RetentionRule
    period: Cut
    duty: Cut | None

    @classmethod
    def of(cls, rule: RetentionRule, now: datetime) -> Bound:
        return cls(rule, cut(rule.period, now), cut(rule.legal_duty.period, now) if rule.legal_duty else None)

    @property
    def exact(self) -> bool:
        return self.period.exact and (self.duty is None or self.duty.exact)

    @property
    def reads_subject(self) -> bool:
        """For records: does the rule (or its duty) run from an event of the subject's?"""
        triggers = {self.rule.trigger, *((self.rule.legal_duty.trigger,) if self.rule.legal_duty else ())}
        return bool(triggers & SUBJECT_TRIGGERS)


@dataclass(frozen=True, slots=True)
class RuleSql:
    """A partition of one category's rows: live, due, duty, or window (decided row by row)."""

    live: ColumnElement[bool]
    due: ColumnElement[bool]
    duty: ColumnElement[bool]
    window: ColumnElement[bool]
    possible: ColumnElement[bool]  # a superset of "period over", for prefiltering
    selected: ColumnElement[bool]  # due or duty (period over, certainly), in fewer terms


def rule_sql(
    bound: Bound, anchors: Mapping[str, Callable[[], Anchor | None]], category: ColumnElement[bool] | None
) -> RuleSql:
    rule = bound.rule
    anchor = anchors[rule.trigger]()
    period_over = _le(anchor, bound.period.lo)
    if rule.legal_duty is None or bound.duty is None:
        duty_over: ColumnElement[bool] = true()
        duty_running: ColumnElement[bool] = false()
        duty_window: ColumnElement[bool] = false()
    else:
        duty_anchor = anchors[rule.legal_duty.trigger]()
        duty_over = _le(duty_anchor, bound.duty.lo)
        duty_running = _after(duty_anchor, bound.duty.hi)
        duty_window = _between(duty_anchor, bound.duty)
    match = category if category is not None else true()
    return RuleSql(
        live=and_(match, _after(anchor, bound.period.hi)),
        due=and_(match, period_over, duty_over),
        duty=and_(match, period_over, duty_running),
        window=and_(match, or_(_between(anchor, bound.period), and_(period_over, duty_window))),
        possible=and_(match, _le(anchor, bound.period.hi)),
        # Without a month-end window the duty is certainly over or running: no need to look.
        selected=and_(match, period_over)
        if bound.duty is None or bound.duty.exact
        else and_(match, period_over, or_(duty_over, duty_running)),
    )


# -- the engine -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CategoryState:
    live: int = 0
    duty: int = 0
    due: int = 0
    # The latest collection time among records kept by a duty (for the duty's end).
    duty_anchor: datetime | None = None


@dataclass(frozen=True, slots=True)
class Totals:
    """The frame of a run's report: rows per table a run may purge, per record category, and
    the records whose category the policy does not know."""

    tables: dict[str, int]
    records: dict[str, int]
    unknown: dict[str, int]


@dataclass(slots=True)
class SubjectDecision:
    held: bool
    nothing_live: bool
    field_states: dict[str, State]
    keep: dict[str, Retention]
    # erase | restrict | drop_fields | None
    action: str | None


@dataclass(slots=True)
class RetentionEngine:
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

    async def table_totals(self, session: AsyncSession) -> Totals:
        """Row counts of the tables a run may purge, and the records whose category the policy no
        longer has (kept, and reported so the policy can be fixed): one scan of records for both."""
        by_category = {
            category: int(count)
            for category, count in (
                await session.exec(select(col(Record.category), func.count()).group_by(col(Record.category)))
            ).all()
        }
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

    # -- 1. records ------------------------------------------------------------------------

    def _record_action(self, category: str) -> str:
        return self._bounds[category].rule.action

    def _count_record(self, tally: Tally, category: str, state: State, held: bool) -> None:
        counts = tally[record_key(category)]
        if state is State.LIVE:
            return
        counts.selected += 1
        if held:
            counts.skipped_hold += 1
        elif state is State.DUTY:
            counts.skipped_legal_duty += 1
        elif self._record_action(category) == "anonymise":
            counts.anonymised += 1
        else:
            counts.purged += 1

    async def plan_records(self, session: AsyncSession, category_rows: Mapping[str, int]) -> Tally:
        """Counts for every record a bound settles (one grouped scan); window rows come separately.

        The scan tests every row against the rules' conditions, which dominates its cost at scale:
        the rules are tested most common category first (``category_rows``: records per category, from
        :meth:`table_totals`), so a typical row settles on the first term, and the legal-duty test
        first asks whether the row's category has a duty at all (one hashed lookup)."""
        tally = Tally()
        by_key = self._record_sql()
        if not by_key:
            return tally
        order = sorted(by_key, key=lambda key: (-category_rows.get(key, 0), key))
        held = col(Record.subject_id).in_(self._held_ids())
        selected = or_(*(by_key[key].selected for key in order))
        with_duty = [key for key in order if self._bounds[key].rule.legal_duty is not None]
        duty = (
            and_(col(Record.category).in_(with_duty), or_(*(by_key[key].duty for key in with_duty)))
            if with_duty
            else false()
        )
        rows = await session.exec(
            select(
                col(Record.category),
                func.count(),
                func.sum(case((held, 1), else_=0)),
                func.sum(case((and_(not_(held), duty), 1), else_=0)),
            )
            .join(Subject, col(Subject.id) == col(Record.subject_id))
            .where(col(Record.restricted).is_(False), col(Subject.status) == SubjectStatus.ACTIVE, selected)
            .group_by(col(Record.category))
        )
        for category, n, n_held, n_duty in rows.all():
            counts = tally[record_key(category)]
            counts.selected += int(n)
            counts.skipped_hold += int(n_held or 0)
            counts.skipped_legal_duty += int(n_duty or 0)
            acting = int(n) - int(n_held or 0) - int(n_duty or 0)
            if self._record_action(category) == "anonymise":
                counts.anonymised += acting
            else:
                counts.purged += acting
        return tally

    def _window_query(self) -> Any:
        return (
            wide_select(
                col(Record.id),
                col(Record.subject_id),
                col(Record.category),
                col(Record.created_at),
                col(Subject.created_at),
                col(Subject.account_closed_at),
                col(Subject.last_activity_at),
            )
            .join(Subject, col(Subject.id) == col(Record.subject_id))
            .where(
                col(Record.restricted).is_(False),
                col(Subject.status) == SubjectStatus.ACTIVE,
                or_(*(r.window for r in self._record_sql().values())),
            )
        )

    def _window_state(self, row: Sequence[Any]) -> State:
        _, _, category, created_at, subject_created, closed_at, activity = row
        anchors = {
            "collected_at": created_at,
            "request_completed_at": created_at,
            "account_closed_at": closed_at,
            "last_activity_at": activity or subject_created,
        }
        return classify(self._bounds[category].rule, anchors, self.now)

    async def plan_record_window(
        self, session: AsyncSession, after: uuid.UUID | None, limit: int
    ) -> tuple[Tally, uuid.UUID | None]:
        """Month-end rows no bound settles, classified one by one (keyset batches)."""
        tally = Tally()
        if not self.has_windows:
            return tally, None
        query = self._window_query()
        if after is not None:
            query = query.where(col(Record.id) > after)
        rows = (await session.exec(query.order_by(col(Record.id)).limit(limit))).all()
        held = await self.held_among(session, (row[1] for row in rows))
        for row in rows:
            self._count_record(tally, row[2], self._window_state(row), row[1] in held)
        return tally, (rows[-1][0] if len(rows) == limit else None)

    async def record_space(self, session: AsyncSession, rows: int) -> tuple[int, int]:
        """(end of the physical range to walk, rows per unit): PostgreSQL pages, SQLite rowids."""
        if self.postgres:
            size: Any = literal_column("pg_relation_size('records') / current_setting('block_size')::int")
            pages = int((await session.exec(wide_select(size))).one())
            return pages + 1, max(1, math.ceil(rows / max(1, pages)))
        rowid: Any = literal_column("records.rowid")
        top = (await session.exec(wide_select(func.max(rowid)).select_from(Record))).one()
        return int(top or 0) + 1, 1

    def _range(self, lo: int | None = None, hi: int | None = None) -> ColumnElement[bool]:
        """The physical range [lo, hi); without values, parameters ``range_lo``/``range_hi`` to bind
        at execution (see _range_values), so a statement compiles once for every range."""
        values = self._range_values(lo, hi) if lo is not None and hi is not None else {}
        if self.postgres:
            position: Any = literal_column("records.ctid")
            return and_(
                position >= cast(bindparam("range_lo", values.get("range_lo"), type_=Tid()), Tid()),
                position < cast(bindparam("range_hi", values.get("range_hi"), type_=Tid()), Tid()),
            )
        rowid: Any = literal_column("records.rowid")
        return and_(
            rowid >= bindparam("range_lo", values.get("range_lo")),
            rowid < bindparam("range_hi", values.get("range_hi")),
        )

    def _range_values(self, lo: int, hi: int) -> dict[str, Any]:
        if self.postgres:
            return {"range_lo": (lo, 0), "range_hi": (hi, 0)}
        return {"range_lo": lo, "range_hi": hi}

    def _live_subject(self, condition: ColumnElement[bool]) -> ColumnElement[bool]:
        return (
            select(col(Subject.id))
            .where(
                col(Subject.id) == RECORDS.c.subject_id,
                col(Subject.status) == SubjectStatus.ACTIVE,
                condition,
            )
            .exists()
        )

    def _due_in(self, category: str) -> ColumnElement[bool]:
        """One category's records certainly due. A record that is not restricted belongs to an
        active subject (erasure deletes or restricts every record in its own transaction), so a
        rule anchored on the record alone needs no join; one anchored on the subject's events
        looks the subject up."""
        bound = self._bounds[category]
        due_ = rule_sql(bound, RECORD_ANCHORS, None).due
        return and_(
            RECORDS.c.category == category,
            self._live_subject(due_) if bound.reads_subject else due_,
        )

    def _delete_statement(self, category: str | None) -> Any:
        """DELETE of one category's due records in a physical range (``range_lo``/``range_hi``), or
        with ``category`` None of the listed window rows (``ids``). ``anonymise`` rules return what
        the aggregates need; ``delete`` rules return nothing (the row count is the count).

        Built once per run and per category; only the parameters change between batches. Whatever
        was read before, a held subject's records and restricted records stay. A Core statement:
        ORM row handling would cost more than the delete itself.
        """
        key = category or ""
        statement = self._statements.get(key)
        if statement is not None:
            return statement
        records = RECORDS
        if category is None:
            where = and_(records.c.id.in_(bindparam("ids", expanding=True)), self._live_subject(true()))
        else:
            where = and_(self._range(), self._due_in(category))
        statement = delete(records).where(
            where, records.c.restricted.is_(False), records.c.subject_id.not_in(self._held_ids())
        )
        if category is None or category in self._anonymised:
            statement = statement.returning(
                records.c.category,
                records.c.subject_id,
                records.c.id,
                records.c.kind,
                records.c.occurred_at,
                records.c.data_ct,
            )
        self._statements[key] = statement
        return statement

    @property
    def _anonymised(self) -> list[str]:
        return [key for key, b in self._bounds.items() if b.rule.action == "anonymise"]

    async def purge_record_range(self, session: AsyncSession, lo: int, hi: int, categories: Iterable[str]) -> Tally:
        """Delete (or anonymise) the due records of ``categories`` (those the plan found due) in one
        physical range, plus any month-end rows there that turn out to be due."""
        tally = Tally()
        returned: list[Any] = []
        span = self._range_values(lo, hi)
        for category in categories:
            result = await session.exec(self._delete_statement(category), params=span)
            if category in self._anonymised:
                returned += result.all()
            else:
                tally[record_key(category)].purged += int(result.rowcount or 0)
        if self.has_windows:
            window = (await session.exec(self._window_query().where(self._range(lo, hi)))).all()
            held = await self.held_among(session, (row[1] for row in window))
            ids = [row[0] for row in window if row[1] not in held and self._window_state(row) is State.DUE]
            if ids:
                for row in (await session.exec(self._delete_statement(None), params={"ids": ids})).all():
                    if row[0] in self._anonymised:
                        returned.append(row)
                    else:
                        tally[record_key(row[0])].purged += 1
        await self._tally_deleted(session, tally, returned)
        return tally

    async def _tally_deleted(self, session: AsyncSession, tally: Tally, rows: Sequence[Any]) -> None:
        """Count the anonymised rows into the aggregates (same transaction as their delete); audit."""
        counted: Counter[tuple[str, str, str, str]] = Counter()
        keys: dict[uuid.UUID, DataKey | None] = {}
        for category, subject_id, record_id, kind, occurred_at, data_ct in rows:
            tally[record_key(category)].anonymised += 1
            if subject_id not in keys:
                keys[subject_id] = await self._load_key(session, subject_id, PRIMARY)
            band = self._band(keys[subject_id], subject_id, record_id, data_ct)
            counted[(category, kind, occurred_at.astimezone(UTC).strftime("%Y-%m"), band)] += 1
        await self._aggregate(session, counted)
        by_rule = {key: c.purged + c.anonymised for key, c in tally.counts.items() if c.purged + c.anonymised}
        if by_rule:
            self._audit(session, "retention.records.purged", rules=by_rule)

    async def _load_key(self, session: AsyncSession, owner: uuid.UUID, purpose: str) -> DataKey | None:
        try:
            return await self.keys.load_key(session, owner, purpose)
        except (KeyShredded, KeyError_):
            return None

    @staticmethod
    def _band(key: DataKey | None, subject_id: uuid.UUID, record_id: uuid.UUID, blob: bytes | None) -> str:
        if key is None or blob is None:
            return ""
        try:
            plain = key.open(blob, Binding("records", subject_id, record_id, "data"))
            return amount_band(msgspec.json.decode(plain))
        except (DecryptionFailed, msgspec.DecodeError):
            return ""

    # -- 2. subjects -----------------------------------------------------------------------

    def _subject_candidates(self) -> ColumnElement[bool]:
        """A superset of the subjects a rule could act on (decide() settles it exactly): a subject
        -level period may be over, the account is closed, or the subject holds no profile field or
        identifier (then only its records can make it "nothing live"). A subject with a field still
        live can only lose fields, and only once some field's period may be over."""
        possible = [rule_sql(self._bounds[c], SUBJECT_ANCHORS, None).possible for c in self.subject_level_categories]
        no_fields = and_(
            *(getattr(Subject, f"{kind}_ct").is_(None) for kind in IDENTIFIERS),
            cast(col(Subject.profile_fields), String) == "{}",
        )
        return or_(col(Subject.account_closed_at).is_not(None), no_fields, *possible)

    async def _record_states(
        self, session: AsyncSession, subjects: Sequence[Subject]
    ) -> dict[uuid.UUID, dict[str, CategoryState]]:
        ids = [s.id for s in subjects]
        rules = list(self._record_sql().values())
        known = list(self._bounds)
        live = or_(col(Record.category).not_in(known), *(r.live for r in rules))
        duty = or_(*(r.duty for r in rules)) if rules else false()
        due_ = or_(*(r.due for r in rules)) if rules else false()
        window = or_(*(r.window for r in rules)) if rules else false()
        rows = await session.exec(
            wide_select(
                col(Record.subject_id),
                col(Record.category),
                func.sum(case((live, 1), else_=0)),
                func.sum(case((duty, 1), else_=0)),
                func.sum(case((due_, 1), else_=0)),
                func.max(case((duty, col(Record.created_at)), else_=None)),
                func.sum(case((window, 1), else_=0)),
            )
            .join(Subject, col(Subject.id) == col(Record.subject_id))
            .where(col(Record.subject_id).in_(ids), col(Record.restricted).is_(False))
            .group_by(col(Record.subject_id), col(Record.category))
        )
        states: dict[uuid.UUID, dict[str, CategoryState]] = {}
        windows = False
        for subject_id, category, n_live, n_duty, n_due, duty_anchor, n_window in rows.all():
            states.setdefault(subject_id, {})[category] = CategoryState(
                int(n_live or 0), int(n_duty or 0), int(n_due or 0), duty_anchor
            )
            windows = windows or bool(n_window)
        if windows:
            by_id = {s.id: s for s in subjects}
            window_rows = await session.exec(
                select(col(Record.subject_id), col(Record.category), col(Record.created_at)).where(
                    col(Record.subject_id).in_(ids), col(Record.restricted).is_(False), window
                )
            )
            for subject_id, category, created_at in window_rows.all():
                anchors = {**subject_anchors(by_id[subject_id]), "collected_at": created_at}
                anchors["request_completed_at"] = created_at
                found = classify(self._bounds[category].rule, anchors, self.now)
                old = states[subject_id][category]
                states[subject_id][category] = CategoryState(
                    old.live + (found is State.LIVE),
                    old.duty + (found is State.DUTY),
                    old.due + (found is State.DUE),
                    max(filter(None, (old.duty_anchor, created_at if found is State.DUTY else None)), default=None),
                )
        return states

    def _subject_categories(self, subject: Subject) -> set[str]:
        present = set(subject.profile_fields.values())
        for kind in IDENTIFIERS:
            category = self.policy.identifier_fields.get(kind)
            if category is not None and getattr(subject, f"{kind}_ct") is not None:
                present.add(category)
        return present

    def _has_live_field(self, subject: Subject) -> bool:
        anchors = subject_anchors(subject)
        for category in self._subject_categories(subject):
            bound = self._bounds.get(category)
            if bound is None or classify(bound.rule, anchors, self.now) is State.LIVE:
                return True
        return False

    def _duty_end(self, category: str, anchors: Mapping[str, datetime | None]) -> datetime | None:
        duty = self._bounds[category].rule.legal_duty
        return duty.ends_at(anchors) if duty is not None else None

    def decide(self, subject: Subject, records: Mapping[str, CategoryState], held: bool) -> SubjectDecision:
        anchors = subject_anchors(subject)
        field_states: dict[str, State] = {}
        live = any(stats.live for stats in records.values())
        ends: dict[str, list[datetime | None]] = {}
        for category in self._subject_categories(subject):
            bound = self._bounds.get(category)
            state = classify(bound.rule, anchors, self.now) if bound else State.LIVE
            live = live or state is State.LIVE
            if state is not State.LIVE and bound is not None:
                field_states[category] = state
            if state is State.DUTY:
                ends.setdefault(category, []).append(self._duty_end(category, anchors))
        for category, stats in records.items():
            if stats.duty:
                # Record-anchored duties: the latest record's end (to the end of its day) covers all.
                stamp = end_of_day(stats.duty_anchor) if stats.duty_anchor else None
                record_anchors = {**anchors, "collected_at": stamp, "request_completed_at": stamp}
                ends.setdefault(category, []).append(self._duty_end(category, record_anchors))
        keep: dict[str, Retention] = {}
        unknown_end = False
        for category, candidates in ends.items():
            duty = self._bounds[category].rule.legal_duty
            if duty is None or any(end is None for end in candidates):
                unknown_end = True
                continue
            keep[category] = Retention(duty.basis, max(end for end in candidates if end is not None))
        due_fields = [c for c, s in field_states.items() if s is State.DUE]
        # Something's period must be over: a subject holding nothing at all is left alone.
        over = bool(field_states) or any(stats.duty or stats.due for stats in records.values())
        live = live or not over
        action: str | None = None
        if not live and not unknown_end:
            action = "restrict" if keep else "erase"
        elif due_fields:
            action = "drop_fields"
        if held:
            action = None
        return SubjectDecision(held, not live, field_states, keep, action)

    def _count_subject(self, tally: Tally, decision: SubjectDecision) -> None:
        for category, state in decision.field_states.items():
            counts = tally[field_key(category)]
            counts.selected += 1
            if decision.held:
                counts.skipped_hold += 1
            elif state is State.DUTY:
                counts.skipped_legal_duty += 1
            elif self._bounds[category].rule.action == "anonymise":
                counts.anonymised += 1
            else:
                counts.purged += 1
        if decision.nothing_live:
            counts = tally[SUBJECTS_KEY]
            counts.selected += 1
            if decision.held:
                counts.skipped_hold += 1
            elif decision.action == "erase":
                counts.purged += 1
            elif decision.action == "restrict":
                counts.restricted += 1
            else:
                counts.skipped_legal_duty += 1

    async def subjects_batch(
        self, session: AsyncSession, after: uuid.UUID | None, limit: int, *, act: bool
    ) -> tuple[Tally, uuid.UUID | None]:
        """Decide (and with ``act``, carry out) what happens to the next ``limit`` candidate subjects."""
        tally = Tally()
        query = select(Subject).where(col(Subject.status) == SubjectStatus.ACTIVE, self._subject_candidates())
        if after is not None:
            query = query.where(col(Subject.id) > after)
        query = query.order_by(col(Subject.id)).limit(limit)
        if act and self.postgres:
            query = query.with_for_update()
        subjects = (await session.exec(query)).all()
        if not subjects:
            return tally, None
        held = await self.held_among(session, (s.id for s in subjects))
        # A subject with a live profile field or identifier can only lose fields: its records
        # (purged by step 1 on their own) do not change what happens to it.
        undecided = [s for s in subjects if not self._has_live_field(s)]
        states = await self._record_states(session, undecided) if undecided else {}
        for subject in subjects:
            decision = self.decide(subject, states.get(subject.id, {}), subject.id in held)
            if not act or decision.action is None:
                self._count_subject(tally, decision)
                continue
            outcome = Tally()
            self._count_subject(outcome, decision)
            try:
                async with session.begin_nested():
                    await self._apply(session, subject, decision)
            except (DataIntegrityError, KeyShredded, KeyError_, DecryptionFailed, IntegrityError) as exc:
                # One damaged subject must not stop the run; it is reported by id and error type.
                failed = Tally()
                for key, counts in outcome.counts.items():
                    acted = counts.purged + counts.anonymised + counts.restricted
                    failed[key].selected = counts.selected
                    failed[key].skipped_legal_duty = counts.skipped_legal_duty
                    if acted:
                        failed.error(key, subject.id, exc)
                outcome = failed
            tally.add(outcome)
        return tally, (subjects[-1].id if len(subjects) == limit else None)

    async def _apply(self, session: AsyncSession, subject: Subject, decision: SubjectDecision) -> None:
        due_fields = sorted(c for c, s in decision.field_states.items() if s is State.DUE)
        month = subject.created_at.astimezone(UTC).strftime("%Y-%m")
        await self._aggregate(
            session,
            Counter(
                {
                    (category, "profile", month, ""): 1
                    for category in due_fields
                    if self._bounds[category].rule.action == "anonymise"
                }
            ),
        )
        if decision.action in ("erase", "restrict"):
            service = SubjectService(session, self.keys, self.policy, self.clock, ACTOR, self._actor_request_id())
            await service.erase(subject.id, decision.keep)
            return
        key = await self.keys.load_key(session, subject.id, PRIMARY)
        binding = Binding(SUBJECTS, subject.id, None, "profile")
        profile: dict[str, Any] = {}
        if subject.profile_ct is not None:
            profile = msgspec.json.decode(key.open(subject.profile_ct, binding))
        fields = {name: category for name, category in subject.profile_fields.items() if category not in due_fields}
        subject.profile_ct = key.seal(msgspec.json.encode({k: v for k, v in profile.items() if k in fields}), binding)
        subject.profile_fields = fields
        for kind in IDENTIFIERS:
            if self.policy.identifier_fields.get(kind) in due_fields:
                setattr(subject, f"{kind}_bidx", None)
                setattr(subject, f"{kind}_ct", None)
        subject.updated_at = self.clock.now()
        session.add(subject)
        self._audit(session, "retention.subject.fields_purged", subject.id, categories=due_fields)

    # -- 3. data kept after erasure ----------------------------------------------------------

    async def restricted_records_batch(
        self, session: AsyncSession, after: uuid.UUID | None, limit: int, *, act: bool
    ) -> tuple[Tally, uuid.UUID | None]:
        tally = Tally()
        ended = and_(col(Record.restricted) == true(), col(Record.retain_until) <= self.now)
        query = select(col(Record.id), col(Record.subject_id)).where(ended)
        if after is not None:
            query = query.where(col(Record.id) > after)
        rows = (await session.exec(query.order_by(col(Record.id)).limit(limit))).all()
        held = await self.held_among(session, (row[1] for row in rows))
        counts = tally[RESTRICTED_RECORDS_KEY]
        counts.selected += len(rows)
        counts.skipped_hold += sum(1 for row in rows if row[1] in held)
        ids = [row[0] for row in rows if row[1] not in held]
        if act and ids:
            result = await session.exec(
                delete(Record)
                .where(col(Record.id).in_(ids), ended, col(Record.subject_id).not_in(self._held_ids()))
                .execution_options(synchronize_session=False)
            )
            deleted = int(result.rowcount or 0)
            counts.purged += deleted
            counts.deferred += len(ids) - deleted
            self._audit(session, "retention.restricted_records.purged", count=deleted)
        elif not act:
            counts.purged += len(ids)
        return tally, (rows[-1][0] if len(rows) == limit else None)

    async def restricted_subjects_batch(
        self, session: AsyncSession, after: uuid.UUID | None, limit: int, *, act: bool
    ) -> tuple[Tally, uuid.UUID | None]:
        tally = Tally()
        query = select(Subject).where(
            col(Subject.status) == SubjectStatus.RESTRICTED, col(Subject.retained_until) <= self.now
        )
        if after is not None:
            query = query.where(col(Subject.id) > after)
        query = query.order_by(col(Subject.id)).limit(limit)
        if act and self.postgres:
            query = query.with_for_update()
        subjects = (await session.exec(query)).all()
        held = await self.held_among(session, (s.id for s in subjects))
        counts = tally[RESTRICTED_SUBJECTS_KEY]
        for subject in subjects:
            counts.selected += 1
            if subject.id in held:
                counts.skipped_hold += 1
                continue
            later = (
                await session.exec(
                    select(func.count()).where(
                        col(Record.subject_id) == subject.id,
                        col(Record.restricted) == true(),
                        col(Record.retain_until) > self.now,
                    )
                )
            ).one()
            if later:
                counts.skipped_legal_duty += 1
                continue
            counts.purged += 1
            if act:
                await self._end_retention(session, subject)
        return tally, (subjects[-1].id if len(subjects) == limit else None)

    async def _end_retention(self, session: AsyncSession, subject: Subject) -> None:
        deleted = await session.exec(
            delete(Record)
            .where(col(Record.subject_id) == subject.id, col(Record.restricted) == true())
            .execution_options(synchronize_session=False)
        )
        destroyed = await self.keys.shred(session, subject.id)
        subject.retained_ct = None
        subject.profile_fields = {}
        subject.status = SubjectStatus.ERASED
        subject.updated_at = self.clock.now()
        session.add(subject)
        self._audit(
            session,
            "retention.subject.retention_ended",
            subject.id,
            keys_destroyed=destroyed,
            records_deleted=int(deleted.rowcount or 0),
        )

    # -- 4. privacy requests ---------------------------------------------------------------

    async def requests_batch(
        self, session: AsyncSession, after: uuid.UUID | None, limit: int, *, act: bool
    ) -> tuple[Tally, uuid.UUID | None]:
        tally = Tally()
        bound = self._bounds.get(REQUEST_CATEGORY)
        if bound is None:
            return tally, None
        possible = rule_sql(bound, REQUEST_ANCHORS, None).possible
        query = (
            select(
                PrivacyRequest,
                col(Subject.created_at),
                col(Subject.account_closed_at),
                col(Subject.last_activity_at),
            )
            .outerjoin(Subject, col(Subject.id) == col(PrivacyRequest.subject_id))
            .where(col(PrivacyRequest.completed_at).is_not(None), possible)
        )
        if after is not None:
            query = query.where(col(PrivacyRequest.id) > after)
        rows = (await session.exec(query.order_by(col(PrivacyRequest.id)).limit(limit))).all()
        held = await self.held_among(session, (r[0].subject_id for r in rows if r[0].subject_id is not None))
        counts = tally[REQUESTS_KEY]
        chosen: list[PrivacyRequest] = []
        for request, subject_created, closed_at, activity in rows:
            anchors = {
                "collected_at": request.received_at,
                "request_completed_at": request.completed_at,
                "account_closed_at": closed_at,
                "last_activity_at": activity or subject_created,
            }
            state = classify(bound.rule, anchors, self.now)
            if state is State.LIVE:
                continue
            counts.selected += 1
            if request.subject_id in held:
                counts.skipped_hold += 1
            elif state is State.DUTY:
                counts.skipped_legal_duty += 1
            else:
                chosen.append(request)
        anonymise = bound.rule.action == "anonymise"
        if act and chosen:
            ids = [request.id for request in chosen]
            if anonymise:
                await self._aggregate(
                    session,
                    Counter(
                        (REQUEST_CATEGORY, r.type, r.received_at.astimezone(UTC).strftime("%Y-%m"), "") for r in chosen
                    ),
                )
            await session.exec(
                delete(RequestTransition)
                .where(col(RequestTransition.request_id).in_(ids))
                .execution_options(synchronize_session=False)
            )
            await session.exec(
                delete(OutboxMessage)
                .where(col(OutboxMessage.owner_id).in_(ids))
                .execution_options(synchronize_session=False)
            )
            for request_id in ids:
                await self.keys.shred(session, request_id, REQUEST)
            result = await session.exec(
                delete(PrivacyRequest)
                .where(col(PrivacyRequest.id).in_(ids))
                .execution_options(synchronize_session=False)
            )
            self._audit(session, "retention.requests.purged", count=int(result.rowcount or 0), anonymised=anonymise)
        if anonymise:
            counts.anonymised += len(chosen)
        else:
            counts.purged += len(chosen)
        return tally, (rows[-1][0].id if len(rows) == limit else None)

    # -- 5. expired credentials, export links and old mail -----------------------------------

    def secret_condition(self, key: str) -> tuple[ColumnElement[bool], dict[str, None]]:
        cutoff = self.now - timedelta(hours=self.settings.retention_secret_grace_hours)
        if key == "request_codes":
            return and_(col(PrivacyRequest.code_hash).is_not(None), col(PrivacyRequest.code_expires_at) <= cutoff), {
                "code_hash": None
            }
        if key == "request_tokens":
            return and_(col(PrivacyRequest.token_hash).is_not(None), col(PrivacyRequest.token_expires_at) <= cutoff), {
                "token_hash": None
            }
        return and_(
            col(PrivacyRequest.export_expires_at).is_not(None), col(PrivacyRequest.export_expires_at) <= cutoff
        ), {"export_expires_at": None}

    async def secrets_batch(
        self, session: AsyncSession, key: str, after: uuid.UUID | None, limit: int, *, act: bool
    ) -> tuple[Tally, uuid.UUID | None]:
        """Clear one kind of expired secret. Holds do not apply: credentials are not kept data."""
        tally = Tally()
        condition, values = self.secret_condition(key)
        query = select(col(PrivacyRequest.id)).where(condition)
        if after is not None:
            query = query.where(col(PrivacyRequest.id) > after)
        ids = list((await session.exec(query.order_by(col(PrivacyRequest.id)).limit(limit))).all())
        counts = tally[key]
        counts.selected += len(ids)
        if act and ids:
            result = await session.exec(
                update(PrivacyRequest)
                .where(col(PrivacyRequest.id).in_(ids), condition)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            counts.purged += int(result.rowcount or 0)
            counts.deferred += len(ids) - int(result.rowcount or 0)
            self._audit(session, f"retention.{key}.cleared", count=int(result.rowcount or 0))
        elif not act:
            counts.purged += len(ids)
        return tally, (ids[-1] if len(ids) == limit else None)

    async def outbox_batch(
        self, session: AsyncSession, after: uuid.UUID | None, limit: int, *, act: bool
    ) -> tuple[Tally, uuid.UUID | None]:
        tally = Tally()
        cutoff = self.now - timedelta(days=self.settings.retention_outbox_max_age_days)
        old = and_(col(OutboxMessage.status).in_(["sent", "dead", "dropped"]), col(OutboxMessage.created_at) <= cutoff)
        query = select(col(OutboxMessage.id)).where(old)
        if after is not None:
            query = query.where(col(OutboxMessage.id) > after)
        ids = list((await session.exec(query.order_by(col(OutboxMessage.id)).limit(limit))).all())
        counts = tally[OUTBOX_KEY]
        counts.selected += len(ids)
        if act and ids:
            result = await session.exec(
                delete(OutboxMessage)
                .where(col(OutboxMessage.id).in_(ids), old)
                .execution_options(synchronize_session=False)
            )
            counts.purged += int(result.rowcount or 0)
            counts.deferred += len(ids) - int(result.rowcount or 0)
            self._audit(session, "retention.outbox.purged", count=int(result.rowcount or 0))
        elif not act:
            counts.purged += len(ids)
        return tally, (ids[-1] if len(ids) == limit else None)


# -- reading runs ---------------------------------------------------------------------------


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

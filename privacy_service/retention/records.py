"""Step 1 of a run: records. The plan counts what is due (one grouped scan, plus month-end rows one
by one); the purge deletes (or anonymises) due records one physical range at a time."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC
from typing import Any

import msgspec
from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    cast,
    delete,
    false,
    func,
    literal_column,
    or_,
    true,
)
from sqlalchemy.types import UserDefinedType
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.crypto.fields import Binding, DataKey, DecryptionFailed
from privacy_service.crypto.keys import KeyError_
from privacy_service.crypto.service import PRIMARY, KeyShredded
from privacy_service.retention.context import EngineBase
from privacy_service.retention.rules import (
    RECORD_ANCHORS,
    RECORDS,
    State,
    classify,
    record_anchors,
    rule_sql,
    wide_select,
)
from privacy_service.retention.tally import (
    Tally,
    record_key,
)
from privacy_service.subjects.models import Record, Subject, SubjectStatus


class Tid(UserDefinedType[Any]):
    """PostgreSQL's physical row address; asyncpg binds it from a (page, item) tuple."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "tid"

    def literal_processor(self, dialect: Any) -> Callable[[Any], str]:
        return lambda value: f"'({int(value[0])},{int(value[1])})'"


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


class RecordSteps(EngineBase):
    __slots__ = ()

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

    async def category_order(self, session: AsyncSession) -> dict[str, float]:
        """How common each category is, as far as is known without reading the table: on PostgreSQL
        the planner's statistics (``pg_stats``, kept by ANALYZE/autovacuum), elsewhere nothing. Only
        the order of :meth:`plan_records`' tests depends on it, never a count.

        On PostgreSQL the same round trip turns JIT off for the rest of the transaction, for the
        plan's scan that follows: its cost estimate passes ``jit_above_cost`` at ~1M rows, and
        compiling its expressions took ~90 ms of CPU there and saved less (measured 10% slower)."""
        if not self.postgres:
            return {}
        jit_off: Any = literal_column("set_config('jit', 'off', true)")
        stats: Any = literal_column(
            "(SELECT most_common_vals::text::text[] FROM pg_stats WHERE schemaname = current_schema() "
            "AND tablename = 'records' AND attname = 'category' LIMIT 1)"
        )
        freqs: Any = literal_column(
            "(SELECT most_common_freqs FROM pg_stats WHERE schemaname = current_schema() "
            "AND tablename = 'records' AND attname = 'category' LIMIT 1)"
        )
        _, values, frequencies = (await session.exec(wide_select(jit_off, stats, freqs))).one()
        return dict(zip(values or [], frequencies or [], strict=False))

    async def plan_records(
        self, session: AsyncSession, category_rows: Mapping[str, float]
    ) -> tuple[Tally, dict[str, int]]:
        """Counts for every record a bound settles, and the records per category (every record,
        restricted or not, for the report's frame and the thresholds): one scan for both. Window
        rows are counted separately (:meth:`plan_record_window`).

        The scan tests every row against the rules' conditions, which dominates its cost at scale:
        the rules are tested most common category first (``category_rows``, from
        :meth:`category_order`), so a typical row settles on the first term; the legal-duty test first
        asks whether the row's category has a duty at all (one hashed lookup). Each row is classified
        once into (category, selected, held) groups, so no condition is evaluated twice."""
        tally = Tally()
        by_key = self._record_sql()
        order = sorted(by_key, key=lambda key: (-category_rows.get(key, 0), key))
        held = col(Record.subject_id).in_(self._held_ids())
        selected = (
            and_(
                col(Record.restricted).is_(False),
                col(Subject.status) == SubjectStatus.ACTIVE,
                or_(*(by_key[key].selected for key in order)),
            )
            if by_key
            else false()
        )
        with_duty = [key for key in order if self._bounds[key].rule.legal_duty is not None]
        duty = (
            and_(col(Record.category).in_(with_duty), or_(*(by_key[key].duty for key in with_duty)))
            if with_duty
            else false()
        )
        # An outer join: every record counts in the totals, whatever its subject's state.
        rows = await session.exec(
            wide_select(
                col(Record.category),
                selected.label("plan_selected"),
                held.label("plan_held"),
                func.count(),
                func.sum(case((duty, 1), else_=0)),
            )
            .select_from(Record)
            .outerjoin(Subject, col(Subject.id) == col(Record.subject_id))
            .group_by(col(Record.category), literal_column("plan_selected"), literal_column("plan_held"))
        )
        totals: Counter[str] = Counter()
        for category, is_selected, is_held, n, n_duty in rows.all():
            totals[category] += int(n)
            if not is_selected:
                continue
            counts = tally[record_key(category)]
            counts.selected += int(n)
            if is_held:
                counts.skipped_hold += int(n)
                continue
            counts.skipped_legal_duty += int(n_duty or 0)
            acting = int(n) - int(n_duty or 0)
            if self._record_action(category) == "anonymise":
                counts.anonymised += acting
            else:
                counts.purged += acting
        return tally, dict(totals)

    def _window_query(self) -> Any:
        return (
            wide_select(
                col(Record.id),
                col(Record.subject_id),
                col(Record.category),
                col(Record.occurred_at),
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
        _, _, category, occurred_at, stored_at, subject_created, closed_at, activity = row
        subject = {"account_closed_at": closed_at, "last_activity_at": activity or subject_created}
        return classify(self._bounds[category].rule, record_anchors(occurred_at, stored_at, subject), self.now)

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

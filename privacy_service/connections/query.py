"""Reading and masking a connected database along a traversal plan (SQLAlchemy Core, any dialect).

Every statement is built with SQLAlchemy Core from the dataset: table and column names are quoted
identifiers (whatever characters they hold), values are bound parameters (never SQL text). Each step
of the plan runs one ``SELECT ... WHERE f IN (...) OR g IN (...)`` per batch of key values (on
PostgreSQL ``f = ANY(:values)``, one array parameter), whatever the number of rows that fed it (no
query per row), and the whole walk stops with :class:`TooManyRows` beyond ``row_limit`` rows.

An e-mail identity is compared case-insensitively (the service keeps addresses lower-cased; a
connected database may hold them as typed): ``lower(f)`` against the lower-cased address on
PostgreSQL and SQLite (index ``lower(f)`` there), the column's collation on MySQL/MariaDB (the default
``*_ci`` collations ignore case; a ``*_bin`` one compares exactly). Other identities, and values
carried along references, are compared exactly.

Lookup values are cast to the field's Fides ``data_type`` first (an identity ``"42"`` looks up an
``integer`` key as 42; a value that does not read as the type, or a string holding NUL, matches nothing).

:func:`mask` finds the rows first, then writes, the last collections of the plan first (the rows
that lead to the others are changed last). It writes on the connection it is given: run it in one
transaction (``engine.begin()``), so a crash leaves all of it or nothing. Running it twice gives the
same state (see :mod:`privacy_service.connections.masking`): rows already masked are not written.

Errors of the database (SQLAlchemy's ``DBAPIError``) are not caught here; their text holds the
statement, whose values are bound parameters (engines are created with ``hide_parameters=True``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fideslang.models import Dataset
from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, and_, any_, func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import bindparam
from sqlalchemy.types import NullType, TypeEngine

from privacy_service.connections.datasets import collection, field_meta, read_only_fields
from privacy_service.connections.graph import FieldSource, IdentitySource, TraversalPlan
from privacy_service.connections.masking import (
    MaskingRefused,
    MaskSpec,
    already_masked,
    base_type,
    check_spec,
    masked_value,
)
from privacy_service.errors import DomainError

BATCH = 500
ROW_LIMIT = 10_000
_INTEGER = re.compile(r"[+-]?\d{1,18}")
_TYPES: Mapping[str | None, type[TypeEngine[Any]]] = {
    "string": String,
    "integer": Integer,
    "float": Float,
    "boolean": Boolean,
}
_CACHE_SIZE = 256
# Fields an e-mail identity is compared with case-insensitively (a string or no declared type).
_FOLDABLE = (None, "string")
# Strategies whose masked value does not depend on the row (see masking.masked_value).
_CONSTANT = frozenset({"null_rewrite", "string_rewrite"})


class TooManyRows(DomainError):
    status = 422
    slug = "too-many-rows"
    title = "A connected database holds more rows for this request than the limit"

    def __init__(self, collection: str, limit: int) -> None:
        super().__init__(f"collection {collection}: more than {limit} rows for this request")
        self.collection = collection
        self.limit = limit


@dataclass(slots=True)
class Found:
    """Rows per collection (every collection of the plan, maybe empty) and the statements it took."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    queries: int = 0

    def counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.rows.items()}


# -- tables --------------------------------------------------------------------------------------

_tables: dict[tuple[int, str], tuple[Dataset, Table]] = {}


def table_for(dataset: Dataset, name: str) -> Table:
    """The collection as a SQLAlchemy table of its dataset fields (no reflection round trip).

    Every identifier is quoted. A PostgreSQL schema comes from the dataset's
    ``fides_meta.namespace.schema`` when it has one.
    """
    key = (id(dataset), name)
    cached = _tables.get(key)
    if cached is not None and cached[0] is dataset:
        return cached[1]
    found = collection(dataset, name)
    columns = []
    for item in found.fields:
        data_type = base_type(field_meta(item).data_type)
        type_: TypeEngine[Any] = _TYPES[data_type]() if data_type in _TYPES else NullType()
        columns.append(Column(item.name, type_, key=item.name, quote=True))
    namespace = dataset.fides_meta.namespace if dataset.fides_meta else None
    schema = namespace.get("schema") if isinstance(namespace, dict) else None
    table = Table(name, MetaData(), *columns, quote=True, schema=schema if isinstance(schema, str) else None)
    if len(_tables) >= _CACHE_SIZE:
        _tables.pop(next(iter(_tables)))
    _tables[key] = (dataset, table)
    return table


def _data_types(dataset: Dataset, name: str) -> dict[str, str | None]:
    return {item.name: base_type(field_meta(item).data_type) for item in collection(dataset, name).fields}


def _cast(values: Iterable[Any], data_type: str | None) -> list[Any]:
    """Distinct lookup values of the field's type; values that cannot be that type are dropped."""
    out: dict[Any, None] = {}
    for value in values:
        cast = _cast_one(value, data_type)
        if cast is None:
            continue
        try:
            out[cast] = None
        except TypeError:  # unhashable (a JSON value from a driver): it names no key
            continue
    return list(out)


def _cast_one(value: Any, data_type: str | None) -> Any:
    if value is None or (isinstance(value, str) and "\x00" in value):
        return None  # PostgreSQL text cannot hold NUL: such a value names no row on any database
    if data_type == "integer":
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value) if value.is_integer() else None
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            return int(value)
        return None
    if data_type == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            number = float(value) if isinstance(value, str) else math.nan
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    if data_type == "string":
        return value if isinstance(value, str) else str(value)
    if data_type == "boolean":
        return value if isinstance(value, bool) else None
    return value


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _row_key(row: Mapping[str, Any], key: Sequence[str]) -> Any:
    if len(key) == 1:  # the usual case, once or twice per row: no generator
        return (row.get(key[0]),)
    if key:
        return tuple([row.get(name) for name in key])
    return tuple((name, repr(value)) for name, value in sorted(row.items()))


# -- walking --------------------------------------------------------------------------------------


async def _walk(
    conn: AsyncConnection,
    dataset: Dataset,
    plan: TraversalPlan,
    identities: Mapping[str, Sequence[str]],
    *,
    wanted: Mapping[str, Sequence[str]] | None,
    batch: int,
    row_limit: int,
) -> Found:
    if batch < 1 or row_limit < 0:
        raise ValueError("batch must be >= 1 and row_limit >= 0")
    found = Found()
    total = 0
    dialect = conn.dialect.name
    # MySQL/MariaDB compare by the column's collation (the default *_ci ones ignore case, and lower()
    # would keep the index from being used); PostgreSQL and SQLite compare lower(column).
    fold = dialect != "mysql"
    for step in plan.steps:
        table = table_for(dataset, step.collection)
        types = _data_types(dataset, step.collection)
        # (field, folded) -> values; folded: an e-mail identity compared case-insensitively.
        values: dict[tuple[str, bool], list[Any]] = {}
        for lookup in step.lookups:
            source = lookup.source
            raw: Iterable[Any] = ()
            folded = False
            if isinstance(source, IdentitySource):
                given = identities.get(source.kind, ())
                raw = [given] if isinstance(given, str) else given  # one value given as a plain string
                folded = fold and source.kind == "email" and types[lookup.field] in _FOLDABLE
            elif isinstance(source, FieldSource):
                raw = (row.get(source.field) for row in found.rows.get(source.collection, ()))
            values.setdefault((lookup.field, folded), []).extend(raw)
        pairs = [
            ((name, folded), value.lower() if folded and isinstance(value, str) else value)
            for (name, folded), raw_values in values.items()
            for value in _cast(raw_values, types[name])
        ]
        names = [c.key for c in table.columns]
        if wanted is not None and step.primary_key:
            # Without a key a row is told apart by all its fields (and a SELECT needs a column).
            names = list(wanted[step.collection])
        selected = [table.c[name] for name in dict.fromkeys([*step.primary_key, *names])]
        rows: list[dict[str, Any]] = []
        seen: set[Any] = set()
        for chunk in _chunks(pairs, batch):
            by_field: dict[tuple[str, bool], list[Any]] = {}
            for slot, value in chunk:
                by_field.setdefault(slot, []).append(value)
            condition = or_(
                *(
                    _in(func.lower(table.c[name], type_=String()) if folded else table.c[name], items, dialect)
                    for (name, folded), items in by_field.items()
                )
            )
            limit = row_limit - total + 1
            result = await conn.execute(select(*selected).where(condition).limit(limit))
            found.queries += 1
            fetched = 0
            columns = list(result.keys())
            for record in result:  # plain tuples zipped with the column names once (no RowMapping per row)
                fetched += 1
                row = dict(zip(columns, record, strict=True))
                key = _row_key(row, step.primary_key)
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
                    total += 1
            # As many rows as the LIMIT let through: more may be left behind (rows found twice took
            # places), so the subject holds more than row_limit rows or may: stop rather than miss some.
            if total > row_limit or fetched >= limit:
                raise TooManyRows(step.collection, row_limit)
        found.rows[step.collection] = _sorted(rows, step.primary_key)
    return found


def _sorted(rows: list[dict[str, Any]], key: Sequence[str]) -> list[dict[str, Any]]:
    if not key:
        return rows
    try:
        return sorted(rows, key=lambda row: tuple(row[name] for name in key))
    except TypeError:  # NULL or mixed types in a key: keep the database's order
        return rows


async def collect(
    conn: AsyncConnection,
    dataset: Dataset,
    plan: TraversalPlan,
    identities: Mapping[str, Sequence[str]],
    *,
    batch: int = BATCH,
    row_limit: int = ROW_LIMIT,
) -> Found:
    """Every row the identities lead to, with every field of the dataset, per collection."""
    return await _walk(conn, dataset, plan, identities, wanted=None, batch=batch, row_limit=row_limit)


async def count(
    conn: AsyncConnection,
    dataset: Dataset,
    plan: TraversalPlan,
    identities: Mapping[str, Sequence[str]],
    *,
    batch: int = BATCH,
    row_limit: int = ROW_LIMIT,
) -> dict[str, int]:
    """How many rows each collection holds for the identities (the dry run of an erasure); reads keys only."""
    wanted = {step.collection: sorted(plan.key_fields(step.collection)) for step in plan.steps}
    found = await _walk(conn, dataset, plan, identities, wanted=wanted, batch=batch, row_limit=row_limit)
    return found.counts()


# -- masking --------------------------------------------------------------------------------------


def _check_targets(
    dataset: Dataset, targets: Mapping[str, Mapping[str, MaskSpec]], secret: bytes
) -> dict[str, dict[str, MaskSpec]]:
    checked: dict[str, dict[str, MaskSpec]] = {}
    for name, specs in targets.items():
        if not specs:
            continue
        try:
            found = collection(dataset, name)
        except KeyError:
            raise MaskingRefused("a masking names a collection the dataset does not have") from None
        fields = {item.name: item for item in found.fields}
        read_only = read_only_fields(found)
        key = [item.name for item in found.fields if field_meta(item).primary_key]
        if not key:
            raise MaskingRefused(f"{name}: no primary_key field, so its rows cannot be masked")
        deleting = any(spec.strategy == "delete_row" for spec in specs.values())
        if deleting and read_only:
            raise MaskingRefused(f"{name}: a row holding read_only fields is never deleted")
        for field_name, spec in specs.items():
            item = fields.get(field_name)
            if item is None:
                raise MaskingRefused(f"{name}: a masking names a field the dataset does not have")
            where = f"{name}.{field_name}"
            if field_name in read_only:
                raise MaskingRefused(f"{where} is read_only and is never written")
            if field_name in key and not deleting:
                raise MaskingRefused(f"{where} is the primary key, which is never rewritten")
            meta = field_meta(item)
            check_spec(spec, data_type=meta.data_type, length=meta.length, secret=secret, where=where)
        checked[name] = dict(specs)
    return checked


async def mask(
    conn: AsyncConnection,
    dataset: Dataset,
    plan: TraversalPlan,
    identities: Mapping[str, Sequence[str]],
    targets: Mapping[str, Mapping[str, MaskSpec]],
    *,
    secret: bytes = b"",
    batch: int = BATCH,
    row_limit: int = ROW_LIMIT,
    seen: dict[str, int] | None = None,
) -> dict[str, int]:
    """Mask (or delete) the rows the identities lead to; rows written per targeted collection.
    ``seen``, if given, receives the subject's rows found per collection of the plan (written or not).

    ``targets``: collection -> field -> :class:`MaskSpec`. Refused before anything is written
    (:class:`MaskingRefused`): a ``read_only`` field or collection, a primary key, a collection
    without one, a strategy the field's type cannot hold, a secret missing.
    """
    checked = _check_targets(dataset, targets, secret)
    in_plan = {step.collection for step in plan.steps}
    wanted = {
        step.collection: sorted(plan.key_fields(step.collection) | set(checked.get(step.collection, {})))
        for step in plan.steps
    }
    found = await _walk(conn, dataset, plan, identities, wanted=wanted, batch=batch, row_limit=row_limit)
    if seen is not None:
        seen.update(found.counts())
    touched = {name: 0 for name in checked if name in in_plan}
    dialect = conn.dialect.name
    for step in reversed(plan.steps):
        specs = checked.get(step.collection)
        rows = found.rows.get(step.collection, [])
        if not specs or not rows:
            continue
        table = table_for(dataset, step.collection)
        key = step.primary_key
        if any(spec.strategy == "delete_row" for spec in specs.values()):
            for chunk in _chunks([_row_key(row, key) for row in rows], batch):
                await conn.execute(table.delete().where(_key_in(table, key, chunk, dialect)))
            touched[step.collection] = len(rows)
            continue
        meta = {item.name: field_meta(item) for item in collection(dataset, step.collection).fields}
        # null_rewrite and string_rewrite write one value whatever the row: computed once per field.
        constant = {
            name: masked_value(spec, None, data_type=meta[name].data_type, length=meta[name].length, secret=secret)
            for name, spec in specs.items()
            if spec.strategy in _CONSTANT
        }
        own = {name: spec for name, spec in specs.items() if name not in constant}
        changes: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        for row in rows:
            change = {name: new for name, new in constant.items() if row.get(name) != new}
            if own:
                row_id = _row_key(row, key)
                for name, spec in own.items():
                    current = row.get(name)
                    new = masked_value(
                        spec,
                        current,
                        data_type=meta[name].data_type,
                        length=meta[name].length,
                        secret=secret,
                        # Only random_string_rewrite derives its value from the row's name.
                        row_key=_row_name(dataset.fides_key, step.collection, name, row_id)
                        if spec.strategy == "random_string_rewrite"
                        else "",
                    )
                    if not already_masked(spec, current, new, length=meta[name].length):
                        change[name] = new
            if change:
                changes.append((_row_key(row, key), change))
        await _write(conn, table, key, changes, batch, dialect)
        touched[step.collection] = len(changes)
    return touched


def _row_name(dataset: str, collection_name: str, field_name: str, row_id: tuple[Any, ...]) -> str:
    return json.dumps([dataset, collection_name, field_name, [repr(part) for part in row_id]])


def _in(column: ColumnElement[Any], values: Sequence[Any], dialect: str) -> ColumnElement[bool]:
    """``column IN (...)``; on PostgreSQL ``column = ANY(:values)`` with one array parameter, so the
    statement's text is the same whatever the number of values (compiled and prepared once, not one
    bound parameter per value)."""
    if dialect == "postgresql":
        type_ = None if isinstance(column.type, NullType) else ARRAY(column.type)
        return column == any_(bindparam(None, list(values), type_=type_))
    return column.in_(values)


def _key_in(table: Table, key: Sequence[str], ids: Sequence[tuple[Any, ...]], dialect: str) -> ColumnElement[bool]:
    if len(key) == 1:
        return _in(table.c[key[0]], [row_id[0] for row_id in ids], dialect)
    return tuple_(*(table.c[name] for name in key)).in_(list(ids))


async def _write(
    conn: AsyncConnection,
    table: Table,
    key: Sequence[str],
    changes: list[tuple[tuple[Any, ...], dict[str, Any]]],
    batch: int,
    dialect: str,
) -> None:
    """The same new values for many rows: one UPDATE per batch of keys; values of their own (hash,
    random string): one executemany per batch and set of fields."""
    shared: dict[tuple[tuple[str, Any], ...], list[tuple[Any, ...]]] = {}
    for row_id, change in changes:
        shared.setdefault(tuple(sorted(change.items())), []).append(row_id)
    single: dict[tuple[str, ...], list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}
    for values, ids in shared.items():
        if len(ids) == 1:
            single.setdefault(tuple(name for name, _ in values), []).append((ids[0], dict(values)))
            continue
        for chunk in _chunks(ids, batch):
            await conn.execute(table.update().where(_key_in(table, key, chunk, dialect)).values(dict(values)))
    for names, items in single.items():
        condition = and_(*(table.c[name] == bindparam(f"_mask_key_{index}") for index, name in enumerate(key)))
        statement = (
            table.update()
            .where(condition)
            .values({name: bindparam(f"_mask_value_{i}") for i, name in enumerate(names)})
        )
        for chunk in _chunks(items, batch):
            params = [
                {
                    **{f"_mask_key_{index}": part for index, part in enumerate(row_id)},
                    **{f"_mask_value_{i}": change[name] for i, name in enumerate(names)},
                }
                for row_id, change in chunk
            ]
            await conn.execute(statement, params)

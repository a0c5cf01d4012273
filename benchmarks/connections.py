"""Connected databases (issue 18): access across 8 collections, and an erasure of 1,000 rows.

A database of its own on the bench's PostgreSQL server holds a wallet's operations tables, 8
collections described by a Fides dataset (built here, references in both directions), with
``PRIVACY_BENCH_CONN_ROWS`` rows in all (default 1,000,000: 12 rows per customer, loaded with
``generate_series``), every key column indexed (the e-mail columns also as ``lower(email)``: the
service compares an e-mail identity case-insensitively; the hand-written baseline keeps its exact
``email = :email`` on the plain index).

Access: the service's path for one request: the traversal plan (cached per dataset), ``query.collect``
from the e-mail identity (one parameterised query per collection per batch of keys), and the fields
the policy lets a subject see. Baseline: the same 8 queries written by hand (``text()``), in the same
order, on the same engine. Per-request latency, interleaved, a random customer each call; the ratio is
baseline p95 / measured p95 (>= 0.5 means the service takes at most twice the hand-written time).

Erasure: one customer holding 1,000 rows (its row and 999 logins), ``query.mask`` with
the masking the shipped policy gives (null_rewrite of the erasable fields), in a transaction rolled back
after each run so every run writes the same rows; baseline: the same queries written by hand (the
keys along the references, then UPDATE of the same fields by key), rolled back the same way. The
UPDATEs by customer id alone (no traversal: the schema known by heart) are reported beside it.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fideslang.models import Dataset
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from benchmarks.common import (
    BenchContext,
    Figure,
    _admin,
    _env_int,
    _with_database,
    interleaved_latency,
    percentiles,
    progress,
    verdict,
)
from privacy_service.connections.graph import build_plan
from privacy_service.connections.masking import MaskSpec
from privacy_service.connections.query import collect, mask
from privacy_service.connections.tasks import Keep, erasure_plan, visible_fields
from privacy_service.dsr.deadlines import build_deadline_rules

ROWS_PER_CUSTOMER = 12  # 1 customer, 1 address, 2 orders, 2 invoices, 1 card, 3 logins, 1 ticket, 1 newsletter
ACCESS_TARGET_MS = 200.0
ACCESS_RATIO_TARGET = 0.5
ERASE_TARGET_MS = 1000.0
HEAVY_ROWS = 1000
HEAVY_ID = 0  # the customer holding HEAVY_ROWS rows
# The heavy customer's rows in each collection, for the hand-written UPDATEs.
HEAVY_ROWS_OF = {
    "customers": "id = 0",
    "addresses": "customer_id = 0",
    "orders": "customer_id = 0",
    "invoices": "order_id IN (SELECT id FROM orders WHERE customer_id = 0)",
    "payment_cards": "customer_id = 0",
    "logins": "customer_id = 0",
    "tickets": "customer_id = 0",
    "newsletter": "email = 'heavy@example.com'",
}

SCHEMA = """
CREATE TABLE customers (id bigint PRIMARY KEY, email text, phone text, name text, created_at timestamptz);
CREATE TABLE addresses (id bigint PRIMARY KEY, customer_id bigint NOT NULL, street text, city text);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, total_cents integer);
CREATE TABLE invoices (id bigint PRIMARY KEY, order_id bigint NOT NULL, billing_name text);
CREATE TABLE payment_cards (id bigint PRIMARY KEY, customer_id bigint NOT NULL, ccn text);
CREATE TABLE logins (id bigint PRIMARY KEY, customer_id bigint NOT NULL, ip_address text, user_agent text);
CREATE TABLE tickets (id bigint PRIMARY KEY, customer_id bigint NOT NULL, subject text);
CREATE TABLE newsletter (id bigint PRIMARY KEY, email text, topics text);
"""
# Row ids: customer c's rows are c*k+i, so every table's ids are disjoint ranges of one formula.
LOAD = """
INSERT INTO customers SELECT c, 'c' || c || '@example.com', '+1555' || lpad(c::text, 7, '0'), 'Customer ' || c, now()
  FROM generate_series(1, :n) c;
INSERT INTO addresses SELECT c, c, c || ' Main Street', 'Dublin' FROM generate_series(1, :n) c;
INSERT INTO orders SELECT c * 2 + i, c, 100 * i FROM generate_series(1, :n) c, generate_series(0, 1) i;
INSERT INTO invoices SELECT o.id, o.id, 'Customer ' || o.customer_id FROM orders o;
INSERT INTO payment_cards SELECT c, c, '4111' || lpad(c::text, 12, '0') FROM generate_series(1, :n) c;
INSERT INTO logins SELECT c * 3 + i, c, '10.0.' || (c % 250) || '.' || i, 'agent ' || i
  FROM generate_series(1, :n) c, generate_series(0, 2) i;
INSERT INTO tickets SELECT c, c, 'ticket of ' || c FROM generate_series(1, :n) c;
INSERT INTO newsletter SELECT c, 'c' || c || '@example.com', 'news' FROM generate_series(1, :n) c;
"""
# The heavy customer (id 0): its row and 999 logins, every one of them written by the erasure (the
# e-mail and phone, the IP address and user agent are erasable; nothing of it is under a legal duty).
HEAVY = """
INSERT INTO customers VALUES (0, 'heavy@example.com', '+15550000000', NULL, now());
INSERT INTO logins SELECT -i, 0, '10.9.9.9', 'heavy agent' FROM generate_series(1, 999) i;
"""
INDEXES = """
CREATE INDEX ON customers (email);
CREATE INDEX ON addresses (customer_id);
CREATE INDEX ON orders (customer_id);
CREATE INDEX ON invoices (order_id);
CREATE INDEX ON payment_cards (customer_id);
CREATE INDEX ON logins (customer_id);
CREATE INDEX ON tickets (customer_id);
CREATE INDEX ON newsletter (email);
CREATE INDEX ON customers (lower(email));
CREATE INDEX ON newsletter (lower(email));
"""


def _field(name: str, categories: list[str], **meta: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"name": name, "data_categories": categories}
    if meta:
        found["fides_meta"] = meta
    return found


def _child(name: str, parent_field: str, fields: list[dict[str, Any]], parent: str = "customers.id") -> dict[str, Any]:
    reference = {"dataset": "bench_ops", "field": parent, "direction": "from"}
    return {
        "name": name,
        "fields": [
            _field("id", ["system.operations"], primary_key=True, data_type="integer"),
            _field(parent_field, ["user.unique_id"], references=[reference], data_type="integer"),
            *fields,
        ],
    }


def dataset() -> Dataset:
    """The bench database's Fides dataset: 8 collections, references from customers and orders."""
    return Dataset(
        fides_key="bench_ops",
        name="Bench operations database",
        collections=[
            {
                "name": "customers",
                "fields": [
                    _field("id", ["user.unique_id"], primary_key=True, data_type="integer"),
                    _field("email", ["user.contact.email"], identity="email", data_type="string"),
                    _field("phone", ["user.contact.phone_number"]),
                    _field("name", ["user.name"]),
                    _field("created_at", ["system.operations"]),
                ],
            },
            _child(
                "addresses",
                "customer_id",
                [_field("street", ["user.contact.address.street"]), _field("city", ["user.contact.address.city"])],
            ),
            _child("orders", "customer_id", [_field("total_cents", ["user.financial.transaction"])]),
            _child("invoices", "order_id", [_field("billing_name", ["user.name"])], parent="orders.id"),
            _child("payment_cards", "customer_id", [_field("ccn", ["user.financial.account_number"])]),
            _child(
                "logins",
                "customer_id",
                [_field("ip_address", ["user.device.ip_address"]), _field("user_agent", ["user.device"])],
            ),
            _child("tickets", "customer_id", [_field("subject", ["user.content"])]),
            {
                "name": "newsletter",
                "fields": [
                    _field("id", ["system.operations"], primary_key=True, data_type="integer"),
                    _field("email", ["user.contact.email"], identity="email", data_type="string"),
                    _field("topics", ["user.behavior"]),
                ],
            },
        ],
    )


HAND_ACCESS = (
    ("customers", "SELECT id, email, phone, name FROM customers WHERE email = :email"),
    ("addresses", "SELECT id, customer_id, street, city FROM addresses WHERE customer_id = ANY(:ids)"),
    ("orders", "SELECT id, customer_id, total_cents FROM orders WHERE customer_id = ANY(:ids)"),
    ("invoices", "SELECT id, order_id, billing_name FROM invoices WHERE order_id = ANY(:orders)"),
    ("payment_cards", "SELECT id, customer_id, ccn FROM payment_cards WHERE customer_id = ANY(:ids)"),
    ("logins", "SELECT id, customer_id, ip_address, user_agent FROM logins WHERE customer_id = ANY(:ids)"),
    ("tickets", "SELECT id, customer_id, subject FROM tickets WHERE customer_id = ANY(:ids)"),
    ("newsletter", "SELECT id, email, topics FROM newsletter WHERE email = :email"),
)


async def _hand_access(engine: AsyncEngine, email: str) -> int:
    found = 0
    async with engine.connect() as conn:
        ids: list[int] = []
        orders: list[int] = []
        for name, sql in HAND_ACCESS:
            rows = (await conn.execute(text(sql), {"email": email, "ids": ids, "orders": orders})).all()
            found += len(rows)
            if name == "customers":
                ids = [row[0] for row in rows]
            elif name == "orders":
                orders = [row[0] for row in rows]
    return found


async def _load(engine: AsyncEngine, customers: int) -> float:
    started = time.perf_counter()
    async with engine.begin() as conn:
        for statement in filter(str.strip, SCHEMA.split(";")):
            await conn.execute(text(statement))
        for statement in filter(str.strip, LOAD.split(";")):
            await conn.execute(text(statement), {"n": customers})
        for statement in filter(str.strip, HEAVY.split(";")):
            await conn.execute(text(statement))
        for statement in filter(str.strip, INDEXES.split(";")):
            await conn.execute(text(statement))
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))
    return time.perf_counter() - started


async def _timed(runs: int, op: Callable[[], Awaitable[Any]]) -> list[float]:
    times: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        await op()
        times.append(time.perf_counter() - started)
    return times


async def connected_databases(ctx: BenchContext) -> list[Figure]:
    rows = _env_int("PRIVACY_BENCH_CONN_ROWS", 1_000_000, minimum=ROWS_PER_CUSTOMER * 10)
    samples = _env_int("PRIVACY_BENCH_CONN_SAMPLES", 300)
    erase_runs = _env_int("PRIVACY_BENCH_CONN_ERASE_RUNS", 9)
    customers = (rows - HEAVY_ROWS) // ROWS_PER_CUSTOMER
    name = f"ps_bench_conn_{os.getpid()}"
    await _admin(ctx.config.postgres_url, f'CREATE DATABASE "{name}"')
    engine = create_async_engine(_with_database(ctx.config.postgres_url, name), pool_size=4)
    try:
        seconds = await _load(engine, customers)
        total = customers * ROWS_PER_CUSTOMER + HEAVY_ROWS
        progress.log(f"connected database: {total:,} rows in 8 collections loaded in {seconds:.1f} s")
        described = dataset()
        policy = ctx.runtime.policy
        shown = visible_fields(described, policy)
        plan = build_plan(described, ["email"])
        picks = random.Random(18)
        emails = [f"c{picks.randint(1, customers)}@example.com" for _ in range(samples * 2 + 40)]
        turn = {"service": 0, "hand": 0}

        async def service() -> None:
            email = emails[turn["service"] % len(emails)]
            turn["service"] += 1
            async with engine.connect() as conn:
                found = await collect(conn, described, plan, {"email": [email]})
            visible = {
                c: [{f: r.get(f) for f in shown[c]} for r in items] for c, items in found.rows.items() if c in shown
            }
            assert sum(len(items) for items in visible.values()) == ROWS_PER_CUSTOMER

        async def hand() -> None:
            email = emails[turn["hand"] % len(emails)]
            turn["hand"] += 1
            assert await _hand_access(engine, email) == ROWS_PER_CUSTOMER

        latencies = await interleaved_latency({"service": service, "hand": hand}, samples=samples, warmup=20)
        measured = percentiles([s * 1000 for s in latencies["service"]])
        baseline = percentiles([s * 1000 for s in latencies["hand"]])
        ratio = baseline[95] / measured[95]
        label = f"{total / 1_000_000:g}M" if total >= 1_000_000 else f"{total:,}"
        access = Figure(
            f"connected access p95 @{label} rows, 8 collections",
            "ms",
            measured[95],
            baseline[95],
            ratio,
            target=f"< {ACCESS_TARGET_MS:g} ms and hand/service >= {ACCESS_RATIO_TARGET:g}",
            verdict=verdict(measured[95] < ACCESS_TARGET_MS and ratio >= ACCESS_RATIO_TARGET),
            details={
                "rows": total,
                "samples": samples,
                "service_ms": {f"p{k}": round(v, 2) for k, v in measured.items()},
                "hand_ms": {f"p{k}": round(v, 2) for k, v in baseline.items()},
                "ratio": "baseline p95 / measured p95",
                "path": "query.collect from the e-mail identity + the policy's visible fields; "
                "baseline: 8 hand-written SELECTs",
                "load_seconds": round(seconds, 1),
            },
        )

        rules = build_deadline_rules(policy)
        now = datetime.now(UTC)
        keep = {c: Keep(d.basis, now + timedelta(days=1)) for c, d in rules.duties.items()}
        targets = {
            collection: {f: MaskSpec(strategy="null_rewrite") for f in fields}
            for collection, fields in erasure_plan(described, policy, keep, held=False).targets.items()
        }
        heavy = {"email": ["heavy@example.com"]}
        touched: dict[str, int] = {}

        async def erase() -> None:
            async with engine.connect() as conn:
                transaction = await conn.begin()
                touched.update(await mask(conn, described, plan, heavy, targets))
                await transaction.rollback()

        # Fixed table and column names from the dataset above; no value is interpolated.
        direct = [
            f"UPDATE {collection} SET {', '.join(f'{f} = NULL' for f in fields)} WHERE {HEAVY_ROWS_OF[collection]}"  # noqa: S608
            for collection, fields in targets.items()
        ]
        by_key = {
            collection: f"UPDATE {collection} SET {', '.join(f'{f} = NULL' for f in fields)} WHERE id = ANY(:keys)"  # noqa: S608
            for collection, fields in targets.items()
        }

        async def erase_by_hand() -> None:
            """The service's queries written by hand: the keys along the references, then UPDATE by key."""
            async with engine.connect() as conn:
                transaction = await conn.begin()
                keys: dict[str, list[int]] = {}
                ids: list[int] = []
                orders: list[int] = []
                for collection, sql in HAND_ACCESS:
                    found = (
                        await conn.execute(text(sql), {"email": "heavy@example.com", "ids": ids, "orders": orders})
                    ).all()
                    keys[collection] = [row[0] for row in found]
                    if collection == "customers":
                        ids = keys[collection]
                    elif collection == "orders":
                        orders = keys[collection]
                for collection, statement in by_key.items():
                    if keys.get(collection):
                        await conn.execute(text(statement), {"keys": keys[collection]})
                await transaction.rollback()

        async def erase_directly() -> None:
            """The UPDATEs a person who knows the schema writes: by customer, no key lookup."""
            async with engine.connect() as conn:
                transaction = await conn.begin()
                for statement in direct:
                    await conn.execute(text(statement))
                await transaction.rollback()

        await erase()  # warm-up (and the rows it reaches)
        await erase_by_hand()
        await erase_directly()
        runs: dict[str, list[float]] = {"service": [], "hand": [], "direct": []}
        ops = {"service": erase, "hand": erase_by_hand, "direct": erase_directly}
        for index in range(erase_runs):
            for kind in list(ops) if index % 2 == 0 else list(ops)[::-1]:
                runs[kind].extend(await _timed(1, ops[kind]))
        erase_ms, hand_ms = statistics.median(runs["service"]) * 1000, statistics.median(runs["hand"]) * 1000
        direct_ms = statistics.median(runs["direct"]) * 1000
        erasure = Figure(
            f"connected erasure touching {sum(touched.values()):,} rows",
            "ms",
            erase_ms,
            hand_ms,
            hand_ms / erase_ms,
            # The issue holds both figures to >= 0.5x of the hand-written queries, besides the 1 s bound.
            target=f"< {ERASE_TARGET_MS:g} ms and hand/service >= {ACCESS_RATIO_TARGET:g}",
            verdict=verdict(erase_ms < ERASE_TARGET_MS and hand_ms / erase_ms >= ACCESS_RATIO_TARGET),
            details={
                "rows_touched": touched,
                "runs": erase_runs,
                "statistic": "median of runs, each in a transaction rolled back",
                "path": "query.mask (collect the keys, UPDATE by primary key in batches); "
                "baseline: the same queries by hand (SELECT the keys along the references, UPDATE by key)",
                "ratio": "baseline / measured",
                # For scale: UPDATEs by customer id alone, which need the schema known and no traversal.
                "direct_updates_ms": round(direct_ms, 2),
            },
        )
        progress.log(f"access p95 {measured[95]:.1f} ms (hand {baseline[95]:.1f} ms)")
        progress.log(f"erasure {erase_ms:.0f} ms (same queries by hand {hand_ms:.0f} ms, direct {direct_ms:.0f} ms)")
        return [access, erasure]
    finally:
        await engine.dispose()
        await _admin(ctx.config.postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

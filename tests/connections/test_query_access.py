"""collect and count on real SQLite, PostgreSQL and MariaDB: exactly the subject's rows, nobody else's.

Abuse first: identities full of SQL metacharacters are parameters, odd table and column names are
quoted, a subject with too many rows stops at row_limit, a reference cycle does not lead from Alice
to Bob (whom she referred), an employee who handled Alice's ticket is not part of Alice's data.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fideslang.models import Dataset, DatasetMetadata
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from privacy_service.connections.graph import IDENTITY_KINDS, build_plan
from privacy_service.connections.query import TooManyRows, collect, count
from tests.conftest import ROOT
from tests.connections import fixture_db
from tests.connections.fixture_db import A_EMAIL, A_KEYS, A_PHONE, B_EMAIL, C_EMAIL, E_EMAIL, ODD_NOTE, ODD_TABLE


def keys(rows: dict[str, list[dict[str, Any]]]) -> dict[str, set[Any]]:
    out = {}
    for name, items in rows.items():
        pk = fixture_db.primary_key_name(fixture_db.TABLES[name])
        out[name] = {row[pk] for row in items}
    return out


FIRST_MARIADB_CASE = "test_unknown_identities_find_nothing[mariadb]"


def flatten(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [item for part in value.values() for item in flatten(part)]
    if isinstance(value, list | tuple):
        return [item for part in value for item in flatten(part)]
    return [value]


class Statements:
    def __init__(self) -> None:
        self.sql: list[str] = []
        self.parameters: list[Any] = []


@pytest.fixture
def statements(fixture_engine: AsyncEngine) -> Iterator[Statements]:
    seen = Statements()

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        seen.sql.append(statement)
        seen.parameters.append(parameters)

    event.listen(fixture_engine.sync_engine, "before_cursor_execute", record)
    yield seen
    event.remove(fixture_engine.sync_engine, "before_cursor_execute", record)


async def test_access_finds_exactly_alices_rows(fixture_engine: AsyncEngine, wallet_ops: Dataset) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    async with fixture_engine.connect() as conn:
        found = await collect(conn, wallet_ops, plan, {"email": [A_EMAIL]})
    assert keys(found.rows) == A_KEYS
    customer = found.rows["customers"][0]
    assert customer == {
        "id": 1,
        "email": A_EMAIL,
        "phone": A_PHONE,
        "name": "Alice Archer",
        "date_of_birth": "1990-01-01",
        "referred_by": None,
        "created_at": "2025-01-01T00:00:00Z",
    }
    assert found.rows[ODD_TABLE] == [{"ID": 1, "ticket-id": 700, ODD_NOTE: "Called back; card reissued", "order": 1}]
    # Nothing of Bob (referred by Alice: the cycle customers.referred_by is not followed) nor of Cian.
    everything = repr(found.rows)
    for other in ("Bob", "bob@", "Cian", "9 Bob Road", "5555555555554444", "Eve Employee"):
        assert other not in everything


@pytest.mark.parametrize(
    "identities",
    [{"phone": [A_PHONE]}, {"external_id": ["1"]}, {"email": [A_EMAIL], "phone": [A_PHONE], "external_id": [" 1"]}],
)
async def test_each_identity_kind_finds_alice(
    fixture_engine: AsyncEngine, wallet_ops: Dataset, identities: dict[str, list[str]]
) -> None:
    plan = build_plan(wallet_ops, identities)
    async with fixture_engine.connect() as conn:
        found = await collect(conn, wallet_ops, plan, identities)
    expected = dict(A_KEYS)
    if "email" not in identities:  # ticket 701 and the newsletter hold only Alice's e-mail
        expected.update(service_tickets={700}, newsletter_subscribers=set(), employees=set())
        expected = {name: ids for name, ids in expected.items() if name in found.rows}
    assert keys(found.rows) == expected


async def test_bob_and_the_employee_get_their_own_rows_only(fixture_engine: AsyncEngine, wallet_ops: Dataset) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    async with fixture_engine.connect() as conn:
        bob = keys((await collect(conn, wallet_ops, plan, {"email": [B_EMAIL]})).rows)
        eve = keys((await collect(conn, wallet_ops, plan, {"email": [E_EMAIL]})).rows)
    assert bob["customers"] == {2}
    assert bob["logins"] == {101, 102, 103}
    assert bob["service_tickets"] == {800}
    assert bob[ODD_TABLE] == {2}
    # The employee's own data includes the tickets they handled (service_tickets.employee_id <- employees.id).
    assert eve["employees"] == {1}
    assert eve["service_tickets"] == {700, 701, 800}
    assert eve["customers"] == set()


@pytest.mark.parametrize(
    "hostile",
    [
        "' OR '1'='1",
        "alice@example.com' OR 1=1 --",
        "alice@example.com'); DROP TABLE customers; --",
        '" OR ""="',
        "%",
        "_%@%",
        "alice@example.com\x00",
        "ALICE@EXAMPLE.COM ",
        "\\' OR 1=1 #",
        "1 OR 1=1",
    ],
)
async def test_hostile_identities_are_parameters_and_match_nothing(
    fixture_engine: AsyncEngine, wallet_ops: Dataset, hostile: str, statements: Statements
) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    identities = {"email": [hostile], "phone": [hostile], "external_id": [hostile]}
    async with fixture_engine.connect() as conn:
        found = await collect(conn, wallet_ops, plan, identities)
        total = await conn.scalar(select(func.count()).select_from(fixture_db.customers))
    assert total == 3
    # MariaDB compares case-insensitively and ignores trailing spaces: that one is Alice herself.
    if fixture_engine.dialect.name == "mysql" and hostile == "ALICE@EXAMPLE.COM ":
        assert keys(found.rows)["customers"] == {1}
    else:
        assert all(rows == [] for rows in found.rows.values()), found.rows
    if len(hostile) > 3:  # ("%" is in MariaDB's own %s placeholders)
        assert all(hostile not in sql for sql in statements.sql)
    if "\x00" not in hostile:  # the value reached the database as a bound parameter
        assert hostile in flatten(statements.parameters)


async def test_an_identity_with_metacharacters_finds_its_owner_only(
    fixture_engine: AsyncEngine, wallet_ops: Dataset
) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    async with fixture_engine.connect() as conn:
        found = await collect(conn, wallet_ops, plan, {"email": [C_EMAIL]})
    assert keys(found.rows)["customers"] == {3}
    assert keys(found.rows)["addresses"] == {30}
    assert keys(found.rows)["orders"] == {300}
    assert found.rows["customers"][0]["email"] == C_EMAIL


async def test_one_query_per_collection_and_batch(
    fixture_engine: AsyncEngine, wallet_ops: Dataset, statements: Statements
) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    async with fixture_engine.connect() as conn:
        found = await collect(conn, wallet_ops, plan, {"email": [A_EMAIL]})
        selects = [sql for sql in statements.sql if sql.lstrip().upper().startswith("SELECT")]
        # 12 logins, 2 orders, 2 addresses: still one statement per collection, not one per row.
        assert len(selects) == found.queries == len(plan.steps)
        statements.sql.clear()
        many = [A_EMAIL] + [f"nobody{n}@example.com" for n in range(1200)]
        again = await collect(conn, wallet_ops, plan, {"email": many}, batch=500)
    assert keys(again.rows) == A_KEYS
    customer_selects = [sql for sql in statements.sql if "FROM" in sql and "customers" in sql.split("FROM")[1][:20]]
    assert len(customer_selects) == 3  # 1201 e-mails in batches of 500


async def test_row_limit_stops_a_subject_with_too_many_rows(fixture_engine: AsyncEngine, wallet_ops: Dataset) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    total = sum(len(ids) for ids in A_KEYS.values())
    async with fixture_engine.connect() as conn:
        with pytest.raises(TooManyRows) as caught:
            await collect(conn, wallet_ops, plan, {"email": [A_EMAIL]}, row_limit=total - 1)
        assert "alice" not in str(caught.value)
        assert caught.value.status == 422
        exact = await collect(conn, wallet_ops, plan, {"email": [A_EMAIL]}, row_limit=total)
        assert keys(exact.rows) == A_KEYS
        with pytest.raises(TooManyRows, match="logins"):
            await count(conn, wallet_ops, plan, {"email": [A_EMAIL]}, row_limit=5)


async def test_count_is_the_dry_run(fixture_engine: AsyncEngine, wallet_ops: Dataset, statements: Statements) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    async with fixture_engine.connect() as conn:
        counts = await count(conn, wallet_ops, plan, {"email": [A_EMAIL]})
    assert counts == {name: len(ids) for name, ids in A_KEYS.items()}
    # Only keys are read: no name, card number or note leaves the database for a count.
    for sql in statements.sql:
        assert "ccn" not in sql
        assert "holder_name" not in sql
        assert "note" not in sql.lower().replace("ticket notes", "")


async def test_unknown_identities_find_nothing(fixture_engine: AsyncEngine, wallet_ops: Dataset) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    async with fixture_engine.connect() as conn:
        found = await collect(conn, wallet_ops, plan, {"email": ["nobody@example.com"], "phone": []})
    assert found.rows == {step.collection: [] for step in plan.steps}


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 error"), ("", "1 skipped")])
def test_an_unreachable_mariadb_fails_under_ci_and_skips_elsewhere(tmp_path: Path, ci: str, outcome: str) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {name: value for name, value in os.environ.items() if name != "CI"}
    env.update(PRIVACY_TEST_MARIADB_URL=f"mysql+aiomysql://root@127.0.0.1:{port}/test")
    if ci:
        env["CI"] = ci
    result = subprocess.run(  # noqa: S603 - fixed argv: this interpreter running pytest on this file
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", f"{__file__}::{FIRST_MARIADB_CASE}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert outcome in result.stdout, result.stdout[-2000:]
    assert "MariaDB not reachable at PRIVACY_TEST_MARIADB_URL" in result.stdout
    if ci:
        assert "CI requires it" in result.stdout
        assert result.returncode == 1
    else:
        assert result.returncode == 0


async def test_a_namespace_schema_qualifies_every_table(fixture_engine: AsyncEngine, wallet_ops: Dataset) -> None:
    """``fides_meta.namespace.schema`` (a PostgreSQL schema; a MariaDB database; an SQLite attached name)."""
    schema = {"postgresql": "public", "sqlite": "main"}.get(fixture_engine.dialect.name)
    schema = schema or fixture_engine.url.database
    qualified = wallet_ops.model_copy(deep=True)
    qualified.fides_meta = DatasetMetadata(namespace={"schema": schema})
    plan = build_plan(qualified, IDENTITY_KINDS)
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(fixture_engine.sync_engine, "before_cursor_execute", record)
    try:
        async with fixture_engine.connect() as conn:
            found = await collect(conn, qualified, plan, {"email": [A_EMAIL]})
    finally:
        event.remove(fixture_engine.sync_engine, "before_cursor_execute", record)
    assert keys(found.rows) == A_KEYS
    assert all(str(schema) in statement for statement in seen)


async def test_rows_found_twice_do_not_hide_rows_beyond_the_limit(
    fixture_engine: AsyncEngine, wallet_ops: Dataset
) -> None:
    """Alice's addresses are named by customer_id and by id in two batches: the second batch returns
    a row found before; with the limit nearly reached that must stop the walk, not drop rows."""
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    total = sum(len(ids) for ids in A_KEYS.values())
    async with fixture_engine.connect() as conn:
        # batch=1: one value per statement, so addresses 10 and 11 are fetched again by id.
        exact = await collect(conn, wallet_ops, plan, {"email": A_EMAIL}, batch=1, row_limit=total)  # type: ignore[dict-item]
        assert keys(exact.rows) == A_KEYS
        with pytest.raises(TooManyRows):
            await collect(conn, wallet_ops, plan, {"email": [A_EMAIL]}, batch=1, row_limit=total - 1)


@pytest.mark.parametrize("given", [A_EMAIL, "ALICE@Example.com"])
async def test_an_email_identity_matches_whatever_the_case_the_database_stored(
    fixture_engine: AsyncEngine, wallet_ops: Dataset, given: str
) -> None:
    """The service keeps addresses lower-cased; a connected database may hold them as the customer typed
    them. E-mail identity lookups compare case-insensitively on every store (MariaDB's default collation
    already does), so an erasure does not leave behind the rows of 'Alice@Example.COM'."""
    async with fixture_engine.begin() as conn:
        await conn.execute(
            fixture_db.customers.update().where(fixture_db.customers.c.id == 1).values(email="Alice@Example.COM")
        )
    plan = build_plan(wallet_ops, ["email"])
    async with fixture_engine.connect() as conn:
        found = await collect(conn, wallet_ops, plan, {"email": [given]})
        counted = await count(conn, wallet_ops, plan, {"email": [given]})
    assert keys(found.rows) == A_KEYS
    assert found.rows["customers"][0]["email"] == "Alice@Example.COM"
    assert counted == {name: len(ids) for name, ids in A_KEYS.items()}
    # And another customer's address in capitals finds that customer, not Alice.
    async with fixture_engine.connect() as conn:
        bob = await collect(conn, wallet_ops, plan, {"email": [B_EMAIL.upper()]})
    assert keys(bob.rows)["customers"] == {2}

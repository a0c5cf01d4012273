"""The worker's connection tasks end to end: a verified request on the service (SQLite), the fixture
database on SQLite, PostgreSQL and MariaDB. Access returns exactly customer A's rows (fields the
policy names); erasure masks exactly the erasable fields, keeps the AML-kept ones, leaves every other
customer's row byte for byte as it was, and a second run changes nothing."""

from __future__ import annotations

import csv
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from privacy_service.audit.service import Actor
from privacy_service.config import Settings
from privacy_service.connections.runner import run_connection_tasks
from privacy_service.connections.tasks import result_binding
from privacy_service.crypto.service import REQUEST
from privacy_service.dsr.answer import answer_data
from privacy_service.dsr.service import DsrService
from privacy_service.runtime import Runtime
from tests.api.dsr_support import fresh_settings, submit_and_verify
from tests.conftest import MailSink
from tests.connections import fixture_db
from tests.connections.execution_support import (
    add_connection,
    approved_erasure,
    make_customer_a,
    policy_dir_with_dataset,
    tasks,
)


def _shared(table: str) -> set[str]:
    """Values A's rows hold too (a date, a brand): finding them says nothing about whose row it was."""
    key = fixture_db.primary_key_name(fixture_db.TABLES[table])
    mine = fixture_db.A_KEYS.get(table, set())
    return {v for row in fixture_db.ROWS[table] if row[key] in mine for v in row.values() if isinstance(v, str)}


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the service's own database; the connected one varies (store)


@pytest.fixture
async def settings(make_settings: Any, backend: str, tmp_path: Path) -> Settings:
    return await fresh_settings(make_settings, backend, policy_dir=policy_dir_with_dataset(tmp_path))


async def _found(runtime: Runtime, request_id: str) -> dict[str, list[dict[str, Any]]]:
    [task] = await tasks(runtime)
    task_id = uuid.UUID(str(task["id"]))
    async with runtime.db.transaction() as session:
        key = await runtime.keys.load_key(session, uuid.UUID(request_id), REQUEST)
    rows: dict[str, list[dict[str, Any]]] = msgspec.json.decode(
        key.open(task["result_ct"], result_binding(uuid.UUID(request_id), task_id))
    )
    return rows


def _others(state: dict[str, list[tuple[Any, ...]]], mine: dict[str, set[Any]]) -> dict[str, list[tuple[Any, ...]]]:
    return {table: [row for row in rows if row[0] not in mine.get(table, set())] for table, rows in state.items()}


async def test_access_returns_exactly_customer_a_rows(
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_url: str,
    fixture_engine: AsyncEngine,
) -> None:
    await make_customer_a(client, auth)
    await add_connection(runtime, fixture_url)
    request_id, verified = await submit_and_verify(client, runtime, mail, fixture_db.A_EMAIL, "access")
    assert verified["status"] == "processing"
    result = await run_connection_tasks(runtime)
    assert (result.done, result.completed_requests) == (1, 1)
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["status"] == "completed"
    [line] = view["result"]["connections"]
    assert line["connection"] == "wallet-ops"
    assert line["task"] == "done"
    found = await _found(runtime, request_id)
    # Exactly A's rows: as many per collection as A has, and no value of another customer's rows.
    assert {table: len(rows) for table, rows in found.items()} == {
        table: len(keys) for table, keys in fixture_db.A_KEYS.items() if keys
    }
    returned = msgspec.json.encode(found).decode()
    for table, rows in fixture_db.ROWS.items():
        key = fixture_db.primary_key_name(fixture_db.TABLES[table])
        for row in rows:
            if row[key] not in fixture_db.A_KEYS.get(table, set()):
                for value in row.values():
                    if isinstance(value, str) and len(value) > 6 and value not in _shared(table):
                        assert value not in returned, f"{table}: a value of another customer's row was returned"
    assert fixture_db.A_EMAIL in returned
    assert "created_at" not in found["customers"][0]  # system.operations: not the subject's data
    # The answer lists the categories found there.
    assert "user.contact.email" in view["result"]["categories"]
    # The export holds them under the dataset and collection: JSON, and one CSV per collection in the ZIP.
    exported = await client.get(f"/v1/requests/{request_id}/export", headers=auth)
    assert exported.status_code == 200, exported.text
    assert exported.json()["datasets"] == {"wallet_ops": found}
    # The Art. 15 information covers the categories found there (a card number the vault does not hold).
    assert "user.financial.account_number" in json.dumps(exported.json()["processing"])
    archive = await client.get(f"/v1/requests/{request_id}/export", params={"format": "zip"}, headers=auth)
    assert archive.status_code == 200, archive.text
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        names = set(zipped.namelist())
        assert "datasets/wallet_ops/customers.csv" in names
        assert len([n for n in names if n.startswith("datasets/wallet_ops/")]) == len(found)
        customers = list(csv.reader(io.StringIO(zipped.read("datasets/wallet_ops/customers.csv").decode())))
        every = "".join(zipped.read(n).decode() for n in names if n.startswith("datasets/"))
    assert len(customers) == 2  # the header and A's row
    assert fixture_db.A_EMAIL in customers[1]
    assert fixture_db.B_EMAIL not in every
    # The answer page shows them under their categories, named by dataset and collection.
    async with runtime.db.transaction() as session:
        data = await answer_data(DsrService.for_runtime(runtime, session, Actor.system("test")), uuid.UUID(request_id))
    assert data is not None
    emails = [r for r in data.records["user.contact.email"] if r.kind == "wallet_ops / customers"]
    assert [r.data for r in emails] == [{"email": fixture_db.A_EMAIL}]
    assert data.held["user.contact.email"] >= 1


async def test_erasure_masks_exactly_the_erasable_fields_and_nothing_of_anyone_else(
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_url: str,
    fixture_engine: AsyncEngine,
) -> None:
    async with fixture_engine.connect() as conn:
        before = await fixture_db.snapshot(conn)
    await make_customer_a(client, auth)
    await add_connection(runtime, fixture_url)
    request_id, verified = await submit_and_verify(client, runtime, mail, fixture_db.A_EMAIL, "erase")
    assert verified["status"] == "awaiting_review"
    approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "processing"
    result = await run_connection_tasks(runtime)
    assert (result.done, result.completed_requests) == (1, 1)
    async with fixture_engine.connect() as conn:
        after = await fixture_db.snapshot(conn)
    mine = fixture_db.A_KEYS
    assert _others(after, mine) == _others(before, mine), "a row of another customer changed"
    customers = {row[0]: row for row in after["customers"]}
    a_before = {row[0]: row for row in before["customers"]}[1]
    columns = [c.name for c in fixture_db.TABLES["customers"].columns]
    a_now = dict(zip(columns, customers[1], strict=True))
    a_was = dict(zip(columns, a_before, strict=True))
    assert a_now["email"] is None
    assert a_now["phone"] is None
    assert a_now["name"] == a_was["name"]  # user.name: kept for AML
    assert a_now["date_of_birth"] == a_was["date_of_birth"]
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["status"] == "partially_completed"
    kept = {item["category"]: item for item in view["result"]["kept"]}
    assert "user.name" in kept
    assert kept["user.name"]["until"] is not None
    # Masking is idempotent: the same task run again changes nothing.
    async with runtime.db.engine.begin() as conn:
        await conn.execute(text("UPDATE connection_tasks SET status = 'pending', next_attempt_at = created_at"))
    assert (await run_connection_tasks(runtime)).done == 1
    async with fixture_engine.connect() as conn:
        assert await fixture_db.snapshot(conn) == after


async def test_erasure_reports_kept_only_where_the_customer_has_rows(
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_url: str,
    fixture_engine: AsyncEngine,
) -> None:
    """A customer the connected database holds nothing of: its legal duties keep nothing there, so the
    answer lists no category as kept because of that database (the vault holds only an e-mail address)."""
    created = await client.post("/v1/subjects", json={"email": "zed@example.com"}, headers=auth)
    assert created.status_code == 201, created.text
    async with fixture_engine.connect() as conn:
        before = await fixture_db.snapshot(conn)
    await add_connection(runtime, fixture_url)
    request_id = await approved_erasure(client, runtime, mail, auth, "zed@example.com")
    assert (await run_connection_tasks(runtime)).done == 1
    [task] = await tasks(runtime)
    kept_by_task = json.loads(task["kept"]) if isinstance(task["kept"], str) else task["kept"]
    assert kept_by_task == []  # planned with the AML-kept categories; none of them found for this customer
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    kept = {item["category"] for item in view["result"].get("kept", [])}
    # user.name and the address (AML duty) live only in the connected database's collections, not found here.
    assert not kept & {"user.name", "user.contact.address"}, kept
    assert view["result"]["connections"][0]["rows"] == 0
    async with fixture_engine.connect() as conn:
        assert await fixture_db.snapshot(conn) == before

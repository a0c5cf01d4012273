"""A verified request reaches the connected databases: tasks planned before the vault changes, the
request waiting for them like it waits for webhooks, identities sealed, the erasure's plan keeping
what a legal duty keeps and never writing keys or read-only fields."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import create_async_engine

from privacy_service.config import Settings
from privacy_service.connections.datasets import load_dataset_file
from privacy_service.connections.runner import run_connection_tasks
from privacy_service.connections.tasks import Keep, erasure_plan, kept_found, visible_fields
from privacy_service.runtime import Runtime
from privacy_service.subjects.service import LEGAL_HOLD_BASIS
from tests.api.dsr_support import fresh_settings, submit_and_verify
from tests.conftest import MailSink
from tests.connections import fixture_db
from tests.connections.execution_support import (
    DATASETS,
    add_connection,
    make_customer_a,
    policy_dir_with_dataset,
    tasks,
)


@pytest.fixture
async def settings(make_settings: Any, backend: str, tmp_path: Path) -> Settings:
    return await fresh_settings(make_settings, backend, policy_dir=policy_dir_with_dataset(tmp_path))


@pytest.fixture
async def fixture_url(tmp_path: Path) -> str:
    path = tmp_path / "wallet_ops.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    await fixture_db.reset(engine)
    await engine.dispose()
    return f"sqlite:///{path}"


async def test_an_access_request_waits_for_its_connection_task_with_sealed_identities(
    client: AsyncClient, runtime: Runtime, auth: dict[str, str], mail: MailSink, fixture_url: str
) -> None:
    await make_customer_a(client, auth)
    connection_id = await add_connection(runtime, fixture_url)
    request_id, verified = await submit_and_verify(client, runtime, mail, fixture_db.A_EMAIL, "access")
    assert verified["status"] == "processing"  # not completed: the connection's task is open
    [task] = await tasks(runtime)
    assert str(task["connection_id"]).replace("-", "") == connection_id.replace("-", "")
    assert task["kind"] == "access"
    assert task["status"] == "pending"
    # Sealed, not in clear: neither the e-mail nor the phone appears in the stored row.
    stored = repr(task).encode()
    assert fixture_db.A_EMAIL.encode() not in task["identities_ct"]
    assert fixture_db.A_EMAIL.encode() not in stored
    assert fixture_db.A_PHONE.encode() not in task["identities_ct"]
    view = await client.get(f"/v1/requests/{request_id}", headers=auth)
    assert view.json()["status"] == "processing"


async def test_a_request_for_no_customer_plans_no_task(
    client: AsyncClient, runtime: Runtime, auth: dict[str, str], mail: MailSink, fixture_url: str
) -> None:
    await add_connection(runtime, fixture_url)
    _, verified = await submit_and_verify(client, runtime, mail, "nobody@example.com", "access")
    assert verified["status"] == "completed"
    assert await tasks(runtime) == []


def test_the_erasure_plan_masks_erasable_fields_and_keeps_duties_keys_and_read_only(runtime: Runtime) -> None:
    [dataset] = load_dataset_file(DATASETS / "wallet_ops.yml")
    policy = runtime.policy
    duty = Keep("AML", None)
    plan = erasure_plan(dataset, policy, {"user.financial": duty, "user.name": duty}, held=False)
    every = {(c, f) for c, fields in plan.targets.items() for f in fields}
    # Primary keys and fields with no policy category are never written.
    for collection in dataset.collections:
        for field in collection.fields:
            meta = field.fides_meta
            if meta is not None and (meta.primary_key or meta.read_only):
                assert (collection.name, field.name) not in every
    assert ("customers", "email") in every
    assert ("customers", "name") not in every  # user.name under the duty: kept
    assert {k["category"] for k in plan.kept} >= {"user.name"}
    held = erasure_plan(dataset, policy, {}, held=True)
    assert held.targets == {}
    assert {k["basis"] for k in held.kept} == {LEGAL_HOLD_BASIS}
    shown = visible_fields(dataset, policy)
    assert "email" in shown["customers"]
    assert "created_at" not in shown["customers"]  # system.operations: not a subject's data


def test_a_kept_category_is_reported_only_where_the_subject_has_rows(runtime: Runtime) -> None:
    [dataset] = load_dataset_file(DATASETS / "wallet_ops.yml")
    duty = Keep("AML", None)
    financial = "user.financial.transaction"
    plan = erasure_plan(dataset, runtime.policy, {financial: duty, "user.name": duty}, held=False)
    where = {k["category"]: set(k["collections"]) for k in plan.kept}
    assert where["user.name"] >= {"customers", "invoices", "employees"}
    assert where[financial] == {"invoices", "orders"}
    # Rows found in customers only: user.name is kept there; nothing financial was found, nothing is kept.
    kept = {k["category"] for k in kept_found(plan.kept, {"customers": 1, "orders": 0, "invoices": 0})}
    assert "user.name" in kept
    assert financial not in kept
    assert financial in {k["category"] for k in kept_found(plan.kept, {"orders": 2})}
    assert kept_found(plan.kept, {}) == []  # nothing found: nothing kept there
    # A line planned before the collections were recorded is reported as before.
    assert kept_found([{"category": "user.name", "basis": "AML", "until": None}], {}) != []


async def test_two_runners_at_once_run_a_task_once_and_complete_the_request(
    client: AsyncClient, runtime: Runtime, auth: dict[str, str], mail: MailSink, fixture_url: str
) -> None:
    """On the service's PostgreSQL the claim is FOR UPDATE SKIP LOCKED; on SQLite writes serialise."""
    await make_customer_a(client, auth)
    await add_connection(runtime, fixture_url)
    request_id, _ = await submit_and_verify(client, runtime, mail, fixture_db.A_EMAIL, "access")
    first, second = await asyncio.gather(run_connection_tasks(runtime), run_connection_tasks(runtime))
    assert first.done + second.done == 1
    assert first.completed_requests + second.completed_requests == 1
    [task] = await tasks(runtime)
    assert task["status"] == "done"
    assert task["attempts"] == 1
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["status"] == "completed"
    assert view["result"]["connections"][0]["rows"] == sum(len(keys) for keys in fixture_db.A_KEYS.values())

"""A collection without a primary key (its rows can be read, never masked by key): the erasure of the
rest of the connection goes on, that collection is reported as not erased (with the reason) where
the subject's rows are, and ``policy check`` names it as an error; a ``delete_row`` collection that
holds a read-only field is masked instead of refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fideslang.models import Dataset
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from privacy_service.config import Settings
from privacy_service.connections.datasets import check_datasets
from privacy_service.connections.runner import run_connection_tasks
from privacy_service.connections.tasks import NO_PRIMARY_KEY, NOT_ERASED_BASIS, READ_ONLY_BASIS, erasure_plan
from privacy_service.runtime import Runtime
from tests.api.dsr_support import fresh_settings
from tests.conftest import MailSink
from tests.connections.execution_support import approved_erasure, policy_dir_with_dataset, tasks

EMAIL = "nokey@example.com"
ID = {
    "name": "id",
    "data_categories": ["system.operations"],
    "fides_meta": {"primary_key": True, "data_type": "integer"},
}
MAIL = {
    "name": "email",
    "data_categories": ["user.contact.email"],
    "fides_meta": {"identity": "email", "data_type": "string"},
}
SHOP: dict[str, Any] = {
    "fides_key": "shop",
    "collections": [
        {
            "name": "customers",
            "fields": [
                {
                    "name": "id",
                    "data_categories": ["system.operations"],
                    "fides_meta": {"primary_key": True, "data_type": "integer"},
                },
                {
                    "name": "email",
                    "data_categories": ["user.contact.email"],
                    "fides_meta": {"identity": "email", "data_type": "string"},
                },
            ],
        },
        {
            "name": "audit_log",
            "fields": [
                {
                    "name": "email",
                    "data_categories": ["user.contact.email"],
                    "fides_meta": {"identity": "email", "data_type": "string"},
                },
            ],
        },
    ],
}


def _shop(**changes: Any) -> Dataset:
    return Dataset.model_validate({**SHOP, **changes})


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
async def settings(make_settings: Any, backend: str, tmp_path: Path) -> Settings:
    policies = policy_dir_with_dataset(tmp_path)
    (policies / "datasets" / "shop.yml").write_text(yaml.safe_dump({"dataset": [SHOP]}), encoding="utf-8")
    return await fresh_settings(make_settings, backend, policy_dir=policies)


def test_the_erasure_plan_leaves_out_a_collection_without_primary_key_and_reports_it(runtime: Runtime) -> None:
    plan = erasure_plan(_shop(), runtime.policy, {}, held=False)
    assert set(plan.targets) == {"customers"}
    [line] = plan.kept
    assert line["category"] == "user.contact.email"
    assert NO_PRIMARY_KEY in line["basis"]
    assert line["collections"] == ["audit_log"]
    # Read-only in customers too: each reason on its own line, each cut to where rows are found.
    read_only = json.loads(json.dumps(SHOP))
    read_only["collections"][0]["fields"][1]["fides_meta"]["read_only"] = True
    plan = erasure_plan(Dataset.model_validate(read_only), runtime.policy, {}, held=False)
    assert plan.targets == {}
    assert sorted((k["basis"], k["collections"][0]) for k in plan.kept) == [
        (NOT_ERASED_BASIS, "audit_log"),
        (READ_ONLY_BASIS, "customers"),
    ]


def test_policy_check_reports_an_erasable_category_in_a_collection_without_primary_key(runtime: Runtime) -> None:
    findings = check_datasets({"shop": _shop()}, runtime.policy)
    errors = [f.message for f in findings if f.level == "error"]
    assert any("audit_log" in m and "primary_key" in m for m in errors), findings
    # Read-only there: never erased anyway, so a warning, not an error.
    read_only = json.loads(json.dumps(SHOP))
    read_only["collections"][1]["fields"][0]["fides_meta"]["read_only"] = True
    findings = check_datasets({"shop": Dataset.model_validate(read_only)}, runtime.policy)
    assert not [f for f in findings if f.level == "error"], findings


def test_a_delete_row_collection_holding_a_read_only_field_is_masked_instead(runtime: Runtime) -> None:
    shop = json.loads(json.dumps(SHOP))
    customers = shop["collections"][0]
    customers["fides_meta"] = {"masking_strategy_override": {"strategy": "delete"}}
    customers["fields"].append(
        {"name": "created_at", "data_categories": ["system.operations"], "fides_meta": {"read_only": True}}
    )
    plan = erasure_plan(Dataset.model_validate(shop), runtime.policy, {}, held=False)
    assert plan.targets["customers"] == {"email": {"strategy": "null_rewrite", "value": None}}
    findings = check_datasets({"shop": Dataset.model_validate(shop)}, runtime.policy)
    assert any("customers" in f.message and "read_only" in f.message for f in findings), findings


async def test_an_erasure_on_a_connection_with_a_keyless_collection_completes_and_says_what_it_left(
    client: AsyncClient, runtime: Runtime, auth: dict[str, str], mail: MailSink, tmp_path: Path
) -> None:
    path = tmp_path / "shop.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE customers (id integer primary key, email text)"))
        await conn.execute(text("CREATE TABLE audit_log (email text)"))
        await conn.execute(text("INSERT INTO customers VALUES (1, :e), (2, 'other@example.com')"), {"e": EMAIL})
        await conn.execute(text("INSERT INTO audit_log VALUES (:e)"), {"e": EMAIL})
    from privacy_service.audit.service import Actor
    from privacy_service.connections.schemas import ConnectionCreate
    from privacy_service.connections.service import ConnectionService

    async with runtime.db.transaction() as session:
        service = ConnectionService(session, runtime.keys, runtime.clock, runtime.settings, Actor.system("test"))
        await service.add(ConnectionCreate(name="shop", dataset="shop", url=f"sqlite:///{path}"))
    created = await client.post("/v1/subjects", json={"email": EMAIL}, headers=auth)
    assert created.status_code == 201, created.text
    request_id = await approved_erasure(client, runtime, mail, auth, EMAIL)
    result = await run_connection_tasks(runtime)
    assert (result.done, result.needs_operator, result.completed_requests) == (1, 0, 1)
    async with engine.connect() as conn:
        customers = (await conn.execute(text("SELECT id, email FROM customers ORDER BY id"))).all()
        audit_log = (await conn.execute(text("SELECT email FROM audit_log"))).all()
    await engine.dispose()
    assert [tuple(r) for r in customers] == [(1, None), (2, "other@example.com")]
    assert [tuple(r) for r in audit_log] == [(EMAIL,)]  # never written: no key to write it by
    [task] = await tasks(runtime)
    collections = json.loads(task["collections"]) if isinstance(task["collections"], str) else task["collections"]
    assert collections["audit_log"]["status"] == "not_erased"
    assert collections["audit_log"]["problem"] == NO_PRIMARY_KEY
    assert collections["customers"] == {**collections["customers"], "status": "done", "rows": 1}
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["status"] == "partially_completed"
    kept = [k for k in view["result"]["kept"] if NO_PRIMARY_KEY in k["basis"]]
    assert [k["category"] for k in kept] == ["user.contact.email"]

"""Helpers of the execution tests: a policy directory holding the fixture dataset, a registered
connection to the fixture database, and the customer A of the fixture in the vault."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from httpx import AsyncClient
from sqlalchemy import text

from privacy_service.audit.service import Actor
from privacy_service.connections.schemas import ConnectionCreate
from privacy_service.connections.service import ConnectionService
from privacy_service.runtime import Runtime
from tests.api.dsr_support import submit_and_verify
from tests.conftest import ROOT, MailSink
from tests.connections import fixture_db

DATASETS = Path(__file__).resolve().parent / "datasets"


def policy_dir_with_dataset(tmp_path: Path) -> Path:
    """A copy of the shipped policies with the fixture dataset in datasets/ (the policy is unchanged)."""
    target = tmp_path / "policies"
    if not target.exists():
        shutil.copytree(ROOT / "policies", target)
        (target / "datasets").mkdir(exist_ok=True)
        shutil.copy(DATASETS / "wallet_ops.yml", target / "datasets" / "wallet_ops.yml")
    return target


async def add_connection(runtime: Runtime, url: str, *, name: str = "wallet-ops", max_concurrency: int = 2) -> str:
    async with runtime.db.transaction() as session:
        service = ConnectionService(session, runtime.keys, runtime.clock, runtime.settings, Actor.system("test"))
        added = await service.add(
            ConnectionCreate(name=name, dataset="wallet_ops", url=url, max_concurrency=max_concurrency)
        )
    return str(added.id)


async def make_customer_a(client: AsyncClient, auth: dict[str, str]) -> str:
    created = await client.post(
        "/v1/subjects",
        json={"email": fixture_db.A_EMAIL, "phone": fixture_db.A_PHONE, "profile": {"name": "Alice Archer"}},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    subject_id: str = created.json()["id"]
    return subject_id


async def tasks(runtime: Runtime) -> list[dict[str, Any]]:
    async with runtime.db.engine.connect() as conn:
        result = await conn.execute(text("SELECT * FROM connection_tasks ORDER BY connection_name"))
        return [dict(row._mapping) for row in result]


async def approved_erasure(
    client: AsyncClient, runtime: Runtime, mail: MailSink, auth: dict[str, str], email: str = fixture_db.A_EMAIL
) -> str:
    """An erasure request for ``email``, confirmed by its code and approved by an operator: its id."""
    request_id, _ = await submit_and_verify(client, runtime, mail, email, "erase")
    approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "processing"
    return request_id

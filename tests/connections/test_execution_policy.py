"""Connection tasks under the policy and beside webhooks: the masking each category names (hash with
the keyring's derived secret, string_rewrite), a connection's concurrency limit, and a request that
waits for a webhook system and a connection alike, whose answer lists both."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from privacy_service.config import Settings
from privacy_service.connections.runner import masking_secret, run_connection_tasks
from privacy_service.runtime import Runtime
from tests.api.dsr_support import fresh_settings, submit_and_verify
from tests.api.test_systems_api import UNUSED_URL, callback_urls
from tests.conftest import MailSink
from tests.connections import fixture_db
from tests.connections.execution_support import (
    add_connection,
    approved_erasure,
    make_customer_a,
    policy_dir_with_dataset,
    tasks,
)
from tests.integration.systems_support import answer, register

MASKING = {
    "  user.contact.email:\n": "    masking: {strategy: hash}\n",
    "  user.contact.phone_number:\n": "    masking: {strategy: string_rewrite, value: erased}\n",
}


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def masking() -> bool:
    """Whether the policy names masking strategies (MASKING); a test parametrizes it to True."""
    return False


@pytest.fixture
async def settings(make_settings: Any, backend: str, tmp_path: Path, masking: bool) -> Settings:
    policies = policy_dir_with_dataset(tmp_path)
    if masking:
        policy = policies / "policy.yaml"
        text = policy.read_text(encoding="utf-8")
        for anchor, line in MASKING.items():
            assert text.count(anchor) == 1
            text = text.replace(anchor, anchor + line)
        policy.write_text(text, encoding="utf-8")
    return await fresh_settings(make_settings, backend, policy_dir=policies, systems_allow_private_networks=True)


@pytest.mark.parametrize("masking", [True])
async def test_the_policy_names_the_masking_of_each_category(
    masking: bool,
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_sqlite: tuple[str, AsyncEngine],
) -> None:
    url, engine = fixture_sqlite
    customers = fixture_db.TABLES["customers"]
    await make_customer_a(client, auth)
    await add_connection(runtime, url)
    await approved_erasure(client, runtime, mail, auth)
    [task] = await tasks(runtime)
    assert '"hash"' in str(task["targets"])
    assert (await run_connection_tasks(runtime)).done == 1
    async with engine.connect() as conn:
        rows = {row.id: row for row in await conn.execute(select(customers))}
    digest = hmac.new(masking_secret(runtime), fixture_db.A_EMAIL.encode(), hashlib.sha256).hexdigest()
    length = customers.c.email.type.length  # type: ignore[attr-defined]
    assert rows[1].email == (digest[:length] if length else digest)
    assert rows[1].phone == "erased"
    assert rows[2].email == fixture_db.B_EMAIL  # another customer: untouched
    # The derived secret is not the keyring's index key, nor empty.
    assert masking_secret(runtime) not in (b"", runtime.indexer._key)
    await engine.dispose()


async def test_a_connection_runs_at_most_its_max_concurrency_tasks_at_once(
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_sqlite: tuple[str, AsyncEngine],
) -> None:
    url, engine = fixture_sqlite
    await make_customer_a(client, auth)
    created = await client.post("/v1/subjects", json={"email": fixture_db.B_EMAIL, "profile": {}}, headers=auth)
    assert created.status_code == 201, created.text
    await add_connection(runtime, url, max_concurrency=1)
    for email in (fixture_db.A_EMAIL, fixture_db.B_EMAIL):
        _, verified = await submit_and_verify(client, runtime, mail, email, "access")
        assert verified["status"] == "processing"
    first = await run_connection_tasks(runtime)
    assert first.done == 1  # one at a time on this connection
    assert sorted(t["status"] for t in await tasks(runtime)) == ["done", "pending"]
    assert (await run_connection_tasks(runtime)).done == 1
    assert {t["status"] for t in await tasks(runtime)} == {"done"}
    await engine.dispose()


async def test_a_request_waits_for_its_webhook_system_and_its_connection_and_lists_both(
    client: AsyncClient,
    runtime: Runtime,
    auth: dict[str, str],
    mail: MailSink,
    fixture_sqlite: tuple[str, AsyncEngine],
) -> None:
    url, engine = fixture_sqlite
    system = await register(client, auth, UNUSED_URL, name="crm")
    await make_customer_a(client, auth)
    await add_connection(runtime, url)
    request_id, verified = await submit_and_verify(client, runtime, mail, fixture_db.A_EMAIL, "access")
    assert verified["status"] == "processing"
    # The connection is done first: the request still waits for the system's answer.
    assert (await run_connection_tasks(runtime)).done == 1
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["status"] == "processing"
    [callback] = await callback_urls(client, auth, [system])
    answered = await answer(client, system, callback, {"request_status": "completed"})
    assert answered.status_code == 202, answered.text
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["status"] == "completed"
    assert [s["system"] for s in view["result"]["systems"]] == ["crm"]
    assert [c["connection"] for c in view["result"]["connections"]] == ["wallet-ops"]
    assert view["result"]["connections"][0]["rows"] > 0
    assert uuid.UUID(request_id)
    await engine.dispose()

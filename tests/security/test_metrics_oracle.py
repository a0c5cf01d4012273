"""Customer enumeration through /metrics (issue 16, item 9), as an outsider and as a scraper tries it.

An outsider gets nothing without a key. Someone who can scrape (a key with ``metrics:read``, snapshots
not cached, so every scrape is fresh) files a request by phone for a number and compares the figures
before and after: the change is the same whether the number belongs to a customer or to nobody.
"""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

from privacy_service.config import Settings
from privacy_service.operators.service import SCOPES
from privacy_service.runtime import Runtime
from tests.api.dsr_support import assert_problem, deliver, fresh_settings, make_subject
from tests.api.test_metrics import samples
from tests.conftest import MailSink, make_operator_key

KNOWN_PHONE = "+447911100042"
UNKNOWN_PHONE = "+447911100077"


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    # Snapshots as fresh as they come: the strongest position a scraper can be in.
    return await fresh_settings(make_settings, backend, metrics_cache_seconds=0)


async def test_metrics_need_a_key_with_metrics_read(client: AsyncClient, runtime: Runtime) -> None:
    assert_problem(await client.get("/metrics"), 401, "unauthenticated")
    junk = await client.get("/metrics", headers={"Authorization": "Bearer psk_notarealkey1_" + "x" * 43})
    assert_problem(junk, 401, "unauthenticated")
    everything_else = await make_operator_key(runtime, frozenset(SCOPES) - {"metrics:read"})
    refused = await client.get("/metrics", headers={"Authorization": f"Bearer {everything_else}"})
    assert_problem(refused, 403, "forbidden")
    scraper = await make_operator_key(runtime, frozenset({"metrics:read"}))
    allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {scraper}"})
    assert allowed.status_code == 200
    assert "privacy_requests" in allowed.text


async def test_a_phone_intake_changes_the_same_figures_for_a_customer_and_a_stranger(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    await make_subject(client, auth, email="phone.owner@example.com", phone=KNOWN_PHONE, profile={"name": "Pat"})
    scraper = {"Authorization": f"Bearer {await make_operator_key(runtime, frozenset({'metrics:read'}))}"}

    async def scrape() -> dict[str, float]:
        response = await client.get("/metrics", headers=scraper)
        assert response.status_code == 200, response.text
        return samples(response.text)

    async def change_after_intake(phone: str) -> dict[str, float | str]:
        before = await scrape()
        filed = await client.post("/v1/requests", json={"type": "access", "identity": {"phone": phone}})
        assert filed.status_code == 202, filed.text
        after_intake = await scrape()
        await deliver(runtime)
        after_mail = await scrape()
        changes: dict[str, float | str] = {}
        for stage, figures in (("intake", after_intake), ("mail", after_mail)):
            for name in sorted(set(before) | set(figures)):
                delta = figures.get(name, 0) - before.get(name, 0)
                if delta:
                    # An age in seconds (the oldest waiting mail) moves with the wall clock between scrapes:
                    # what must match is whether it moved, not by how many milliseconds.
                    timed = name.split("{", 1)[0].endswith("_seconds")
                    changes[f"{stage}:{name}"] = "moved" if timed else delta
        return changes

    stranger = await change_after_intake(UNKNOWN_PHONE)
    customer = await change_after_intake(KNOWN_PHONE)
    assert len(mail.to("phone.owner@example.com")) == 1  # the customer's code went out; the stranger's did not
    assert stranger  # the figures did move: the test compares something
    assert stranger == customer
    assert 'mail:privacy_outbox_messages{status="done"}' in stranger

"""GET /metrics: Prometheus text from the database, counts only (no personal data)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from httpx import AsyncClient

from privacy_service.app import create_app
from privacy_service.config import Settings
from privacy_service.runtime import Runtime, build_runtime
from tests.api.dsr_support import assert_problem, fresh_settings, submit_and_verify
from tests.conftest import MailSink, make_operator_key
from tests.integration.systems_support import (
    CUSTOMER_EMAIL,
    HookReceiver,
    OffsetClock,
    deliver,
    make_customer,
    register,
)

SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? -?[0-9.e+]+$')


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    # Receivers here listen on 127.0.0.1: a development set-up (tests/security/test_ssrf.py covers the default).
    return await fresh_settings(make_settings, backend, systems_allow_private_networks=True)


def samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        assert SAMPLE.match(line), line
        name, _, value = line.rpartition(" ")
        found[name] = float(value)
    return found


async def test_metrics_count_requests_outbox_and_webhooks(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    with HookReceiver().running() as receiver:
        await register(client, auth, receiver.url, name="crm")
        await make_customer(client, auth)
        await submit_and_verify(client, runtime, mail, CUSTOMER_EMAIL, "access")
        await client.post("/v1/requests", json={"type": "erase", "identity": {"email": "someone@example.com"}})
        await deliver(runtime)
    response = await client.get("/metrics", headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    values = samples(text)
    assert values['privacy_requests{type="access",status="processing"}'] == 1
    assert values['privacy_requests{type="erase",status="awaiting_verification"}'] == 1
    assert values["privacy_requests_overdue"] == 0
    assert values['privacy_outbox_messages{status="pending"}'] >= 1  # the erase request's code
    assert values['privacy_webhook_deliveries{system="crm",status="delivered"}'] == 1
    assert values['privacy_webhook_attempts_total{system="crm",outcome="delivered"}'] == 1
    assert values['privacy_webhook_latency_seconds_bucket{system="crm",le="+Inf"}'] == 1
    assert values['privacy_webhook_latency_seconds_count{system="crm"}'] == 1
    assert values['privacy_webhook_latency_seconds_sum{system="crm"}'] > 0
    assert "# TYPE privacy_webhook_latency_seconds histogram" in text
    if "privacy_retention_runs" in text or "retention_runs" in text:
        assert "# TYPE privacy_retention_rows_total counter" in text
    for secret in (CUSTOMER_EMAIL, "someone@example.com", "Dana"):
        assert secret not in text


async def test_metrics_need_an_operator_key_with_metrics_read(client: AsyncClient, runtime: Runtime) -> None:
    assert_problem(await client.get("/metrics"), 401, "unauthenticated")
    other = await make_operator_key(runtime, frozenset({"subjects:read", "audit:read"}))
    assert_problem(await client.get("/metrics", headers={"Authorization": f"Bearer {other}"}), 403, "forbidden")
    scraper = await make_operator_key(runtime, frozenset({"metrics:read"}))
    ok = await client.get("/metrics", headers={"Authorization": f"Bearer {scraper}"})
    assert ok.status_code == 200
    assert ok.headers["cache-control"] == "no-store"


async def test_scrapes_within_metrics_cache_seconds_share_one_snapshot(make_settings: Any, backend: str) -> None:
    settings = await fresh_settings(
        make_settings, backend, metrics_cache_seconds=30, systems_allow_private_networks=True
    )
    clock = OffsetClock()
    runtime = build_runtime(settings, clock=clock)
    try:
        headers = {"Authorization": f"Bearer {await make_operator_key(runtime, frozenset({'metrics:read'}))}"}
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            first = (await client.get("/metrics", headers=headers)).text
            filed = await client.post("/v1/requests", json={"type": "erase", "identity": {"email": "x@example.com"}})
            assert filed.status_code == 202
            # The clock is real time moved by an offset: leave a margin for a slow machine between the scrapes.
            clock.travel(timedelta(seconds=20))
            assert (await client.get("/metrics", headers=headers)).text == first  # no new scan
            clock.travel(timedelta(seconds=11))
            fresh = samples((await client.get("/metrics", headers=headers)).text)
        key = 'privacy_requests{type="erase",status="awaiting_verification"}'
        assert fresh[key] == samples(first).get(key, 0) + 1
    finally:
        await runtime.close()

"""GET /metrics: Prometheus text from the database, counts only (no personal data)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from httpx import AsyncClient

from privacy_service.config import Settings
from privacy_service.runtime import Runtime
from tests.api.dsr_support import assert_problem, fresh_settings, submit_and_verify
from tests.conftest import MailSink
from tests.integration.systems_support import CUSTOMER_EMAIL, HookReceiver, deliver, make_customer, register

SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? -?[0-9.e+]+$')


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend)


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
    response = await client.get("/metrics")
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


async def test_metrics_token(make_settings: Any, backend: str) -> None:
    from privacy_service.app import create_app
    from privacy_service.runtime import build_runtime

    settings = await fresh_settings(make_settings, backend, metrics_token="scrape-token-123")
    runtime = build_runtime(settings)
    try:
        import httpx

        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert_problem(await client.get("/metrics"), 401, "unauthenticated")
            wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert_problem(wrong, 401, "unauthenticated")
            ok = await client.get("/metrics", headers={"Authorization": "Bearer scrape-token-123"})
            assert ok.status_code == 200
    finally:
        await runtime.close()

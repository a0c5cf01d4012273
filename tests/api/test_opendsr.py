"""The OpenDSR-compatible facade: submit, status, cancel, discovery, mapped onto native requests."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient, Response

from privacy_service.config import Settings
from privacy_service.runtime import Runtime
from tests.api.dsr_support import bearer, fresh_settings
from tests.conftest import make_operator_key
from tests.integration.systems_support import CUSTOMER_EMAIL, CUSTOMER_ID, make_customer, register

DOMAIN = "127.0.0.1"  # the host of the default PRIVACY_BASE_URL


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    # Receivers here listen on 127.0.0.1: a development set-up (tests/security/test_ssrf.py covers the default).
    return await fresh_settings(make_settings, backend, systems_allow_private_networks=True)


def opendsr(type_: str = "access", identities: list[dict[str, str]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "regulation": "gdpr",
        "subject_request_id": str(uuid.uuid4()),
        "subject_request_type": type_,
        "submitted_time": datetime.now(UTC).isoformat(),
        "subject_identities": identities
        or [{"identity_type": "email", "identity_value": CUSTOMER_EMAIL, "identity_format": "raw"}],
        "api_version": "2.0",
        **extra,
    }


def assert_opendsr_error(response: Response, status: int) -> dict[str, Any]:
    """problem+json, carrying OpenDSR's error object too."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["error"]["code"] == status
    assert body["error"]["message"] == body["detail"]
    assert body["error"]["errors"][0]["domain"] == "opendsr"
    return body


async def test_discovery_is_public(client: AsyncClient) -> None:
    for path in ("/opendsr/discovery", "/opendsr/v2/discovery", "/opendsr/v1/discovery"):
        response = await client.get(path)
        assert response.status_code == 200
        body = response.json()
        assert body["api_version"] == "2.0"
        assert {"identity_type": "email", "identity_format": "raw"} in body["supported_identities"]
        assert set(body["supported_subject_request_types"]) == {"access", "portability", "erasure"}
        assert body["extensions"]["privacy-service"]["subject_request_types"] == ["rectification"]
        assert response.headers["X-OpenDSR-Processor-Domain"] == DOMAIN


async def test_access_through_opendsr_is_verified_on_arrival_and_answered(
    client: AsyncClient, auth: dict[str, str]
) -> None:
    await make_customer(client, auth)
    body = opendsr()
    raw = json.dumps(body).encode()
    created = await client.post("/opendsr/requests", content=raw, headers={**auth, "Content-Type": "application/json"})
    assert created.status_code == 201, created.text
    answer = created.json()
    assert answer["subject_request_id"] == body["subject_request_id"]
    assert base64.b64decode(answer["encoded_request"]) == raw
    assert answer["controller_id"]
    assert created.headers["X-OpenDSR-Processor-Domain"] == DOMAIN
    status = (await client.get(f"/opendsr/requests/{body['subject_request_id']}", headers=auth)).json()
    assert status["request_status"] == "completed"
    assert status["extensions"]["privacy-service"]["native_status"] == "completed"
    assert status["results_url"].endswith(f"/v1/requests/{body['subject_request_id']}/export")
    assert status["results_count"] == 1
    export = await client.get(f"/v1/requests/{body['subject_request_id']}/export", headers=auth)
    assert export.json()["subject"]["email"] == CUSTOMER_EMAIL
    native = (await client.get(f"/v1/requests/{body['subject_request_id']}", headers=auth)).json()
    assert [h["status"] for h in native["history"]] == ["received", "verified", "processing", "completed"]
    assert native["history"][1]["note"] == "identity verified by the submitting controller (OpenDSR)"


async def test_the_legal_clock_starts_at_submitted_time(client: AsyncClient, auth: dict[str, str]) -> None:
    earlier = datetime.now(UTC) - timedelta(days=3)
    body = opendsr("erasure", submitted_time=earlier.isoformat())
    assert (await client.post("/opendsr/requests", json=body, headers=auth)).status_code == 201
    native = (await client.get(f"/v1/requests/{body['subject_request_id']}", headers=auth)).json()
    assert datetime.fromisoformat(native["received_at"]) == earlier


async def test_erasure_waits_for_review_and_can_be_cancelled_while_pending(
    client: AsyncClient, auth: dict[str, str]
) -> None:
    await make_customer(client, auth)
    body = opendsr("erasure", identities=[{"identity_type": "controller_customer_id", "identity_value": CUSTOMER_ID}])
    assert (await client.post("/opendsr/v2/requests", json=body, headers=auth)).status_code == 201
    path = f"/opendsr/requests/{body['subject_request_id']}"
    assert (await client.get(path, headers=auth)).json()["request_status"] == "pending"
    cancelled = await client.delete(path, headers=auth)
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["request_status"] == "cancelled"
    again = assert_opendsr_error(await client.delete(path, headers=auth), 409)
    assert again["type"] == "/problems/illegal-transition"


async def test_a_request_in_progress_cannot_be_cancelled(client: AsyncClient, auth: dict[str, str]) -> None:
    await register(client, auth, "http://127.0.0.1:9/hooks")
    await make_customer(client, auth)
    body = opendsr()
    assert (await client.post("/opendsr/v1/opengdpr_requests", json=body, headers=auth)).status_code == 201
    path = f"/opendsr/v1/opengdpr_requests/{body['subject_request_id']}"
    status = (await client.get(path, headers=auth)).json()
    assert status["request_status"] == "in_progress"
    assert status["extensions"]["privacy-service"]["systems"][0]["system"] == "crm"
    assert_opendsr_error(await client.delete(path, headers=auth), 409)


async def test_rectification_is_an_extension(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    subject_id = await make_customer(client, auth)
    body = opendsr("rectification", extensions={"privacy-service": {"changes": {"profile": {"city": "York"}}}})
    assert (await client.post("/opendsr/requests", json=body, headers=auth)).status_code == 201
    path = f"/opendsr/requests/{body['subject_request_id']}"
    # A profile field the policy does not free from review waits for another operator, as a code-verified one does.
    assert (await client.get(path, headers=auth)).json()["request_status"] == "pending"
    reviewer = bearer(await make_operator_key(runtime, frozenset({"requests:manage", "subjects:write"})))
    approved = await client.post(f"/v1/requests/{body['subject_request_id']}/approve", json={}, headers=reviewer)
    assert approved.status_code == 200, approved.text
    assert (await client.get(path, headers=auth)).json()["request_status"] == "completed"
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()["profile"]["city"] == "York"
    missing = opendsr("rectification")
    assert_opendsr_error(await client.post("/opendsr/requests", json=missing, headers=auth), 400)


async def test_errors_have_both_shapes(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    assert_opendsr_error(await client.post("/opendsr/requests", json=opendsr()), 401)
    reader = await make_operator_key(runtime, frozenset({"subjects:read"}))
    assert_opendsr_error(await client.post("/opendsr/requests", json=opendsr(), headers=bearer(reader)), 403)
    hashed = opendsr(identities=[{"identity_type": "email", "identity_value": "ab" * 32, "identity_format": "sha256"}])
    assert_opendsr_error(await client.post("/opendsr/requests", json=hashed, headers=auth), 400)
    bad_email = opendsr(identities=[{"identity_type": "email", "identity_value": "not-an-address"}])
    problem = assert_opendsr_error(await client.post("/opendsr/requests", json=bad_email, headers=auth), 400)
    assert "not-an-address" not in json.dumps(problem)
    assert_opendsr_error(await client.post("/opendsr/requests", json={"regulation": "pipl"}, headers=auth), 400)
    body = opendsr("erasure")
    assert (await client.post("/opendsr/requests", json=body, headers=auth)).status_code == 201
    assert_opendsr_error(await client.post("/opendsr/requests", json=body, headers=auth), 409)
    same_subject = opendsr("erasure")
    assert_opendsr_error(await client.post("/opendsr/requests", json=same_subject, headers=auth), 409)
    assert_opendsr_error(await client.get(f"/opendsr/requests/{uuid.uuid4()}", headers=auth), 404)

"""Abuse case for failed operator authentication (issue 16, item 11), as an attacker would try it.

Anyone can send junk operator keys. Each used to write an audit row (300 keys: 300 rows, a draft
breach, a mail to the breach team), with no limit on how fast. Now: per client address, failures are
limited (429 with Retry-After, before the key is even looked up) and audited in aggregate; breach
monitoring still sees the burst, once.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from privacy_service.app import create_app
from privacy_service.breaches.jobs import monitor_audit
from privacy_service.breaches.policy import load_breach_policy
from privacy_service.operators.guards import FailedAuthGate
from privacy_service.runtime import Runtime
from tests.breach_support import BREACH_TEAM, deliver_all, runtime_for
from tests.conftest import MailSink, _empty_postgres, make_operator_key
from tests.integration.test_breach_monitoring import audit_events

ATTACKER = ("203.0.113.66", 40000)
OPERATOR = ("198.51.100.7", 50000)


@pytest.fixture
async def served(make_settings: Any, backend: str) -> AsyncIterator[tuple[Runtime, Any]]:
    settings = make_settings()  # the shipped limits and monitoring thresholds
    if backend == "postgres":
        await _empty_postgres(settings.database_url)
    async with runtime_for(settings) as runtime:
        yield runtime, create_app(runtime=runtime)


def _client(app: Any, address: tuple[str, int]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=address), base_url="http://testserver")


def _junk(i: int) -> str:
    return f"psk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}" if i % 3 else f"junk-{secrets.token_hex(8)}"


async def test_three_hundred_junk_keys_are_throttled_and_recorded_in_aggregate(
    served: tuple[Runtime, Any], mail: MailSink
) -> None:
    runtime, app = served
    valid = await make_operator_key(runtime)
    keys = [_junk(i) for i in range(300)]
    statuses: list[int] = []
    async with _client(app, ATTACKER) as attacker:
        for key in keys:
            response = await attacker.get("/v1/subjects", headers={"Authorization": f"Bearer {key}"})
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.headers["content-type"].startswith("application/problem+json")
                assert int(response.headers["retry-after"]) >= 1
        # The limit is per address, not per key: a valid key from the flooding address waits too.
        assert (await attacker.get("/v1/subjects", headers={"Authorization": f"Bearer {valid}"})).status_code == 429

    assert statuses[:10] == [401] * 10  # "auth_failed": "10/min burst 10"
    assert set(statuses[10:]) == {429}

    # Bounded audit rows (a row at the 1st, 2nd, 4th ... 256th attempt), counting every attempt seen.
    events = await audit_events(runtime, "operator.auth_failed")
    assert len(events) == 9
    assert sum(event["detail"]["attempts"] for event in events) == 256
    assert sum(event["detail"]["throttled"] for event in events) == 256 - 10
    assert len({event["actor_id"] for event in events}) == 1
    recorded = str(events)
    assert ATTACKER[0] not in recorded
    assert all(key not in recorded for key in keys)

    # Monitoring still sees the burst: one draft, one mail to the breach team, however often it runs.
    rules = load_breach_policy(runtime.settings.policy_dir, runtime.policy)
    opened = []
    for _ in range(3):
        result = await monitor_audit(runtime.db, runtime.keys, runtime.clock, runtime.settings, runtime.policy, rules)
        opened += result.opened
    assert len(opened) == 1
    await deliver_all(runtime)
    assert len(mail.to(BREACH_TEAM)) == 1

    # An operator elsewhere is unaffected.
    async with _client(app, OPERATOR) as operator:
        response = await operator.get("/v1/subjects", params={"email": "nobody@example.com"}, headers=_bearer(valid))
        assert response.status_code in (200, 404), response.text
        draft = await operator.get(f"/v1/breaches/{opened[0]}", headers=_bearer(valid))
        assert draft.status_code == 200
        assert "256 requests presented an unknown, revoked or wrong operator key" in draft.json()["description"]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_full_table_of_junk_addresses_never_locks_out_a_valid_key(served: tuple[Runtime, Any]) -> None:
    """Beyond the tracked addresses, new addresses used to share one bucket: 10 junk keys drained it and
    every operator at an untracked address got 429 unchecked. Now their key is checked as usual."""
    runtime, app = served
    valid = await make_operator_key(runtime)
    app.state.authenticator.failures = FailedAuthGate(max_addresses=4)  # the shipped bound, in small
    for host in range(12):
        async with _client(app, (f"203.0.113.{100 + host}", 40000)) as attacker:
            for i in range(11):
                response = await attacker.get("/v1/subjects", headers=_bearer(_junk(i)))
                assert response.status_code == (401 if i < 10 else 429)
    async with _client(app, OPERATOR) as operator:
        response = await operator.get("/v1/subjects", params={"email": "nobody@example.com"}, headers=_bearer(valid))
    assert response.status_code in (200, 404), response.text


async def test_one_ipv6_host_cannot_rotate_addresses_in_its_64(served: tuple[Runtime, Any]) -> None:
    runtime, app = served
    valid = await make_operator_key(runtime)
    statuses = []
    for host in range(1, 13):  # a new address of the same /64 for every key
        async with _client(app, (f"2001:db8:66:1::{host:x}", 40000)) as attacker:
            statuses.append((await attacker.get("/v1/subjects", headers=_bearer(_junk(host)))).status_code)
    assert statuses == [401] * 10 + [429] * 2
    async with _client(app, ("2001:db8:66:2::1", 40000)) as neighbour:  # the next /64 is someone else
        response = await neighbour.get("/v1/subjects", params={"email": "nobody@example.com"}, headers=_bearer(valid))
    assert response.status_code in (200, 404), response.text

"""A record's ``occurred_at`` (and an event's ``at``) is the anchor retention runs from: a time in the
future beyond the clock-skew allowance is refused at write (422 problem+json that echoes nothing of
the request), so no client can stretch a retention period; history (any past time) is accepted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from httpx import AsyncClient
from sqlalchemy import func
from sqlmodel import select

from privacy_service.app import create_app
from privacy_service.runtime import build_runtime
from privacy_service.subjects.models import Record
from tests.conftest import make_operator_key

SECRET = "ada.lovelace@example.com"


def record(at: datetime | str, **extra: Any) -> dict[str, Any]:
    when = at if isinstance(at, str) else at.isoformat()
    return {
        "kind": "ticket",
        "category": "system.support_ticket",
        "occurred_at": when,
        "data": {"from": SECRET},
    } | extra


def assert_refused(response: httpx.Response, field: str, sent: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert "future" in body["detail"]
    assert [e["field"] for e in body.get("errors", [])] == [field]
    # Nothing of the request comes back: not the data, not the time sent.
    assert SECRET not in response.text
    assert sent not in response.text


async def new_subject(client: AsyncClient, auth: dict[str, str]) -> str:
    created = await client.post("/v1/subjects", json={"email": SECRET}, headers=auth)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def record_count(client: AsyncClient, auth: dict[str, str], subject_id: str) -> int:
    listed = await client.get(f"/v1/subjects/{subject_id}/records", headers=auth)
    assert listed.status_code == 200, listed.text
    return len(listed.json()["items"])


@pytest.mark.parametrize("ahead", [timedelta(minutes=6), timedelta(days=1), timedelta(days=365 * 900)])
async def test_a_future_occurred_at_is_refused_and_nothing_is_stored(
    client: AsyncClient, auth: dict[str, str], ahead: timedelta
) -> None:
    subject_id = await new_subject(client, auth)
    at = datetime.now(UTC) + ahead
    response = await client.post(f"/v1/subjects/{subject_id}/records", json=record(at), headers=auth)
    assert_refused(response, "occurred_at", at.isoformat()[:19])
    assert await record_count(client, auth, subject_id) == 0


async def test_a_future_time_in_another_offset_is_judged_in_utc(client: AsyncClient, auth: dict[str, str]) -> None:
    subject_id = await new_subject(client, auth)
    plus14 = timezone(timedelta(hours=14))
    # Wall-clock "now" in Kiribati is 14 h ahead of UTC, but it is the same instant: accepted.
    same_instant = datetime.now(plus14) - timedelta(seconds=5)
    accepted = await client.post(f"/v1/subjects/{subject_id}/records", json=record(same_instant), headers=auth)
    assert accepted.status_code == 201, accepted.text
    # An hour ahead, written with a negative offset: still an hour in the future.
    minus5 = timezone(timedelta(hours=-5))
    later = datetime.now(minus5) + timedelta(hours=1)
    refused = await client.post(f"/v1/subjects/{subject_id}/records", json=record(later), headers=auth)
    assert_refused(refused, "occurred_at", later.isoformat()[:19])
    assert await record_count(client, auth, subject_id) == 1


async def test_history_and_a_small_clock_skew_are_accepted(client: AsyncClient, auth: dict[str, str]) -> None:
    subject_id = await new_subject(client, auth)
    for at in (datetime(2015, 3, 1, 9, 0, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=60)):
        response = await client.post(f"/v1/subjects/{subject_id}/records", json=record(at), headers=auth)
        assert response.status_code == 201, response.text
    assert await record_count(client, auth, subject_id) == 2


@pytest.mark.parametrize("kind", ["account_closed", "last_activity"])
async def test_a_future_event_time_is_refused(client: AsyncClient, auth: dict[str, str], kind: str) -> None:
    """Account closure and last activity are anchors too: a future one would stretch retention."""
    subject_id = await new_subject(client, auth)
    at = datetime.now(UTC) + timedelta(days=30)
    response = await client.post(
        f"/v1/subjects/{subject_id}/events", json={"type": kind, "at": at.isoformat()}, headers=auth
    )
    assert_refused(response, "at", at.isoformat()[:19])
    subject = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
    assert subject["account_closed_at"] is None


async def test_a_stranger_and_a_narrow_key_learn_nothing_from_a_future_time(
    client: AsyncClient, auth: dict[str, str], runtime: Any
) -> None:
    """Authorisation comes before validation: no 422 (that would confirm the subject and the rule)."""
    subject_id = await new_subject(client, auth)
    body = record(datetime.now(UTC) + timedelta(days=1))
    stranger = await client.post(f"/v1/subjects/{subject_id}/records", json=body)
    assert stranger.status_code == 401, stranger.text
    reader = {"Authorization": f"Bearer {await make_operator_key(runtime, frozenset({'subjects:read'}))}"}
    narrow = await client.post(f"/v1/subjects/{subject_id}/records", json=body, headers=reader)
    assert narrow.status_code == 403, narrow.text
    for response in (stranger, narrow):
        assert response.headers["content-type"].startswith("application/problem+json")
        assert SECRET not in response.text
    unknown = await client.post(f"/v1/subjects/{uuid.uuid4()}/records", json=body, headers=auth)
    assert unknown.status_code in (404, 422), unknown.text
    assert SECRET not in unknown.text


@pytest.fixture
async def lenient_client(make_settings: Any, settings: Any) -> AsyncIterator[tuple[AsyncClient, dict[str, str], Any]]:
    """The same service with a one-hour clock-skew allowance (PRIVACY_RETENTION_MAX_FUTURE_SKEW_SECONDS)."""
    runtime = build_runtime(make_settings(retention_max_future_skew_seconds=3600))
    transport = httpx.ASGITransport(app=create_app(runtime=runtime))
    auth = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client, auth, runtime
    await runtime.close()


async def test_the_skew_allowance_is_configurable(lenient_client: tuple[AsyncClient, dict[str, str], Any]) -> None:
    client, auth, runtime = lenient_client
    subject_id = await new_subject(client, auth)
    inside = await client.post(
        f"/v1/subjects/{subject_id}/records", json=record(datetime.now(UTC) + timedelta(minutes=50)), headers=auth
    )
    assert inside.status_code == 201, inside.text
    beyond_at = datetime.now(UTC) + timedelta(minutes=70)
    beyond = await client.post(f"/v1/subjects/{subject_id}/records", json=record(beyond_at), headers=auth)
    assert_refused(beyond, "occurred_at", beyond_at.isoformat()[:19])
    async with runtime.db.transaction() as session:
        assert (await session.exec(select(func.count()).select_from(Record))).one() == 1

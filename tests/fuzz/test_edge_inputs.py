"""Inputs the fuzzer found (or could find only by luck) that once answered 500: each is now a 4xx."""

from __future__ import annotations

import uuid

import httpx
import pytest
from httpx import AsyncClient

from tests.fuzz.test_schemathesis import check_problem

EARLY = "0001-01-01T00:00:00+05:00"  # no UTC equivalent: datetime overflows converting it
LATE = "9999-12-31T23:59:59Z"  # adding a retention period to it overflows in purge and erasure


def problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/audit", {"actor": "a\x00b"}),
        ("/v1/audit", {"action": "a\x00b"}),
        ("/v1/subjects", {"external_id": "a\x00b"}),
        ("/v1/policy/versions/a%00b", {}),
    ],
)
async def test_nul_in_path_or_query_is_a_400(
    client: AsyncClient, auth: dict[str, str], path: str, params: dict[str, str]
) -> None:
    response = await client.get(path, params=params, headers=auth)
    problem(response, 400)
    assert "NUL" in response.json()["detail"]


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("value", [EARLY, LATE, "1899-12-31T23:59:59Z"])
async def test_audit_time_filters_out_of_range_are_a_422(
    client: AsyncClient, auth: dict[str, str], name: str, value: str
) -> None:
    problem(await client.get("/v1/audit", params={name: value}, headers=auth), 422)


async def test_audit_cursor_beyond_bigint_is_a_400(client: AsyncClient, auth: dict[str, str]) -> None:
    problem(await client.get("/v1/audit", params={"after": str(2**64)}, headers=auth), 400)


@pytest.mark.parametrize(
    "params",
    [{"due_before": EARLY}, {"due_before": LATE}, {"after": f"{EARLY}_{uuid.uuid4()}"}],
)
async def test_request_list_filters_out_of_range_are_a_422(
    client: AsyncClient, auth: dict[str, str], params: dict[str, str]
) -> None:
    problem(await client.get("/v1/requests", params=params, headers=auth), 422)


@pytest.mark.parametrize("at", [EARLY, LATE])
async def test_record_and_event_dates_out_of_range_are_a_422(
    client: AsyncClient, auth: dict[str, str], at: str
) -> None:
    subject_id = (await client.post("/v1/subjects", json={}, headers=auth)).json()["id"]
    record = {"kind": "note", "category": "user.behavior", "occurred_at": at, "data": {}}
    problem(await client.post(f"/v1/subjects/{subject_id}/records", json=record, headers=auth), 422)
    event = {"type": "account_closed", "at": at}
    problem(await client.post(f"/v1/subjects/{subject_id}/events", json=event, headers=auth), 422)
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()["account_closed_at"] is None


async def test_timestamps_are_stored_in_utc(client: AsyncClient, auth: dict[str, str]) -> None:
    subject_id = (await client.post("/v1/subjects", json={}, headers=auth)).json()["id"]
    event = {"type": "account_closed", "at": "2026-02-01T05:00:00+05:00"}
    accepted = await client.post(f"/v1/subjects/{subject_id}/events", json=event, headers=auth)
    assert accepted.json()["at"] == "2026-02-01T00:00:00Z"


async def test_a_bodiless_post_needs_no_content_type(client: AsyncClient) -> None:
    """The OpenAPI document gives resend no body, so a client following it sends no Content-Type."""
    response = await client.post(f"/v1/requests/{uuid.uuid4()}/resend")
    problem(response, 404)
    with_body = await client.post(
        f"/v1/requests/{uuid.uuid4()}/resend", content=b"x", headers={"content-type": "text/plain"}
    )
    problem(with_body, 415)


class _Case:
    """The two attributes of a schemathesis case that the check reads."""

    def __init__(self, body: object, query: dict[str, str] | None = None) -> None:
        self.body, self.query = body, query


def _response(status: int, body: dict[str, object]) -> httpx.Response:
    request = httpx.Request("POST", "http://testserver/v1/subjects")
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"}, request=request)


def test_the_echo_check_catches_a_repeated_value() -> None:
    """The fuzz test's PII check must be able to fail: a 4xx repeating a submitted value."""
    base = {"type": "/problems/x", "title": "X", "status": 422, "instance": "/v1/subjects"}
    submitted = _Case({"profile": {"name": "Jane Marker-Doe"}}, {"email": "jane.marker@example.com"})
    with pytest.raises(AssertionError, match="repeats submitted values"):
        check_problem(submitted, _response(422, {**base, "detail": "name 'Jane Marker-Doe' is wrong"}))
    with pytest.raises(AssertionError, match="repeats submitted values"):
        check_problem(
            submitted,
            _response(
                422, {**base, "detail": "bad", "errors": [{"field": "email", "message": "jane.marker@example.com"}]}
            ),
        )
    check_problem(submitted, _response(422, {**base, "detail": "name is wrong"}))

"""The access log states the status the client received, on every path that answers with an error."""

from __future__ import annotations

import json

import httpx
import pytest

from tests import conftest_logcheck


def _logged_statuses(path: str) -> list[object]:
    """The ``http_request`` lines the service printed in this test (captured by tests/conftest_logcheck)."""
    watch = conftest_logcheck._watch
    assert watch is not None
    lines = [json.loads(text) for source, text in watch.lines if source == "structlog"]
    return [line["status"] for line in lines if line.get("event") == "http_request" and line.get("path") == path]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        # Refused by the portal's CSRF middleware, before any handler runs (was logged as 500).
        ("POST", "/privacy/request", {"data": {"type": "access", "email": "someone@example.org"}}),
        ("POST", "/v1/requests", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("GET", "/v1/requests", {"headers": {"authorization": "Bearer psk_wrong"}}),
        ("POST", "/v1/requests", {"content": b"x", "headers": {"content-type": "text/plain"}}),
    ],
)
async def test_the_logged_status_is_the_one_sent(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, object]
) -> None:
    response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert 400 <= response.status_code < 500
    assert _logged_statuses(path) == [response.status_code]

"""The request id (privacy_service.middleware): a safe ``X-Request-ID`` from the caller is kept and sent
back, an unsafe one is replaced by a new id, and every response carries the security headers once."""

from __future__ import annotations

import re

import pytest
from httpx import AsyncClient

NEW_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_safe_caller_id_is_kept_and_an_unsafe_one_replaced(client: AsyncClient) -> None:
    kept = await client.get("/healthz", headers={"X-Request-ID": "trace-01.abc_DEF"})
    assert kept.headers["x-request-id"] == "trace-01.abc_DEF"
    for unsafe in ("<script>", "a" * 65, "id with spaces", ""):
        replaced = await client.get("/healthz", headers={"X-Request-ID": unsafe})
        assert NEW_ID.match(replaced.headers["x-request-id"]), unsafe
    # Sent twice: the last one counts (as when the headers were read into a dict).
    twice = await client.get("/healthz", headers=[("X-Request-ID", "first"), ("X-Request-ID", "second")])
    assert twice.headers["x-request-id"] == "second"
    fresh = await client.get("/healthz")
    assert NEW_ID.match(fresh.headers["x-request-id"])
    assert fresh.headers["x-request-id"] != replaced.headers["x-request-id"]
    for name in ("x-content-type-options", "x-frame-options", "referrer-policy", "content-security-policy"):
        assert fresh.headers.get_list(name) == [fresh.headers[name]], name
    assert fresh.headers["cache-control"] == "no-store"
    assert "server" not in fresh.headers

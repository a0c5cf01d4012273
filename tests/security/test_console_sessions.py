# ruff: noqa: F811 - the shared fixtures (tests.console_support) are imported by name and taken as parameters
"""Abuse tests for the operator console's sign-in and sessions (issue 17).

A wrong key gets one answer whatever is wrong with it; an address is locked out after its failures;
every console form refuses a post without its CSRF token; a copied session cookie stops working at
sign-out, after the idle and the absolute timeouts and once the key is revoked; only a hash of the
session token is stored; neither the key nor the token reaches a log line or the audit log.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
import structlog
from litestar import Litestar
from litestar.routes import HTTPRoute
from sqlalchemy import text

from privacy_service.config import DEFAULT_RATE_LIMITS, Settings
from privacy_service.operators.service import SCOPES, revoke_operator
from privacy_service.runtime import Runtime
from privacy_service.web.console.routes import CSRF_COOKIE
from privacy_service.web.console.sessions import SESSION_COOKIE
from tests.api.dsr_support import fresh_settings
from tests.conftest import make_operator_key
from tests.console_support import (  # noqa: F401 - fixtures, used by name
    OPEN_CONSOLE_LIMITS,
    browser,
    client,
    clock,
    console_app,
    csrf_token,
    runtime,
    setup,
    sign_in,
    signed_in,
)
from tests.integration.systems_support import OffsetClock

FAILURES_ALLOWED = 5  # as many as the wrong keys of the first test


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    limits = {**DEFAULT_RATE_LIMITS, **OPEN_CONSOLE_LIMITS, "console_sign_in_failed": f"{FAILURES_ALLOWED}/hour"}
    return await fresh_settings(
        make_settings, backend, rate_limits=limits, console_idle_minutes=30, console_absolute_hours=2
    )


def _page(response: httpx.Response) -> str:
    """The page without what differs per request (the CSRF token)."""
    return re.sub(r'name="_csrf_token" value="[^"]*"', "", response.text)


async def _audit(runtime: Runtime, action: str) -> list[dict[str, Any]]:
    async with runtime.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT actor_type, actor_id, outcome, detail FROM audit_events WHERE action = :a ORDER BY seq"),
                {"a": action},
            )
        ).all()
    return [
        {"actor": (r[0], r[1]), "outcome": r[2], "detail": json.loads(r[3]) if isinstance(r[3], str) else r[3]}
        for r in rows
    ]


async def _dashboard_status(client: httpx.AsyncClient) -> int:
    return (await client.get("/console")).status_code


# -- a wrong key -----------------------------------------------------------------------------------


async def test_every_wrong_key_gets_the_same_generic_answer_and_no_session(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    good = await make_operator_key(runtime, frozenset({"audit:read"}), name="revoked-one")
    expired_key = await make_operator_key(runtime, frozenset({"audit:read"}), name="expired-one")
    async with runtime.db.transaction() as session:
        await revoke_operator(session, name="revoked-one", now=runtime.clock.now())
        await session.exec(  # type: ignore[call-overload]
            text("UPDATE operators SET expires_at = :t WHERE name = 'expired-one'").bindparams(
                t=runtime.clock.now() - timedelta(minutes=1)
            )
        )
    key_id, _, secret = good.removeprefix("psk_").partition("_")
    wrong = [
        good,  # revoked
        expired_key,  # expired
        f"psk_{key_id}_{'A' * len(secret)}",  # a real key id, the wrong secret
        "psk_000000000000_" + "B" * 43,  # an unknown key id
        "not a key at all",
    ]
    pages = set()
    for key in wrong:
        response = await sign_in(client, key)
        assert response.status_code == 401, (key, response.status_code)
        assert SESSION_COOKIE not in response.cookies
        assert "This key was not accepted" in response.text
        assert key not in response.text
        pages.add(_page(response))
    assert len(pages) == 1  # no oracle: revoked, expired, wrong and unknown keys look alike
    assert await _dashboard_status(client) == 303
    failed = await _audit(runtime, "operator.auth_failed")
    assert len(failed) == len(wrong)
    assert all(row["detail"]["via"] == "console" and row["outcome"] == "failed" for row in failed)
    assert [row["detail"]["malformed"] for row in failed] == [0, 0, 0, 0, 1]
    stored = json.dumps([row["detail"] for row in failed])
    assert key_id in stored  # the public key id, as the API's rejections record it
    for key in wrong:
        assert key not in stored
        assert key[-20:] not in stored


async def test_an_address_is_locked_out_after_its_failures_even_with_the_right_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    key = await make_operator_key(runtime, frozenset({"audit:read"}))
    for _ in range(FAILURES_ALLOWED):
        assert (await sign_in(client, "psk_000000000000_" + "C" * 43)).status_code == 401
    locked = await sign_in(client, key)
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 60
    assert "Too many keys were not accepted" in locked.text
    assert SESSION_COOKIE not in locked.cookies
    assert await _dashboard_status(client) == 303
    failed = await _audit(runtime, "operator.auth_failed")
    assert len(failed) == FAILURES_ALLOWED + 1
    assert failed[-1]["detail"]["throttled"] == 1
    assert await _audit(runtime, "console.sign_in") == []


async def test_a_blank_key_is_asked_for_and_not_counted_as_a_failure(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    key = await make_operator_key(runtime, frozenset({"audit:read"}))
    for _ in range(FAILURES_ALLOWED + 2):
        response = await sign_in(client, "   ")
        assert response.status_code == 422
        assert "Enter your operator key" in response.text
    assert await _audit(runtime, "operator.auth_failed") == []
    assert (await sign_in(client, key)).status_code == 303


# -- CSRF ------------------------------------------------------------------------------------------


def _console_forms(app: Litestar) -> list[str]:
    """Every console path that takes a POST, its path parameters filled with a fresh id (the CSRF check
    comes before the handler, so no row needs to exist)."""
    return sorted(
        re.sub(r"\{[^}]+\}", str(uuid.uuid4()), route.path)
        for route in app.routes
        if isinstance(route, HTTPRoute)
        and route.path.startswith("/console")
        and any("POST" in handler.http_methods for handler in route.route_handlers)
    )


async def _audit_total(runtime: Runtime) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM audit_events"))).scalar_one())


async def test_every_console_form_refuses_a_post_without_its_csrf_token(
    setup: tuple[Runtime, Litestar, OffsetClock], client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Each form of every area (found in the route table, so a new one is covered without editing this
    test), posted by a session holding every scope: no token, a forged one and an altered one are refused
    before the handler runs, and nothing is recorded."""
    _, app, _ = setup
    forms = _console_forms(app)
    assert {"/console/sign-in", "/console/sign-out", "/console/audit/verify"} <= set(forms)
    assert len(forms) >= 10  # every area's actions, not only sign-in and sign-out
    key = await make_operator_key(runtime, frozenset(SCOPES))
    await signed_in(client, key)
    before = await _audit_total(runtime)
    for path in forms:
        for token in (None, "forged-token", await csrf_token(client, "/console") + "x"):
            data = {"key": key, "reason": "test", "confirm": "yes"}
            if token is not None:
                data["_csrf_token"] = token
            response = await client.post(path, data=data)
            assert response.status_code == 403, (path, token, response.status_code)
            assert "The form expired" in response.text
    # Nothing happened: the session lives, no new one was made, no action was recorded.
    assert await _dashboard_status(client) == 200
    assert await _audit_total(runtime) == before
    assert len(await _audit(runtime, "console.sign_in")) == 1
    assert await _audit(runtime, "console.sign_out") == []
    # A cross-site form has no cookie to pair with (SameSite=Strict): a token alone is refused too.
    async with browser(app) as other:
        other.cookies.set(SESSION_COOKIE, client.cookies[SESSION_COOKIE], path="/console")
        token = client.cookies[CSRF_COOKIE]
        refused = await other.post("/console/sign-out", data={"_csrf_token": token})
        assert refused.status_code == 403
    assert await _dashboard_status(client) == 200


# -- a stolen cookie -------------------------------------------------------------------------------


async def test_a_copied_session_cookie_stops_working_at_sign_out(
    setup: tuple[Runtime, Litestar, OffsetClock], client: httpx.AsyncClient, runtime: Runtime
) -> None:
    key = await make_operator_key(runtime, frozenset({"audit:read"}))
    stolen = await signed_in(client, key)
    async with browser(setup[1]) as thief:
        thief.cookies.set(SESSION_COOKIE, stolen, path="/console")
        assert await _dashboard_status(thief) == 200  # the copy works while the session lives
        out = await client.post("/console/sign-out", data={"_csrf_token": await csrf_token(client, "/console")})
        assert out.status_code == 303
        assert out.headers["location"] == "/console/sign-in?signed_out=1"
        assert 'privacy_console=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
        assert await _dashboard_status(thief) == 303
        assert (await thief.get("/console/api")).status_code == 303
    assert len(await _audit(runtime, "console.sign_out")) == 1


async def test_signing_in_again_ends_the_browsers_previous_session(
    setup: tuple[Runtime, Litestar, OffsetClock], client: httpx.AsyncClient, runtime: Runtime
) -> None:
    first = await signed_in(client, await make_operator_key(runtime, frozenset({"audit:read"})))
    # A sign-in form posted while the browser holds a live session (one opened before it signed in).
    token = await csrf_token(client, "/console")
    key = await make_operator_key(runtime, frozenset({"requests:manage"}))
    assert (await client.post("/console/sign-in", data={"key": key, "_csrf_token": token})).status_code == 303
    second = client.cookies[SESSION_COOKIE]
    assert second != first
    async with browser(setup[1]) as thief:
        thief.cookies.set(SESSION_COOKIE, first, path="/console")
        assert await _dashboard_status(thief) == 303
    assert 'id="requests-heading"' in (await client.get("/console")).text
    async with runtime.db.engine.connect() as conn:
        reasons = (await conn.execute(text("SELECT end_reason FROM console_sessions"))).scalars().all()
    assert sorted(reasons, key=str) == [None, "replaced"]


async def test_a_session_ends_after_the_idle_timeout_and_activity_keeps_it(
    setup: tuple[Runtime, Litestar, OffsetClock], client: httpx.AsyncClient, runtime: Runtime, clock: OffsetClock
) -> None:
    key = await make_operator_key(runtime, frozenset({"audit:read"}))
    stolen = await signed_in(client, key)
    for _ in range(3):  # 3 x 25 minutes with a page view each time: more than the idle timeout in all
        clock.travel(timedelta(minutes=25))
        assert await _dashboard_status(client) == 200
    clock.travel(timedelta(minutes=31))
    async with browser(setup[1]) as thief:
        thief.cookies.set(SESSION_COOKIE, stolen, path="/console")
        assert await _dashboard_status(thief) == 303
    clock.travel(timedelta(minutes=-31))  # ended on the server: going back in time does not revive it
    assert await _dashboard_status(client) == 303
    ended = await _audit(runtime, "console.session_ended")
    assert len(ended) == 1
    assert ended[0]["detail"]["reason"] == "idle"


async def test_a_session_ends_at_the_absolute_timeout_however_active(
    client: httpx.AsyncClient, runtime: Runtime, clock: OffsetClock
) -> None:
    key = await make_operator_key(runtime, frozenset({"audit:read"}))
    await signed_in(client, key)
    for _ in range(5):  # 5 x 20 minutes: active all along, within the 2 hours
        clock.travel(timedelta(minutes=20))
        assert await _dashboard_status(client) == 200
    clock.travel(timedelta(minutes=21))
    assert await _dashboard_status(client) == 303
    ended = await _audit(runtime, "console.session_ended")
    assert ended[0]["detail"]["reason"] == "absolute"
    # Signing in again gives a new session.
    await signed_in(client, key)
    assert await _dashboard_status(client) == 200


async def test_revoking_the_key_ends_its_sessions(
    setup: tuple[Runtime, Litestar, OffsetClock], client: httpx.AsyncClient, runtime: Runtime
) -> None:
    key = await make_operator_key(runtime, frozenset({"audit:read"}), name="leaving-officer")
    await signed_in(client, key)
    async with browser(setup[1]) as second:
        await signed_in(second, key)
        assert await _dashboard_status(client) == 200
        async with runtime.db.transaction() as session:
            await revoke_operator(session, name="leaving-officer", now=runtime.clock.now())
        assert await _dashboard_status(client) == 303
        assert await _dashboard_status(second) == 303
    async with runtime.db.engine.connect() as conn:
        reasons = (await conn.execute(text("SELECT end_reason FROM console_sessions"))).scalars().all()
    assert sorted(reasons) == ["revoked", "revoked"]


async def test_narrowed_scopes_narrow_a_live_session(client: httpx.AsyncClient, runtime: Runtime) -> None:
    key = await make_operator_key(runtime, frozenset({"audit:read", "requests:manage"}), name="narrowed")
    await signed_in(client, key)
    assert 'id="requests-heading"' in (await client.get("/console")).text
    async with runtime.db.transaction() as session:
        await session.exec(text("UPDATE operators SET scopes = 'audit:read' WHERE name = 'narrowed'"))  # type: ignore[call-overload]
    page = (await client.get("/console")).text
    assert 'id="requests-heading"' not in page
    assert 'id="audit-heading"' in page


# -- what is stored and said -----------------------------------------------------------------------


async def test_only_a_hash_of_the_session_token_is_stored_and_the_cookie_is_locked_down(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    key = await make_operator_key(runtime, frozenset({"audit:read"}))
    response = await sign_in(client, key)
    cookie = response.headers["set-cookie"]
    token = client.cookies[SESSION_COOKIE]
    assert len(token) >= 43
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # the base URL is http here
    async with runtime.db.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM console_sessions"))).all()
    assert len(rows) == 1
    stored = " ".join(str(value) for value in rows[0])
    assert token not in stored
    assert hashlib.sha256(token.encode()).digest() in tuple(rows[0])


async def test_the_session_cookie_is_secure_behind_https(make_settings: Any, backend: str) -> None:
    settings = await fresh_settings(
        make_settings, backend, base_url="https://privacy.example", rate_limits=OPEN_CONSOLE_LIMITS
    )
    async with console_app(settings) as (runtime, app, _):
        key = await make_operator_key(runtime, frozenset({"audit:read"}))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client:
            response = await sign_in(client, key)
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]
    assert "samesite=strict" in response.headers["set-cookie"].lower()


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every line structlog prints while the test runs (the service's logs)."""
    lines: list[str] = []
    original = structlog.PrintLogger.msg

    def recording(self: structlog.PrintLogger, message: str) -> None:
        lines.append(message)
        original(self, message)

    for name in ("msg", "info", "warning", "error", "critical", "debug", "exception", "err", "log", "fatal"):
        if hasattr(structlog.PrintLogger, name):
            monkeypatch.setattr(structlog.PrintLogger, name, recording)
    return lines


async def test_no_key_or_session_token_in_logs_or_audit(
    client: httpx.AsyncClient, runtime: Runtime, log_lines: list[str]
) -> None:
    key = await make_operator_key(runtime, frozenset({"audit:read"}))
    wrong = key[:-4] + "AAAA"
    assert (await sign_in(client, wrong)).status_code == 401
    token = await signed_in(client, key)
    assert await _dashboard_status(client) == 200
    assert (await client.get("/console/api")).status_code == 200
    await client.post("/console/sign-out", data={"_csrf_token": await csrf_token(client, "/console")})
    assert any('"http_request"' in line and "/console/sign-in" in line for line in log_lines)  # the capture works
    secrets = [key, wrong, key.rsplit("_", 1)[1], wrong.rsplit("_", 1)[1], token]
    assert [line for line in log_lines if any(secret in line for secret in secrets)] == []
    async with runtime.db.engine.connect() as conn:
        details = " ".join(str(d) for d in (await conn.execute(text("SELECT detail FROM audit_events"))).scalars())
    assert not any(secret in details for secret in secrets)
    assert len(await _audit(runtime, "console.sign_in")) == 1
    assert len(await _audit(runtime, "console.sign_out")) == 1

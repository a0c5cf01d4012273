"""The authorization matrix, built from the application's own route table.

Every route declares who may call it in its ``opt``, next to the route (the vocabulary is
``privacy_service.operators.service.ACCESS_KINDS``). This module walks ``app.routes``:

- a route without a declaration, or with a contradictory one, fails the suite;
- every route is called with no key, a key for each single scope, and a key with every scope, and
  answers 401 / 403 / neither exactly as its declaration says (404 and 422 count as "let in"); a
  public route, which reads no key, is called with no key and with every scope only (rendering
  /schema/openapi.yaml once per scope would cost more than the rest of the matrix);
- every route is called again against real data (a customer, a record, a completed access request)
  with every credential that lacks a reading scope, and no answer may carry that customer's data;
- a route declared ``pii`` must need a reading scope;
- every console route (``console``: a signed-in console session, not a key) is called with a session
  signed in with each single scope and with every scope, and answers 403 / neither as its
  ``console_scopes`` say; operator keys never open it.

New routes (a console, a scoped /metrics) are picked up without editing this file.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient, Response
from litestar import Litestar, get
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from privacy_service.app import create_app
from privacy_service.config import DEFAULT_RATE_LIMITS, Settings
from privacy_service.operators.service import ACCESS_KINDS, READING_SCOPES, SCOPES
from privacy_service.runtime import Runtime
from tests.api.dsr_support import OPEN_LIMITS, TRANSACTION, assert_no_leak, fresh_settings, make_subject
from tests.conftest import make_operator_key

UNLIMITED = "100000/min burst 100000"
NON_READING = tuple(scope for scope in SCOPES if scope not in READING_SCOPES)
_PARAM = re.compile(r"\{(\w+):(\w+)\}")
ALLOWED, UNAUTHENTICATED, FORBIDDEN, DENIED = "allowed", 401, 403, "denied"

EMAIL = "matrix.canary@example.com"
PHONE = "+447911123458"
PROFILE = {"name": "Marjorie Canaryfield", "iban": "GB94BARC10201530093459", "national_id": "QQ987654C"}
# The values a correction awaiting review asks for: the customer's data-to-be (issue 16, review C).
REQUESTED = {"email": "requested.canary@example.org", "name": "Rosalind Requestedname", "iban": "NL91ABNA0417164300"}
CANARIES = (
    EMAIL,
    PHONE,
    PROFILE["name"],
    PROFILE["iban"],
    PROFILE["national_id"],
    "canary-record-reference",
    *REQUESTED.values(),
)


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    limits = {
        **DEFAULT_RATE_LIMITS,
        **OPEN_LIMITS,
        "default": UNLIMITED,
        "operator": UNLIMITED,
        "callback": UNLIMITED,
        "console_sign_in": UNLIMITED,
    }
    return await fresh_settings(make_settings, backend, rate_limits=limits)


# -- the route table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # the route's path template
    handler: HTTPRouteHandler

    @property
    def opt(self) -> dict[str, Any]:
        return self.handler.opt

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _generated_options(handler: HTTPRouteHandler) -> bool:
    """Litestar's own OPTIONS answer, added to every path (no data, nothing to declare)."""
    return handler.http_methods == {"OPTIONS"} and handler.fn.__module__.startswith("litestar.")


def cases(app: Litestar) -> Iterator[Case]:
    for route in app.routes:
        assert isinstance(route, HTTPRoute), f"{route.path}: only HTTP routes are expected here"
        for handler in route.route_handlers:
            if _generated_options(handler):
                continue
            for method in sorted(handler.http_methods):
                yield Case(method, route.path, handler)


def declaration_problems(case: Case) -> list[str]:
    """Why a route's declaration is missing or unusable (empty when it is fine)."""
    opt = case.opt
    kinds = [kind for kind in ACCESS_KINDS if opt.get(kind)]
    if not kinds:
        return [f"{case}: declares no access in opt (one of {', '.join(ACCESS_KINDS)})"]
    problems = []
    if len(kinds) > 1 and sorted(kinds) != ["scopes", "subject_token"]:
        problems.append(f"{case}: declares contradictory access {kinds}")
    if "console_scopes" in opt and not set(opt["console_scopes"]) <= set(SCOPES):
        problems.append(f"{case}: console_scopes {sorted(opt['console_scopes'])} are not a subset of SCOPES")
    if "console_scopes" in opt and not opt.get("console"):
        problems.append(f"{case}: console_scopes without console")
    scopes = set(opt.get("scopes") or opt.get("console_scopes") or ())
    if "scopes" in opt and (not scopes or not scopes <= set(SCOPES)):
        problems.append(f"{case}: scopes {sorted(scopes)} are not a non-empty subset of SCOPES")
    if "credential" in opt and not isinstance(opt["credential"], str):
        problems.append(f"{case}: credential must name the credential")
    if opt.get("pii"):
        if "public" in kinds or "credential" in kinds:
            problems.append(f"{case}: hands out decrypted data without an operator key or subject token")
        if scopes and not scopes & READING_SCOPES:
            problems.append(f"{case}: hands out decrypted data without a reading scope ({sorted(READING_SCOPES)})")
    return problems


def expected(opt: dict[str, Any], held: frozenset[str] | None) -> str | int:
    """What a caller holding ``held`` (None: no key at all) must get."""
    if opt.get("public"):
        return ALLOWED
    if opt.get("credential"):
        return UNAUTHENTICATED  # operator keys do not apply
    if opt.get("console"):
        return DENIED  # a console session only: operator keys do not apply
    required = set(opt.get("scopes") or ())
    if not required:  # a subject token only
        return DENIED
    if held is None:
        return UNAUTHENTICATED
    return ALLOWED if required <= held else FORBIDDEN


def url(path: str, values: dict[str, str] | None = None) -> str:
    def fill(match: re.Match[str]) -> str:
        name, kind = match.groups()
        if values and name in values:
            return values[name]
        return {"int": "1", "path": "/missing.css"}.get(kind, str(uuid.uuid4()))

    return _PARAM.sub(fill, path)


def refused(response: Response) -> bool:
    """401/403, or a console page sending the browser to sign in (not signed out: sign-out's own answer)."""
    if response.status_code == 303:
        return response.headers.get("location") == "/console/sign-in"
    return response.status_code in (401, 403)


async def send(client: AsyncClient, method: str, target: str, key: str | None) -> Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    csrf = client.cookies.get("privacy_console_csrf" if target.startswith("/console") else "privacy_csrf")
    if csrf:  # the portal's forms: pass its CSRF check, so the answer is about access only
        headers["x-csrftoken"] = csrf
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return await client.request(method, target, json=body, headers=headers)


async def credentials(runtime: Runtime) -> list[tuple[str, frozenset[str] | None, str | None]]:
    """(label, scopes held, key): no key, each single scope, every scope."""
    found: list[tuple[str, frozenset[str] | None, str | None]] = [("no key", None, None)]
    for scope in SCOPES:
        held = frozenset({scope})
        found.append((scope, held, await make_operator_key(runtime, held)))
    everything = frozenset(SCOPES)
    found.append(("all scopes", everything, await make_operator_key(runtime, everything)))
    return found


def _for(case: Case, callers: list[Any]) -> list[Any]:
    """Every caller, or for a public route (it reads no key) the first (no key) and the last."""
    return [callers[0], callers[-1]] if case.opt.get("public") else callers


# -- the declarations -----------------------------------------------------------------------------


async def test_every_route_declares_who_may_call_it(app: Litestar) -> None:
    found = list(cases(app))
    assert len(found) > 50  # the walk really sees the application's routes
    problems = [problem for case in found for problem in declaration_problems(case)]
    assert problems == []


async def test_the_front_page_and_the_portal_answer_routes_are_declared(app: Litestar) -> None:
    """Issue 20: ``GET /`` is public (the sweeps below call it with and without keys); so are the
    portal's pages for opening a confirmed request in a new browser, whose code is their credential."""
    declared = {str(case): case.opt for case in cases(app)}
    assert declared["GET /"] == {"public": True}
    for action in ("access-code", "open"):
        assert declared[f"POST /privacy/requests/{{request_id:str}}/{action}"] == {"public": True}
        assert declared[f"POST /v1/requests/{{request_id:uuid}}/{action}"] == {"public": True}
    # What the code opens is the export, which only a subject token (the request's or the browser's) reads.
    assert declared["GET /privacy/requests/{request_id:str}/export"] == {"subject_token": True, "pii": True}


async def test_the_connection_registry_needs_systems_manage(app: Litestar) -> None:
    """Issue 18: a connection's URL reaches a customer database, so every route of /v1/connections is
    declared systems:manage (the sweeps below then call each with every other scope and expect 403)."""
    declared = {str(case): case.opt for case in cases(app) if case.path.startswith("/v1/connections")}
    assert set(declared) >= {
        "GET /v1/connections",
        "POST /v1/connections",
        "GET /v1/connections/{connection_id:uuid}",
        "DELETE /v1/connections/{connection_id:uuid}",
        "POST /v1/connections/{connection_id:uuid}/test",
    }
    assert all(opt.get("scopes") == {"systems:manage"} for opt in declared.values()), declared


async def test_a_route_added_without_a_declaration_fails_the_check(runtime: Runtime) -> None:
    @get("/v1/forgotten", sync_to_thread=False)
    def forgotten() -> dict[str, str]:
        return {}

    @get("/v1/leaky", opt={"scopes": {"subjects:write"}, "pii": True}, sync_to_thread=False)
    def leaky() -> dict[str, str]:
        return {}

    app = create_app(runtime=runtime)
    app.register(forgotten)
    app.register(leaky)
    problems = [problem for case in cases(app) for problem in declaration_problems(case)]
    assert problems == [
        "GET /v1/forgotten: declares no access in opt (one of scopes, public, subject_token, credential, console)",
        "GET /v1/leaky: hands out decrypted data without a reading scope (['subjects:export', 'subjects:read'])",
    ]


# -- who gets in ----------------------------------------------------------------------------------


async def test_every_route_answers_each_credential_as_declared(
    app: Litestar, client: AsyncClient, runtime: Runtime
) -> None:
    await client.get("/privacy/request")  # the portal's CSRF cookie
    await client.get("/console/sign-in")  # the console's
    keys = await credentials(runtime)
    wrong: list[str] = []
    for case in cases(app):
        for label, held, key in _for(case, keys):
            want = expected(case.opt, held)
            response = await send(client, case.method, url(case.path), key)
            got = response.status_code
            if want == ALLOWED:
                ok = got not in (401, 403) and got < 500
            elif want == DENIED:
                ok = refused(response)
            else:
                ok = got == want
            if not ok:
                wrong.append(f"{case} with {label}: {got}, expected {want} ({response.text[:120]})")
    assert wrong == []


# -- no decrypted data without a reading scope ----------------------------------------------------


async def _customer_with_a_completed_access_request(client: AsyncClient, runtime: Runtime) -> dict[str, str]:
    auth = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
    subject_id = await make_subject(client, auth, email=EMAIL, phone=PHONE, profile=PROFILE)
    record = await client.post(
        f"/v1/subjects/{subject_id}/records",
        json={
            "kind": "transaction",
            "category": TRANSACTION,
            "occurred_at": "2026-01-05T09:00:00Z",
            "data": {"reference": "canary-record-reference"},
        },
        headers=auth,
    )
    assert record.status_code == 201, record.text
    request_id = str(uuid.uuid4())
    submitted = await client.post(
        "/opendsr/requests",
        json={
            "regulation": "gdpr",
            "subject_request_id": request_id,
            "subject_request_type": "access",
            "submitted_time": "2026-01-06T09:00:00Z",
            "subject_identities": [{"identity_type": "email", "identity_value": EMAIL, "identity_format": "raw"}],
        },
        headers=auth,
    )
    assert submitted.status_code == 201, submitted.text
    # Control: the data is there for a key allowed to read it, so its absence below means something.
    export = await client.get(f"/v1/requests/{request_id}/export", headers=auth)
    assert export.status_code == 200, export.text
    assert EMAIL in export.text
    assert PROFILE["name"] in (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).text
    # A correction awaiting review, asking for distinctive new values.
    rectify_id = str(uuid.uuid4())
    filed = await client.post(
        "/opendsr/requests",
        json={
            "regulation": "gdpr",
            "subject_request_id": rectify_id,
            "subject_request_type": "rectification",
            "submitted_time": "2026-01-06T10:00:00Z",
            "subject_identities": [{"identity_type": "email", "identity_value": EMAIL, "identity_format": "raw"}],
            "extensions": {
                "privacy-service": {
                    "changes": {
                        "email": REQUESTED["email"],
                        "profile": {"name": REQUESTED["name"], "iban": REQUESTED["iban"]},
                    }
                }
            },
        },
        headers=auth,
    )
    assert filed.status_code == 201, filed.text
    review = await client.get(f"/v1/requests/{rectify_id}", headers=auth)
    assert review.json()["status"] == "awaiting_review"
    assert all(value in review.text for value in REQUESTED.values())  # control: a reading key sees them
    return {
        "subject_id": subject_id,
        "record_id": record.json()["id"],
        "request_id": request_id,
        "rectify_id": rectify_id,
    }


def _destructive_last(case: Case) -> tuple[bool, str]:
    return (case.method == "DELETE" or "erase" in case.path, str(case))


async def test_no_route_hands_decrypted_data_to_a_key_without_a_reading_scope(
    app: Litestar, client: AsyncClient, runtime: Runtime
) -> None:
    seeds = await _customer_with_a_completed_access_request(client, runtime)
    await client.get("/privacy/request")
    await client.get("/console/sign-in")
    callers: list[tuple[str, str | None]] = [("no key", None)]
    for scope in NON_READING:
        callers.append((scope, await make_operator_key(runtime, frozenset({scope}))))
    callers.append(("every non-reading scope", await make_operator_key(runtime, frozenset(NON_READING))))
    answered = 0
    for case in sorted(cases(app), key=_destructive_last):
        targets = [url(case.path, seeds)]
        if "{request_id:" in case.path:  # every request route, on the correction awaiting review too
            targets.append(url(case.path, {**seeds, "request_id": seeds["rectify_id"]}))
        for target in targets:
            for label, key in _for(case, callers):
                response = await send(client, case.method, target, key)
                answered += response.status_code < 400
                try:
                    assert_no_leak(response, *CANARIES)
                except AssertionError as exc:
                    raise AssertionError(f"{case} {target} with {label} ({response.status_code}): {exc}") from None
    assert answered > 30  # many of these calls were let in, and still carried nothing


# -- the console: sessions, not keys ---------------------------------------------------------------


def _sign_out_last(case: Case) -> tuple[bool, str]:
    return (case.path.endswith("/sign-out"), str(case))


async def test_every_console_route_answers_each_session_as_declared(app: Litestar, runtime: Runtime) -> None:
    """Each console route with a session signed in per credential: its ``console_scopes`` decide (403 or in)."""
    console = sorted((case for case in cases(app) if case.opt.get("console")), key=_sign_out_last)
    assert {str(case) for case in console} >= {"GET /console", "GET /console/api", "POST /console/sign-out"}
    wrong: list[str] = []
    for label, held, key in (await credentials(runtime))[1:]:
        assert held is not None
        assert key is not None
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as browser:
            await browser.get("/console/sign-in")
            token = browser.cookies["privacy_console_csrf"]
            signed = await browser.post("/console/sign-in", data={"key": key, "_csrf_token": token})
            assert signed.status_code == 303, signed.text
            for case in console:
                need = set(case.opt.get("console_scopes") or ())
                response = await send(browser, case.method, url(case.path), None)
                got = response.status_code
                ok = got == 403 if not need <= held else got not in (401, 403) and got < 500 and not refused(response)
                if not ok:
                    wrong.append(f"{case} with a session of {label}: {got} ({response.text[:120]})")
    assert wrong == []

"""The console's routes: sign-in, sign-out, the dashboard and the API reference.

Thin controllers: the key is checked by ``operators.service.authenticate`` (as the API checks it), the
session is ``sessions``, the figures ``dashboard``. Forms carry the CSRF token of ``web.csrf`` (the
portal's mechanism, with the console's own cookie); sign-in is limited per client address and locks an
address out after ``rate_limits["console_sign_in_failed"]`` wrong keys (each attempt taken from that
budget before its key is checked, a right key's given back: concurrent guesses never exceed it).
Every sign-in, sign-out and failed sign-in is audited, never with the key.
"""

from __future__ import annotations

import math
from typing import Any

from litestar import Controller, Response, Router, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.response import Redirect
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.config import Settings
from privacy_service.errors import (
    UNAVAILABLE_ERRORS,
    DomainError,
)
from privacy_service.operators.guards import source_tag
from privacy_service.operators.service import authenticate, parse_key_id
from privacy_service.ratelimit import Limit, client_key, ip_rate_limit
from privacy_service.web.console.access import (
    PAGES,
    SIGN_IN_PATH,
    SIGNED_IN,
    SignInRequired,
    console_guard,
    current_session,
    signed_in_operator,
)
from privacy_service.web.console.audit import AuditConsole
from privacy_service.web.console.breaches import BreachesConsole
from privacy_service.web.console.dashboard import dashboard
from privacy_service.web.console.rendering import (
    CONSOLE_CSP,
    CSRF_COOKIE,
    AnyRequest,
    console_language,
    error_page_path,
    page_context,
    render,
    settings_of,
)
from privacy_service.web.console.requests import RequestsConsole
from privacy_service.web.console.retention import RetentionConsole
from privacy_service.web.console.sessions import (
    CONSOLE_PATH,
    SESSION_COOKIE,
    end_replaced,
    end_session,
    start_session,
)
from privacy_service.web.console.subjects import SubjectsConsole
from privacy_service.web.console.systems import SystemsConsole
from privacy_service.web.csrf import csrf_middleware
from privacy_service.web.error_pages import error_page
from privacy_service.web.i18n import messages

# The API reference (Swagger UI, vendored under /static/vendor): its icons are data: URIs, and it reads
# the OpenAPI document from this origin.
API_REFERENCE_CSP = CONSOLE_CSP.replace("img-src 'self'", "img-src 'self' data:") + "; connect-src 'self'"
FAILED_BUCKET = "console_sign_in_failed"
KEY_MAX = 200  # longer than any key: refused as malformed without being hashed
PUBLIC = {"public": True}


def _session_cookie(request: AnyRequest, value: str, max_age: int | None) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE,
        value=value,
        path=CONSOLE_PATH,
        max_age=max_age,
        httponly=True,
        secure=settings_of(request).base_url.startswith("https://"),
        samesite="strict",
    )


def _sign_in_page(
    request: AnyRequest, *, error: str | None = None, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response[bytes]:
    language = console_language(request)
    context = page_context(request, language, SIGN_IN_PATH)
    c = context["c"]
    context.update(
        title=c["sign_in"]["title"],
        errors={"key": error} if error else {},
        signed_out=request.query_params.get("signed_out") == "1",
    )
    return render(request, "console/sign_in.html", context, status_code=status_code, headers=headers)


def _failed_sign_in(session: AsyncSession, request: AnyRequest, key: str, address: str, *, throttled: bool) -> None:
    """Audited as the API's rejected keys are (``operator.auth_failed``, which breach monitoring counts):
    the address's pseudonym and the key's public id only."""
    key_id = parse_key_id(key)
    state = request.app.state
    audit.record(
        session,
        at=state.clock.now(),
        actor=Actor("client", source_tag(state.runtime.audit_key, address)),
        action="operator.auth_failed",
        outcome="failed",
        detail={
            "attempts": 1,
            "via": "console",
            "throttled": int(throttled),
            "malformed": int(key_id is None),
            "key_ids": [key_id] if key_id else [],
        },
    )


class ConsoleController(Controller):
    path = CONSOLE_PATH
    include_in_schema = False

    @get("/sign-in", opt=PUBLIC)
    async def sign_in_form(self, request: AnyRequest) -> Response[Any]:
        if await current_session(request) is not None:
            return Redirect(CONSOLE_PATH, status_code=303)  # already signed in
        return _sign_in_page(request)

    @post("/sign-in", guards=[ip_rate_limit("console_sign_in")], opt=PUBLIC)
    async def sign_in(self, request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Response[Any]:
        state = request.app.state
        settings = settings_of(request)
        c = messages(console_language(request))["console"]["sign_in"]
        key = str((await request.form()).get("key", "")).strip()
        if not key:
            return _sign_in_page(request, error=c["key_required"], status_code=422)
        address = client_key(request, settings.trusted_proxies)
        limit = Limit.parse(settings.rate_limits[FAILED_BUCKET])
        # Taken before the key is checked, atomically, and given back if it is right: keys sent at once
        # cannot all pass a look at the budget before any failure is counted.
        wait = await state.rate_limiter.hit(FAILED_BUCKET, address, limit)
        if wait is not None:
            _failed_sign_in(db_session, request, key, address, throttled=True)
            minutes = max(1, math.ceil(wait / 60))
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
            return _sign_in_page(request, error=c["locked"].format(minutes=minutes), status_code=429, headers=headers)
        now = state.clock.now()
        operator = await authenticate(db_session, key, now) if len(key) <= KEY_MAX else None
        if operator is None:
            _failed_sign_in(db_session, request, key, address, throttled=False)
            # One answer for every wrong key (unknown, revoked, expired, malformed): no oracle.
            return _sign_in_page(request, error=c["rejected"], status_code=401)
        await state.rate_limiter.refund(FAILED_BUCKET, address, limit)
        previous = request.cookies.get(SESSION_COOKIE)
        if previous:
            await end_replaced(db_session, previous, now)
        token, row = await start_session(db_session, operator, settings, now)
        max_age = int((row.expires_at - now).total_seconds())
        return Redirect(CONSOLE_PATH, status_code=303, cookies=[_session_cookie(request, token, max_age)])

    @post("/sign-out", guards=[console_guard], opt=SIGNED_IN)
    async def sign_out(self, request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Response[Any]:
        await end_session(db_session, signed_in_operator(request), request.app.state.clock.now())
        return Redirect(
            f"{SIGN_IN_PATH}?signed_out=1", status_code=303, cookies=[_session_cookie(request, "", max_age=0)]
        )

    @get("/", guards=[console_guard], opt=PAGES["dashboard"].opt)
    async def dashboard_page(self, request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Response[bytes]:
        signed_in = signed_in_operator(request)
        state = request.app.state
        now = state.clock.now()
        board = await dashboard(db_session, signed_in.scopes, now)
        language = console_language(request)
        context = page_context(request, language, CONSOLE_PATH, "dashboard")
        context.update(title=context["c"]["dashboard"]["title"], board=board)
        return render(request, "console/dashboard.html", context)

    @get("/api", guards=[console_guard], opt=PAGES["api"].opt)
    async def api_reference(self, request: AnyRequest) -> Response[bytes]:
        language = console_language(request)
        context = page_context(request, language, PAGES["api"].path, "api")
        context.update(title=context["c"]["api"]["title"])
        return render(request, "console/api.html", context, csp=API_REFERENCE_CSP)


_ERROR_PAGES = {401: "sign_in_required", 403: "forbidden", 404: "not_found", 409: "conflict", 429: "rate_limited"}


def console_error_page(request: AnyRequest, exc: Exception) -> Response[Any]:
    """Every error on a console page is a page (never JSON, never a trace); a page that needs a session
    sends the browser to sign-in."""
    if isinstance(exc, SignInRequired) and request.method == "GET":
        return Redirect(SIGN_IN_PATH, status_code=303)
    shown = error_page(exc, _ERROR_PAGES)
    language = console_language(request)
    context = page_context(request, language, error_page_path(request))
    page = context["c"]["errors"][shown.key]
    context.update(title=page["title"], body=page["body"], reference=request.scope.get("state", {}).get("request_id"))
    return render(request, "console/error.html", context, status_code=shown.status, headers=shown.headers)


# Each area's controller (its own module, templates/console/<area>/ and messages/<lang>/console_<area>.yaml).
AREAS = (RequestsConsole, SubjectsConsole, BreachesConsole, RetentionConsole, AuditConsole, SystemsConsole)


def console_router(settings: Settings, derived_secret: bytes) -> Router:
    return Router(
        path="/",
        route_handlers=[ConsoleController, *AREAS],
        middleware=[csrf_middleware(settings, derived_secret, cookie_name=CSRF_COOKIE, cookie_path=CONSOLE_PATH)],
        exception_handlers=dict.fromkeys(
            (DomainError, HTTPException, *UNAVAILABLE_ERRORS, Exception), console_error_page
        ),
    )

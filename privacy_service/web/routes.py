"""HTML routes (the privacy notice and the request portal) and the static files they use.

The portal's controllers are thin: they read the form, call :class:`DsrService` exactly as the JSON
API does (same rate limits, same validation), and render its answer or its error as a page. Forms
are protected by Litestar's CSRF middleware, mounted on the portal's router only, so the ``/v1`` API
stays free of it for bearer-token clients.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, Router, get, post
from litestar.datastructures import CacheControlHeader, Cookie
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Stream
from litestar.static_files import create_static_files_router

from privacy_service.config import Settings
from privacy_service.dsr import schemas
from privacy_service.dsr.answer import answer_data
from privacy_service.dsr.routes import export_download, kick_outbox, provide_dsr_service
from privacy_service.dsr.service import DsrService, TooManyCodes
from privacy_service.errors import (
    UNAVAILABLE_ERRORS,
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    InvalidInput,
    NotFound,
)
from privacy_service.policy.document import PolicyDocument
from privacy_service.policy.pages import negotiate_language, respond
from privacy_service.ratelimit import ip_rate_limit
from privacy_service.web.csrf import csrf_middleware
from privacy_service.web.error_pages import error_page
from privacy_service.web.i18n import check_catalogs, messages, visitor_language
from privacy_service.web.pages import HTML_MEDIA_TYPE, STATIC, privacy_notice_page
from privacy_service.web.portal import (
    PORTAL_PATH,
    TOKEN_COOKIE,
    RequestForm,
    base_context,
    default_regime,
    form_view,
    parse_request_form,
    remember_language,
    render,
    request_path,
    service_errors,
    status_view,
)

PUBLIC = {"public": True}
static_files = create_static_files_router(
    path="/static",
    directories=[STATIC],
    cache_control=CacheControlHeader(public=True, max_age=3600),
    include_in_schema=False,
    opt={"public": True},
)


@get(
    "/privacy",
    media_type=HTML_MEDIA_TYPE,
    tags=["policy"],
    opt={"public": True},
    summary="The privacy notice as an HTML page",
)
async def privacy_page(
    request: Request[Any, Any, Any],
    lang: Annotated[str | None, QueryParameter(max_length=35, description="Language, e.g. en or zh")] = None,
) -> Response[bytes]:
    state = request.app.state
    document: PolicyDocument = state.policy
    language = negotiate_language(lang, request.headers.get("accept-language"), document.languages)
    page = privacy_notice_page(state.policy_pages, document, language, now=state.clock.now())
    return respond(page, request.headers)


# -- the request portal -------------------------------------------------------------------------

AnyRequest = Request[Any, Any, Any]


def _policy(request: AnyRequest) -> PolicyDocument:
    policy: PolicyDocument = request.app.state.policy
    return policy


def _settings(request: AnyRequest) -> Settings:
    settings: Settings = request.app.state.runtime.settings
    return settings


def _request_id(raw: str) -> uuid.UUID:
    # Parsed here, not by the route pattern, so that a mistyped link gets the portal's page, not JSON.
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound("no request with this id") from None


def _form_page(request: AnyRequest, language: str, form: RequestForm, status_code: int = 200) -> Response[bytes]:
    context = base_context(request, language, PORTAL_PATH)
    context.update(form_view(_policy(request), language, form))
    return render("portal/request.html", context, status_code=status_code, cookies=remember_language(request, language))


def _verify_page(
    request: AnyRequest,
    request_id: uuid.UUID,
    language: str,
    *,
    intro: str = "sent",
    errors: dict[str, str] | None = None,
    notice: str | None = None,
    closed: bool = False,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    m = messages(language)
    context = base_context(request, language, request_path(request_id) + "/verify")
    context.update(
        title=m["verify"]["title"],
        request_id=str(request_id),
        intro=m["verify"][intro],
        errors=errors or {},
        notice=notice,
        closed=closed,
    )
    return render(
        "portal/verify.html",
        context,
        status_code=status_code,
        headers=headers,
        cookies=remember_language(request, language),
    )


async def _may_read(service: DsrService, request_id: uuid.UUID, token: str | None) -> bool:
    """Whether the cookie's token opens this request (an expired one does not: the visitor may get a new one).

    An id that names no request is answered as a request this token does not open, so that the page
    (``gate``) tells nobody, cookie or not, whether the request exists."""
    if not token:
        return False
    try:
        await service.authorise_token(request_id, token)
    except (Forbidden, Gone, NotFound):
        return False
    return True


def _open_page(
    request: AnyRequest,
    request_id: uuid.UUID,
    language: str,
    *,
    unconfirmed: bool = False,
    notice: str | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response[bytes]:
    """A confirmed request opened in a browser without its token: what to do (ask for a code, enter it)."""
    context = base_context(request, language, request_path(request_id))
    context.update(
        title=messages(language)["open"]["title"],
        request_id=str(request_id),
        unconfirmed=unconfirmed,
        notice=notice,
        errors=errors or {},
        # The code field once a code is on its way (or was just entered wrongly); the send button before.
        code_sent=notice is not None or bool(errors),
    )
    return render(
        "portal/open.html",
        context,
        status_code=status_code,
        headers=headers,
        cookies=remember_language(request, language),
    )


def _token_cookie(request: AnyRequest, verified: schemas.Verified, now: datetime) -> Cookie:
    """The request token, for this request's pages only; never in a URL, never readable by scripts."""
    return Cookie(
        key=TOKEN_COOKIE,
        value=verified.token,
        path=request_path(verified.id),
        max_age=max(0, int((verified.token_expires_at - now).total_seconds())),
        httponly=True,
        secure=_settings(request).base_url.startswith("https://"),
        samesite="strict",
    )


class PortalController(Controller):
    """The self-service pages: make a request, confirm it with the e-mailed code, follow it, download."""

    path = "/privacy"
    include_in_schema = False
    dependencies = {"service": Provide(provide_dsr_service)}  # noqa: RUF012 - Litestar reads these class attributes

    @get("/request", opt=PUBLIC)
    async def request_form(self, request: AnyRequest) -> Response[bytes]:
        language = visitor_language(request, _policy(request).languages)
        values = {"language": language, "regime": default_regime(_settings(request), _policy(request), language)}
        return _form_page(request, language, RequestForm(values=values))

    @post("/request", guards=[ip_rate_limit("intake")], opt=PUBLIC)
    async def submit(self, request: AnyRequest, service: NamedDependency[DsrService]) -> Response[Any]:
        language = visitor_language(request, _policy(request).languages)
        document = _policy(request)
        form = parse_request_form(
            await request.form(), document, language, default_regime(_settings(request), document, language)
        )
        if form.body is None:
            return _form_page(request, language, form, status_code=422)
        try:
            accepted = await service.submit(form.body)
        except InvalidInput as exc:
            form.errors = service_errors(exc, language)
            return _form_page(request, language, form, status_code=422)
        return Redirect(request_path(accepted.id) + "/verify", status_code=303, background=kick_outbox(request))

    @get("/requests/{request_id:str}/verify", opt=PUBLIC)
    async def verify_form(self, request: AnyRequest, request_id: FromPath[str]) -> Response[bytes]:
        language = visitor_language(request, _policy(request).languages)
        notice = messages(language)["verify"]["resent"] if request.query_params.get("sent") == "1" else None
        return _verify_page(request, _request_id(request_id), language, notice=notice)

    @post("/requests/{request_id:str}/verify", guards=[ip_rate_limit("verify")], opt=PUBLIC)
    async def verify(
        self, request: AnyRequest, request_id: FromPath[str], service: NamedDependency[DsrService]
    ) -> Response[Any]:
        rid = _request_id(request_id)
        language = visitor_language(request, _policy(request).languages)
        m = messages(language)["errors"]
        code = str((await request.form()).get("code", "")).replace(" ", "").strip()
        try:
            body = msgspec.convert({"code": code}, schemas.VerifyBody)
        except msgspec.ValidationError:
            return _verify_page(request, rid, language, errors={"code": m["code_format"]}, status_code=422)
        try:
            outcome = await service.verify(rid, body.code)
        except Conflict:
            return _verify_page(request, rid, language, closed=True, status_code=409)
        if outcome.rejected is not None:
            # Returned, not raised: the failed attempt must commit.
            rejected = outcome.rejected
            if rejected.attempts_left == 0:
                message = m["code_locked"]
            elif rejected.slug == "code-expired":
                message = m["code_expired"]
            else:
                message = m["code_wrong"].format(attempts_left=rejected.attempts_left)
            return _verify_page(request, rid, language, errors={"code": message}, status_code=422)
        verified = outcome.verified
        assert verified is not None  # noqa: S101 - an outcome is either verified or rejected
        return Redirect(
            request_path(verified.id),
            status_code=303,
            cookies=[_token_cookie(request, verified, request.app.state.clock.now())],
            background=kick_outbox(request),
        )

    @post("/requests/{request_id:str}/resend", guards=[ip_rate_limit("resend")], opt=PUBLIC)
    async def resend(
        self, request: AnyRequest, request_id: FromPath[str], service: NamedDependency[DsrService]
    ) -> Response[Any]:
        rid = _request_id(request_id)
        language = visitor_language(request, _policy(request).languages)
        try:
            await service.resend_code(rid)
        except TooManyCodes as exc:
            message = messages(language)["errors"]["resend_limit"]
            return _verify_page(
                request, rid, language, errors={"resend": message}, status_code=429, headers=exc.headers
            )
        except Conflict as exc:
            wait = (exc.headers or {}).get("Retry-After")
            if wait is None:
                return _verify_page(request, rid, language, closed=True, status_code=409)
            message = messages(language)["errors"]["resend_wait"].format(seconds=wait)
            return _verify_page(
                request, rid, language, errors={"resend": message}, status_code=429, headers={"Retry-After": wait}
            )
        return Redirect(request_path(rid) + "/verify?sent=1", status_code=303, background=kick_outbox(request))

    # Without a token cookie for the request it shows nothing of it: the code page while the request
    # waits for its code, else the page to open it in this browser with a new code (dsr.answer_access).
    @get("/requests/{request_id:str}", guards=[ip_rate_limit("verify")], opt=PUBLIC)
    async def status(
        self, request: AnyRequest, request_id: FromPath[str], service: NamedDependency[DsrService]
    ) -> Response[Any]:
        rid = _request_id(request_id)
        document = _policy(request)
        if not await _may_read(service, rid, request.cookies.get(TOKEN_COOKIE)):
            gate, preferred = await service.gate(rid)
            if gate == "verify":
                return _verify_page(request, rid, visitor_language(request, document.languages), intro="locked")
            # In the request's language (the completion mail's), unless the visitor chose another.
            language = visitor_language(request, document.languages, preferred=preferred)
            sent = request.query_params.get("sent") == "1"
            notice = messages(language)["open"]["sent"].format(minutes=_settings(request).dsr_code_ttl_minutes)
            return _open_page(
                request, rid, language, unconfirmed=gate == "unconfirmed", notice=notice if sent else None
            )
        view = await service.view(rid)
        answer = await answer_data(service, rid) if view.export_url is not None else None
        language = visitor_language(request, document.languages, preferred=view.language)
        context = base_context(request, language, request_path(rid))
        context.update(title=messages(language)["status"]["title"], s=status_view(view, document, language, answer))
        return render("portal/status.html", context, cookies=remember_language(request, language))

    @post("/requests/{request_id:str}/access-code", guards=[ip_rate_limit("resend")], opt=PUBLIC)
    async def send_opening_code(
        self, request: AnyRequest, request_id: FromPath[str], service: NamedDependency[DsrService]
    ) -> Response[Any]:
        """A new code to open a confirmed request in this browser, mailed to the request's own identity."""
        rid = _request_id(request_id)
        language = visitor_language(request, _policy(request).languages)
        m = messages(language)
        try:
            await service.send_opening_code(rid)
        except TooManyCodes as exc:
            errors = {"send": m["open"]["send_limit"]}
            return _open_page(request, rid, language, errors=errors, status_code=429, headers=exc.headers)
        except Conflict as exc:
            wait = (exc.headers or {}).get("Retry-After")
            if wait is None:
                return _open_page(request, rid, language, unconfirmed=True, status_code=409)
            errors = {"send": m["errors"]["resend_wait"].format(seconds=wait)}
            return _open_page(request, rid, language, errors=errors, status_code=429, headers={"Retry-After": wait})
        return Redirect(request_path(rid) + "?sent=1", status_code=303, background=kick_outbox(request))

    @post("/requests/{request_id:str}/open", guards=[ip_rate_limit("verify")], opt=PUBLIC)
    async def open_with_code(
        self, request: AnyRequest, request_id: FromPath[str], service: NamedDependency[DsrService]
    ) -> Response[Any]:
        """The code mailed to open a confirmed request: this browser may then read it (nothing changes)."""
        rid = _request_id(request_id)
        language = visitor_language(request, _policy(request).languages)
        m = messages(language)
        code = str((await request.form()).get("code", "")).replace(" ", "").strip()
        try:
            body = msgspec.convert({"code": code}, schemas.VerifyBody)
        except msgspec.ValidationError:
            errors = {"code": m["errors"]["code_format"]}
            return _open_page(request, rid, language, errors=errors, status_code=422)
        outcome = await service.open_with_code(rid, body.code)
        if outcome.rejected is not None:
            # Returned, not raised: the failed attempt must commit.
            rejected = outcome.rejected
            if rejected.slug == "code-expired":
                message = m["errors"]["code_expired"]
            elif rejected.attempts_left == 0:
                message = m["open"]["code_invalid"]
            else:
                message = m["errors"]["code_wrong"].format(attempts_left=rejected.attempts_left)
            return _open_page(request, rid, language, errors={"code": message}, status_code=422)
        verified = outcome.verified
        assert verified is not None  # noqa: S101 - an outcome is either verified or rejected
        return Redirect(
            request_path(verified.id),
            status_code=303,
            cookies=[_token_cookie(request, verified, request.app.state.clock.now())],
        )

    @get(
        "/requests/{request_id:str}/export",
        guards=[ip_rate_limit("download")],
        opt={"subject_token": True, "pii": True},
    )
    async def export(
        self,
        request: AnyRequest,
        request_id: FromPath[str],
        service: NamedDependency[DsrService],
        format: FromQuery[Literal["json", "zip"]] = "json",
    ) -> Stream:
        rid = _request_id(request_id)
        token = request.cookies.get(TOKEN_COOKIE)
        if not token:
            raise Forbidden("open the request and enter the code first")
        await service.authorise_token(rid, token)
        return await export_download(request, service, rid, format)


# -- errors as pages ----------------------------------------------------------------------------

_ERROR_PAGES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    410: "gone",
    413: "too_large",
    429: "rate_limited",
}


def portal_error_page(request: AnyRequest, exc: Exception) -> Response[bytes]:
    """Every error on a portal page is a page in the visitor's language: never JSON, never a trace."""
    shown = error_page(exc, _ERROR_PAGES)
    language = visitor_language(request, _policy(request).languages)
    page = messages(language)["error_pages"][shown.key]
    retry_after = shown.headers.get("Retry-After", "")
    seconds = int(retry_after) if retry_after.isdigit() else 0
    body = page["body_minutes"] if seconds >= 120 and "body_minutes" in page else page["body"]
    context = base_context(request, language, PORTAL_PATH)
    context.update(
        title=page["title"],
        body=body.format(seconds=seconds, minutes=math.ceil(seconds / 60)),
        reference=request.scope.get("state", {}).get("request_id"),
    )
    return render("portal/error.html", context, status_code=shown.status, headers=shown.headers)


def portal_router(settings: Settings, policy: PolicyDocument, derived_secret: bytes) -> Router:
    """The portal's routes with their CSRF protection (web.csrf) and error pages."""
    check_catalogs(policy.languages)
    return Router(
        path="/",
        route_handlers=[PortalController],
        middleware=[csrf_middleware(settings, derived_secret, cookie_name="privacy_csrf", cookie_path="/privacy")],
        # The app's handlers for a database out of reach answer JSON: portal pages take them over too.
        exception_handlers=dict.fromkeys(
            (DomainError, HTTPException, *UNAVAILABLE_ERRORS, Exception), portal_error_page
        ),
    )

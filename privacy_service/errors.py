"""Domain exceptions and their RFC 9457 problem+json rendering.

Every error a client can see has a stable ``type`` (``/problems/<slug>``), a title, the status and
a detail that never repeats the submitted values: messages from validators are redacted, SQL and
stack traces never leave the process.
"""

from __future__ import annotations

import re
import traceback
from typing import Any

import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as SqlAlchemyTimeoutError

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger("privacy_service.errors")


class DomainError(Exception):
    status = 400
    slug = "bad-request"
    title = "Bad request"
    # A 5xx that a retry answers (a dependency briefly out of reach, logged where it is noticed): a
    # warning, not an error, per request.
    transient = False

    def __init__(
        self, detail: str, *, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}
        self.headers = headers


class InvalidInput(DomainError):
    status = 422
    slug = "invalid-input"
    title = "The request is well-formed but its content is not acceptable"


class NotFound(DomainError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Gone(DomainError):
    status = 410
    slug = "gone"
    title = "Gone"


class Conflict(DomainError):
    status = 409
    slug = "conflict"
    title = "Conflict with the current state"


class Unauthenticated(DomainError):
    status = 401
    slug = "unauthenticated"
    title = "Authentication required"


class Forbidden(DomainError):
    status = 403
    slug = "forbidden"
    title = "Not allowed"


class DataIntegrityError(DomainError):
    """Stored ciphertext failed to open: tampering or a lost key. Never the client's fault."""

    status = 500
    slug = "data-integrity"
    title = "Stored data failed its integrity check"


HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict with the current state"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}

# Members every problem has; a domain error's extra members may not replace them.
_RESERVED = frozenset({"type", "title", "status", "detail", "instance", "request_id", "request", "headers", "slug"})

# Validators quote offending values ('...' or "..."); those quotes may hold PII.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def redact(message: str) -> str:
    return _QUOTED.sub("<redacted>", message)


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    request: Request[Any, Any, Any] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}
    if request is not None:
        body["instance"] = request.url.path
        request_id = request.scope.get("state", {}).get("request_id")
        if request_id:
            body["request_id"] = request_id
    body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    if exc.status >= 500:
        (log.warning if exc.transient else log.error)("domain_error", error=type(exc).__name__, slug=exc.slug)
    extra = {key: value for key, value in exc.extra.items() if key not in _RESERVED}
    return problem(exc.status, exc.slug, exc.title, exc.detail, request, headers=exc.headers, **extra)


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    slug, title = HTTP_SLUGS.get(status, ("http-error", "Request failed"))
    if status >= 500:
        return internal_error_handler(request, exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationException):
        slug, title = "validation-error", "The request body or parameters are invalid"
        detail = "One or more fields are invalid; see 'errors'."
        if isinstance(exc.extra, list):
            extra["errors"] = [
                {"field": str(item.get("key", "")), "message": redact(str(item.get("message", "")))}
                for item in exc.extra
                if isinstance(item, dict)
            ]
    elif status == 400 and exc.detail and exc.detail != title:
        # Decoder messages ("Input data was truncated", "malformed JSON") say nothing useful.
        detail = "The request body is not valid JSON."
    else:
        detail = redact(exc.detail) if exc.detail else title
        if status == 413:
            detail = "The request body exceeds the configured limit."
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() in {"allow", "retry-after"}}
    return problem(status, slug, title, detail, request, headers=headers or None, **extra)


def log_unhandled(exc: Exception) -> None:
    # Messages of driver errors carry SQL parameters (PII): log the type and the frames only.
    frames = [f"{frame.filename}:{frame.lineno}:{frame.name}" for frame in traceback.extract_tb(exc.__traceback__)]
    log.error("unhandled_error", error=type(exc).__name__, frames=frames[-8:])


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log_unhandled(exc)
    return problem(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal-error",
        "Internal error",
        "The server could not complete the request; it has been logged.",
        request,
    )


RETRY_AFTER_SECONDS = "2"


# What a database out of reach raises (a DBAPIError only when it lost the connection).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    DBAPIError,
    ConnectionError,
    SqlAlchemyTimeoutError,
    DisconnectionError,
)


def database_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached or dropped the connection mid-request (a restart, a
    failover), or the pool had no connection to give within its timeout: worth a retry."""
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    return isinstance(exc, UNAVAILABLE_ERRORS)


def unavailable_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """503 with Retry-After when the database is out of reach; anything else is an internal error."""
    if not database_unavailable(exc):
        return internal_error_handler(request, exc)
    # The type only: driver messages can carry SQL parameters.
    log.warning("database_unavailable", error=type(exc).__name__)
    return problem(
        503,
        "unavailable",
        "Service unavailable",
        "The database is not reachable right now; nothing was changed. Retry shortly.",
        request,
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


def too_deep_handler(request: Request[Any, Any, Any], _exc: RecursionError) -> Response[dict[str, Any]]:
    # The JSON decoder gives up on absurdly nested input before any handler runs.
    return problem(400, "bad-request", "Bad request", "The request body is nested too deeply.", request)


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    RecursionError: too_deep_handler,
    **dict.fromkeys(UNAVAILABLE_ERRORS, unavailable_handler),
    DomainError: domain_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}


def response_status(exc: BaseException) -> int:
    """The status the handlers above answer ``exc`` with, for the access log: an exception raised by a
    middleware (the portal's CSRF check) passes the logging middleware before it becomes a response."""
    if isinstance(exc, RecursionError):
        return 400
    if isinstance(exc, DomainError):
        return exc.status
    if isinstance(exc, HTTPException):
        return exc.status_code
    return 503 if database_unavailable(exc) else 500


__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "MediaType", "problem"]

"""ASGI middleware: request ids, one PII-free access-log line per request, security headers."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from privacy_service.errors import response_status

log = structlog.get_logger("privacy_service.http")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

API_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
# The docs pages (/schema: Swagger UI from the vendored files, openapi.py) run under the console's strict
# policy: scripts and styles from this origin only, no inline script; Swagger UI's icons are data: URIs.
_DOCS_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_DROPPED = frozenset({b"server", b"x-powered-by"})
# What every response gets unless it set its own: the API headers, ``no-store``; the docs pages
# (/schema) the policy above, which lets the vendored Swagger UI load.
_API_HEADERS = (*API_HEADERS, (b"cache-control", b"no-store"))
_DOCS_HEADERS = tuple(
    (name, _DOCS_CSP if name == b"content-security-policy" else value) for name, value in _API_HEADERS
)


def _new_request_id() -> str:
    # 32 hex digits, as uuid4().hex gave, without building a UUID object for every request.
    return os.urandom(16).hex()


def _incoming_request_id(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The caller's ``X-Request-ID`` if it is a safe one (the last, if it was sent more than once)."""
    incoming = b""
    for name, value in headers:
        if name == b"x-request-id":
            incoming = value
    text = incoming.decode("latin-1")
    return text if _SAFE_ID.match(text) else None


def request_context_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await app(scope, receive, send)
            return
        # Each request's work done once, by hand: the caller's id found without building a dict of
        # every header, the log context bound and reset without a context manager.
        request_id = _incoming_request_id(scope["headers"]) or _new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]
        started = time.perf_counter()
        status = 500

        async def send_tracking_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await app(scope, receive, send_tracking_status)
        except Exception as exc:
            status = response_status(exc)
            raise
        finally:
            # The path holds opaque ids only; query strings (which may hold identifiers) are never logged.
            log.info(
                "http_request",
                method=scope.get("method", ""),
                path=path,
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.reset_contextvars(**tokens)

    return middleware


async def add_response_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: runs for every response, including router-level 404/405s."""
    if message["type"] != "http.response.start":
        return
    state = scope.setdefault("state", {})
    request_id = state.get("request_id")
    if request_id is None:  # a response the request-context middleware did not see
        request_id = state["request_id"] = _new_request_id()
    headers = [(name, value) for name, value in message.get("headers", []) if name.lower() not in _DROPPED]
    present = {name.lower() for name, _ in headers}
    if b"x-request-id" not in present:
        headers.append((b"x-request-id", request_id.encode()))
    headers.extend(
        header
        for header in (_DOCS_HEADERS if scope["path"].startswith("/schema") else _API_HEADERS)
        if header[0] not in present
    )
    app = scope.get("litestar_app")
    if app is not None and app.state.runtime.settings.base_url.startswith("https://"):
        # Only behind TLS: HSTS on plain http would be ignored at best.
        headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
    message["headers"] = headers

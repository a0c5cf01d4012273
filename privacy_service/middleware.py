"""ASGI middleware: request ids, one PII-free access-log line per request, security headers."""

from __future__ import annotations

import os
import re
import time
from typing import Any

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
_DOCS_CSP = (
    b"default-src 'none'; script-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; "
    b"style-src 'self' https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'; "
    b"img-src 'self' data: https://cdn.jsdelivr.net; font-src https://fonts.gstatic.com; "
    b"connect-src 'self'; frame-ancestors 'none'"
)


def _new_request_id() -> str:
    # 32 hex digits, as uuid4().hex gave, without building a UUID object for every request.
    return os.urandom(16).hex()


def request_context_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_ID.match(incoming) else _new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]
        started = time.perf_counter()
        status_holder: dict[str, Any] = {"status": 500}

        async def send_tracking_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await app(scope, receive, send_tracking_status)
            except Exception as exc:
                status_holder["status"] = response_status(exc)
                raise
            finally:
                # The path holds opaque ids only; query strings (which may hold identifiers) are never logged.
                log.info(
                    "http_request",
                    method=scope.get("method", ""),
                    path=path,
                    status=status_holder["status"],
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )

    return middleware


async def add_response_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: runs for every response, including router-level 404/405s."""
    if message["type"] != "http.response.start":
        return
    state = scope.setdefault("state", {})
    request_id = state.get("request_id")
    if request_id is None:  # a response the request-context middleware did not see
        request_id = state["request_id"] = _new_request_id()
    headers = [
        (name, value) for name, value in message.get("headers", []) if name.lower() not in {b"server", b"x-powered-by"}
    ]
    present = {name.lower() for name, _ in headers}
    if b"x-request-id" not in present:
        headers.append((b"x-request-id", request_id.encode()))
    docs = scope["path"].startswith("/schema")
    for name, value in API_HEADERS:
        if name not in present:
            headers.append((name, _DOCS_CSP if docs and name == b"content-security-policy" else value))
    if b"cache-control" not in present:
        headers.append((b"cache-control", b"no-store"))
    app = scope.get("litestar_app")
    if app is not None and app.state.runtime.settings.base_url.startswith("https://"):
        # Only behind TLS: HSTS on plain http would be ignored at best.
        headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
    message["headers"] = headers

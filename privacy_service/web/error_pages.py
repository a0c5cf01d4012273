"""What an error on an HTML page (portal or console) becomes: one status, one message key, the headers kept.

Both routers answer every error with a page in the visitor's language (never JSON, never a trace);
they differ only in their message catalogue and template, so the mapping from an exception lives here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from litestar.exceptions import HTTPException, PermissionDeniedException

from privacy_service.errors import RETRY_AFTER_SECONDS, DomainError, database_unavailable, log_unhandled

# Only these headers of an error reach the page's response (a 429's wait, a 405's methods).
KEPT_HEADERS = frozenset({"retry-after", "allow"})


@dataclass(frozen=True, slots=True)
class ErrorPage:
    status: int
    key: str  # the message catalogue's error_pages entry
    headers: dict[str, str]


def error_page(exc: Exception, keys: Mapping[int, str]) -> ErrorPage:
    """The page an exception is shown as; an unexpected server error is logged (its kind, never its data)."""
    if isinstance(exc, DomainError):
        status, headers = exc.status, dict(exc.headers or {})
    elif isinstance(exc, HTTPException):
        status, headers = exc.status_code, dict(exc.headers or {})
    elif database_unavailable(exc):
        status, headers = 503, {"Retry-After": RETRY_AFTER_SECONDS}
    else:
        status, headers = 500, {}
    if status >= 500 and not (isinstance(exc, DomainError) and exc.transient):
        log_unhandled(exc)
    key = keys.get(status, "server_error" if status >= 500 else "bad_request")
    if isinstance(exc, PermissionDeniedException) and "CSRF" in str(exc.detail):
        key = "csrf"
    kept = {name: value for name, value in headers.items() if name.lower() in KEPT_HEADERS}
    return ErrorPage(status, key, kept)

"""How every console page is rendered: the visitor's language, the shared context (navigation, CSRF
token, brand, time zone), the security headers, and times in the operator's zone.

Each console area (``requests``, ``subjects``, ``breaches``, ...) is a thin controller that asks a
service for its figures and calls :func:`render` with :func:`page_context`: no area builds its own
headers or navigation.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.utils.scope.state import ScopeState

from privacy_service.config import Settings
from privacy_service.errors import NotFound
from privacy_service.policy.document import PolicyDocument
from privacy_service.web.console.access import PAGES, navigation
from privacy_service.web.console.sessions import CONSOLE_PATH
from privacy_service.web.i18n import (
    LocalTime,
    language_links,
    local_time,
    messages,
    remembered_choice,
    visitor_language,
)
from privacy_service.web.pages import HTML_CSP, html_response

AnyRequest = Request[Any, Any, Any]
CSRF_COOKIE = "privacy_console_csrf"
CONSOLE_CSP = HTML_CSP + "; script-src 'self'"


def settings_of(request: AnyRequest) -> Settings:
    settings: Settings = request.app.state.runtime.settings
    return settings


def path_id(value: str) -> uuid.UUID:
    """A console path's id (every area's paths take it as ``{...:str}`` and parse it here): anything but a
    UUID is the console's 404 page, not a JSON 404 from a ``{...:uuid}`` path that never matched."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("no such page") from None


def error_page_path(request: AnyRequest) -> str:
    """The page an error page's language links open: the URL itself for a GET; for a form's post (a POST-only
    URL) the area's page it belongs to, else the dashboard, so switching language never posts nor 405s."""
    path = request.url.path
    if request.method in ("GET", "HEAD"):
        return path
    areas = [page.path for page in PAGES.values() if page.path != CONSOLE_PATH]
    return next((area for area in areas if path == area or path.startswith(f"{area}/")), CONSOLE_PATH)


def console_language(request: AnyRequest) -> str:
    policy: PolicyDocument = request.app.state.policy
    return visitor_language(request, policy.languages)


def page_context(request: AnyRequest, language: str, page_path: str, current: str | None = None) -> dict[str, Any]:
    """What every console template reads: ``m`` (the catalog), ``c`` (its console section), ``nav``,
    ``csrf_token``, ``operator``, ``languages``, ``zone`` and ``when`` (a moment as a :class:`LocalTime`
    in the policy's display zone, rewritten by portal.js in the browser's own)."""
    policy: PolicyDocument = request.app.state.policy
    m = messages(language)
    signed_in = request.scope.get("state", {}).get("console")
    zone = policy.display_zone
    when: Callable[[datetime], LocalTime] = lambda moment: local_time(moment, language, zone)  # noqa: E731
    return {
        "language": language,
        "m": m,
        "c": m["console"],
        "brand": f"{policy.spec.controller.name} · {m['console']['brand']}",
        "languages": language_links(policy.languages, page_path, language),
        "csrf_token": ScopeState.from_scope(request.scope).csrf_token or "",
        "operator": signed_in.operator.name if signed_in else None,
        "nav": navigation(signed_in.scopes, current or "") if signed_in else [],
        "scopes": signed_in.scopes if signed_in else frozenset(),
        "zone": policy.spec.display_time_zone,
        "when": when,
        "errors": {},
    }


def _cookies(request: AnyRequest, language: str) -> list[Cookie]:
    """A ``?lang=`` choice is remembered for the console's next pages."""
    return remembered_choice(request, language, path=CONSOLE_PATH, samesite="strict")


def render(
    request: AnyRequest,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    csp: str = CONSOLE_CSP,
) -> Response[bytes]:
    return html_response(
        template,
        context,
        csp=csp,
        status_code=status_code,
        headers=headers,
        cookies=_cookies(request, str(context["language"])),
    )

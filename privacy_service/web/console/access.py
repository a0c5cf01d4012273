"""Who may open each console page, declared once: the routes' ``opt`` and the navigation both read
:data:`PAGES`, so a link is shown exactly when its page would let the operator in.

Every console route but sign-in is ``{"console": True, "console_scopes": ...}`` (see
``operators.service.ACCESS_KINDS``): :func:`console_guard` resumes the session from its cookie and
refuses a session without the page's scopes (403), whatever the page showed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from privacy_service.errors import Forbidden, Unauthenticated
from privacy_service.web.console.sessions import SESSION_COOKIE, SignedIn, resume_session


@dataclass(frozen=True, slots=True)
class Page:
    key: str  # the navigation's label in messages (console.nav.<key>)
    path: str
    scopes: frozenset[str]

    @property
    def opt(self) -> dict[str, Any]:
        return {"console": True, "console_scopes": self.scopes}


def console_opt(*scopes: str) -> dict[str, Any]:
    """The ``opt`` of a console action that needs more than its page (e.g. placing a hold)."""
    return {"console": True, "console_scopes": frozenset(scopes)}


# The navigation, in order: each area's pages and the scopes that open them.
PAGES: dict[str, Page] = {
    "dashboard": Page("dashboard", "/console", frozenset()),
    "requests": Page("requests", "/console/requests", frozenset({"requests:manage"})),
    "subjects": Page("subjects", "/console/subjects", frozenset({"subjects:read"})),
    "breaches": Page("breaches", "/console/breaches", frozenset({"breaches:manage"})),
    "retention": Page("retention", "/console/retention", frozenset({"retention:run"})),
    "audit": Page("audit", "/console/audit", frozenset({"audit:read"})),
    "systems": Page("systems", "/console/systems", frozenset({"systems:manage"})),
    "api": Page("api", "/console/api", frozenset()),
}
SIGNED_IN: dict[str, Any] = {"console": True, "console_scopes": frozenset()}  # e.g. sign-out
SIGN_IN_PATH = "/console/sign-in"


class SignInRequired(Unauthenticated):
    """No live console session: a page redirects to sign-in, a form post is refused."""


def navigation(scopes: frozenset[str], current: str) -> list[dict[str, Any]]:
    return [
        {"key": page.key, "path": page.path, "current": page.key == current}
        for page in PAGES.values()
        if page.scopes <= scopes
    ]


async def current_session(connection: ASGIConnection[Any, Any, Any, Any]) -> SignedIn | None:
    """The live session the request's cookie names, if any (ending it here if it is no longer live)."""
    token = connection.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    state = connection.app.state
    async with state.db.transaction() as session:
        return await resume_session(session, token, state.runtime.settings, state.clock.now())


async def console_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    signed_in = await current_session(connection)
    if signed_in is None:
        raise SignInRequired("sign in to the console first")
    connection.scope.setdefault("state", {})["console"] = signed_in
    missing = sorted(set(handler.opt.get("console_scopes", ())) - signed_in.scopes)
    if missing:
        raise Forbidden(f"this key lacks the scope(s): {', '.join(missing)}")


def signed_in_operator(connection: ASGIConnection[Any, Any, Any, Any]) -> SignedIn:
    found: SignedIn = connection.scope["state"]["console"]
    return found

"""The console's systems area: downstream systems, their delivery health, retrying a dead delivery.

The registry, the delivery log and the retry are ``systems.service.SystemService``'s (what
``/v1/systems`` calls), with the signed-in operator as the actor, so a console retry is audited
(``systems.delivery.retried``) exactly like the API's. The health figures are counts read in one
grouped query per page (:mod:`.systems_health`). A system's signing key is never read here (the
service's views do not carry it), nor is a connection's URL (only names and task counts).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.dsr.routes import kick_outbox
from privacy_service.errors import Conflict
from privacy_service.systems.flows import DeliveryStatus
from privacy_service.systems.routes import system_service_for
from privacy_service.systems.service import SystemService
from privacy_service.web.console.access import PAGES, console_guard, signed_in_operator
from privacy_service.web.console.rendering import (
    AnyRequest,
    console_language,
    error_page_path,
    page_context,
    path_id,
    render,
)
from privacy_service.web.console.requests import request_service
from privacy_service.web.console.sessions import CONSOLE_PATH
from privacy_service.web.console.systems_health import connection_tasks, delivery_health

SYSTEMS_PATH = PAGES["systems"].path
PAGE_SIZE = 50
STATUSES = tuple(status.value for status in DeliveryStatus)


def system_service(request: AnyRequest, session: AsyncSession) -> SystemService:
    """The API's service (``systems.routes.system_service_for``, with its request service as the API passes
    it) acting as the signed-in operator."""
    return system_service_for(
        request, session, signed_in_operator(request).operator.actor, request_service(request, session)
    )


def _conflict_page(request: AnyRequest, message_key: str) -> Response[bytes]:
    language = console_language(request)
    context = page_context(request, language, error_page_path(request), "systems")
    words = context["c"]["systems"]
    context.update(title=words["retry_refused_title"], body=words[message_key], reference=None)
    return render(request, "console/error.html", context, status_code=409)


class SystemsConsole(Controller):
    path = f"{CONSOLE_PATH}/systems"
    include_in_schema = False

    @get("/", guards=[console_guard], opt=PAGES["systems"].opt)
    async def systems(self, request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Response[bytes]:
        now = request.app.state.clock.now()
        listed = await system_service(request, db_session).list_systems()
        language = console_language(request)
        context = page_context(request, language, SYSTEMS_PATH, "systems")
        context.update(
            title=context["c"]["systems"]["title"],
            systems=listed.items,
            health=await delivery_health(db_session, None, now),
            tasks=await connection_tasks(db_session),
            now=now,
        )
        return render(request, "console/systems/index.html", context)

    @get("/{system_ref:str}", guards=[console_guard], opt=PAGES["systems"].opt)
    async def system(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], system_ref: FromPath[str]
    ) -> Response[bytes]:
        """One system, its health and its delivery log (the API's keyset page, optionally one status)."""
        system_id = path_id(system_ref)
        service = system_service(request, db_session)
        found = await service.get(system_id)  # NotFound: the console's 404 page
        status = request.query_params.get("status") or None
        after = request.query_params.get("after") or None
        # A bad status or cursor is the service's InvalidInput: a 422 page that names neither.
        log = await service.deliveries(system_id, status=status, after=after, limit=PAGE_SIZE)
        path = f"{SYSTEMS_PATH}/{system_id}"
        kept = {"status": status} if status else {}
        language = console_language(request)
        context = page_context(request, language, path, "systems")
        context.update(
            title=found.name,
            system=found,
            health=(await delivery_health(db_session, system_id, request.app.state.clock.now())).get(system_id),
            deliveries=log.items,
            status=status,
            statuses=STATUSES,
            next_href=f"{path}?{urlencode({**kept, 'after': log.next_cursor})}" if log.next_cursor else None,
            first_href=(f"{path}?{urlencode(kept)}" if kept else path) if after else None,
            retried=request.query_params.get("retried"),
            path=path,
        )
        return render(request, "console/systems/system.html", context)

    @post("/deliveries/{delivery_ref:str}/retry", guards=[console_guard], opt=PAGES["systems"].opt)
    async def retry(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], delivery_ref: FromPath[str]
    ) -> Response[Any]:
        """The API's retry (``SystemService.retry``: dead only, a fresh budget, audited), then the log."""
        delivery_id = path_id(delivery_ref)
        try:
            view = await system_service(request, db_session).retry(delivery_id)
        except Conflict:
            # Not dead (already retried, delivered) or no longer sendable: nothing was changed.
            return _conflict_page(request, "retry_refused")
        return Redirect(
            f"{SYSTEMS_PATH}/{view.system_id}?{urlencode({'retried': str(view.id)})}#deliveries-heading",
            status_code=303,
            background=kick_outbox(request),
        )

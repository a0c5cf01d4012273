"""The console's requests area: the requests queue and a request's page: filters, keyset pages, history, the verified
identity, the customer's note, the changes as a diff, the deadline and extensions; approve, deny, extend, cancel.

Thin controllers over the API's own service (``DsrService``, built here with the signed-in operator as
the actor and the session's scopes, as ``dsr.routes`` builds it for an operator key): the queue is
``list_requests``, the page ``view`` and ``case_file``, and each decision the same call as the API's
``POST /v1/requests/{id}/approve|deny|extend|cancel``, so it is checked, recorded and audited alike.
A decision the request's state no longer allows (a form posted twice, another operator first) is a
409 page with nothing changed; a missing or over-long reason re-renders the page with 422.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.dsr.flows import Status
from privacy_service.dsr.routes import dsr_service_for, kick_outbox
from privacy_service.dsr.service import DsrService
from privacy_service.errors import Conflict, InvalidInput
from privacy_service.web.console.access import PAGES, console_guard, signed_in_operator
from privacy_service.web.console.rendering import AnyRequest, console_language, page_context, path_id, render
from privacy_service.web.console.requests_views import (
    DAYS_MAX,
    OVERDUE,
    REQUEST_TYPES,
    days_value,
    page_view,
    parse_filters,
    reason_error,
)
from privacy_service.web.console.sessions import CONSOLE_PATH

QUEUE_PATH = f"{CONSOLE_PATH}/requests"
PAGE_SIZE = 50  # requests per page of the queue
MANAGE = PAGES["requests"].opt  # the API's operator routes need requests:manage; so do these
DONE = ("approved", "denied", "extended", "cancelled", "erased")  # erased: filed from a subject's page


def request_service(request: AnyRequest, db_session: AsyncSession) -> DsrService:
    """The API's service (``dsr.routes.dsr_service_for``) as the signed-in operator, with the session's scopes."""
    signed_in = signed_in_operator(request)
    return dsr_service_for(request, db_session, signed_in.operator.actor, signed_in.scopes)


def _page_path(request_id: uuid.UUID) -> str:
    return f"{QUEUE_PATH}/{request_id}"


async def _request_page(
    request: AnyRequest,
    service: DsrService,
    request_id: uuid.UUID,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response[bytes]:
    language = console_language(request)
    context = page_context(request, language, _page_path(request_id), "requests")
    c = context["c"]["requests"]
    # The row and its history in one statement (404 page for an unknown id), read once for every part.
    loaded, history = await service.read_with_history(request_id)
    view = await service.view(request_id, loaded, history)
    case = await service.case_file(request_id, loaded)
    done = request.query_params.get("done")
    context.update(
        r=c,
        title=c["request_title"].format(type=c["types"].get(view.type, view.type)),
        errors=errors or {},
        values=values or {},
        done=done if done in DONE else None,
        days_max=DAYS_MAX,
        **page_view(view, case, request.app.state.policy, language, c, service.clock.now()),
    )
    return render(request, "console/requests/request.html", context, status_code=status_code)


async def _conflict_page(
    request: AnyRequest, service: DsrService, db_session: AsyncSession, request_id: uuid.UUID
) -> Response[bytes]:
    """The decision was refused by the request's state: nothing of this transaction is kept."""
    await db_session.rollback()
    view = await service.view(request_id)
    language = console_language(request)
    context = page_context(request, language, _page_path(request_id), "requests")
    c = context["c"]["requests"]
    context.update(
        r=c,
        title=c["conflict_title"],
        status_label=c["statuses"].get(view.status, view.status),
        page_path=_page_path(request_id),
    )
    return render(request, "console/requests/conflict.html", context, status_code=409)


def _decided(request: AnyRequest, request_id: uuid.UUID, done: str) -> Redirect:
    # Mail about the decision is queued in this transaction; the outbox is kicked after the commit.
    return Redirect(f"{_page_path(request_id)}?done={done}", status_code=303, background=kick_outbox(request))


class RequestsConsole(Controller):
    path = QUEUE_PATH
    include_in_schema = False

    @get("/", guards=[console_guard], opt=MANAGE)
    async def queue(self, request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Response[bytes]:
        """``GET /v1/requests``'s list with its filters (and the regime), one keyset page at a time."""
        state = request.app.state
        regimes = sorted(state.runtime.deadlines.regimes)
        language = console_language(request)
        context = page_context(request, language, QUEUE_PATH, "requests")
        c = context["c"]["requests"]
        filters = parse_filters(request.query_params, regimes)
        page = await request_service(request, db_session).list_requests(
            status=filters.status,
            type_=filters.type,
            overdue=OVERDUE[filters.overdue] if filters.overdue else None,
            due_before=None,
            after=filters.after,
            limit=PAGE_SIZE,
            regime=filters.regime,
        )
        context.update(
            r=c,
            title=c["title"],
            page=page,
            filters=filters,
            statuses=[s.value for s in Status],
            types=REQUEST_TYPES,
            regimes=regimes,
            next_href=QUEUE_PATH + filters.query(after=page.next_cursor) if page.next_cursor else None,
            first_href=QUEUE_PATH + filters.query(after=None) if filters.after else None,
            filtered=any((filters.status, filters.type, filters.regime, filters.overdue)),
        )
        return render(request, "console/requests/queue.html", context)

    @get("/{ref:str}", guards=[console_guard], opt=MANAGE)
    async def request_page(
        self, request: AnyRequest, ref: FromPath[str], db_session: NamedDependency[AsyncSession]
    ) -> Response[bytes]:
        return await _request_page(request, request_service(request, db_session), path_id(ref))

    @post("/{ref:str}/approve", guards=[console_guard], opt=MANAGE)
    async def approve(
        self, request: AnyRequest, ref: FromPath[str], db_session: NamedDependency[AsyncSession]
    ) -> Response[Any]:
        service, request_id = request_service(request, db_session), path_id(ref)
        try:
            await service.approve(request_id)
        except Conflict:
            return await _conflict_page(request, service, db_session, request_id)
        return _decided(request, request_id, "approved")

    @post("/{ref:str}/deny", guards=[console_guard], opt=MANAGE)
    async def deny(
        self, request: AnyRequest, ref: FromPath[str], db_session: NamedDependency[AsyncSession]
    ) -> Response[Any]:
        service, request_id = request_service(request, db_session), path_id(ref)
        c = page_context(request, console_language(request), _page_path(request_id))["c"]["requests"]
        reason = str((await request.form()).get("reason", "")).strip()
        problem = reason_error(reason, c)
        if problem is not None:
            return await _request_page(
                request,
                service,
                request_id,
                errors={"deny-reason": problem},
                values={"deny": reason[:4000]},
                status_code=422,
            )
        try:
            await service.deny(request_id, reason)
        except Conflict:
            return await _conflict_page(request, service, db_session, request_id)
        return _decided(request, request_id, "denied")

    @post("/{ref:str}/extend", guards=[console_guard], opt=MANAGE)
    async def extend(
        self, request: AnyRequest, ref: FromPath[str], db_session: NamedDependency[AsyncSession]
    ) -> Response[Any]:
        service, request_id = request_service(request, db_session), path_id(ref)
        c = page_context(request, console_language(request), _page_path(request_id))["c"]["requests"]
        form = await request.form()
        reason = str(form.get("reason", "")).strip()
        days_text = str(form.get("days", "")).strip()
        errors: dict[str, str] = {}
        problem = reason_error(reason, c)
        if problem is not None:
            errors["extend-reason"] = problem
        days: int | None = None
        try:
            days = days_value(days_text)
        except ValueError:
            errors["extend-days"] = c["days_invalid"].format(max=DAYS_MAX)
        if not errors:
            try:
                await service.extend(request_id, reason, days)
                return _decided(request, request_id, "extended")
            except Conflict:
                return await _conflict_page(request, service, db_session, request_id)
            except InvalidInput:  # past the law's limit (the deadline rules say so)
                await db_session.rollback()
                errors["extend-days"] = c["days_too_many"]
        values = {"extend": reason[:4000], "days": days_text[:3]}
        return await _request_page(request, service, request_id, errors=errors, values=values, status_code=422)

    @post("/{ref:str}/cancel", guards=[console_guard], opt=MANAGE)
    async def cancel(
        self, request: AnyRequest, ref: FromPath[str], db_session: NamedDependency[AsyncSession]
    ) -> Response[Any]:
        service, request_id = request_service(request, db_session), path_id(ref)
        try:
            await service.cancel(request_id)
        except Conflict:
            return await _conflict_page(request, service, db_session, request_id)
        return _decided(request, request_id, "cancelled")

"""HTTP controllers for data-subject requests: public intake/verify/status/export, operator actions."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit.service import Actor
from privacy_service.dsr import schemas
from privacy_service.dsr.answer_access import own_token
from privacy_service.dsr.export import json_export, zip_export
from privacy_service.dsr.flows import Status
from privacy_service.dsr.reading import read_for_subject, subject_view
from privacy_service.dsr.service import TOKEN_PREFIX, DsrService, hash_token
from privacy_service.errors import Unauthenticated, problem
from privacy_service.operators.guards import bearer_key, current_operator, operator_guard
from privacy_service.ratelimit import code_quota, ip_rate_limit
from privacy_service.ratelimit.http import RateLimitedRoute

MANAGE = {"scopes": {"requests:manage"}}
PUBLIC = {"public": True}
# Authorised in the handler (see authorise): the request's own subject token, or an operator key with
# these scopes. The export is the subject's personal data: an operator needs subjects:export for it.
TOKEN_OR_MANAGE = {"subject_token": True, "scopes": {"requests:manage"}}
TOKEN_OR_EXPORT = {"subject_token": True, "scopes": {"subjects:export"}, "pii": True}


def dsr_service_for(
    request: Request[Any, Any, Any], db_session: AsyncSession, actor: Actor, scopes: frozenset[str]
) -> DsrService:
    """The request service for one HTTP request, acting as ``actor`` with ``scopes``: the API's provider
    (an operator key or a data subject) and the console (the signed-in operator) both build it here."""
    state = request.app.state
    return DsrService(
        session=db_session,
        keys=state.key_service,
        policy=state.policy,
        rules=state.runtime.deadlines,
        clock=state.clock,
        settings=state.runtime.settings,
        actor=actor,
        request_id=request.scope.get("state", {}).get("request_id"),
        code_quota=code_quota(request),
        scopes=scopes,
    )


async def provide_dsr_service(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> DsrService:
    operator = request.scope["state"].get("operator")
    if operator is None:
        # An unauthenticated subject is not identified by address (an IP is personal data); once a
        # request exists the service attributes its steps to the request id.
        return dsr_service_for(request, db_session, Actor("subject", "anonymous"), frozenset())
    return dsr_service_for(request, db_session, operator.actor, frozenset(operator.scopes))


def kick_outbox(request: Request[Any, Any, Any]) -> BackgroundTask:
    """Runs after the response is sent, i.e. after the transaction committed."""
    return _kick_task(request.app.state.outbox_kick)


@lru_cache(maxsize=16)
def _kick_task(kick: Any) -> BackgroundTask:
    # One per application: the task takes no arguments, and building it inspects the callable.
    return BackgroundTask(kick.after_commit)


async def authorise(request: Request[Any, Any, Any], service: DsrService, request_id: uuid.UUID) -> None:
    """Either the request's own subject token or an operator key with the route's scopes."""
    credential = bearer_key(request)
    if credential is None:
        raise Unauthenticated("send the request token (or an operator key) as 'Authorization: Bearer ...'")
    if credential.startswith(TOKEN_PREFIX):
        await service.authorise_token(request_id, credential)
        return
    await operator_guard(request, request.route_handler)  # checks the handler's declared scopes
    service.actor = current_operator(request).actor
    service.scopes = frozenset(current_operator(request).scopes)


async def export_download(
    request: Request[Any, Any, Any], service: DsrService, request_id: uuid.UUID, format: Literal["json", "zip"]
) -> Stream:
    """The answer to an access request, streamed as a download (the caller has authorised it)."""
    parts = await service.export_parts(request_id)
    state = request.app.state
    if format == "zip":
        body = zip_export(state.db, state.key_service, *parts, identifier_categories=state.policy.identifier_fields)
        media_type, filename = "application/zip", f"privacy-export-{request_id}.zip"
    else:
        body = json_export(state.db, state.key_service, *parts)
        media_type, filename = "application/json", f"privacy-export-{request_id}.json"
    return Stream(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


class RequestController(Controller):
    """Public endpoints (rate-limited per address) and operator endpoints (guarded per handler)."""

    path = "/v1/requests"
    tags = ["requests"]  # noqa: RUF012 - Litestar reads these class attributes
    dependencies = {"service": Provide(provide_dsr_service)}  # noqa: RUF012

    @RateLimitedRoute(
        "/",
        http_method="POST",
        status_code=HTTP_202_ACCEPTED,
        guards=[ip_rate_limit("intake")],
        opt=PUBLIC,
        summary="Submit a request",
    )
    async def submit(
        self, request: Request[Any, Any, Any], data: JSONBody[schemas.RequestCreate]
    ) -> Response[schemas.RequestAccepted]:
        # The transaction and the service built here rather than by two dependency providers (the
        # same session and commit as provide_db_session): dependency injection cost more per
        # request than anything it did for this, the busiest public route.
        async with request.app.state.db.transaction() as session:
            accepted = await (await provide_dsr_service(request, session)).submit(data)
        # Written: wake the delivery loops now (they run once this handler yields) rather than in a
        # background task after the response, which cost more to run than the wake-up itself.
        request.app.state.outbox_kick.set()
        return Response(accepted, status_code=HTTP_202_ACCEPTED)

    @post(
        "/{request_id:uuid}/verify",
        status_code=HTTP_200_OK,
        guards=[ip_rate_limit("verify")],
        opt=PUBLIC,
        summary="Verify",
    )
    async def verify(
        self,
        request: Request[Any, Any, Any],
        request_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.VerifyBody],
        service: NamedDependency[DsrService],
    ) -> Response[Any]:
        outcome = await service.verify(request_id, data.code)
        if outcome.rejected is not None:
            # Returned, not raised: the failed attempt must commit.
            rejected = outcome.rejected
            return problem(
                422,
                rejected.slug,
                "Verification failed",
                rejected.detail,
                request,
                attempts_left=rejected.attempts_left,
            )
        return Response(outcome.verified, background=kick_outbox(request))

    @post(
        "/{request_id:uuid}/resend",
        status_code=HTTP_202_ACCEPTED,
        guards=[ip_rate_limit("resend")],
        opt=PUBLIC,
        summary="Resend code",
    )
    async def resend(
        self, request: Request[Any, Any, Any], request_id: FromPath[uuid.UUID], service: NamedDependency[DsrService]
    ) -> Response[dict[str, str]]:
        await service.resend_code(request_id)
        return Response({"status": "sent"}, status_code=HTTP_202_ACCEPTED, background=kick_outbox(request))

    @post(
        "/{request_id:uuid}/access-code",
        status_code=HTTP_202_ACCEPTED,
        guards=[ip_rate_limit("resend")],
        opt=PUBLIC,
        summary="Mail a code to open a confirmed request on another device",
    )
    async def send_opening_code(
        self, request: Request[Any, Any, Any], request_id: FromPath[uuid.UUID], service: NamedDependency[DsrService]
    ) -> Response[dict[str, str]]:
        """The code goes to the request's verified identity; the request itself does not change."""
        await service.send_opening_code(request_id)
        return Response({"status": "sent"}, status_code=HTTP_202_ACCEPTED, background=kick_outbox(request))

    @post(
        "/{request_id:uuid}/open",
        status_code=HTTP_200_OK,
        guards=[ip_rate_limit("verify")],
        opt=PUBLIC,
        summary="Open a confirmed request with the mailed code (a read-only token)",
    )
    async def open_with_code(
        self,
        request: Request[Any, Any, Any],
        request_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.VerifyBody],
        service: NamedDependency[DsrService],
    ) -> Response[Any]:
        outcome = await service.open_with_code(request_id, data.code)
        if outcome.rejected is not None:
            # Returned, not raised: the failed attempt must commit.
            rejected = outcome.rejected
            return problem(
                422,
                rejected.slug,
                "The code does not open this request",
                rejected.detail,
                request,
                attempts_left=rejected.attempts_left,
            )
        return Response(outcome.verified)

    @RateLimitedRoute(
        "/{request_id:uuid}",
        http_method="GET",
        guards=[ip_rate_limit("verify")],
        opt=TOKEN_OR_MANAGE,
        summary="Request status (subject token or operator)",
    )
    async def status(self, request: Request[Any, Any, Any], request_id: FromPath[uuid.UUID]) -> schemas.RequestView:
        """No session, transaction or service unless the read needs one (see reading.read_for_subject)."""
        state = request.app.state
        credential = bearer_key(request)
        token = credential if credential is not None and credential.startswith(TOKEN_PREFIX) else None
        # The subject's read, the most frequent: the row and its history in one statement, the token
        # checked on that row (the same answers as authorise: 404, 410, 403).
        read = await read_for_subject(state.db, request_id) if token is not None else None
        if read is not None and token is not None:
            now = state.clock.now()
            if own_token(read, hash_token(token), now) and (view := subject_view(read, now)) is not None:
                return view
        async with state.db.transaction() as session:
            service = await provide_dsr_service(request, session)
            if token is None:
                await authorise(request, service, request_id)
                return await service.view(request_id)
            # A token a browser got with a code, a wrong one, a decision to open, downstream progress:
            # the whole row, read again in this transaction (the subject read has what its view shows).
            loaded, history = await service.read_with_history(request_id)
            await service.check_token(loaded, token)
            return await service.view(request_id, loaded, history)

    @get(
        "/{request_id:uuid}/export",
        guards=[ip_rate_limit("download")],
        opt=TOKEN_OR_EXPORT,
        summary="Download the answer (streamed)",
    )
    async def export(
        self,
        request: Request[Any, Any, Any],
        request_id: FromPath[uuid.UUID],
        service: NamedDependency[DsrService],
        format: FromQuery[Literal["json", "zip"]] = "json",
    ) -> Stream:
        await authorise(request, service, request_id)
        return await export_download(request, service, request_id, format)

    # -- operator endpoints (scope requests:manage) --------------------------------------

    @get("/", guards=[operator_guard], opt=MANAGE, summary="List requests (filters: status, type, overdue, due_before)")
    async def list_requests(
        self,
        service: NamedDependency[DsrService],
        status: FromQuery[Status | None] = None,
        type: FromQuery[schemas.RequestType | None] = None,
        overdue: FromQuery[bool | None] = None,
        due_before: FromQuery[datetime | None] = None,
        after: Annotated[str | None, QueryParameter(max_length=100)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> schemas.RequestPage:
        return await service.list_requests(
            status=status, type_=type, overdue=overdue, due_before=due_before, after=after, limit=limit
        )

    @post(
        "/{request_id:uuid}/approve",
        status_code=HTTP_200_OK,
        guards=[operator_guard],
        opt=MANAGE,
        summary="Approve and process",
    )
    async def approve(
        self,
        request: Request[Any, Any, Any],
        request_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.EmptyBody],
        service: NamedDependency[DsrService],
    ) -> Response[schemas.RequestView]:
        await service.approve(request_id)
        return Response(await service.view(request_id), background=kick_outbox(request))

    @post(
        "/{request_id:uuid}/deny",
        status_code=HTTP_200_OK,
        guards=[operator_guard],
        opt=MANAGE,
        summary="Deny with a reason",
    )
    async def deny(
        self,
        request: Request[Any, Any, Any],
        request_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.DenyBody],
        service: NamedDependency[DsrService],
    ) -> Response[schemas.RequestView]:
        await service.deny(request_id, data.reason)
        return Response(await service.view(request_id), background=kick_outbox(request))

    @post(
        "/{request_id:uuid}/extend",
        status_code=HTTP_200_OK,
        guards=[operator_guard],
        opt=MANAGE,
        summary="Extend the deadline once",
    )
    async def extend(
        self,
        request: Request[Any, Any, Any],
        request_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.ExtendBody],
        service: NamedDependency[DsrService],
    ) -> Response[schemas.RequestView]:
        await service.extend(request_id, data.reason, data.days)
        return Response(await service.view(request_id), background=kick_outbox(request))

    @post("/{request_id:uuid}/cancel", status_code=HTTP_200_OK, guards=[operator_guard], opt=MANAGE, summary="Cancel")
    async def cancel(
        self, request_id: FromPath[uuid.UUID], data: JSONBody[schemas.EmptyBody], service: NamedDependency[DsrService]
    ) -> schemas.RequestView:
        await service.cancel(request_id)
        return await service.view(request_id)

"""HTTP controllers: the operator registry (/v1/systems, scope systems:manage) and signed callbacks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit.service import Actor
from privacy_service.dsr.routes import kick_outbox, provide_dsr_service
from privacy_service.dsr.service import DsrService
from privacy_service.operators.guards import operator_guard
from privacy_service.ratelimit import ip_rate_limit
from privacy_service.systems import schemas
from privacy_service.systems.service import SystemService
from privacy_service.systems.signing import KEY_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

MANAGE = {"scopes": {"systems:manage"}}


def system_service_for(
    request: Request[Any, Any, Any], db_session: AsyncSession, actor: Actor, dsr: DsrService
) -> SystemService:
    """The systems service for one HTTP request, acting as ``actor`` (the API's key, a system's callback or
    the console's operator), with the request service it completes requests through."""
    state = request.app.state
    return SystemService(
        session=db_session,
        keys=state.key_service,
        policy=state.policy,
        clock=state.clock,
        settings=state.runtime.settings,
        actor=actor,
        request_id=request.scope.get("state", {}).get("request_id"),
        dsr=dsr,
        resolver=state.runtime.resolver,
    )


async def provide_system_service(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], dsr: NamedDependency[DsrService]
) -> SystemService:
    operator = request.scope["state"].get("operator")
    return system_service_for(request, db_session, operator.actor if operator else dsr.actor, dsr)


_CALLBACK_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["request_status"],
    properties={
        "request_status": Schema(type=OpenAPIType.STRING, enum=["in_progress", "completed", "failed"]),
        "subject_request_id": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.UUID),
        "data": Schema(
            one_of=[Schema(type=OpenAPIType.OBJECT), Schema(type=OpenAPIType.ARRAY), Schema(type=OpenAPIType.NULL)],
            description="Access data the system holds (access/portability, with 'completed' only).",
        ),
        "reason": Schema(type=OpenAPIType.STRING, max_length=500, description="Why it failed; no personal data."),
    },
)


@dataclass
class CallbackOperation(Operation):
    """The callback reads its body raw (the signature covers the bytes); document the JSON it expects."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=_CALLBACK_SCHEMA)},
            required=True,
            description="Signed with the system's key: HMAC-SHA256 over '<timestamp>.<raw body>'.",
        )


class SystemController(Controller):
    path = "/v1/systems"
    tags = ["systems"]  # noqa: RUF012 - Litestar reads these class attributes
    dependencies = {  # noqa: RUF012
        "service": Provide(provide_system_service),
        "dsr": Provide(provide_dsr_service),
    }

    @post("/", status_code=HTTP_201_CREATED, guards=[operator_guard], opt=MANAGE, summary="Register a system")
    async def add(
        self, data: JSONBody[schemas.SystemCreate], service: NamedDependency[SystemService]
    ) -> schemas.SystemCreated:
        return await service.add(data)

    @get("/", guards=[operator_guard], opt=MANAGE, summary="List registered systems")
    async def list_systems(
        self, service: NamedDependency[SystemService], include_removed: FromQuery[bool] = False
    ) -> schemas.SystemPage:
        return await service.list_systems(include_removed=include_removed)

    @get("/{system_id:uuid}", guards=[operator_guard], opt=MANAGE, summary="One system (never its key)")
    async def get_system(
        self, system_id: FromPath[uuid.UUID], service: NamedDependency[SystemService]
    ) -> schemas.SystemOut:
        return await service.get(system_id)

    @delete(
        "/{system_id:uuid}",
        status_code=HTTP_200_OK,
        guards=[operator_guard],
        opt=MANAGE,
        summary="Remove a system (shreds its key; requests stop waiting for it)",
    )
    async def remove(
        self, request: Request[Any, Any, Any], system_id: FromPath[uuid.UUID], service: NamedDependency[SystemService]
    ) -> Response[schemas.Removed]:
        return Response(await service.remove(system_id), background=kick_outbox(request))

    @get("/{system_id:uuid}/deliveries", guards=[operator_guard], opt=MANAGE, summary="Delivery log of a system")
    async def deliveries(
        self,
        system_id: FromPath[uuid.UUID],
        service: NamedDependency[SystemService],
        status: Annotated[
            str | None, QueryParameter(max_length=16, description="pending, sending, delivered, dead or cancelled")
        ] = None,
        after: Annotated[str | None, QueryParameter(max_length=100)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> schemas.DeliveryPage:
        return await service.deliveries(system_id, status=status, after=after, limit=limit)

    @post(
        "/deliveries/{delivery_id:uuid}/retry",
        status_code=HTTP_200_OK,
        guards=[operator_guard],
        opt=MANAGE,
        summary="Retry a dead-lettered webhook",
    )
    async def retry(
        self,
        request: Request[Any, Any, Any],
        delivery_id: FromPath[uuid.UUID],
        service: NamedDependency[SystemService],
    ) -> Response[schemas.DeliveryView]:
        return Response(await service.retry(delivery_id), background=kick_outbox(request))

    @post(
        "/callbacks/{delivery_id:uuid}",
        status_code=HTTP_202_ACCEPTED,
        guards=[ip_rate_limit("callback")],
        opt={"credential": "the system's signature", "problems": (401, 413, 415)},
        operation_class=CallbackOperation,
        summary="A system's signed answer (in_progress / completed / failed, optional access data)",
    )
    async def callback(
        self,
        request: Request[Any, Any, Any],
        delivery_id: FromPath[uuid.UUID],
        service: NamedDependency[SystemService],
        key_id: Annotated[str | None, HeaderParameter(name=KEY_ID_HEADER, max_length=64)] = None,
        timestamp: Annotated[str | None, HeaderParameter(name=TIMESTAMP_HEADER, max_length=32)] = None,
        signature: Annotated[str | None, HeaderParameter(name=SIGNATURE_HEADER, max_length=1000)] = None,
    ) -> Response[schemas.CallbackAccepted]:
        accepted = await service.callback(
            delivery_id, await request.body(), key_id=key_id, timestamp=timestamp, signature=signature
        )
        return Response(accepted, status_code=HTTP_202_ACCEPTED, background=kick_outbox(request))

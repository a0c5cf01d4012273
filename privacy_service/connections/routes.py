"""HTTP controllers for the connection registry (/v1/connections, scope systems:manage)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.connections import schemas
from privacy_service.connections.service import ConnectionService
from privacy_service.operators.guards import current_operator, operator_guard
from privacy_service.systems.routes import MANAGE  # one declaration of the systems:manage scope


async def provide_connection_service(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> ConnectionService:
    state = request.app.state
    return ConnectionService(
        session=db_session,
        keys=state.key_service,
        clock=state.clock,
        settings=state.runtime.settings,
        actor=current_operator(request).actor,
        request_id=request.scope["state"].get("request_id"),
    )


class ConnectionController(Controller):
    path = "/v1/connections"
    tags = ["connections"]  # noqa: RUF012 - Litestar reads these class attributes
    guards = [operator_guard]  # noqa: RUF012
    dependencies = {"service": Provide(provide_connection_service)}  # noqa: RUF012

    @post("/", status_code=HTTP_201_CREATED, opt=MANAGE, summary="Register a connection (its URL is never shown)")
    async def add(
        self, data: JSONBody[schemas.ConnectionCreate], service: NamedDependency[ConnectionService]
    ) -> schemas.ConnectionOut:
        return await service.add(data)

    @get("/", opt=MANAGE, summary="List connections (dialect, host, database; never user or password)")
    async def list_connections(
        self, service: NamedDependency[ConnectionService], include_removed: FromQuery[bool] = False
    ) -> schemas.ConnectionPage:
        return await service.list_connections(include_removed=include_removed)

    @get("/{connection_id:uuid}", opt=MANAGE, summary="One connection")
    async def get_connection(
        self, connection_id: FromPath[uuid.UUID], service: NamedDependency[ConnectionService]
    ) -> schemas.ConnectionOut:
        return await service.get(connection_id)

    @delete(
        "/{connection_id:uuid}", status_code=HTTP_200_OK, opt=MANAGE, summary="Remove a connection (shreds its URL)"
    )
    async def remove(
        self, connection_id: FromPath[uuid.UUID], service: NamedDependency[ConnectionService]
    ) -> schemas.ConnectionRemoved:
        return await service.remove(connection_id)

    @post(
        "/{connection_id:uuid}/test",
        status_code=HTTP_200_OK,
        opt=MANAGE,
        summary="Connect and check that every collection and field of the dataset exists",
    )
    async def test(
        self, connection_id: FromPath[uuid.UUID], service: NamedDependency[ConnectionService]
    ) -> schemas.ConnectionTest:
        return await service.test(connection_id)

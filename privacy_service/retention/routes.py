"""Thin HTTP controllers: legal holds on a subject, and purge runs."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.operators.guards import current_operator, operator_guard
from privacy_service.retention import schemas
from privacy_service.retention.holds import HoldService
from privacy_service.retention.jobs import RunOptions, start_run
from privacy_service.retention.models import RunStatus
from privacy_service.retention.service import get_run, list_runs

HOLD_READ = {"scopes": {"subjects:read"}}
HOLD_WRITE = {"scopes": {"subjects:write"}}
RUN = {"scopes": {"retention:run"}}


async def provide_hold_service(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> HoldService:
    state = request.app.state
    return HoldService(
        session=db_session,
        keys=state.key_service,
        clock=state.clock,
        actor=current_operator(request).actor,
        request_id=request.scope["state"].get("request_id"),
    )


class HoldController(Controller):
    path = "/v1/subjects/{subject_id:uuid}/holds"
    tags = ["subjects"]  # noqa: RUF012 - Litestar reads these class attributes
    guards = [operator_guard]  # noqa: RUF012
    dependencies = {"holds": Provide(provide_hold_service)}  # noqa: RUF012

    @post("/", status_code=HTTP_201_CREATED, opt=HOLD_WRITE, summary="Place a legal hold: no purge, no erasure")
    async def place(
        self,
        subject_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.HoldCreate],
        holds: NamedDependency[HoldService],
    ) -> schemas.HoldOut:
        return await holds.place(subject_id, data)

    @get("/", opt=HOLD_READ, summary="A subject's legal holds, active and released")
    async def list_holds(
        self, subject_id: FromPath[uuid.UUID], holds: NamedDependency[HoldService]
    ) -> schemas.HoldList:
        return await holds.list(subject_id)

    @delete("/{hold_id:uuid}", status_code=HTTP_200_OK, opt=HOLD_WRITE, summary="Release a legal hold")
    async def release(
        self, subject_id: FromPath[uuid.UUID], hold_id: FromPath[uuid.UUID], holds: NamedDependency[HoldService]
    ) -> schemas.HoldOut:
        return await holds.release(subject_id, hold_id)


class RetentionRunController(Controller):
    path = "/v1/retention/runs"
    tags = ["retention"]  # noqa: RUF012
    guards = [operator_guard]  # noqa: RUF012

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        opt=RUN,
        summary="Start a purge run (dry_run: report only); it runs after the response",
    )
    async def start(
        self, request: Request[Any, Any, Any], data: JSONBody[schemas.RunCreate]
    ) -> Response[schemas.RunAccepted]:
        options = RunOptions(
            dry_run=data.dry_run,
            now=data.now,
            batch_size=data.batch_size,
            force=data.force,
            actor=current_operator(request).actor,
        )
        started = await start_run(request.app.state.runtime, options)
        return Response(
            schemas.RunAccepted(id=started.run_id, status=RunStatus.RUNNING, dry_run=data.dry_run, as_of=started.as_of),
            status_code=HTTP_202_ACCEPTED,
            background=BackgroundTask(started.execute),
        )

    @get("/", opt=RUN, summary="Purge runs, newest first")
    async def index(
        self,
        db_session: NamedDependency[AsyncSession],
        after: Annotated[str | None, QueryParameter(max_length=120)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> schemas.RunPage:
        return await list_runs(db_session, after=after, limit=limit)

    @get("/{run_id:uuid}", opt=RUN, summary="One purge run's report: counts per rule, holds, alerts")
    async def read(self, run_id: FromPath[uuid.UUID], db_session: NamedDependency[AsyncSession]) -> schemas.RunView:
        return await get_run(db_session, run_id)

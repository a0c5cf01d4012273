"""Thin HTTP controllers for the vault (operator API)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.errors import InvalidInput
from privacy_service.operators.guards import current_operator, operator_guard
from privacy_service.subjects import schemas
from privacy_service.subjects.service import IDENTIFIERS, SubjectService

READ = {"scopes": {"subjects:read"}}
WRITE = {"scopes": {"subjects:write"}}


async def provide_subject_service(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> SubjectService:
    state = request.app.state
    return SubjectService(
        session=db_session,
        keys=state.key_service,
        policy=state.policy,
        clock=state.clock,
        actor=current_operator(request).actor,
        request_id=request.scope["state"].get("request_id"),
        audit_sink=state.runtime.audit_sink,
    )


def _one_identifier(body: schemas.Lookup) -> tuple[str, str]:
    given = [(kind, getattr(body, kind)) for kind in IDENTIFIERS if getattr(body, kind) is not None]
    if len(given) != 1:
        raise InvalidInput("give exactly one of email, phone or external_id")
    return given[0]


class SubjectController(Controller):
    path = "/v1/subjects"
    tags = ["subjects"]  # noqa: RUF012 - Litestar reads these class attributes
    guards = [operator_guard]  # noqa: RUF012
    dependencies = {"service": Provide(provide_subject_service)}  # noqa: RUF012

    @post("/", status_code=HTTP_201_CREATED, opt=WRITE, summary="Create a subject (PII stored encrypted)")
    async def create(
        self, data: JSONBody[schemas.SubjectCreate], service: NamedDependency[SubjectService]
    ) -> schemas.Created:
        return schemas.Created(id=await service.create(data))

    @get("/", opt=READ, summary="Find subjects by one identifier (prefer POST /v1/subjects/lookup)")
    async def find(
        self,
        service: NamedDependency[SubjectService],
        email: Annotated[str | None, QueryParameter(max_length=320)] = None,
        phone: Annotated[str | None, QueryParameter(max_length=64)] = None,
        external_id: Annotated[str | None, QueryParameter(max_length=200)] = None,
    ) -> schemas.SubjectList:
        kind, value = _one_identifier(schemas.Lookup(email=email, phone=phone, external_id=external_id))
        return schemas.SubjectList(items=await service.lookup(kind, value))

    @post(
        "/lookup",
        status_code=HTTP_200_OK,
        opt=READ,
        summary="Find subjects by one identifier, kept out of URLs",
    )
    async def lookup(
        self, data: JSONBody[schemas.Lookup], service: NamedDependency[SubjectService]
    ) -> schemas.SubjectList:
        kind, value = _one_identifier(data)
        return schemas.SubjectList(items=await service.lookup(kind, value))

    @get("/{subject_id:uuid}", opt=READ, summary="Read a subject, decrypted")
    async def read(
        self, subject_id: FromPath[uuid.UUID], service: NamedDependency[SubjectService]
    ) -> schemas.SubjectOut:
        return await service.read(subject_id)

    @patch("/{subject_id:uuid}", opt=WRITE, summary="Change identifiers, language or profile fields")
    async def update(
        self,
        subject_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.SubjectPatch],
        service: NamedDependency[SubjectService],
    ) -> schemas.SubjectOut:
        return await service.patch(subject_id, data)

    @delete("/{subject_id:uuid}", status_code=HTTP_200_OK, opt=WRITE, summary="Erase a subject (crypto-shredding)")
    async def erase(
        self, subject_id: FromPath[uuid.UUID], service: NamedDependency[SubjectService]
    ) -> schemas.ErasureReport:
        return await service.erase(subject_id)

    @post(
        "/{subject_id:uuid}/records",
        status_code=HTTP_201_CREATED,
        opt=WRITE,
        summary="Add an encrypted record",
    )
    async def add_record(
        self,
        subject_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.RecordCreate],
        service: NamedDependency[SubjectService],
    ) -> schemas.Created:
        return schemas.Created(id=await service.add_record(subject_id, data))

    @get("/{subject_id:uuid}/records", opt=READ, summary="List a subject's records, decrypted")
    async def list_records(
        self,
        subject_id: FromPath[uuid.UUID],
        service: NamedDependency[SubjectService],
        after: FromQuery[uuid.UUID | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> schemas.RecordPage:
        return await service.list_records(subject_id, after=after, limit=limit)

    @get("/{subject_id:uuid}/records/{record_id:uuid}", opt=READ, summary="Read one record, decrypted")
    async def read_record(
        self, subject_id: FromPath[uuid.UUID], record_id: FromPath[uuid.UUID], service: NamedDependency[SubjectService]
    ) -> schemas.RecordOut:
        return await service.read_record(subject_id, record_id)

    @post(
        "/{subject_id:uuid}/events",
        status_code=HTTP_202_ACCEPTED,
        opt=WRITE,
        summary="Record a lifecycle event",
    )
    async def post_event(
        self,
        subject_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.EventCreate],
        service: NamedDependency[SubjectService],
    ) -> schemas.EventAccepted:
        return await service.post_event(subject_id, data)

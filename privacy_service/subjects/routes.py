"""Thin HTTP controllers for the vault (operator API)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit.service import Actor
from privacy_service.errors import InvalidInput, problem
from privacy_service.operators.guards import current_operator, operator_guard
from privacy_service.subjects import schemas
from privacy_service.subjects.erasure import Erasure, erase_subject
from privacy_service.subjects.service import IDENTIFIERS, SubjectService

READ = {"scopes": {"subjects:read"}}
READ_PII = {"scopes": {"subjects:read"}, "pii": True}
WRITE = {"scopes": {"subjects:write"}}
# Setting a legal duty aside is its own scope, granted deliberately (on top of subjects:write).
ERASE_OVERRIDE = {"scopes": {"subjects:write", "subjects:erase-override"}}
_ERASED = {
    HTTP_200_OK: ResponseSpec(
        schemas.SubjectErased, description="What was erased, and what was kept, why and until when"
    )
}


def subject_service_for(request: Request[Any, Any, Any], db_session: AsyncSession, actor: Actor) -> SubjectService:
    """The vault service for one HTTP request, acting as ``actor`` (the API's key or the console's operator)."""
    state = request.app.state
    return SubjectService(
        session=db_session,
        keys=state.key_service,
        policy=state.policy,
        clock=state.clock,
        actor=actor,
        request_id=request.scope.get("state", {}).get("request_id"),
        audit_sink=state.runtime.audit_sink,
        future_skew=timedelta(seconds=state.runtime.settings.retention_max_future_skew_seconds),
    )


async def provide_subject_service(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> SubjectService:
    return subject_service_for(request, db_session, current_operator(request).actor)


def _one_identifier(body: schemas.Lookup) -> tuple[str, str]:
    given = [(kind, getattr(body, kind)) for kind in IDENTIFIERS if getattr(body, kind) is not None]
    if len(given) != 1:
        raise InvalidInput("give exactly one of email, phone or external_id")
    return given[0]


def _erasure_answer(request: Request[Any, Any, Any], erasure: Erasure) -> Response[Any]:
    """The report, or a 409 when a legal hold kept everything or an override found the subject already
    erased (returned, not raised: the refused attempt stays in the audit log)."""
    result = erasure.result
    if erasure.held:
        return problem(
            409,
            "legal-hold",
            "A legal hold protects this subject",
            "nothing was erased: a legal hold keeps this subject's data until it is released",
            request,
            kept=result["kept"],
        )
    if erasure.override_refused:
        return problem(
            409,
            "already-erased",
            "This subject is already erased",
            "nothing was overridden: this subject was erased before; data a legal duty kept then (listed in "
            "kept) stays restricted and is purged when the duty ends",
            request,
            kept=result["kept"],
        )
    report = erasure.report
    return Response(
        schemas.SubjectErased(
            id=report.id,
            status=report.status,
            erased_at=report.erased_at,
            keys_destroyed=report.keys_destroyed,
            records_deleted=report.records_deleted,
            already_erased=report.already_erased,
            erased=result["erased"],
            kept=[msgspec.convert(kept, schemas.KeptCategory) for kept in result["kept"]],
            recipients_to_notify=result["recipients_to_notify"],
            overridden=[msgspec.convert(kept, schemas.KeptCategory) for kept in erasure.overridden],
        ),
        status_code=HTTP_200_OK,
    )


async def _erase(
    request: Request[Any, Any, Any],
    service: SubjectService,
    subject_id: uuid.UUID,
    override: schemas.EraseOverride | None = None,
) -> Response[Any]:
    rules = request.app.state.runtime.deadlines
    erasure = await erase_subject(service.session, service, rules, service.clock, subject_id, override=override)
    return _erasure_answer(request, erasure)


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

    @get("/{subject_id:uuid}", opt=READ_PII, summary="Read a subject, decrypted")
    async def read(
        self, subject_id: FromPath[uuid.UUID], service: NamedDependency[SubjectService]
    ) -> schemas.SubjectOut:
        return await service.read(subject_id)

    @patch(
        "/{subject_id:uuid}",
        opt=WRITE,
        summary="Change identifiers, language or profile fields",
        description="The answer is the decrypted subject only for a key that also holds subjects:read (the "
        "read is audited); otherwise what changed.",
    )
    async def update(
        self,
        request: Request[Any, Any, Any],
        subject_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.SubjectPatch],
        service: NamedDependency[SubjectService],
    ) -> schemas.SubjectOut | schemas.SubjectUpdated:
        updated = await service.patch(subject_id, data)
        if "subjects:read" in current_operator(request).scopes:
            return await service.read(subject_id)
        return updated

    @delete(
        "/{subject_id:uuid}",
        status_code=HTTP_200_OK,
        opt=WRITE,
        responses=_ERASED,
        summary="Erase a subject as an erasure request does (legal holds and duties respected)",
        description="Crypto-shredding. A legal duty keeps its categories, restricted, until it ends (listed in "
        "`kept`); a legal hold keeps everything (409, nothing erased). Idempotent.",
    )
    async def erase(
        self, request: Request[Any, Any, Any], subject_id: FromPath[uuid.UUID], service: NamedDependency[SubjectService]
    ) -> Response[Any]:
        return await _erase(request, service, subject_id)

    @post(
        "/{subject_id:uuid}/erase-override",
        status_code=HTTP_200_OK,
        opt=ERASE_OVERRIDE,
        responses=_ERASED,
        summary="Erase a subject including data a legal duty keeps (basis and case reference, audited)",
        description="For the rare case where a duty no longer binds (e.g. a court order): `basis` says why and "
        "`reference` names the ticket or case (e.g. `CASE-2026/0417`) where the explanation lives; both go "
        "into the permanent audit log, so no free text. A legal hold is never set aside here: release it "
        "first (409 legal-hold). A subject already erased has nothing left to override (409 already-erased). "
        "Refused attempts are audited too.",
    )
    async def erase_override(
        self,
        request: Request[Any, Any, Any],
        subject_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.EraseOverride],
        service: NamedDependency[SubjectService],
    ) -> Response[Any]:
        return await _erase(request, service, subject_id, data)

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

    @get("/{subject_id:uuid}/records", opt=READ_PII, summary="List a subject's records, decrypted")
    async def list_records(
        self,
        subject_id: FromPath[uuid.UUID],
        service: NamedDependency[SubjectService],
        after: FromQuery[uuid.UUID | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> schemas.RecordPage:
        return await service.list_records(subject_id, after=after, limit=limit)

    @get("/{subject_id:uuid}/records/{record_id:uuid}", opt=READ_PII, summary="Read one record, decrypted")
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

"""What a subject's console page shows, read through the services the API reads through (each read audited as
the API's): the decrypted identifiers and profile (``SubjectService.read``), the categories held with their
counts, one keyset page of records (``list_records``), the legal holds (``HoldService.list``), and the data a
legal duty keeps, on which basis and until when (``erasure.legal_duties`` before an erasure; the erasure's own
report after it, as ``DELETE /v1/subjects/{id}`` answers a second time).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import msgspec
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.errors import NotFound
from privacy_service.retention.holds import HoldService
from privacy_service.subjects.erasure import erase_subject, legal_duties
from privacy_service.subjects.models import Subject, SubjectStatus
from privacy_service.subjects.routes import subject_service_for
from privacy_service.subjects.service import SubjectService
from privacy_service.web.console.access import signed_in_operator
from privacy_service.web.console.rendering import AnyRequest


def subject_service(request: AnyRequest, db_session: AsyncSession) -> SubjectService:
    """The API's vault service (``subjects.routes.subject_service_for``), acting as the signed-in operator."""
    return subject_service_for(request, db_session, signed_in_operator(request).operator.actor)


def hold_service(request: AnyRequest, db_session: AsyncSession) -> HoldService:
    """The API's hold service (retention.routes.provide_hold_service), acting as the signed-in operator."""
    state = request.app.state
    return HoldService(
        session=db_session,
        keys=state.key_service,
        clock=state.clock,
        actor=signed_in_operator(request).operator.actor,
        request_id=request.scope.get("state", {}).get("request_id"),
    )


def shown(value: Any) -> str:
    return str(value) if isinstance(value, str | int | float | bool) else msgspec.json.encode(value).decode()


def _category_name(request: AnyRequest, language: str, key: str) -> str:
    named = request.app.state.policy.notices[language].data_categories.get(key)
    return str(named.name) if named is not None else key


def _until(value: Any) -> datetime | None:
    if isinstance(value, datetime) or value is None:
        return value
    return datetime.fromisoformat(str(value))


def erasure_outcome(request: AnyRequest, kept: Iterable[Mapping[str, Any]], language: str) -> list[dict[str, Any]]:
    """An erasure's ``kept`` lines ({category, basis, until}) with the category in the policy's words."""
    return [
        {
            "category": _category_name(request, language, str(item["category"])),
            "basis": item["basis"],
            "until": _until(item["until"]),
        }
        for item in kept
    ]


async def subject_page(
    request: AnyRequest,
    db_session: AsyncSession,
    subject_id: uuid.UUID,
    *,
    after: uuid.UUID | None,
    limit: int,
    language: str,
) -> dict[str, Any]:
    row = await db_session.get(Subject, subject_id)
    if row is None:
        raise NotFound("no subject with this id")
    subjects = subject_service(request, db_session)
    state = request.app.state
    notice = state.policy.notices[language]
    page: dict[str, Any] = {
        "subject_id": subject_id,
        "active": row.status == SubjectStatus.ACTIVE,
        "erased_at": row.erased_at,
        "kept": [],
    }
    if row.status == SubjectStatus.ACTIVE:
        subject = await subjects.read(subject_id)  # audited: subject.read
        held = await subjects.categories_held(subject_id)
        records = await subjects.list_records(subject_id, after=after, limit=limit)  # audited: record.read
        duties = await legal_duties(db_session, state.runtime.deadlines, row, held, state.clock.now())
        page.update(
            subject=subject,
            identifiers=[(kind, getattr(subject, kind)) for kind in ("email", "phone", "external_id")],
            profile=[
                {
                    "name": str(notice.profile_fields[name].name) if name in notice.profile_fields else name,
                    "value": shown(value),
                    "category": _category_name(request, language, subject.profile_categories.get(name, "")),
                }
                for name, value in sorted(subject.profile.items())
            ],
            categories=[
                {"name": _category_name(request, language, key), "count": count} for key, count in sorted(held.items())
            ],
            records=[
                {
                    "id": record.id,
                    "kind": record.kind,
                    "category": _category_name(request, language, record.category),
                    "occurred_at": record.occurred_at,
                    "data": [(key, shown(value)) for key, value in record.data.items()],
                }
                for record in records.items
            ],
            next_after=records.next_cursor,
            first_page=after is not None,
            kept=erasure_outcome(
                request,
                ({"category": key, "basis": duty.basis, "until": duty.until} for key, duty in sorted(duties.items())),
                language,
            ),
        )
    elif row.erased_at is not None:
        # An erased subject: the erasure's own report (erase_subject only reads for an erased subject: it
        # answers the first erasure's report again, as a second DELETE /v1/subjects/{id} does).
        erasure = await erase_subject(db_session, subjects, state.runtime.deadlines, state.clock, subject_id)
        page.update(
            erased_at=row.erased_at,
            kept=erasure_outcome(request, erasure.result["kept"], language),
        )
    holds = await hold_service(request, db_session).list(subject_id)  # audited: hold.read
    page.update(holds=holds.items, status=str(row.status), held=any(hold.active for hold in holds.items))
    return page

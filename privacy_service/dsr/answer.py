"""The answer to "See my data" as its page shows it: the subject's data itself, by category.

The download (``dsr.export``) holds everything; the page shows the same data in a bounded form that
a person reads: every identifier and profile field, and the latest records of each category with
their total. It is read only while the download is (an access or portability request answered and
not expired, for a subject still held), and it is audited as the subject reading their own data.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import select as sa_select
from sqlmodel import col

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.connections.flow import by_category, found_rows
from privacy_service.crypto.fields import Binding
from privacy_service.dsr.context import DsrBase
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.dsr.reading import EXPORTABLE
from privacy_service.subjects.models import Record, Subject, SubjectStatus
from privacy_service.subjects.schemas import SubjectOut
from privacy_service.subjects.service import RECORDS, SubjectService

# Records shown per category on the page (the newest); the download holds all of them.
PAGE_RECORDS = 20


@dataclass(frozen=True, slots=True)
class ShownRecord:
    kind: str
    occurred_at: datetime
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AnswerData:
    """What the answer page shows: the subject, the categories held (with record counts), the newest records
    (a connected database's rows among them, their ``kind`` naming the dataset and collection)."""

    subject: SubjectOut
    held: dict[str, int]
    records: dict[str, list[ShownRecord]]


async def answer_data(service: DsrBase, request_id: uuid.UUID) -> AnswerData | None:
    """The data for an answered access request's page, or None when there is none to show (not such
    a request, not answered, the download period over, or the subject no longer held)."""
    session = service.session
    request = await session.get(PrivacyRequest, request_id)
    now = service.clock.now()
    if (
        request is None
        or request.type not in ("access", "portability")
        or request.status not in EXPORTABLE
        or request.export_expires_at is None
        or request.export_expires_at <= now
        or request.subject_id is None
    ):
        return None
    subject_id = request.subject_id
    row = await session.get(Subject, subject_id)
    if row is None or row.status != SubjectStatus.ACTIVE:
        return None
    # The reader is the holder of this request's token: named by the request, as dsr.answer_access
    # names the steps of opening it (the portal's service otherwise says "anonymous").
    actor = Actor("subject", str(request.id))
    subjects = SubjectService(session, service.keys, service.policy, service.clock, actor, service.request_id)
    subject = await subjects.read(subject_id)  # audited as a read of the subject
    held = await subjects.categories_held(subject_id)
    key = await service.keys.load_key(session, subject_id)
    connection = await session.connection()
    records: dict[str, list[ShownRecord]] = {}
    for category in sorted(name for name, count in held.items() if count):
        rows = (
            await connection.execute(
                sa_select(col(Record.id), col(Record.kind), col(Record.occurred_at), col(Record.data_ct))
                .where(
                    col(Record.subject_id) == subject_id,
                    col(Record.category) == category,
                    col(Record.restricted).is_(False),
                )
                .order_by(col(Record.occurred_at).desc(), col(Record.id).desc())
                .limit(PAGE_RECORDS)
            )
        ).all()
        records[category] = [
            ShownRecord(
                kind=r.kind,
                occurred_at=r.occurred_at,
                data=msgspec.json.decode(key.open(r.data_ct, Binding(RECORDS, subject_id, r.id, "data"))),
            )
            for r in rows
        ]
    # The rows the connected databases returned, under the categories of their fields (named by source).
    found = by_category(
        service.policy, service.settings.policy_dir, await found_rows(session, service.keys, request.id)
    )
    held = dict(held)
    for category, items in found.items():
        held[category] = held.get(category, 0) + len(items)
        when = request.completed_at or now
        records.setdefault(category, []).extend(
            ShownRecord(kind=source, occurred_at=when, data=values) for source, values in items[:PAGE_RECORDS]
        )
    shown = sum(len(items) for items in records.values())
    if shown:
        audit.record(
            session,
            at=now,
            actor=actor,
            action="record.read",
            subject_id=subject_id,
            request_id=service.request_id,
            detail={"dsr_id": str(request.id), "count": shown},
        )
    return AnswerData(subject=subject, held=held, records=records)

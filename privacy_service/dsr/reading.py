"""Reading requests: one request's status (subject token or operator), the operator's list, the export's parts."""

from __future__ import annotations

import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, exists, func
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, or_, select
from sqlmodel.sql.expression import Select

from privacy_service.audit import service as audit
from privacy_service.clock import as_utc
from privacy_service.connections import flow as connected
from privacy_service.connections.schemas import TaskProgress
from privacy_service.crypto.fields import DataKey
from privacy_service.db import Database, new_row
from privacy_service.dsr import schemas
from privacy_service.dsr.flows import OPEN, Status
from privacy_service.dsr.models import PrivacyRequest, RequestTransition
from privacy_service.dsr.processing import IDENTIFIER_CHANGES, Processing
from privacy_service.errors import Conflict, Gone, InvalidInput, NotFound
from privacy_service.subjects.models import Subject, SubjectStatus
from privacy_service.subjects.schemas import SubjectOut
from privacy_service.systems import fanout as downstream
from privacy_service.systems.models import Delivery
from privacy_service.systems.schemas import SystemProgress

CURSOR_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
# A status read's history (columns, not entities: nothing changes them), and on every row whether the
# request was sent to any downstream system. Built once: status reads run it on every call.
_HISTORY: Select[str, datetime, str, str | None, bool] = cast(
    "Select[str, datetime, str, str | None, bool]",
    sa_select(
        col(RequestTransition.to_status),
        col(RequestTransition.at),
        col(RequestTransition.actor_type),
        col(RequestTransition.note),
        exists().where(col(Delivery.request_id) == bindparam("history_id")).label("sent"),
    )
    .where(col(RequestTransition.request_id) == bindparam("history_id"))
    .order_by(col(RequestTransition.id)),
)
_REQUESTS: Table = PrivacyRequest.__table__  # type: ignore[attr-defined]
_REQUEST_KEYS = tuple(column.key for column in _REQUESTS.columns)
# The subject's status read: the request's row, its history and the "sent downstream" flag in one
# statement (one row per transition; the request's columns first, in _REQUEST_KEYS order).
_WITH_HISTORY: Select[*tuple[Any, ...]] = cast(
    "Select[*tuple[Any, ...]]",
    sa_select(
        *_REQUESTS.columns,
        col(RequestTransition.to_status),
        col(RequestTransition.at),
        col(RequestTransition.actor_type),
        col(RequestTransition.note),
        exists().where(col(Delivery.request_id) == bindparam("history_id")).label("sent"),
    )
    .select_from(_REQUESTS.outerjoin(RequestTransition, col(RequestTransition.request_id) == _REQUESTS.c.id))
    .where(_REQUESTS.c.id == bindparam("history_id"))
    .order_by(col(RequestTransition.id)),
)

_TRANSITIONS: Table = RequestTransition.__table__  # type: ignore[attr-defined]
# The subject's status read on PostgreSQL as one row of three columns: a record of what the subject's
# view shows and the token check needs (not the whole row: no ciphertexts, codes or reminder times)
# and whether an operator's decision is on file, the history aggregated into an array of (to_status,
# at, actor_type, note) records, and whether any downstream system was sent the request. Records,
# because asyncpg decodes them whole while SQLAlchemy handles each column of a result in Python.
_SUBJECT_COLUMNS = (
    "type",
    "status",
    "regime",
    "language",
    "received_at",
    "due_at",
    "extended_at",
    "verified_at",
    "completed_at",
    "export_expires_at",
    "subject_id",
    "result",
    "token_hash",
    "token_expires_at",
)
_R = _REQUESTS.c
_SUBJECT_READ: Select[*tuple[Any, ...]] = cast(
    "Select[*tuple[Any, ...]]",
    sa_select(
        func.row(*(_R[name] for name in _SUBJECT_COLUMNS), _R.decision_ct.is_not(None)),
        sa_select(
            func.array_agg(
                aggregate_order_by(
                    func.row(
                        _TRANSITIONS.c.to_status, _TRANSITIONS.c.at, _TRANSITIONS.c.actor_type, _TRANSITIONS.c.note
                    ),
                    _TRANSITIONS.c.id,
                )
            )
        )
        .where(_TRANSITIONS.c.request_id == _R.id)
        .scalar_subquery(),
        exists().where(col(Delivery.request_id) == _R.id),
    ).where(_R.id == bindparam("history_id")),
)


# The queue's choices beside the statuses themselves (no status is named so).
OPEN_STATUSES = "open"
ANY_STATUS = "all"


@dataclass(frozen=True, slots=True)
class History:
    """A request's transitions as a status read shows them, and whether any downstream system was sent it."""

    transitions: list[tuple[str, datetime, str, str | None]]
    sent: bool


@dataclass(frozen=True, slots=True)
class SubjectRead:
    """The subject's status read of a request (see read_for_subject): for reading, never for changing."""

    id: uuid.UUID
    history: History
    decided: bool  # an operator's decision is on file (sealed with the request's key)
    type: str
    status: str
    regime: str
    language: str
    received_at: datetime
    due_at: datetime
    extended_at: datetime | None
    verified_at: datetime | None
    completed_at: datetime | None
    export_expires_at: datetime | None
    subject_id: uuid.UUID | None
    result: dict[str, Any] | None
    token_hash: bytes | None
    token_expires_at: datetime | None
    duplicate_of: None = None  # shown to operators only


# Each database's engine in autocommit and the subject read rendered for its dialect, built once (the
# same pool). The rendered text runs as it is: through the statement, SQLAlchemy would build its
# cache key (a walk of the whole statement) and convert every column on every read, and on
# PostgreSQL those conversions change nothing (asyncpg gives UTC datetimes and decodes JSON itself).
_AUTOCOMMIT: weakref.WeakKeyDictionary[Database, tuple[AsyncEngine, str]] = weakref.WeakKeyDictionary()


def _autocommit(db: Database) -> tuple[AsyncEngine, str]:
    found = _AUTOCOMMIT.get(db)
    if found is None:
        engine = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        found = _AUTOCOMMIT[db] = (engine, str(_SUBJECT_READ.compile(dialect=engine.dialect)))
    return found


async def read_for_subject(db: Database, request_id: uuid.UUID) -> SubjectRead | None:
    """The subject's status read without a session, on PostgreSQL: one statement on a pooled
    connection in autocommit (a single statement is atomic; no BEGIN and COMMIT round trips around
    it). None on SQLite, where the session reads it. 404 as before."""
    if db.settings.is_sqlite:
        return None
    engine, statement = _autocommit(db)
    async with engine.connect() as connection:
        found = (await connection.exec_driver_sql(statement, (request_id,))).first()
    if found is None:
        raise NotFound("no request with this id")
    fields, steps, sent = cast("tuple[tuple[Any, ...], list[tuple[Any, ...]] | None, bool]", tuple(found))
    history = History([(to, at, actor, note) for to, at, actor, note in steps or ()], sent)
    *values, decided = fields
    return SubjectRead(request_id, history, decided, **dict(zip(_SUBJECT_COLUMNS, values, strict=True)))


EXPORTABLE = frozenset({Status.COMPLETED, Status.PARTIALLY_COMPLETED})
# A correction's values (requested, and on file) are shown to an operator holding this scope only.
VALUES_SCOPE = "subjects:read"


@dataclass(frozen=True, slots=True)
class CaseFile:
    """What a reviewer reads beside a request's view: how its submitter was identified, and their note.

    ``identity`` (the e-mail address or phone number the request was confirmed with) is personal data
    the status view never carries: only an operator who may read subjects (``VALUES_SCOPE``, as for a
    correction's values) gets it, audited as a read of the subject. ``note`` is the free text the
    customer sent with the request (intake seals it as ``reason``): free text about themselves, so
    personal data too, under the same rule (``VALUES_SCOPE``, audited as a read); ``note_held``
    says a note exists that this caller may not read.
    """

    identity_kind: str
    identity: str | None
    note: str | None
    note_held: bool = False


def shape_view(
    request: PrivacyRequest | SubjectRead,
    history: History,
    now: datetime,
    *,
    operator: bool = False,
    decision: str | None = None,
    changes: dict[str, schemas.FieldChange] | None = None,
    systems: list[SystemProgress] | None = None,
    acknowledgement: schemas.Acknowledgement | None = None,
    connections: list[TaskProgress] | None = None,
) -> schemas.RequestView:
    """A request as its caller sees it, from what ``Reading.view`` read (see there for who sees what)."""
    export_ready = (
        request.type in ("access", "portability")
        and request.status in EXPORTABLE
        and request.export_expires_at is not None
        and request.export_expires_at > now
        and request.subject_id is not None
    )
    return schemas.RequestView(
        id=request.id,
        type=request.type,
        status=request.status,
        regime=request.regime,
        language=request.language,
        received_at=request.received_at,
        due_at=request.due_at,
        history=[schemas.Transition(to, at, actor, note) for to, at, actor, note in history.transitions],
        extended=request.extended_at is not None,
        verified_at=request.verified_at,
        completed_at=request.completed_at,
        overdue=request.status in OPEN and request.due_at < now,
        duplicate_of=request.duplicate_of if operator else None,
        decision=decision,
        result=request.result,
        changes=changes,
        export_url=f"/v1/requests/{request.id}/export" if export_ready else None,
        export_expires_at=request.export_expires_at if export_ready else None,
        systems=systems,
        acknowledgement=acknowledgement,
        connections=connections,
    )


def subject_view(read: SubjectRead, now: datetime) -> schemas.RequestView | None:
    """``Reading.view`` for the request's subject when it needs nothing more from the database; None
    when it does (an operator's decision to open with the request's key, downstream systems' progress)."""
    if read.decided or read.history.sent:
        return None
    return shape_view(read, read.history, now)


class Reading(Processing):
    __slots__ = ()

    async def read_with_history(self, request_id: uuid.UUID) -> tuple[PrivacyRequest, History]:
        """The request row and its history in one statement (the subject's status read: the token is
        then checked on this row). The row is a detached copy: for reading, never for changing."""
        rows = (await self.session.exec(_WITH_HISTORY, params={"history_id": request_id})).all()
        if not rows:
            raise NotFound("no request with this id")
        n = len(_REQUEST_KEYS)
        request = new_row(PrivacyRequest, dict(zip(_REQUEST_KEYS, rows[0][:n], strict=True)))
        transitions = [(row[n], row[n + 1], row[n + 2], row[n + 3]) for row in rows if row[n] is not None]
        return request, History(transitions, bool(rows[0][n + 4]))

    async def case_file(self, request_id: uuid.UUID, loaded: PrivacyRequest | None = None) -> CaseFile:
        """The request's identity and its note, both to an operator with ``VALUES_SCOPE`` only, the read
        audited as a read of the subject naming what was read (``loaded``: the row as this transaction
        read it, not read again). Without the scope nothing is decrypted."""
        request = loaded if loaded is not None and loaded.id == request_id else await self._get(request_id)
        reader = VALUES_SCOPE in self.scopes
        with_identity = reader and request.identity_ct is not None
        with_note = reader and request.reason_ct is not None
        if not (with_identity or with_note):
            return CaseFile(request.identity_kind, None, None, note_held=request.reason_ct is not None)
        key = await self._request_key(request)
        identity = note = None
        fields: list[str] = []
        if with_identity:
            identity = self._open_text(key, request, "identity", request.identity_ct)
            fields.append(f"identity.{request.identity_kind}")
        if with_note:
            note = self._open_text(key, request, "reason", request.reason_ct)
            fields.append("note")
        audit.record(
            self.session,
            at=self.clock.now(),
            actor=self.actor,
            action="subject.read",
            subject_id=request.subject_id,
            request_id=self.request_id,
            detail={"dsr_id": str(request.id), "fields": fields},
        )
        return CaseFile(request.identity_kind, identity, note)

    async def _history(self, request_id: uuid.UUID) -> History:
        rows = (await self.session.exec(_HISTORY, params={"history_id": request_id})).all()
        return History([(to, at, actor, note) for to, at, actor, note, _ in rows], not rows or rows[0][4])

    async def view(
        self, request_id: uuid.UUID, loaded: PrivacyRequest | None = None, history: History | None = None
    ) -> schemas.RequestView:
        """The request as its caller may see it (authorised by the route: its own token or an operator).

        A correction's fields (``changes``) are for operators; their values, the requested ones and,
        while the request awaits review, the ones on file they would replace, only for an operator who
        may read subjects (audited as a read of the subject). The subject's answer names the changed
        fields only (``result``), so a leaked status link shows no values. ``duplicate_of`` names
        another request: operators only too. ``loaded`` and ``history``: as ``read_with_history``
        read them in this transaction, not read again.
        """
        if loaded is None or history is None or loaded.id != request_id:
            loaded = await self._get(request_id)
            history = await self._history(request_id)
        request = loaded
        operator = self.actor.type == "operator"
        key: DataKey | None = None
        if request.decision_ct is not None or (operator and request.changes_ct is not None):
            key = await self._request_key(request)
        decision = None
        if key is not None and request.decision_ct is not None:
            decision = self._open_text(key, request, "decision", request.decision_ct)
        changes = None
        if key is not None and operator and request.changes_ct is not None:
            changes = await self._diff(request, key, with_values=VALUES_SCOPE in self.scopes)
        now = self.clock.now()
        # Most requests were never sent to a downstream system: the history query says so.
        systems = await downstream.progress(self.session, request.id, now) or None if history.sent else None
        return shape_view(
            request,
            history,
            now,
            operator=operator,
            decision=decision,
            changes=changes,
            systems=systems,
            acknowledgement=self._acknowledgement(request) if operator else None,
            connections=await connected.progress(self.session, request.id) or None if operator else None,
        )

    def _acknowledgement(self, request: PrivacyRequest) -> schemas.Acknowledgement | None:
        if request.regime not in self.rules.regimes:  # a regime the policy no longer has
            return None
        due = self.rules.acknowledge_due_at(request.regime, request.received_at)
        if due is None:
            return None
        return schemas.Acknowledgement(
            due_at=due, confirmed_at=request.receipt_confirmed_at, escalated_at=request.acknowledge_escalated_at
        )

    async def _diff(
        self, request: PrivacyRequest, key: DataKey, *, with_values: bool
    ) -> dict[str, schemas.FieldChange]:
        """A correction as ``field -> {from?, to?}`` (``to`` null: the profile field is removed; no
        ``to``: the caller may not read the values, it sees which fields change only)."""
        changes = self._changes(request, key)
        requested: dict[str, Any] = {k: getattr(changes, k) for k in IDENTIFIER_CHANGES if getattr(changes, k)}
        requested |= {f"profile.{name}": value for name, value in changes.profile.items()}
        if not with_values:
            return {name: schemas.FieldChange() for name in sorted(requested)}
        # The requested values are (to be) the subject's data: reading them is audited as a read of the
        # subject, as the values on file are (and counted by the breach monitor's unusual-reads check).
        audit.record(
            self.session,
            at=self.clock.now(),
            actor=self.actor,
            action="subject.read",
            subject_id=request.subject_id,
            request_id=self.request_id,
            detail={"dsr_id": str(request.id), "fields": sorted(requested)},
        )
        current: dict[str, Any] | None = None
        if request.status == Status.AWAITING_REVIEW and request.subject_id is not None:
            subject = await self.session.get(Subject, request.subject_id)
            if subject is not None and subject.status == SubjectStatus.ACTIVE:
                held = await self.subjects.read(request.subject_id)  # audited as a read of the subject
                current = {k: getattr(held, k) for k in IDENTIFIER_CHANGES}
                current |= {f"profile.{name}": value for name, value in held.profile.items()}
        ordered = sorted(requested.items())
        if current is None:
            return {name: schemas.FieldChange(to=value) for name, value in ordered}
        return {name: schemas.FieldChange(to=value, from_=current.get(name)) for name, value in ordered}

    async def list_requests(
        self,
        *,
        status: str | None,
        type_: str | None,
        overdue: bool | None,
        due_before: datetime | None,
        after: str | None,
        limit: int,
        regime: str | None = None,
    ) -> schemas.RequestPage:
        """The operator's queue, by due date then id, a keyset page at a time (``after``: the previous
        page's ``next_cursor``; no OFFSET). The API's list and the console's queue both read it.

        ``status`` is one status, or :data:`OPEN_STATUSES` for every open one (the console queue's
        default: through ``ix_dsr_status_due``, the open requests only, however long the closed history),
        or :data:`ANY_STATUS` / None for all, closed too (sorted whole: a deliberate, slower choice)."""
        now = self.clock.now()
        query = select(PrivacyRequest)
        if status == OPEN_STATUSES:
            query = query.where(col(PrivacyRequest.status).in_([s.value for s in OPEN]))
        elif status is not None and status != ANY_STATUS:
            query = query.where(col(PrivacyRequest.status) == status)
        if type_ is not None:
            query = query.where(col(PrivacyRequest.type) == type_)
        if regime is not None:
            query = query.where(col(PrivacyRequest.regime) == regime)
        if overdue is not None:
            open_values = [s.value for s in OPEN]
            if overdue:
                query = query.where(col(PrivacyRequest.status).in_(open_values), col(PrivacyRequest.due_at) < now)
            else:
                query = query.where(
                    or_(col(PrivacyRequest.status).not_in(open_values), col(PrivacyRequest.due_at) >= now)
                )
        if due_before is not None:
            query = query.where(col(PrivacyRequest.due_at) < as_utc(due_before, "due_before"))
        if after is not None:
            due_text, _, id_text = after.partition("_")
            try:
                cursor_due, cursor_id = datetime.fromisoformat(due_text), uuid.UUID(id_text)
            except ValueError:
                raise InvalidInput("after: not a cursor returned by this endpoint") from None
            if cursor_due.tzinfo is None:
                raise InvalidInput("after: not a cursor returned by this endpoint")
            cursor_due = as_utc(cursor_due, "after")
            query = query.where(
                or_(
                    col(PrivacyRequest.due_at) > cursor_due,
                    (col(PrivacyRequest.due_at) == cursor_due) & (col(PrivacyRequest.id) > cursor_id),
                )
            )
        rows = (
            await self.session.exec(query.order_by(col(PrivacyRequest.due_at), col(PrivacyRequest.id)).limit(limit + 1))
        ).all()
        page = rows[:limit]
        return schemas.RequestPage(
            items=[
                schemas.RequestSummary(
                    id=r.id,
                    type=r.type,
                    status=r.status,
                    regime=r.regime,
                    received_at=r.received_at,
                    due_at=r.due_at,
                    overdue=r.status in OPEN and r.due_at < now,
                    subject_id=r.subject_id,
                )
                for r in page
            ],
            # "Z", not "+00:00": a '+' pasted unencoded into a query string arrives as a space.
            next_cursor=f"{page[-1].due_at.strftime(CURSOR_TIME)}_{page[-1].id}" if len(rows) > limit else None,
        )

    async def export_parts(
        self, request_id: uuid.UUID
    ) -> tuple[PrivacyRequest, SubjectOut, dict[str, Any], list[dict[str, Any]]]:
        """What a download needs: the request, the subject's profile, the Art. 15 information, history.

        The history lists every request filed for this identity (a stranger's too: requests concerning
        the customer are data about them), by id, type, status and date only: never another
        request's body (its corrections or reason).
        """
        request = await self._get(request_id)
        if request.type not in ("access", "portability"):
            raise Conflict("only access and portability requests have an export")
        if request.status not in EXPORTABLE:
            raise Conflict(f"the export is not available while the request is {request.status}")
        if request.export_expires_at is None or request.export_expires_at <= self.clock.now():
            raise Gone("the export link has expired; submit a new request")
        if request.subject_id is None:
            raise NotFound("no personal data is held for this identity")
        subject = await self.subjects.read(request.subject_id)
        held = await self.subjects.categories_held(request.subject_id)
        # And the categories the connected databases held (merged into the result when they answered).
        found = set((request.result or {}).get("categories", []))
        processing = self.rules.processing_information(sorted(set(held) | found), request.language)
        history = [
            {"id": str(r.id), "type": r.type, "status": r.status, "received_at": r.received_at.isoformat()}
            for r in (
                await self.session.exec(
                    select(PrivacyRequest)
                    .where(col(PrivacyRequest.identity_bidx) == request.identity_bidx)
                    .order_by(col(PrivacyRequest.received_at))
                )
            ).all()
        ]
        audit.record(
            self.session,
            at=self.clock.now(),
            actor=self.actor,
            action="dsr.export.download",
            subject_id=request.subject_id,
            request_id=self.request_id,
            detail={"dsr_id": str(request.id)},
        )
        return request, subject, processing, history

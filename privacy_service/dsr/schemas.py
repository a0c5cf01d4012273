"""API bodies for data-subject requests."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from privacy_service.connections.schemas import TaskProgress
from privacy_service.subjects.schemas import Language, Profile, ShortText, Strict
from privacy_service.systems.schemas import SystemProgress

RequestType = Literal["access", "portability", "rectify", "erase"]
Regime = Literal["gdpr", "ccpa", "pipl"]
Code = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}$")]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


class Identity(Strict):
    email: ShortText | None = None
    phone: ShortText | None = None


class Changes(Strict):
    """Rectification: new values for identifiers and/or profile fields (null removes a profile field)."""

    email: ShortText | None = None
    phone: ShortText | None = None
    profile: Profile = msgspec.field(default_factory=dict)


class RequestCreate(Strict):
    type: RequestType
    identity: Identity
    regime: Regime | None = None
    language: Language = "en"
    changes: Changes | None = None
    reason: Reason | None = None


class RequestAccepted(msgspec.Struct):
    id: uuid.UUID
    status: str
    due_at: datetime


class VerifyBody(Strict):
    code: Code


class Verified(msgspec.Struct):
    id: uuid.UUID
    token: str
    status: str
    token_expires_at: datetime


class DenyBody(Strict):
    reason: Reason


class ExtendBody(Strict):
    reason: Reason
    days: Annotated[int, msgspec.Meta(ge=1, le=92)] | None = None


class EmptyBody(Strict):
    pass


class Transition(msgspec.Struct):
    status: str
    at: datetime
    actor_type: str
    note: str | None = None


class FieldChange(msgspec.Struct, omit_defaults=True):
    """One requested correction. For a reviewer who may read subjects: the new value (``to``; null
    removes a profile field) and the value it replaces (``from``; null: none on file). Without that
    scope, neither: the field's name alone says what would change."""

    to: Any | msgspec.UnsetType = msgspec.UNSET
    from_: Any | msgspec.UnsetType = msgspec.field(default=msgspec.UNSET, name="from")


class Acknowledgement(msgspec.Struct):
    """The confirmation of receipt a regime requires (CCPA: 10 business days), as the clock found it."""

    due_at: datetime
    confirmed_at: datetime | None = None
    escalated_at: datetime | None = None


class RequestView(msgspec.Struct):
    id: uuid.UUID
    type: str
    status: str
    regime: str
    language: str
    received_at: datetime
    due_at: datetime
    history: list[Transition]
    extended: bool
    verified_at: datetime | None = None
    completed_at: datetime | None = None
    overdue: bool = False
    duplicate_of: uuid.UUID | None = None
    decision: str | None = None
    result: dict[str, Any] | None = None
    # A correction's requested changes, field -> {from?, to?}: for operators only (values with subjects:read).
    changes: dict[str, FieldChange] | None = None
    export_url: str | None = None
    export_expires_at: datetime | None = None
    # Downstream systems sent this request: who answered, who is overdue.
    systems: list[SystemProgress] | None = None
    # For operators, under a regime with an acknowledgement deadline.
    acknowledgement: Acknowledgement | None = None
    # For operators: the request's tasks on connected databases (a failed collection and why, no data).
    connections: list[TaskProgress] | None = None


class RequestSummary(msgspec.Struct):
    id: uuid.UUID
    type: str
    status: str
    regime: str
    received_at: datetime
    due_at: datetime
    overdue: bool
    subject_id: uuid.UUID | None


class RequestPage(msgspec.Struct):
    items: list[RequestSummary]
    next_cursor: str | None

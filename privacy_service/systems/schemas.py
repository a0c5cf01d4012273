"""API bodies for the downstream-system registry, the delivery log and callbacks."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from privacy_service.subjects.schemas import CategoryKey, Strict

RequestType = Literal["access", "portability", "rectify", "erase"]
# What a system may ask for to find a customer; *_sha256 sends the hex SHA-256 of the normalised value.
IdentityKind = Literal["email", "email_sha256", "phone", "phone_sha256", "controller_customer_id"]
Answer = Literal["in_progress", "completed", "failed"]
SystemName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")]
Url = Annotated[str, msgspec.Meta(min_length=8, max_length=2000)]


class SystemCreate(Strict):
    name: SystemName
    callback_url: Url
    request_types: Annotated[list[RequestType], msgspec.Meta(min_length=1, max_length=4)]
    categories: Annotated[list[CategoryKey], msgspec.Meta(min_length=1, max_length=100)]
    identities: Annotated[list[IdentityKind], msgspec.Meta(min_length=1, max_length=5)] = msgspec.field(
        default_factory=lambda: ["controller_customer_id"]
    )
    timeout_seconds: Annotated[float, msgspec.Meta(ge=0.1, le=60)] = 10.0
    required: bool = True


class SystemOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    callback_url: str
    request_types: list[str]
    categories: list[str]
    identities: list[str]
    timeout_seconds: float
    required: bool
    key_id: str
    created_at: datetime
    removed_at: datetime | None = None


class SystemCreated(msgspec.Struct):
    system: SystemOut
    # Shown once: the shared HMAC key the system verifies our webhooks and signs its callbacks with.
    signing_key: str


class SystemPage(msgspec.Struct):
    items: list[SystemOut]


class Removed(msgspec.Struct):
    id: uuid.UUID
    cancelled_deliveries: int
    completed_requests: int


class AttemptView(msgspec.Struct):
    attempt: int
    at: datetime
    outcome: str
    status_code: int | None
    duration_ms: float


class DeliveryView(msgspec.Struct):
    id: uuid.UUID
    request_id: uuid.UUID
    system_id: uuid.UUID
    required: bool
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    answer: str | None
    answered_at: datetime | None
    answer_due_at: datetime
    log: list[AttemptView]


class DeliveryPage(msgspec.Struct):
    items: list[DeliveryView]
    next_cursor: str | None


class CallbackBody(msgspec.Struct, kw_only=True):
    """A system's answer. Unknown members are ignored (systems may send OpenDSR fields we do not use)."""

    request_status: Answer
    subject_request_id: uuid.UUID | None = None
    # Access data the system holds about the subject (access/portability, with "completed" only).
    data: dict[str, Any] | list[Any] | None = None
    # Why it failed, for operators: a short text without personal data.
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class CallbackAccepted(msgspec.Struct):
    delivery_id: uuid.UUID
    request_status: str
    # The request's own status after this answer (e.g. "completed" once every required system answered).
    request: str


class SystemProgress(msgspec.Struct):
    """One system's part in a request, shown on the request."""

    system: str
    required: bool
    delivery: str
    answer: str | None
    answered_at: datetime | None
    due_at: datetime
    overdue: bool

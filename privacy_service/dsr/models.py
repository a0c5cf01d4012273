"""Data-subject request rows. Identities, changes and reasons are sealed under a per-request key."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, LargeBinary, Uuid
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.db import UTCDateTime, append_row


class PrivacyRequest(SQLModel, table=True):
    __tablename__ = "dsr_requests"
    __table_args__ = (
        Index("ix_dsr_identity_type", "identity_bidx", "type"),
        Index("ix_dsr_status_due", "status", "due_at"),
    )

    id: uuid.UUID = Field(primary_key=True)
    type: str = Field(max_length=16)
    status: str = Field(max_length=24)
    regime: str = Field(max_length=8)
    language: str = Field(max_length=8)
    identity_kind: str = Field(max_length=16)
    identity_bidx: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    identity_ct: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    changes_ct: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    reason_ct: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    subject_id: uuid.UUID | None = None
    duplicate_of: uuid.UUID | None = None
    received_at: datetime = Field(sa_type=UTCDateTime)
    due_at: datetime = Field(sa_type=UTCDateTime)
    # When intake queued the confirmation of receipt (the code mail); receipt_confirmed_at is when one
    # was delivered (or the request answered), as the acknowledgement clock found it (dsr/jobs.py).
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    receipt_confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledge_reminded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledge_escalated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    extended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    verified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    escalated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    code_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    code_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    code_sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    code_attempts: int = 0
    # Codes sent again on request (resend); capped per request (dsr_resend_max_per_request).
    resends: int = 0
    token_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary, unique=True))
    token_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    export_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Operator-written texts shown to the subject (denial, extension); sealed like everything free-form.
    decision_ct: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    # Non-PII summary of the answer: fields changed (names only), categories erased/kept and why.
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class RequestTransition(SQLModel, table=True):
    __tablename__ = "dsr_transitions"
    __table_args__ = (Index("ix_dsr_transitions_request", "request_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: uuid.UUID
    from_status: str | None = Field(default=None, max_length=24)
    to_status: str = Field(max_length=24)
    at: datetime = Field(sa_type=UTCDateTime)
    actor_type: str = Field(max_length=16)
    actor_id: str = Field(max_length=64)
    note: str | None = Field(default=None, max_length=200)


def record_transition(
    session: AsyncSession,
    request_id: uuid.UUID,
    *,
    from_status: str | None,
    to_status: str,
    at: datetime,
    actor_type: str,
    actor_id: str,
    note: str | None = None,
) -> None:
    """Queue a transition row in the session's transaction (append-only: see ``db.append_row``)."""
    append_row(
        session,
        RequestTransition,
        {
            "request_id": request_id,
            "from_status": from_status,
            "to_status": to_status,
            "at": at,
            "actor_type": actor_type,
            "actor_id": actor_id,
            "note": note,
        },
    )


class AnswerAccess(SQLModel, table=True):
    """A code mailed to open a confirmed request in another browser, and the read-only access it gave.

    One row per code sent (``dsr.answer_access``): ``code_hash`` until the code is used, voided or
    replaced; then, if it was entered correctly, ``token_hash`` for that browser until it expires.
    """

    __tablename__ = "dsr_answer_access"
    __table_args__ = (Index("ix_dsr_answer_access_request", "request_id", "created_at"),)

    id: uuid.UUID = Field(primary_key=True)
    request_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("dsr_requests.id", ondelete="CASCADE"), nullable=False)
    )
    created_at: datetime = Field(sa_type=UTCDateTime)
    code_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    code_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    token_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary, unique=True))
    token_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

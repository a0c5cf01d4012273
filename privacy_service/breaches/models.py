"""Breach incidents, their history, notifications and per-subject delivery. Data only.

Incident texts are documentation about the incident (for the register and the authority); the API asks
for them without personal data, and affected people are referenced by subject id only. Addresses never
land here: a subject's e-mail is decrypted from the vault only when its notice is queued.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel

from privacy_service.db import UTCDateTime


class Breach(SQLModel, table=True):
    __tablename__ = "breaches"
    __table_args__ = (
        Index("ix_breaches_status_deadline", "status", "authority_deadline"),
        Index("ix_breaches_signal", "signal", "detected_at"),
    )

    id: uuid.UUID = Field(primary_key=True)
    status: str = Field(max_length=16)
    version: int = 1
    source: str = Field(default="operator", max_length=16)
    # Monitoring: which detector opened the draft (dedupes repeated signals).
    signal: str | None = Field(default=None, max_length=120)
    title: str = Field(max_length=200)
    description: str = Field(sa_column=Column(Text, nullable=False))
    detected_at: datetime = Field(sa_type=UTCDateTime)
    aware_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    occurred_from: datetime | None = Field(default=None, sa_type=UTCDateTime)
    occurred_to: datetime | None = Field(default=None, sa_type=UTCDateTime)
    nature: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Data types of the breach taxonomy (breach.yaml ``enisa.taxonomy``): data the vault never held.
    data_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Where the affected people reside (ISO 3166-1 alpha-2): the authorities concerned (EDPB 9/2022).
    affected_countries: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # "subjects" (explicit ids, in breach_subjects), "selector" (resolved into breach_subjects) or "estimate".
    affected_kind: str = Field(default="estimate", max_length=16)
    affected_selector: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    affected_count: int = 0
    approx_records: int | None = None
    encrypted: bool = False
    key_compromised: bool = False
    backup_exists: bool = False
    exfiltration_known: bool = False
    malicious: bool = False
    mitigation: str | None = Field(default=None, sa_column=Column(Text))
    consequences: str | None = Field(default=None, sa_column=Column(Text))
    measures_proposed: str | None = Field(default=None, sa_column=Column(Text))
    advice: str | None = Field(default=None, sa_column=Column(Text))
    # Per language other than English: the same texts, for notices in that language.
    translations: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    facts_version: int = 1
    assessment: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    assessed_version: int | None = None
    severity: float | None = None
    band: str | None = Field(default=None, max_length=16)
    notify_authority: bool | None = None
    notify_subjects: bool | None = None
    public_communication: bool | None = None
    authority_deadline: datetime | None = Field(default=None, sa_type=UTCDateTime)
    authority_notified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    authority_notified_late: bool = False
    # Reminder marks already e-mailed to the team ("PT24H", "PT6H", "overdue").
    reminders_sent: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    subject_notice: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    public_notice: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    closing_note: str | None = Field(default=None, sa_column=Column(Text))
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class BreachTransition(SQLModel, table=True):
    __tablename__ = "breach_transitions"
    __table_args__ = (Index("ix_breach_transitions_breach", "breach_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    breach_id: uuid.UUID
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str = Field(max_length=16)
    at: datetime = Field(sa_type=UTCDateTime)
    actor_type: str = Field(max_length=16)
    actor_id: str = Field(max_length=64)
    note: str | None = Field(default=None, max_length=200)


class BreachVersion(SQLModel, table=True):
    """Art. 33(5): every change to an incident, with who made it and the incident as it then stood."""

    __tablename__ = "breach_versions"
    __table_args__ = (Index("ix_breach_versions_breach", "breach_id", "version", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    breach_id: uuid.UUID
    version: int
    at: datetime = Field(sa_type=UTCDateTime)
    actor_type: str = Field(max_length=16)
    actor_id: str = Field(max_length=64)
    action: str = Field(max_length=40)
    changed: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    snapshot: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class AuthorityNotice(SQLModel, table=True):
    """One notification to a supervisory authority (Art. 33(4): an initial one, then follow-ups)."""

    __tablename__ = "breach_authority_notices"
    __table_args__ = (Index("ix_breach_authority_notices_breach", "breach_id", "seq", unique=True),)

    id: uuid.UUID = Field(primary_key=True)
    breach_id: uuid.UUID
    seq: int
    kind: str = Field(max_length=16)
    authority: str = Field(max_length=64)
    recipient: str = Field(max_length=320)
    sent_at: datetime = Field(sa_type=UTCDateTime)
    recorded_at: datetime = Field(sa_type=UTCDateTime)
    late: bool = False
    delay_reason: str | None = Field(default=None, sa_column=Column(Text))
    # The Art. 33(3) content exactly as notified (rendered to HTML/Markdown in each language on demand).
    content: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    actor_type: str = Field(max_length=16)
    actor_id: str = Field(max_length=64)


class BreachSubject(SQLModel, table=True):
    """An affected subject and the delivery of their notice. The primary key makes a rerun a no-op.

    ``affected`` -> ``pending`` (notification requested) -> ``queued`` (outbox message written) ->
    ``sent`` | ``failed``; or ``skipped_erased`` / ``skipped_no_email`` (counted, not contacted).
    """

    __tablename__ = "breach_subjects"
    __table_args__ = (Index("ix_breach_subjects_status", "breach_id", "status"),)

    breach_id: uuid.UUID = Field(primary_key=True)
    subject_id: uuid.UUID = Field(primary_key=True)
    status: str = Field(default="affected", max_length=20)
    outbox_message_id: uuid.UUID | None = None
    error: str | None = Field(default=None, max_length=100)
    updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

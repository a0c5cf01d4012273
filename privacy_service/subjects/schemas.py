"""API bodies for the vault. Unknown fields are rejected; values are validated in the service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

Language = Literal["en", "zh"]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=320)]
Kind = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
CategoryKey = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", max_length=80)]
ProfileValue = str | int | float | bool | None | list[Any] | dict[str, Any]
Profile = Annotated[dict[str, ProfileValue], msgspec.Meta(max_length=100)]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Request bodies: unknown fields are a 400, not silently ignored."""


class SubjectCreate(Strict):
    external_id: ShortText | None = None
    email: ShortText | None = None
    phone: ShortText | None = None
    language: Language = "en"
    profile: Profile = msgspec.field(default_factory=dict)


class SubjectPatch(Strict):
    """Partial update. An identifier set to ``null`` is removed; a profile key set to ``null`` is dropped."""

    external_id: ShortText | msgspec.UnsetType | None = msgspec.UNSET
    email: ShortText | msgspec.UnsetType | None = msgspec.UNSET
    phone: ShortText | msgspec.UnsetType | None = msgspec.UNSET
    language: Language | msgspec.UnsetType = msgspec.UNSET
    profile: Profile | msgspec.UnsetType = msgspec.UNSET


class Lookup(Strict):
    email: ShortText | None = None
    phone: ShortText | None = None
    external_id: ShortText | None = None


class RecordCreate(Strict):
    kind: Kind
    category: CategoryKey
    occurred_at: datetime
    data: Annotated[dict[str, Any], msgspec.Meta(max_length=200)]


class EventCreate(Strict):
    type: Literal["account_closed", "last_activity"]
    at: datetime | None = None


class Created(msgspec.Struct):
    id: uuid.UUID


class SubjectOut(msgspec.Struct):
    id: uuid.UUID
    status: str
    language: str
    email: str | None
    phone: str | None
    external_id: str | None
    profile: dict[str, Any]
    profile_categories: dict[str, str]
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime | None
    account_closed_at: datetime | None


class SubjectUpdated(msgspec.Struct):
    """A change's answer to a key without subjects:read: what changed, never the decrypted data."""

    id: uuid.UUID
    status: str
    updated_at: datetime
    changed: list[str]


class SubjectRef(msgspec.Struct):
    id: uuid.UUID
    status: str
    created_at: datetime


class SubjectList(msgspec.Struct):
    items: list[SubjectRef]


class RecordOut(msgspec.Struct):
    id: uuid.UUID
    subject_id: uuid.UUID
    kind: str
    category: str
    occurred_at: datetime
    created_at: datetime
    data: dict[str, Any]


class RecordPage(msgspec.Struct):
    items: list[RecordOut]
    next_cursor: str | None


class EventAccepted(msgspec.Struct):
    subject_id: uuid.UUID
    type: str
    at: datetime


# Why a legal duty no longer binds. The explanation itself lives in the ticket or case system.
OverrideBasis = Literal["court_order", "duty_ended", "regulator_instruction", "other"]
# A ticket or case number: no spaces, so no sentence, so no personal data (the lookahead refuses the
# trailing newline a Python ``$`` would let through).
CaseReference = Annotated[str, msgspec.Meta(pattern=r"^(?!.*\n)[A-Za-z0-9][A-Za-z0-9._/-]{2,63}$")]


class EraseOverride(Strict):
    """Erase data a legal duty would keep: the basis and the case reference, recorded in the audit log.

    Structured on purpose: the audit log is permanent, hash-chained and never erased, so it takes no free
    text that could carry a customer's name or story.
    """

    basis: OverrideBasis
    reference: CaseReference


class KeptCategory(msgspec.Struct):
    category: str
    basis: str
    # None: kept by a legal hold, until it is released.
    until: datetime | None


class SubjectErased(msgspec.Struct):
    """The answer to an operator's erasure, in the shape of an erasure request's result."""

    id: uuid.UUID
    status: str
    erased_at: datetime
    keys_destroyed: int
    records_deleted: int
    already_erased: bool
    erased: list[str]
    kept: list[KeptCategory]
    recipients_to_notify: list[str]
    # Legal duties an override set aside (POST /v1/subjects/{id}/erase-override).
    overridden: list[KeptCategory] = msgspec.field(default_factory=list)


class ErasureReport(msgspec.Struct):
    id: uuid.UUID
    status: str
    erased_at: datetime
    keys_destroyed: int
    records_deleted: int
    already_erased: bool
    # Category -> legal basis, for data a legal duty keeps (restricted, purged when the duty ends).
    kept: dict[str, str] = msgspec.field(default_factory=dict)

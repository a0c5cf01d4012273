"""API bodies for breach incidents. Unknown fields are rejected; cross-field rules live in the service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from privacy_service.breaches.policy import (
    AvailabilityLevel,
    ConfidentialityLevel,
    EaseLevel,
    IntegrityLevel,
    RecipientData,
    RecipientTrust,
)
from privacy_service.subjects.schemas import CategoryKey, Language, Strict

Nature = Literal["confidentiality", "integrity", "availability"]
# PostgreSQL text cannot hold NUL: refused as invalid input rather than failing in the database.
NO_NUL = r"^[^\x00]*$"
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=10_000, pattern=NO_NUL)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=NO_NUL)]
Justification = Annotated[str, msgspec.Meta(min_length=10, max_length=2000, pattern=NO_NUL)]
Line = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Count = Annotated[int, msgspec.Meta(ge=0, le=10_000_000_000)]
FactorName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
# A data type of the breach taxonomy (policies/breach.yaml ``enisa.taxonomy``), a consequence name
# (``consequences``), a country where affected people reside (ISO 3166-1 alpha-2).
DataTypeKey = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
ConsequenceName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Country = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")]
FactorTarget = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.]{0,127}$")]
Categories = Annotated[list[CategoryKey], msgspec.Meta(max_length=100)]
DataTypes = Annotated[list[DataTypeKey], msgspec.Meta(max_length=50)]
Countries = Annotated[list[Country], msgspec.Meta(max_length=60)]


class Texts(Strict):
    """The free texts of an incident in one more language (used for notices in that language)."""

    title: Title | None = None
    description: Text | None = None
    mitigation: Text | None = None
    consequences: Text | None = None
    measures_proposed: Text | None = None
    advice: Text | None = None


class Selector(Strict):
    """All subjects with records of ``category`` created in [created_from, created_to)."""

    category: CategoryKey
    created_from: datetime
    created_to: datetime


class Affected(Strict):
    """Exactly one of: explicit subject ids, a selector over records, or an estimated count."""

    subject_ids: Annotated[list[uuid.UUID], msgspec.Meta(max_length=100_000)] | None = None
    selector: Selector | None = None
    estimated_count: Count | None = None


class BreachCreate(Strict):
    title: Title
    description: Text
    nature: Annotated[list[Nature], msgspec.Meta(min_length=1, max_length=3)]
    affected: Affected
    # The policy's data categories and/or data types of the breach taxonomy: at least one in all.
    categories: Categories = msgspec.field(default_factory=list)
    data_types: DataTypes = msgspec.field(default_factory=list)
    # Where the affected people reside (for a controller not established in the EU: EDPB 9/2022).
    affected_countries: Countries = msgspec.field(default_factory=list)
    aware_at: datetime | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None
    approx_records: Count | None = None
    encrypted: bool = False
    key_compromised: bool = False
    backup_exists: bool = False
    exfiltration_known: bool = False
    malicious: bool = False
    mitigation: Text | None = None
    consequences: Text | None = None
    measures_proposed: Text | None = None
    advice: Text | None = None
    translations: dict[Language, Texts] = msgspec.field(default_factory=dict)


class BreachPatch(Strict):
    """New facts as they are learnt. Each change is a new version of the incident (Art. 33(5))."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    description: Text | msgspec.UnsetType = msgspec.UNSET
    aware_at: datetime | msgspec.UnsetType = msgspec.UNSET
    occurred_from: datetime | msgspec.UnsetType | None = msgspec.UNSET
    occurred_to: datetime | msgspec.UnsetType | None = msgspec.UNSET
    nature: Annotated[list[Nature], msgspec.Meta(min_length=1, max_length=3)] | msgspec.UnsetType = msgspec.UNSET
    categories: Categories | msgspec.UnsetType = msgspec.UNSET
    data_types: DataTypes | msgspec.UnsetType = msgspec.UNSET
    affected_countries: Countries | msgspec.UnsetType = msgspec.UNSET
    affected: Affected | msgspec.UnsetType = msgspec.UNSET
    approx_records: Count | msgspec.UnsetType | None = msgspec.UNSET
    encrypted: bool | msgspec.UnsetType = msgspec.UNSET
    key_compromised: bool | msgspec.UnsetType = msgspec.UNSET
    backup_exists: bool | msgspec.UnsetType = msgspec.UNSET
    exfiltration_known: bool | msgspec.UnsetType = msgspec.UNSET
    malicious: bool | msgspec.UnsetType = msgspec.UNSET
    mitigation: Text | msgspec.UnsetType | None = msgspec.UNSET
    consequences: Text | msgspec.UnsetType | None = msgspec.UNSET
    measures_proposed: Text | msgspec.UnsetType | None = msgspec.UNSET
    advice: Text | msgspec.UnsetType | None = msgspec.UNSET
    translations: dict[Language, Texts] | msgspec.UnsetType = msgspec.UNSET


class ConfirmBody(Strict):
    """A draft is a breach: the clock starts at ``aware_at`` (default: now)."""

    aware_at: datetime | None = None
    note: Line | None = None


class DismissBody(Strict):
    reason: Line


class Override(Strict):
    value: bool
    justification: Justification


class Overrides(Strict):
    notify_authority: Override | None = None
    notify_subjects: Override | None = None
    public_communication: Override | None = None


class Recipient(Strict):
    """Who received the data in a confidentiality breach, and what became of it (breach.yaml ``enisa.recipients``).

    ``trust``: trusted (bound by confidentiality), untrusted (a member of the public, a former employee) or
    unknown; ``data``: returned_or_deleted (with confirmation), retained, or unknown.
    """

    trust: RecipientTrust
    data: RecipientData


class AssessmentBody(Strict):
    """ENISA inputs. Circumstances left out are derived from the facts (nature, backup, exfiltration)."""

    ease_of_identification: EaseLevel
    confidentiality: ConfidentialityLevel | None = None
    integrity: IntegrityLevel | None = None
    availability: AvailabilityLevel | None = None
    malicious: bool | None = None
    # Category or taxonomy data type -> ENISA factor names replacing the policy's defaults for it.
    dpc_factors: Annotated[dict[FactorTarget, list[FactorName]], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=dict
    )
    # The recipient of the data (confidentiality breaches), and the consequences judged likely.
    recipient: Recipient | None = None
    consequences: Annotated[list[ConsequenceName], msgspec.Meta(max_length=20)] = msgspec.field(default_factory=list)
    # Whether the controller of this incident has its main establishment in the EU (default: the policy's
    # ``establishment``); without one, every authority of the affected people's countries is notified.
    eu_main_establishment: bool | None = None
    # Only trusted recipients (bound by confidentiality) got the data and returned or deleted it. The same as
    # recipient {trust: trusted, data: returned_or_deleted}; kept for existing clients.
    contained: bool = False
    # Art. 34(3)(b): later measures ensure the high risk is no longer likely.
    mitigated: bool = False
    # Art. 34(3)(c): telling each person would involve disproportionate effort.
    disproportionate_effort: bool = False
    overrides: Overrides | None = None
    note: Reason | None = None


class AuthorityNotificationBody(Strict):
    """Records a notification to a supervisory authority and returns its Art. 33(3) content."""

    recipient: Annotated[str, msgspec.Meta(min_length=1, max_length=320, pattern=NO_NUL)]
    kind: Literal["initial", "follow_up"] | None = None
    # A key of policy.yaml's authorities, or "sa.<country>" from breach.yaml's table of EEA authorities.
    authority: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.]{0,63}$")] | None = None
    sent_at: datetime | None = None
    reason_for_delay: Reason | None = None
    note: Text | None = None


class SubjectNotificationBody(Strict):
    pass


class PublicCommunicationBody(Strict):
    channel: Line
    url: Annotated[str, msgspec.Meta(pattern=r"^https://[^\s\x00]+$", max_length=2000)] | None = None
    published_at: datetime | None = None


class CloseBody(Strict):
    """``california_not_required``: why no notice to California residents is owed (Civ. Code §1798.82): no
    California resident is affected, or the data is not personal information under §1798.82(h). It lifts the
    ``california_notice`` duty and is kept with the closing note (the audit event records only that one was given).
    """

    note: Text | None = None
    california_not_required: Justification | None = None


# -- responses --------------------------------------------------------------------------------


class Transition(msgspec.Struct):
    status: str
    at: datetime
    actor_type: str
    note: str | None = None


class CategoryRef(msgspec.Struct):
    key: str
    name: str


class AffectedView(msgspec.Struct):
    kind: str
    count: int
    selector: dict[str, Any] | None = None


class ClockView(msgspec.Struct):
    state: str  # not_started | running | overdue | met | met_late | not_required
    authority_deadline: datetime | None
    seconds_left: int | None
    time_left: str | None
    reminders_sent: list[str]


class CaliforniaClockView(msgspec.Struct):
    """The California notice clock (breach.yaml clock.california): running, overdue, met, met_late, not_required."""

    state: str
    deadline: datetime
    seconds_left: int | None
    time_left: str | None
    reminders_sent: list[str]


class AuthorityNoticeSummary(msgspec.Struct):
    seq: int
    kind: str
    authority: str
    recipient: str
    sent_at: datetime
    late: bool
    reason_for_delay: str | None
    documents: dict[str, dict[str, str]]


class DeliveryCounts(msgspec.Struct):
    total: int
    affected: int
    pending: int
    queued: int
    sent: int
    failed: int
    skipped_erased: int
    skipped_no_email: int


class SubjectNotificationView(msgspec.Struct):
    requested_at: datetime | None
    counts: DeliveryCounts
    done: bool


class BreachView(msgspec.Struct):
    id: uuid.UUID
    status: str
    version: int
    source: str
    title: str
    description: str
    detected_at: datetime
    aware_at: datetime | None
    occurred_from: datetime | None
    occurred_to: datetime | None
    nature: list[str]
    categories: list[CategoryRef]
    data_types: list[CategoryRef]
    affected_countries: list[str]
    affected: AffectedView
    approx_records: int | None
    encrypted: bool
    key_compromised: bool
    backup_exists: bool
    exfiltration_known: bool
    malicious: bool
    mitigation: str | None
    consequences: str | None
    measures_proposed: str | None
    advice: str | None
    translations: dict[str, Any]
    clock: ClockView
    severity: float | None
    band: str | None
    assessment: dict[str, Any] | None
    assessment_stale: bool
    decisions: dict[str, Any] | None
    authority_notifications: list[AuthorityNoticeSummary]
    subject_notifications: SubjectNotificationView | None
    public_communication: dict[str, Any] | None
    open_duties: list[str]
    closed_at: datetime | None
    closing_note: str | None
    history: list[Transition]
    # Null when breach.yaml has no California clock or the breach is still a draft.
    california_clock: CaliforniaClockView | None = None


class BreachPage(msgspec.Struct):
    items: list[BreachView]
    next_cursor: str | None


class VersionView(msgspec.Struct):
    version: int
    at: datetime
    actor_type: str
    actor_id: str
    action: str
    changed: list[str]
    snapshot: dict[str, Any]


class AuthorityNoticeView(msgspec.Struct):
    seq: int
    kind: str
    late: bool
    content: dict[str, Any]
    documents: dict[str, dict[str, str]]


class RecipientView(msgspec.Struct):
    subject_id: uuid.UUID
    status: str
    updated_at: datetime | None
    error: str | None = None


class RecipientPage(msgspec.Struct):
    items: list[RecipientView]
    next_cursor: str | None

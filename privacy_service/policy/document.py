"""The validated shape of the policy files and the loaded policy everyone reads.

``policy.yaml`` holds the structured facts shared by every language (:class:`PolicySpec`);
``notice.<lang>.yaml`` holds the prose of one language, keyed by the same ids (:class:`Notice`).
:class:`PolicyDocument` joins them: it is ``Runtime.policy``, read by the vault (profile fields,
categories), the published notice (JSON, JSON-LD, HTML) and the retention engine
(:meth:`PolicyDocument.retention_rules`), so none of them can drift from the others.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from privacy_service.policy.duration import Duration

CATEGORY_KEY_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
ID_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
LANGUAGE_PATTERN = r"^[a-z]{2,3}$"

# The time a retention period (or a legal duty) runs from, its *anchor*: ``occurred_at`` when the
# event a record describes took place (a profile field's or identifier's: when it was collected),
# ``collected_at`` when the vault stored it, or an event of the subject's or of a privacy request's.
Trigger = Literal["occurred_at", "collected_at", "account_closed_at", "last_activity_at", "request_completed_at"]
Action = Literal["delete", "anonymise"]
GdprBasis = Literal["consent", "contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests"]
PiplBasis = Literal[
    "consent",
    "contract",
    "hr_management",
    "legal_duty",
    "public_health",
    "news_reporting",
    "public_information",
    "other_law",
]
RecipientKind = Literal["processor", "controller", "authority"]
TransferMechanism = Literal[
    "adequacy",
    "standard_contractual_clauses",
    "binding_corporate_rules",
    "derogation",
    "pipl_standard_contract",
    "pipl_security_assessment",
    "pipl_certification",
]
Provision = Literal["statutory", "contractual", "optional"]

GDPR_ARTICLES: Mapping[str, str] = MappingProxyType(
    {
        "consent": "GDPR Art. 6(1)(a)",
        "contract": "GDPR Art. 6(1)(b)",
        "legal_obligation": "GDPR Art. 6(1)(c)",
        "vital_interests": "GDPR Art. 6(1)(d)",
        "public_task": "GDPR Art. 6(1)(e)",
        "legitimate_interests": "GDPR Art. 6(1)(f)",
    }
)
PIPL_ARTICLES: Mapping[str, str] = MappingProxyType(
    {
        "consent": "PIPL Art. 13(1)",
        "contract": "PIPL Art. 13(2)",
        "hr_management": "PIPL Art. 13(2)",
        "legal_duty": "PIPL Art. 13(3)",
        "public_health": "PIPL Art. 13(4)",
        "news_reporting": "PIPL Art. 13(5)",
        "public_information": "PIPL Art. 13(6)",
        "other_law": "PIPL Art. 13(7)",
    }
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- policy.yaml ----------------------------------------------------------------------------


class Contact(Strict):
    name: str = Field(min_length=1)
    address: str | None = None
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = None
    url: str | None = Field(default=None, pattern=r"^https://\S+$")


class Controller(Contact):
    # GDPR Art. 27: a controller outside the EU names a representative in the Union.
    representative: Contact | None = None


class LegalBasis(Strict):
    gdpr: GdprBasis
    pipl: PiplBasis


class Purpose(Strict):
    legal_basis: LegalBasis
    dpv: str | None = Field(default=None, description="DPV purpose concept, e.g. dpv:ServiceProvision")


class Source(Strict):
    # False: collected from someone else, so GDPR Art. 14 applies (the source must be named).
    from_data_subject: bool
    publicly_accessible: bool = False


class Recipient(Strict):
    kind: RecipientKind
    country: str = Field(pattern=r"^[A-Z]{2}$")


class Transfer(Strict):
    recipients: list[str] = Field(min_length=1)
    countries: list[str] = Field(min_length=1)
    mechanism: TransferMechanism
    article: str = Field(min_length=1, description="e.g. GDPR Art. 46(2)(c)")


class LegalDuty(Strict):
    """A law that requires keeping the data: it overrides erasure requests until it ends."""

    # Optional here so that `policy check` can say precisely what is missing.
    basis: str | None = None
    period: Duration
    trigger: Trigger


class RetentionSpec(Strict):
    period: Duration
    trigger: Trigger
    action: Action
    legal_duty: LegalDuty | None = None


MaskingStrategy = Literal["null_rewrite", "string_rewrite", "hash", "random_string_rewrite", "delete_row"]


class Masking(Strict):
    """How an erasure overwrites this category in a connected database (see docs: connected databases)."""

    strategy: MaskingStrategy = "null_rewrite"
    # The replacement text of ``string_rewrite``.
    value: str | None = None


class Category(Strict):
    source: str
    purposes: list[str] = Field(min_length=1)
    recipients: list[str] = Field(default_factory=list)
    transfers: list[str] = Field(default_factory=list)
    provision: Provision
    # Optional here so that `policy check` can report the category by name.
    retention: RetentionSpec | None = None
    dpv: str | None = Field(default=None, description="DPV personal-data concept, e.g. pd:EmailAddress")
    # Left out of the published document while unset, so a policy without it keeps its content hash.
    masking: Masking | None = Field(default=None, exclude_if=lambda value: value is None)


class Right(Strict):
    regimes: list[str] = Field(min_length=1)
    # The request type of POST /v1/requests that exercises it; None when it is exercised otherwise.
    request_type: Literal["access", "portability", "rectify", "erase"] | None = None


class Deadline(Strict):
    """Either a calendar period (``P1M``, ``P45D``) or a count of working days."""

    period: Duration | None = None
    working_days: int | None = Field(default=None, ge=1, le=365)


def _without_unset(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Leave out newer optional keys a policy does not use, so the content hash of a policy written
    before they existed does not change (the hash is over the dumped model, defaults included)."""
    return {key: value for key, value in data.items() if key not in keys or value not in (None, [], {})}


class HolidayCalendar(Strict):
    """One calendar of a regime (see privacy_service/calendars.py): a jurisdiction of the ``holidays``
    package, or a calendar named in policy.yaml ``calendars``, with the days the policy adds to it.

    ``closed_days`` are days off in this calendar only; ``working_days`` are days worked in spite of a
    weekend or holiday (a make-up working day the package does not have yet, e.g. China's for a year
    whose State Council notice came out after the installed package release).
    """

    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2, e.g. IE")
    subdivision: str | None = Field(default=None, pattern=r"^[A-Z0-9]{1,3}$", description="e.g. CA for US-CA")
    name: str | None = Field(default=None, pattern=ID_PATTERN, description="a key of policy.yaml calendars")
    closed_days: list[date] = Field(default_factory=list)
    working_days: list[date] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_base(self) -> HolidayCalendar:
        if (self.country is None) == (self.name is None):
            raise ValueError("give exactly one of country (a holidays package calendar) or name (policy calendars)")
        if self.subdivision is not None and self.country is None:
            raise ValueError("subdivision needs a country")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_unset(handler(self), ("name", "closed_days", "working_days"))


class NamedCalendar(Strict):
    """A calendar the ``holidays`` package does not have, e.g. the EU institutions' (the Commission
    publishes their holidays in the Official Journal each year): an optional package calendar as its
    base (a country, or a financial market such as ECB) plus the days the policy lists, with where
    those days come from. Without a base it counts weekends and the listed days only."""

    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    subdivision: str | None = Field(default=None, pattern=r"^[A-Z0-9]{1,3}$")
    market: str | None = Field(default=None, pattern=r"^[A-Z]{2,5}$", description="holidays financial market")
    time_zone: str | None = None
    closed_days: list[date] = Field(default_factory=list)
    working_days: list[date] = Field(default_factory=list)
    source: str = Field(min_length=1, description="where the listed days come from (e.g. the OJ reference)")

    @model_validator(mode="after")
    def _base(self) -> NamedCalendar:
        if self.country is not None and self.market is not None:
            raise ValueError("give at most one base: country or market")
        if self.subdivision is not None and self.country is None:
            raise ValueError("subdivision needs a country")
        if self.time_zone is not None:
            try:
                ZoneInfo(self.time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"not an IANA time zone: {self.time_zone[:64]!r}") from None
        return self


class Regime(Strict):
    deadline: Deadline
    extension: Deadline | None = None
    acknowledge: Deadline | None = None
    # Reg. 1182/71 Art. 3(4): a period ending on a weekend or holiday ends on the next working day.
    roll_to_working_day: bool = False
    # Whose public holidays (and make-up working days) working days and rolling skip; none: weekends only.
    calendars: list[HolidayCalendar] = Field(default_factory=list)
    authorities: list[str] = Field(min_length=1)


class Authority(Strict):
    name: str = Field(min_length=1)
    url: str = Field(pattern=r"^https://\S+$")
    country: str = Field(pattern=r"^[A-Z]{2}$")


class Requests(Strict):
    """How data subjects exercise their rights."""

    portal_path: str = Field(default="/privacy/request", pattern=r"^/\S*$")
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = None


class Tracking(Strict):
    honours_gpc: bool
    sells_personal_information: bool
    shares_for_cross_context_advertising: bool


class PolicySpec(Strict):
    """``policy.yaml``: every fact that is the same in every language."""

    version: str = Field(pattern=VERSION_PATTERN)
    effective_date: date
    languages: list[str] = Field(min_length=1)
    controller: Controller
    dpo: Contact
    requests: Requests
    tracking: Tracking
    purposes: dict[str, Purpose]
    sources: dict[str, Source]
    recipients: dict[str, Recipient]
    transfers: dict[str, Transfer]
    data_categories: dict[str, Category]
    rights: dict[str, Right]
    regimes: dict[str, Regime]
    authorities: dict[str, Authority]
    profile_fields: dict[str, str]
    # The category of each identifier the vault indexes for lookup (email, phone, external_id).
    identifier_fields: dict[str, str]
    # Profile fields a verified e-mail code alone may correct; every other correction (identifiers
    # always) waits for an operator who sees the requested change.
    rectify_without_review: list[str] = Field(default_factory=list)
    # Days closed on top of every regime's calendars (working days and roll_to_working_day skip them).
    holidays: list[date] = Field(default_factory=list)
    # Calendars the holidays package lacks, by name, for regimes' ``calendars: [{name: ...}]``.
    calendars: dict[str, NamedCalendar] = Field(default_factory=dict)
    # Where pages show times when the visitor's browser does not tell its own zone (IANA name).
    display_time_zone: str = "UTC"

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_unset(handler(self), ("calendars",))

    @field_validator("display_time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"not an IANA time zone: {name[:64]!r}") from None
        return name


# -- notice.<lang>.yaml -----------------------------------------------------------------------


class Section(Strict):
    heading: str = Field(min_length=1)
    body: str = Field(min_length=1)


class Named(Strict):
    name: str = Field(min_length=1)
    description: str | None = None


class Units(Strict):
    """How a duration reads; ``{n}`` is the number."""

    year: str
    years: str
    month: str
    months: str
    week: str
    weeks: str
    day: str
    days: str
    hour: str
    hours: str
    minute: str
    minutes: str
    second: str
    seconds: str
    working_days: str
    joiner: str


class TriggerLabels(Strict):
    occurred_at: str
    collected_at: str
    account_closed_at: str
    last_activity_at: str
    request_completed_at: str


class ActionLabels(Strict):
    delete: str
    anonymise: str


class GdprBasisLabels(Strict):
    consent: str
    contract: str
    legal_obligation: str
    vital_interests: str
    public_task: str
    legitimate_interests: str


class PiplBasisLabels(Strict):
    consent: str
    contract: str
    hr_management: str
    legal_duty: str
    public_health: str
    news_reporting: str
    public_information: str
    other_law: str


class RecipientKindLabels(Strict):
    processor: str
    controller: str
    authority: str


class ProvisionLabels(Strict):
    """GDPR Art. 13(2)(e): whether providing the data is required, and by what."""

    statutory: str
    contractual: str
    optional: str


class Labels(Strict):
    """The words around the facts: headings of tables, units, names of enum values."""

    language_name: str = Field(description="The language's own name, shown in the language switch")
    title: str
    version_line: str = Field(description="{version} and {effective_date} are filled in")
    skip_link: str
    contents: str
    language_switch: str
    email: str
    phone: str
    address: str
    website: str
    representative: str
    retention_caption: str
    retention_category: str
    retention_period: str
    retention_action: str
    retention_legal_duty: str
    retention_summary: str = Field(description="{period} and {trigger} are filled in")
    legal_duty_summary: str = Field(description="{basis}, {period} and {trigger} are filled in")
    none: str
    purposes: str
    legal_basis_gdpr: str
    legal_basis_pipl: str
    source: str
    recipients: str
    countries: str
    deadline: str
    extension: str
    acknowledge: str
    calendar: str = Field(description="Before the calendars (e.g. IE, US-CA) whose holidays working days skip")
    complaint_authorities: str
    make_request: str
    request_email: str
    machine_readable: str
    versions: str
    colon: str = Field(description="Between a label and its value: ': ' in English, a full-width colon in Chinese")
    units: Units
    triggers: TriggerLabels
    actions: ActionLabels
    gdpr_bases: GdprBasisLabels
    pipl_bases: PiplBasisLabels
    recipient_kinds: RecipientKindLabels
    provisions: ProvisionLabels


class Notice(Strict):
    """``notice.<lang>.yaml``: the prose of one language, keyed by the ids of ``policy.yaml``."""

    language: str = Field(pattern=LANGUAGE_PATTERN)
    labels: Labels
    sections: dict[str, Section]
    data_categories: dict[str, Named]
    purposes: dict[str, Named]
    sources: dict[str, Named]
    recipients: dict[str, Named]
    transfers: dict[str, Named]
    rights: dict[str, Named]
    regimes: dict[str, Named]
    authorities: dict[str, Named]
    # Labels of policy.yaml's profile_fields, e.g. for the correction form of the request portal.
    profile_fields: dict[str, Named] = Field(default_factory=dict)


# The notice's sections, in the order they are published, with the provision each one satisfies.
# Every language must have every one of them (`policy check`).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("controller", "GDPR Art. 13(1)(a); PIPL Art. 17(1)(1)"),
    ("dpo", "GDPR Art. 13(1)(b)"),
    ("categories", "GDPR Art. 14(1)(d); PIPL Art. 17(1)(2)"),
    ("sources", "GDPR Art. 14(2)(f)"),
    ("purposes", "GDPR Art. 13(1)(c); PIPL Art. 17(1)(2)"),
    ("legitimate_interests", "GDPR Art. 13(1)(d)"),
    ("recipients", "GDPR Art. 13(1)(e); PIPL Art. 23"),
    ("transfers", "GDPR Art. 13(1)(f); PIPL Art. 39"),
    ("retention", "GDPR Art. 13(2)(a); PIPL Art. 17(1)(2)"),
    ("rights", "GDPR Art. 13(2)(b); CCPA §1798.130; PIPL Art. 17(1)(3)"),
    ("deadlines", "GDPR Art. 12(3); CCPA §1798.130(a)(2); PIPL Art. 50"),
    ("consent_withdrawal", "GDPR Art. 13(2)(c); PIPL Art. 15"),
    ("complaints", "GDPR Art. 13(2)(d)"),
    ("statutory_requirement", "GDPR Art. 13(2)(e)"),
    ("automated_decisions", "GDPR Art. 13(2)(f); PIPL Art. 24"),
    ("cookies", "ePrivacy Directive Art. 5(3); CCPA §1798.135"),
    ("changes", "GDPR Art. 13(3)"),
)
SECTION_IDS: tuple[str, ...] = tuple(section for section, _ in SECTIONS)


# -- the loaded policy ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionDuty:
    """A legal duty to keep data (e.g. AML): erasure waits until it ends."""

    basis: str
    period: Duration
    trigger: Trigger

    def ends_at(self, anchors: Mapping[str, datetime | None]) -> datetime | None:
        """When the duty ends; None while its trigger has not happened (e.g. the account is open)."""
        anchor = anchors.get(self.trigger)
        return self.period.add_to(anchor) if anchor is not None else None


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """How long one data category is kept: what the retention engine and the access answer read."""

    category: str
    period: Duration
    trigger: Trigger
    action: Action
    legal_duty: RetentionDuty | None = None

    @property
    def erasable_on_request(self) -> bool:
        return self.legal_duty is None

    def expires_at(self, anchors: Mapping[str, datetime | None]) -> datetime | None:
        """When the data is due for ``action``: the rule's end, or the legal duty's end if later.

        ``anchors`` maps each trigger (``collected_at``, ``account_closed_at``...) to when it
        happened; while a trigger the answer depends on has not happened, the answer is None.
        """
        anchor = anchors.get(self.trigger)
        if anchor is None:
            return None
        end = self.period.add_to(anchor)
        if self.legal_duty is not None:
            duty_end = self.legal_duty.ends_at(anchors)
            if duty_end is None:
                return None
            end = max(end, duty_end)
        return end


def canonical_json(value: Any) -> bytes:
    """Stable bytes for hashing: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """The policy as loaded from ``policies/``: structured facts plus one notice per language."""

    spec: PolicySpec
    notices: Mapping[str, Notice]
    # When the files were last changed (not part of the content): a floor for Last-Modified.
    modified_at: datetime | None = field(default=None, compare=False)
    _rules: Mapping[str, RetentionRule] = field(init=False, repr=False, compare=False)
    _source: dict[str, Any] = field(init=False, repr=False, compare=False)
    _hash: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rules: dict[str, RetentionRule] = {}
        for key, category in self.spec.data_categories.items():
            spec = category.retention
            if spec is None:
                raise ValueError(f"data_categories.{key}: no retention rule")
            duty = spec.legal_duty
            if duty is not None and not (duty.basis or "").strip():
                raise ValueError(f"data_categories.{key}.retention.legal_duty: no basis")
            rules[key] = RetentionRule(
                category=key,
                period=spec.period,
                trigger=spec.trigger,
                action=spec.action,
                legal_duty=RetentionDuty(duty.basis or "", duty.period, duty.trigger) if duty else None,
            )
        source = {
            "policy": self.spec.model_dump(mode="json"),
            "notices": {lang: notice.model_dump(mode="json") for lang, notice in sorted(self.notices.items())},
        }
        object.__setattr__(self, "notices", MappingProxyType(dict(self.notices)))
        object.__setattr__(self, "_rules", MappingProxyType(rules))
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_hash", hashlib.sha256(canonical_json(source)).hexdigest())

    # -- what the vault reads -------------------------------------------------------------

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def effective_date(self) -> date:
        return self.spec.effective_date

    @property
    def data_categories(self) -> Mapping[str, Category]:
        return self.spec.data_categories

    @property
    def profile_fields(self) -> Mapping[str, str]:
        return self.spec.profile_fields

    @property
    def identifier_fields(self) -> Mapping[str, str]:
        return self.spec.identifier_fields

    @property
    def display_zone(self) -> ZoneInfo:
        """The zone pages show times in before the visitor's browser shows them in its own."""
        return ZoneInfo(self.spec.display_time_zone)

    @property
    def rectify_without_review(self) -> frozenset[str]:
        """Profile fields whose correction needs no operator review (identifiers never qualify)."""
        return frozenset(self.spec.rectify_without_review)

    def is_category(self, key: str) -> bool:
        return key in self.spec.data_categories

    # -- what the retention engine reads --------------------------------------------------

    def retention_rules(self) -> Mapping[str, RetentionRule]:
        """Typed retention rules keyed by data category (every category has exactly one)."""
        return self._rules

    def retention_rule(self, category: str) -> RetentionRule:
        return self._rules[category]

    # -- publication ---------------------------------------------------------------------

    @property
    def languages(self) -> tuple[str, ...]:
        """Supported languages; the first is the default."""
        return tuple(self.spec.languages)

    @property
    def default_language(self) -> str:
        return self.spec.languages[0]

    def source(self) -> dict[str, Any]:
        """Everything the files say, as JSON-compatible data (a copy; stored at publish time)."""
        copied: dict[str, Any] = json.loads(canonical_json(self._source))
        return copied

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`source`."""
        return self._hash

"""``policies/breach.yaml``: ENISA scoring tables, the band-to-decision mapping, the clock and the team.

The file is checked against the loaded policy: every data category of ``policy.yaml`` needs a
data-processing-context score here and every key here must be a category there, so a category cannot be
stored before someone has said how bad its loss would be. Problems are reported like the policy loader's
(``file: path: problem``), all at once; ``privacy-service policy check`` runs this check too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privacy_service.policy.document import PolicyDocument
from privacy_service.policy.duration import Duration
from privacy_service.policy.loader import Problem

BREACH_FILE = "breach.yaml"

DataType = Literal["simple", "behavioural", "financial", "sensitive"]
Band = Literal["low", "medium", "high", "very_high"]
Duty = Literal["register", "authority", "subjects"]
EaseLevel = Literal["negligible", "limited", "significant", "maximum"]
ConfidentialityLevel = Literal["none", "exposed", "known_recipients", "unknown_recipients"]
IntegrityLevel = Literal["none", "altered", "recoverable", "unrecoverable"]
AvailabilityLevel = Literal["none", "recoverable", "temporary", "full"]
RecipientTrust = Literal["trusted", "untrusted", "unknown"]
RecipientData = Literal["returned_or_deleted", "retained", "unknown"]

BANDS: tuple[Band, ...] = ("low", "medium", "high", "very_high")
DATA_TYPES: tuple[DataType, ...] = ("simple", "behavioural", "financial", "sensitive")
EASE_LEVELS: tuple[EaseLevel, ...] = ("negligible", "limited", "significant", "maximum")
CONFIDENTIALITY_LEVELS = ("none", "exposed", "known_recipients", "unknown_recipients")
RECIPIENT_TRUST: tuple[RecipientTrust, ...] = ("trusted", "untrusted", "unknown")
RECIPIENT_DATA: tuple[RecipientData, ...] = ("returned_or_deleted", "retained", "unknown")
# An authority of breach.yaml's EEA table (not one of policy.yaml's) is named "sa.<country>".
TABLE_AUTHORITY_PREFIX = "sa."
DUTY_ORDER: Mapping[str, int] = {"register": 0, "authority": 1, "subjects": 2}
# ENISA 2013 bounds each data type's context adjustments (a simple datum can only get worse, etc.).
ADJUST_RANGE: Mapping[str, tuple[int, int]] = {
    "simple": (0, 3),
    "behavioural": (-1, 2),
    "financial": (-2, 1),
    "sensitive": (-3, 0),
}
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class BreachPolicyError(Exception):
    """``breach.yaml`` is missing or invalid; ``problems`` lists each with its file and path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = str(problems[0]) if problems else "invalid breach policy"
        more = f" (and {len(problems) - 1} more; run `privacy-service policy check`)" if len(problems) > 1 else ""
        super().__init__(first + more)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Team(Strict):
    email: str = Field(pattern=_EMAIL)


class CaliforniaClock(Strict):
    """Cal. Civ. Code §1798.82(a) as amended by SB 446: notice to California residents within N days of discovery."""

    notice_deadline: Duration
    reminders: list[Duration] = Field(default_factory=list)


class ClockSpec(Strict):
    authority_deadline: Duration
    reminders: list[Duration] = Field(default_factory=list)
    california: CaliforniaClock | None = None


class Factor(Strict):
    applies_to: DataType
    adjust: int = Field(ge=-3, le=3)
    description: str = Field(min_length=1)


class CategoryScore(Strict):
    type: DataType
    factors: list[str] = Field(default_factory=list)


class TaxonomyType(Strict):
    """A data type a breach may involve outside the policy's categories, with its ENISA type and names."""

    type: DataType
    factors: list[str] = Field(default_factory=list)
    en: str = Field(min_length=1, max_length=200)
    zh: str = Field(min_length=1, max_length=200)


class Circumstances(Strict):
    confidentiality: dict[ConfidentialityLevel, float]
    integrity: dict[IntegrityLevel, float]
    availability: dict[AvailabilityLevel, float]
    malicious_intent: float = Field(ge=0, le=1)


class BandBounds(Strict):
    medium: float
    high: float
    very_high: float


class Enisa(Strict):
    data_types: dict[DataType, int]
    factors: dict[str, Factor]
    data_categories: dict[str, CategoryScore]
    taxonomy: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")], TaxonomyType] = Field(default_factory=dict)
    ease_of_identification: dict[EaseLevel, float]
    circumstances: Circumstances
    # Recipient trust -> what became of the data -> the confidentiality level it implies (at least).
    recipients: dict[RecipientTrust, dict[RecipientData, ConfidentialityLevel]]
    bands: BandBounds


class RecipientFloor(Strict):
    band: Band
    trust: list[RecipientTrust] = Field(min_length=1)
    data: list[RecipientData] = Field(min_length=1)


class Decisions(Strict):
    bands: dict[Band, Duty]
    large_scale_subjects: int = Field(ge=1)
    recipient_floor: RecipientFloor | None = None


class Consequence(Strict):
    """A harm an assessor may judge likely, and the DPC it implies at least (ENISA 2013 context factors)."""

    dpc_floor: int = Field(ge=1, le=4)
    en: str = Field(min_length=1, max_length=200)
    zh: str = Field(min_length=1, max_length=200)
    basis: str = Field(min_length=1, max_length=500)


class TableAuthority(Strict):
    """A supervisory authority of breach.yaml's EEA table: policy.yaml's key, or its name and address."""

    authority: str | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)
    url: str | None = Field(default=None, pattern=r"^https://\S+$")


class Establishment(Strict):
    eu_main_establishment: bool
    supervisory_authorities: dict[Annotated[str, Field(pattern=r"^[A-Z]{2}$")], TableAuthority]


@dataclass(frozen=True, slots=True)
class AuthorityRef:
    key: str
    name: str
    country: str
    url: str | None


class BreachSpec(Strict):
    version: str = Field(min_length=1, max_length=64)
    lead_authority: str
    team: Team
    clock: ClockSpec
    enisa: Enisa
    decisions: Decisions
    consequences: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")], Consequence] = Field(
        default_factory=dict
    )
    establishment: Establishment


def fixed_length(duration: Duration) -> timedelta:
    """A clock duration as a timedelta (years and months have no fixed length: rejected at load)."""
    return timedelta(
        weeks=duration.weeks,
        days=duration.days,
        hours=duration.hours,
        minutes=duration.minutes,
        seconds=duration.seconds,
    )


@dataclass(frozen=True, slots=True)
class BreachPolicy:
    """The validated ``breach.yaml``: what the severity engine, the clock and the messages read."""

    spec: BreachSpec

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def team_email(self) -> str:
        return self.spec.team.email

    @property
    def lead_authority(self) -> str:
        return self.spec.lead_authority

    @property
    def authority_deadline(self) -> timedelta:
        return fixed_length(self.spec.clock.authority_deadline)

    @property
    def reminders(self) -> list[tuple[str, timedelta]]:
        """(label, time left) for each reminder mark, the earliest (most time left) first."""
        marks = [(str(mark), fixed_length(mark)) for mark in self.spec.clock.reminders]
        return sorted(marks, key=lambda mark: mark[1], reverse=True)

    @property
    def california_deadline(self) -> timedelta | None:
        """From discovery to the notice to affected California residents; None: no California clock."""
        california = self.spec.clock.california
        return fixed_length(california.notice_deadline) if california else None

    @property
    def california_reminders(self) -> list[tuple[str, timedelta]]:
        """(label, time left) for each California reminder mark, the earliest first."""
        california = self.spec.clock.california
        marks = [(str(mark), fixed_length(mark)) for mark in (california.reminders if california else [])]
        return sorted(marks, key=lambda mark: mark[1], reverse=True)

    @property
    def enisa(self) -> Enisa:
        return self.spec.enisa

    @property
    def large_scale_subjects(self) -> int:
        return self.spec.decisions.large_scale_subjects

    def duty_for(self, band: Band) -> Duty:
        return self.spec.decisions.bands[band]

    def data_spec(self, key: str) -> CategoryScore | TaxonomyType | None:
        """The ENISA type and default factors of a policy category or a taxonomy data type."""
        return self.enisa.data_categories.get(key) or self.enisa.taxonomy.get(key)

    def data_type_name(self, key: str, language: str) -> str:
        """A taxonomy data type's name in ``language`` (en or zh; the key itself once the type is gone)."""
        found = self.enisa.taxonomy.get(key)
        if found is None:
            return key
        return found.zh if language == "zh" else found.en

    def consequence_name(self, key: str, language: str) -> str:
        found = self.consequences.get(key)
        if found is None:
            return key
        return found.zh if language == "zh" else found.en

    def factor_allowed(self, category: str, factor: str) -> bool:
        found = self.enisa.factors.get(factor)
        score = self.data_spec(category)
        return found is not None and score is not None and found.applies_to == score.type

    def recipient_level(self, trust: RecipientTrust, data: RecipientData) -> ConfidentialityLevel:
        return self.enisa.recipients[trust][data]

    @property
    def recipient_floor(self) -> RecipientFloor | None:
        return self.spec.decisions.recipient_floor

    @property
    def consequences(self) -> Mapping[str, Consequence]:
        return self.spec.consequences

    @property
    def eu_main_establishment(self) -> bool:
        return self.spec.establishment.eu_main_establishment

    def authority(self, document: PolicyDocument, key: str) -> AuthorityRef | None:
        """One of policy.yaml's authorities, or ``sa.<country>`` from breach.yaml's EEA table."""
        found = document.spec.authorities.get(key)
        if found is not None:
            return AuthorityRef(key, found.name, found.country, found.url)
        if not key.startswith(TABLE_AUTHORITY_PREFIX):
            return None
        country = key.removeprefix(TABLE_AUTHORITY_PREFIX).upper()
        entry = self.spec.establishment.supervisory_authorities.get(country)
        if entry is None or entry.authority is not None or entry.name is None:
            return None
        return AuthorityRef(key, entry.name, country, entry.url)

    def authority_for_country(self, document: PolicyDocument, country: str) -> AuthorityRef | None:
        entry = self.spec.establishment.supervisory_authorities.get(country)
        if entry is None:
            return None
        key = entry.authority or TABLE_AUTHORITY_PREFIX + country.lower()
        return self.authority(document, key)


# -- loading and checking -------------------------------------------------------------------


def _problems_of(file: str, exc: ValidationError) -> list[Problem]:
    out = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        out.append(Problem(file, where, str(error["msg"]).removeprefix("Value error, ")))
    return out


def _check_clock(file: str, spec: BreachSpec, problems: list[Problem]) -> None:
    clock = spec.clock
    _check_deadline(file, "clock.authority_deadline", clock.authority_deadline, "clock", clock.reminders, problems)
    if clock.california is not None:
        california = clock.california
        where = "clock.california"
        _check_deadline(
            file, f"{where}.notice_deadline", california.notice_deadline, where, california.reminders, problems
        )


def _check_deadline(
    file: str, where: str, deadline: Duration, prefix: str, reminders: list[Duration], problems: list[Problem]
) -> None:
    for place, duration in [(where, deadline)] + [
        (f"{prefix}.reminders[{i}]", mark) for i, mark in enumerate(reminders)
    ]:
        if duration.years or duration.months:
            problems.append(Problem(file, place, "use days, hours or minutes: months and years have no fixed length"))
        elif duration.is_zero:
            problems.append(Problem(file, place, "must be longer than zero"))
    length_of_deadline = fixed_length(deadline)
    seen: set[timedelta] = set()
    for i, mark in enumerate(reminders):
        length = fixed_length(mark)
        if length >= length_of_deadline:
            problems.append(Problem(file, f"{prefix}.reminders[{i}]", "a reminder must come before the deadline"))
        if length in seen:
            problems.append(Problem(file, f"{prefix}.reminders[{i}]", "listed twice"))
        seen.add(length)


def _check_enisa(file: str, spec: BreachSpec, document: PolicyDocument, problems: list[Problem]) -> None:
    enisa = spec.enisa

    def add(where: str, message: str) -> None:
        problems.append(Problem(file, where, message))

    for data_type in DATA_TYPES:
        base = enisa.data_types.get(data_type)
        if base is None:
            add(f"enisa.data_types.{data_type}", "missing: ENISA defines a base score for every data type")
        elif not 1 <= base <= 4:
            add(f"enisa.data_types.{data_type}", "ENISA base scores are between 1 and 4")
    for name, factor in enisa.factors.items():
        low, high = ADJUST_RANGE[factor.applies_to]
        if factor.adjust == 0 or not low <= factor.adjust <= high:
            add(f"enisa.factors.{name}.adjust", f"ENISA adjusts {factor.applies_to} data by {low:+d} to {high:+d}")
    for key in document.data_categories:
        if key not in enisa.data_categories:
            add(f"enisa.data_categories.{key}", "a data category of policy.yaml without an ENISA score (type)")
    for key, score in enisa.data_categories.items():
        if key not in document.data_categories:
            add(f"enisa.data_categories.{key}", "not a data category of policy.yaml")
        for factor_name in score.factors:
            default = enisa.factors.get(factor_name)
            if default is None:
                add(f"enisa.data_categories.{key}.factors", f"unknown factor {factor_name!r}")
            elif default.applies_to != score.type:
                add(
                    f"enisa.data_categories.{key}.factors",
                    f"{factor_name!r} applies to {default.applies_to} data, not {score.type}",
                )
    for key, spec_type in enisa.taxonomy.items():
        for factor_name in spec_type.factors:
            default = enisa.factors.get(factor_name)
            if default is None:
                add(f"enisa.taxonomy.{key}.factors", f"unknown factor {factor_name!r}")
            elif default.applies_to != spec_type.type:
                add(
                    f"enisa.taxonomy.{key}.factors",
                    f"{factor_name!r} applies to {default.applies_to} data, not {spec_type.type}",
                )
    for trust in RECIPIENT_TRUST:
        row = enisa.recipients.get(trust)
        missing_data = [data for data in RECIPIENT_DATA if row is None or data not in row]
        if missing_data:
            add(f"enisa.recipients.{trust}", "missing: " + ", ".join(missing_data))
        elif row is not None and row["retained"] == "none":
            add(f"enisa.recipients.{trust}.retained", "a recipient who keeps the data has breached confidentiality")
    ease = enisa.ease_of_identification
    if any(level not in ease for level in EASE_LEVELS):
        add("enisa.ease_of_identification", "give negligible, limited, significant and maximum")
    else:
        values = [ease[level] for level in EASE_LEVELS]
        if not (0 < values[0] and values[-1] <= 1 and all(a < b for a, b in pairwise(values))):
            add("enisa.ease_of_identification", "values must rise from negligible to maximum, within (0, 1]")
    circumstances = enisa.circumstances
    for element, table, required in (
        (
            "confidentiality",
            circumstances.confidentiality,
            ("none", "exposed", "known_recipients", "unknown_recipients"),
        ),
        ("integrity", circumstances.integrity, ("none", "altered", "recoverable", "unrecoverable")),
        ("availability", circumstances.availability, ("none", "recoverable", "temporary", "full")),
    ):
        missing = [level for level in required if level not in table]
        if missing:
            add(f"enisa.circumstances.{element}", "missing levels: " + ", ".join(missing))
        elif any(not 0 <= value <= 1 for value in table.values()):
            add(f"enisa.circumstances.{element}", "values are between 0 and 1")
    bounds = enisa.bands
    if not 0 < bounds.medium < bounds.high < bounds.very_high:
        add("enisa.bands", "bounds must rise: 0 < medium < high < very_high")


def _check_decisions(file: str, spec: BreachSpec, document: PolicyDocument, problems: list[Problem]) -> None:
    bands = spec.decisions.bands
    missing = [band for band in BANDS if band not in bands]
    if missing:
        problems.append(Problem(file, "decisions.bands", "missing bands: " + ", ".join(missing)))
        return
    duties = [DUTY_ORDER[bands[band]] for band in BANDS]
    if duties != sorted(duties):
        problems.append(Problem(file, "decisions.bands", "a higher band must never require less than a lower one"))
    if spec.lead_authority not in document.spec.authorities:
        problems.append(Problem(file, "lead_authority", "not a key of `authorities` in policy.yaml"))
    for country, entry in spec.establishment.supervisory_authorities.items():
        where = f"establishment.supervisory_authorities.{country}"
        if entry.authority is not None:
            found = document.spec.authorities.get(entry.authority)
            if found is None:
                problems.append(Problem(file, where, "not a key of `authorities` in policy.yaml"))
            elif found.country != country:
                problems.append(Problem(file, where, f"policy.yaml's {entry.authority} is in {found.country}"))
            elif entry.name is not None or entry.url is not None:
                problems.append(Problem(file, where, "give either `authority` or `name` and `url`"))
        elif entry.name is None or entry.url is None:
            problems.append(Problem(file, where, "give `authority` (a key of policy.yaml) or `name` and `url`"))


def check_breach_policy(directory: Path, document: PolicyDocument) -> tuple[BreachPolicy | None, list[Problem]]:
    """Load and check ``breach.yaml`` against the policy; the policy is returned only without problems."""
    path = directory / BREACH_FILE
    file = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, [Problem(file, "", "file not found: breach assessment needs it (see policies/breach.yaml)")]
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return None, [Problem(file, "", f"not valid YAML ({exc.__class__.__name__})")]
    if not isinstance(raw, dict):
        return None, [Problem(file, "", "expected a mapping at the top level")]
    try:
        spec = BreachSpec.model_validate(raw)
    except ValidationError as exc:
        return None, _problems_of(file, exc)
    problems: list[Problem] = []
    _check_clock(file, spec, problems)
    _check_enisa(file, spec, document, problems)
    _check_decisions(file, spec, document, problems)
    if problems:
        return None, problems
    return BreachPolicy(spec), []


_CACHE: dict[tuple[str, str, float], BreachPolicy] = {}


def load_breach_policy(directory: Path, document: PolicyDocument) -> BreachPolicy:
    """The checked breach policy, cached per file version and policy content."""
    path = directory / BREACH_FILE
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = -1.0
    key = (str(path.resolve()), document.content_hash, mtime)
    found = _CACHE.get(key)
    if found is not None:
        return found
    policy, problems = check_breach_policy(directory, document)
    if policy is None:
        raise BreachPolicyError(problems)
    if len(_CACHE) > 16:
        _CACHE.clear()
    _CACHE[key] = policy
    return policy

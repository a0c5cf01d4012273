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
from typing import Literal

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

BANDS: tuple[Band, ...] = ("low", "medium", "high", "very_high")
DATA_TYPES: tuple[DataType, ...] = ("simple", "behavioural", "financial", "sensitive")
EASE_LEVELS: tuple[EaseLevel, ...] = ("negligible", "limited", "significant", "maximum")
CONFIDENTIALITY_LEVELS = ("none", "exposed", "known_recipients", "unknown_recipients")
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


class ClockSpec(Strict):
    authority_deadline: Duration
    reminders: list[Duration] = Field(default_factory=list)


class Factor(Strict):
    applies_to: DataType
    adjust: int = Field(ge=-3, le=3)
    description: str = Field(min_length=1)


class CategoryScore(Strict):
    type: DataType
    factors: list[str] = Field(default_factory=list)


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
    ease_of_identification: dict[EaseLevel, float]
    circumstances: Circumstances
    bands: BandBounds


class Decisions(Strict):
    bands: dict[Band, Duty]
    large_scale_subjects: int = Field(ge=1)


class BreachSpec(Strict):
    version: str = Field(min_length=1, max_length=64)
    lead_authority: str
    team: Team
    clock: ClockSpec
    enisa: Enisa
    decisions: Decisions


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
    def enisa(self) -> Enisa:
        return self.spec.enisa

    @property
    def large_scale_subjects(self) -> int:
        return self.spec.decisions.large_scale_subjects

    def duty_for(self, band: Band) -> Duty:
        return self.spec.decisions.bands[band]

    def factor_allowed(self, category: str, factor: str) -> bool:
        found = self.enisa.factors.get(factor)
        score = self.enisa.data_categories.get(category)
        return found is not None and score is not None and found.applies_to == score.type


# -- loading and checking -------------------------------------------------------------------


def _problems_of(file: str, exc: ValidationError) -> list[Problem]:
    out = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        out.append(Problem(file, where, str(error["msg"]).removeprefix("Value error, ")))
    return out


def _check_clock(file: str, spec: BreachSpec, problems: list[Problem]) -> None:
    clock = spec.clock
    for where, duration in [("clock.authority_deadline", clock.authority_deadline)] + [
        (f"clock.reminders[{i}]", mark) for i, mark in enumerate(clock.reminders)
    ]:
        if duration.years or duration.months:
            problems.append(Problem(file, where, "use days, hours or minutes: months and years have no fixed length"))
        elif duration.is_zero:
            problems.append(Problem(file, where, "must be longer than zero"))
    deadline = fixed_length(clock.authority_deadline)
    seen: set[timedelta] = set()
    for i, mark in enumerate(clock.reminders):
        length = fixed_length(mark)
        if length >= deadline:
            problems.append(Problem(file, f"clock.reminders[{i}]", "a reminder must come before the deadline"))
        if length in seen:
            problems.append(Problem(file, f"clock.reminders[{i}]", "listed twice"))
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

"""Loading and checking the policy directory.

Every problem is reported as ``file: path: problem`` and all of them are collected in one pass, so an
operator fixing the files sees the whole list at once (`privacy-service policy check`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from privacy_service.calendars import (
    Jurisdiction,
    holidays_version,
    regime_sources,
    uncovered_years,
    unsupported,
    unsupported_market,
)
from privacy_service.policy.document import (
    CATEGORY_KEY_PATTERN,
    ID_PATTERN,
    LANGUAGE_PATTERN,
    SECTIONS,
    Deadline,
    Named,
    Notice,
    PolicyDocument,
    PolicySpec,
)

M = TypeVar("M", bound=BaseModel)

POLICY_FILE = "policy.yaml"
NOTICE_GLOB = "notice.*.yaml"
_CATEGORY_KEY = re.compile(CATEGORY_KEY_PATTERN)
_ID = re.compile(ID_PATTERN)
_LANGUAGE = re.compile(LANGUAGE_PATTERN)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Full-width punctuation (U+FF09, U+FF0C, U+3002, U+3001) ends a URL in Chinese prose.
_URL = re.compile("https?://[^\\s<>\"')\uff09\uff0c\u3002\u3001]+")
_NUMBER = re.compile(r"\d+(?:[.,/]\d+)*")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The id maps of policy.yaml that every notice must describe, one entry per id.
_ID_MAPS = (
    "data_categories",
    "purposes",
    "sources",
    "recipients",
    "transfers",
    "rights",
    "regimes",
    "authorities",
    "profile_fields",
)


def notice_file(language: str) -> str:
    return f"notice.{language}.yaml"


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    path: str
    message: str

    def __str__(self) -> str:
        text = f"{self.file}: {self.path}: {self.message}" if self.path else f"{self.file}: {self.message}"
        # One problem, one line: a key in the YAML may hold a line break or another control character.
        return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


class PolicyError(Exception):
    """The policy files are missing or invalid; ``problems`` lists each with its file and path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = str(problems[0]) if problems else "invalid policy"
        more = f" (and {len(problems) - 1} more; run `privacy-service policy check`)" if len(problems) > 1 else ""
        super().__init__(first + more)


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validation_problems(file: str, exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(Problem(file, _where(tuple(error["loc"])), message))
    return problems


def _read_yaml(path: Path, problems: list[Problem]) -> Any:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(Problem(str(path), "", "file not found (set PRIVACY_POLICY_DIR)"))
        return None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problems.append(Problem(str(path), where, f"not valid YAML ({exc.__class__.__name__})"))
        return None
    if not isinstance(raw, dict):
        problems.append(Problem(str(path), "", "expected a mapping at the top level"))
        return None
    return raw


def _validate(model: type[M], raw: Any, file: str, problems: list[Problem]) -> M | None:
    if raw is None:
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_validation_problems(file, exc))
        return None


# -- policy.yaml on its own ---------------------------------------------------------------------


def _check_retention(file: str, raw: dict[str, Any], problems: list[Problem]) -> None:
    """Checked on the raw file, so these are reported even when other parts fail to validate."""
    categories = raw.get("data_categories")
    if not isinstance(categories, dict):
        return
    for key, category in categories.items():
        if not isinstance(category, dict):
            continue
        where = f"data_categories.{key}.retention"
        retention = category.get("retention")
        if retention is None:
            problems.append(
                Problem(
                    file,
                    where,
                    "the service stores this category but it has no retention rule (period, trigger, action)",
                )
            )
            continue
        duty = retention.get("legal_duty") if isinstance(retention, dict) else None
        if isinstance(duty, dict) and not str(duty.get("basis") or "").strip():
            problems.append(
                Problem(
                    file,
                    f"{where}.legal_duty.basis",
                    "a legal duty that overrides erasure must name its basis (the law that requires keeping the data)",
                )
            )


def _check_deadline(file: str, where: str, deadline: Deadline | None, problems: list[Problem]) -> None:
    if deadline is not None and (deadline.period is None) == (deadline.working_days is None):
        problems.append(Problem(file, where, "give exactly one of period (ISO 8601) or working_days"))


def _check_spec(file: str, spec: PolicySpec, problems: list[Problem]) -> None:
    def add(where: str, message: str) -> None:
        problems.append(Problem(file, where, message))

    def refs(where: str, ids: list[str], table: Mapping[str, Any], name: str) -> None:
        for index, ref in enumerate(ids):
            if ref not in table:
                add(f"{where}[{index}]", f"{name} {ref!r} is not defined in {name}s")

    if len(set(spec.languages)) != len(spec.languages):
        add("languages", "a language is listed twice")
    for index, language in enumerate(spec.languages):
        if not _LANGUAGE.match(language):
            add(f"languages[{index}]", "not a two- or three-letter language code such as en or zh")
    for table_name in ("purposes", "sources", "recipients", "transfers", "rights", "regimes", "authorities"):
        for key in getattr(spec, table_name):
            if not _ID.match(key):
                add(f"{table_name}.{key}", "not an id (lower-case letters, digits and _)")

    for key, category in spec.data_categories.items():
        where = f"data_categories.{key}"
        if not _CATEGORY_KEY.match(key):
            add(where, "not a dotted category key such as user.contact.email")
        if category.source not in spec.sources:
            add(f"{where}.source", f"source {category.source!r} is not defined in sources")
        refs(f"{where}.purposes", category.purposes, spec.purposes, "purpose")
        refs(f"{where}.recipients", category.recipients, spec.recipients, "recipient")
        refs(f"{where}.transfers", category.transfers, spec.transfers, "transfer")

    for name, category_key in spec.profile_fields.items():
        if category_key not in spec.data_categories:
            add(f"profile_fields.{name}", f"category {category_key!r} is not in data_categories")
    for name, category_key in spec.identifier_fields.items():
        if category_key not in spec.data_categories:
            add(f"identifier_fields.{name}", f"category {category_key!r} is not in data_categories")
    for index, name in enumerate(spec.rectify_without_review):
        where = f"rectify_without_review[{index}]"
        if name in spec.identifier_fields:
            add(where, f"{name!r} is an identifier: a change of identifier always waits for an operator's review")
        elif name not in spec.profile_fields:
            add(where, f"{name!r} is not in profile_fields")
    if len(set(spec.rectify_without_review)) != len(spec.rectify_without_review):
        add("rectify_without_review", "a field is listed twice")
    for key, transfer in spec.transfers.items():
        refs(f"transfers.{key}.recipients", transfer.recipients, spec.recipients, "recipient")
    for key, right in spec.rights.items():
        refs(f"rights.{key}.regimes", right.regimes, spec.regimes, "regime")
    for key, regime in spec.regimes.items():
        refs(f"regimes.{key}.authorities", regime.authorities, spec.authorities, "authority")
        _check_deadline(file, f"regimes.{key}.deadline", regime.deadline, problems)
        _check_deadline(file, f"regimes.{key}.extension", regime.extension, problems)
        _check_deadline(file, f"regimes.{key}.acknowledge", regime.acknowledge, problems)
        for index, calendar in enumerate(regime.calendars):
            where = f"regimes.{key}.calendars[{index}]"
            if calendar.name is not None and calendar.name not in spec.calendars:
                add(where, f"calendar {calendar.name!r} is not in calendars")
            if calendar.country is not None:
                why = unsupported(Jurisdiction(calendar.country, calendar.subdivision))
                if why is not None:
                    add(where, why)
            if set(calendar.closed_days) & set(calendar.working_days):
                add(where, "a day is listed both as closed and as a working day")
    for key, named in spec.calendars.items():
        where = f"calendars.{key}"
        if named.country is not None:
            why = unsupported(Jurisdiction(named.country, named.subdivision))
            if why is not None:
                add(where, why)
        if named.market is not None and (why := unsupported_market(named.market)) is not None:
            add(where, why)
        if set(named.closed_days) & set(named.working_days):
            add(where, "a day is listed both as closed and as a working day")


# How far ahead a deadline started today can end (GDPR: one month plus two, rolled): the years a
# calendar must know for ``policy check`` not to warn.
CALENDAR_HORIZON = timedelta(days=120)


def calendar_warnings(document: PolicyDocument, today: date) -> list[Problem]:
    """Regime calendars that depend on a yearly announcement (China's make-up working days, a named
    calendar of listed days) with no data for a year a deadline started today can reach. A warning,
    not an error: the package knows the fixed holidays, so deadlines still run, but make-up working
    days are missing (upgrade ``holidays`` or list the year's days in policy.yaml)."""
    years = sorted({today.year, (today + CALENDAR_HORIZON).year})
    warnings: list[Problem] = []
    for key, regime in document.spec.regimes.items():
        for index, source in enumerate(regime_sources(document.spec, regime)):
            for year in uncovered_years(source, years):
                warnings.append(
                    Problem(
                        POLICY_FILE,
                        f"regimes.{key}.calendars[{index}]",
                        f"calendar {source.label} has no data for {year} (holidays {holidays_version()}): "
                        "upgrade the holidays package or list that year's closed_days and working_days",
                    )
                )
    return warnings


# -- notices against policy.yaml and against each other ------------------------------------------


def _texts(notice: Notice) -> Iterator[tuple[str, str]]:
    """(path, text) for every piece of prose in a notice."""
    for key, section in notice.sections.items():
        yield f"sections.{key}.heading", section.heading
        yield f"sections.{key}.body", section.body
    for map_name in _ID_MAPS:
        entries: dict[str, Named] = getattr(notice, map_name)
        for key, named in entries.items():
            yield f"{map_name}.{key}.name", named.name
            if named.description:
                yield f"{map_name}.{key}.description", named.description


def _known_contacts(spec: PolicySpec) -> tuple[set[str], set[str]]:
    emails = {spec.requests.email.lower()}
    urls: set[str] = set()
    people = [spec.controller, spec.dpo, *([spec.controller.representative] if spec.controller.representative else [])]
    for contact in people:
        if contact.email:
            emails.add(contact.email.lower())
        if contact.url:
            urls.add(contact.url.rstrip("/"))
    urls.update(authority.url.rstrip("/") for authority in spec.authorities.values())
    return emails, urls


def _check_sections(file: str, language: str, notice: Notice, problems: list[Problem]) -> None:
    def add(where: str, message: str) -> None:
        problems.append(Problem(file, where, message))

    if notice.language != language:
        add("language", f"says {notice.language!r} but the file name says {language!r}")
    for section, reference in SECTIONS:
        if section not in notice.sections:
            add(f"sections.{section}", f"required item missing in this language ({reference})")
    for section in notice.sections:
        if section not in dict(SECTIONS):
            add(f"sections.{section}", "not a section of the notice (see SECTIONS in privacy_service/policy)")


def _check_notice(file: str, language: str, spec: PolicySpec, notice: Notice, problems: list[Problem]) -> None:
    """The notice against the structured facts: the same ids, and no contact the policy does not list."""

    def add(where: str, message: str) -> None:
        problems.append(Problem(file, where, message))

    for map_name in _ID_MAPS:
        facts: Mapping[str, Any] = getattr(spec, map_name)
        prose: Mapping[str, Named] = getattr(notice, map_name)
        for key in facts:
            if key not in prose:
                add(f"{map_name}.{key}", f"{POLICY_FILE} defines this but the {language} notice does not describe it")
        for key in prose:
            if key not in facts:
                add(f"{map_name}.{key}", f"not in {POLICY_FILE}: the {language} notice and the policy disagree")
    emails, urls = _known_contacts(spec)
    for where, text in _texts(notice):
        for email in _EMAIL.findall(text):
            if email.lower() not in emails:
                add(where, f"names the e-mail address {email} which {POLICY_FILE} does not list as a contact")
        for url in _URL.findall(text):
            url = url.rstrip("/.,;:")
            if not any(url == known or url.startswith(known + "/") for known in urls):
                add(where, f"links to {url} which {POLICY_FILE} does not list (controller, dpo or authorities)")


def _check_numbers(base_file: str, base: Notice, file: str, notice: Notice, problems: list[Problem]) -> None:
    """Numbers are language-neutral: a period, an article or a count in one language must be in the other."""
    base_texts = dict(_texts(base))
    for where, text in _texts(notice):
        if where not in base_texts:
            continue
        ours, theirs = set(_NUMBER.findall(text)), set(_NUMBER.findall(base_texts[where]))
        if ours != theirs:
            extra = ", ".join(sorted(ours - theirs)) or "-"
            missing = ", ".join(sorted(theirs - ours)) or "-"
            problems.append(
                Problem(
                    file,
                    where,
                    f"the languages disagree on a fact: numbers only here: {extra}; only in {base_file}: {missing}",
                )
            )


def check_policy(directory: Path) -> tuple[PolicyDocument | None, list[Problem]]:
    """Load and check every file; the document is returned only when there are no problems."""
    problems: list[Problem] = []
    policy_path = directory / POLICY_FILE
    raw_spec = _read_yaml(policy_path, problems)
    if raw_spec is not None:
        _check_retention(str(policy_path), raw_spec, problems)
    spec = _validate(PolicySpec, raw_spec, str(policy_path), problems)
    if spec is not None:
        _check_spec(str(policy_path), spec, problems)

    found = {path.name.split(".")[1]: path for path in sorted(directory.glob(NOTICE_GLOB))}
    languages = list(spec.languages) if spec is not None else sorted(found)
    notices: dict[str, Notice] = {}
    for index, language in enumerate(languages):
        path = found.get(language, directory / notice_file(language))
        if language not in found:
            problems.append(Problem(str(policy_path), f"languages[{index}]", f"no notice file {notice_file(language)}"))
            continue
        notice = _validate(Notice, _read_yaml(path, problems), str(path), problems)
        if notice is None:
            continue
        notices[language] = notice
        _check_sections(str(path), language, notice, problems)
        if spec is not None:
            _check_notice(str(path), language, spec, notice, problems)
    for language, path in found.items():
        if language not in languages:
            problems.append(Problem(str(path), "", f"language {language!r} is not listed in {POLICY_FILE} languages"))

    if languages and languages[0] in notices:
        base_language = languages[0]
        for language, notice in notices.items():
            if language != base_language:
                base_file = notice_file(base_language)
                _check_numbers(base_file, notices[base_language], str(found[language]), notice, problems)

    if problems or spec is None:
        return None, problems
    files = [policy_path, *(found[language] for language in notices)]
    modified = datetime.fromtimestamp(max(path.stat().st_mtime for path in files), tz=UTC)
    return PolicyDocument(spec=spec, notices=notices, modified_at=modified), []


def load_policy(directory: Path) -> PolicyDocument:
    document, problems = check_policy(directory)
    if document is None:
        raise PolicyError(problems)
    return document

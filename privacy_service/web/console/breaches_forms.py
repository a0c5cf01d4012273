"""The breach workspace's forms: an HTML form read into the API's own body (``breaches.schemas``).

No rule is written here: each form is turned into the plain mapping the JSON API would receive and
converted with ``msgspec`` into the same ``schemas`` struct, so lengths, patterns, enumerations and
unknown fields are refused by the very definitions the API uses; cross-field rules stay in the service.
What this module adds is only what a browser form needs: empty fields meaning "not given", checkboxes,
comma-separated lists and ``datetime-local`` values read in the operator's time zone.

The choices a form offers (ENISA levels, recipients, consequences, factors) are read from the schema's
``Literal`` types and from ``policies/breach.yaml``, never listed again here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, get_args
from zoneinfo import ZoneInfo

import msgspec

from privacy_service.breaches import schemas
from privacy_service.breaches.policy import (
    AvailabilityLevel,
    BreachPolicy,
    ConfidentialityLevel,
    EaseLevel,
    IntegrityLevel,
    RecipientData,
    RecipientTrust,
)
from privacy_service.errors import Conflict

T = TypeVar("T")

# The ENISA choices, from the body's own types (a level added there appears in the form).
NATURES: tuple[str, ...] = get_args(schemas.Nature)
EASE_LEVELS: tuple[str, ...] = get_args(EaseLevel)
CONFIDENTIALITY: tuple[str, ...] = get_args(ConfidentialityLevel)
INTEGRITY: tuple[str, ...] = get_args(IntegrityLevel)
AVAILABILITY: tuple[str, ...] = get_args(AvailabilityLevel)
RECIPIENT_TRUST: tuple[str, ...] = get_args(RecipientTrust)
RECIPIENT_DATA: tuple[str, ...] = get_args(RecipientData)
OVERRIDES: tuple[str, ...] = tuple(schemas.Overrides.__struct_fields__)
NOTICE_KINDS: tuple[str, ...] = ("initial", "follow_up")
FLAGS = ("encrypted", "key_compromised", "backup_exists", "exfiltration_known", "malicious")
TEXTS = ("mitigation", "consequences", "measures_proposed", "advice")
# The incident's own texts are English; these can be given in each other language of the policy (the
# Art. 33 document and the people's notices in that language use them).
TRANSLATED: tuple[str, ...] = tuple(schemas.Texts.__struct_fields__)
# msgspec names the failing field as "... - at `$.affected.estimated_count`".
_AT = re.compile(r"`\$\.?([A-Za-z_][A-Za-z0-9_]*)?(?:\.([A-Za-z_][A-Za-z0-9_]*))?")
# A problem in a nested body is shown at the form field that holds it.
_FIELD_OF = {"affected": "estimated_count", "recipient": "recipient_trust", "overrides": "overrides", "": "form"}


class Form:
    """The posted form, read like the browser sent it (``getall`` for checkboxes)."""

    def __init__(self, data: Any) -> None:
        self._data = data

    def has(self, name: str) -> bool:
        """Whether the browser sent the field at all (an empty text input is sent; an unticked box is not)."""
        return name in self._data

    def text(self, name: str) -> str | None:
        value = str(self._data.get(name, "") or "").strip()
        return value or None

    def all(self, name: str) -> list[str]:
        return [str(v) for v in self._data.getall(name, []) if str(v).strip()]

    def checked(self, name: str) -> bool:
        return self.text(name) is not None

    def words(self, name: str) -> list[str]:
        """A comma- or space-separated list (countries): each part as given, the schema checks its shape."""
        return [part for part in re.split(r"[\s,]+", self.text(name) or "") if part]

    def number(self, name: str) -> Any:
        """A count: an int when it reads as one, otherwise the text itself for the schema to refuse."""
        value = self.text(name)
        if value is None:
            return None
        return int(value) if value.isdigit() and len(value) <= 12 else value

    def choice(self, name: str) -> bool | None:
        """A yes / no / not-given select."""
        return {"yes": True, "no": False}.get(self.text(name) or "")


def local_moment(value: str | None, zone: ZoneInfo) -> Any:
    """A ``datetime-local`` value in the operator's zone as an aware moment; anything else is passed on
    as given so the schema refuses it (never guessed)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).isoformat()


def local_input(moment: datetime | None, zone: ZoneInfo) -> str:
    """A moment as the value of a ``datetime-local`` input in the operator's zone."""
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M") if moment else ""


@dataclass
class FormProblem(Exception):
    """The form did not make a valid body: field id -> the schema's message (English, no value echoed)."""

    errors: dict[str, str] = field(default_factory=dict)


def convert(kind: type[T], body: Mapping[str, Any]) -> T:
    """The body as the API's struct, or :class:`FormProblem` naming the field the schema refused."""
    try:
        return msgspec.convert(body, type=kind, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = _AT.search(message)
        top = (found.group(1) or "") if found else ""
        name = _FIELD_OF.get(top, top)
        if top == "dpc_factors":
            name = "dpc"
        raise FormProblem({name or "form": message.split(" - at ")[0]}) from None


def _drop_none(body: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in body.items() if value is not None}


def translations(form: Form, languages: Iterable[str]) -> dict[str, dict[str, str]]:
    """The texts given in other languages (fields ``tr__<language>__<text>``), empty ones left out."""
    out: dict[str, dict[str, str]] = {}
    for language in languages:
        given = {name: form.text(f"tr__{language}__{name}") for name in TRANSLATED}
        kept = {name: value for name, value in given.items() if value is not None}
        if kept:
            out[language] = kept
    return out


def facts(form: Form, zone: ZoneInfo, languages: Iterable[str] = ()) -> dict[str, Any]:
    """The facts of the record / edit form as the API's body (create, or PATCH with every field)."""
    body: dict[str, Any] = {
        "title": form.text("title") or "",
        "description": form.text("description") or "",
        "nature": form.all("nature"),
        "categories": form.all("categories"),
        "data_types": form.all("data_types"),
        "affected_countries": [word.upper() for word in form.words("affected_countries")],
        "occurred_from": local_moment(form.text("occurred_from"), zone),
        "occurred_to": local_moment(form.text("occurred_to"), zone),
        "approx_records": form.number("approx_records"),
        **{flag: form.checked(flag) for flag in FLAGS},
        **{name: form.text(name) for name in TEXTS},
        "translations": translations(form, languages),
    }
    aware_at = local_moment(form.text("aware_at"), zone)
    if aware_at is not None:
        body["aware_at"] = aware_at
    return body


def create_body(form: Form, zone: ZoneInfo, languages: Iterable[str] = ()) -> schemas.BreachCreate:
    body = _drop_none(facts(form, zone, languages))
    body["affected"] = {"estimated_count": form.number("estimated_count")}
    if body["affected"]["estimated_count"] is None:
        body["affected"] = {"estimated_count": ""}  # required: the schema says what is wrong
    return convert(schemas.BreachCreate, body)


# The edit form's groups of boxes: an unticked box is not sent, so the form names each group it shows
# (``_present``) and a group it does not name is left as stored.
FACT_GROUPS: tuple[str, ...] = ("nature", "categories", "data_types", *FLAGS)
STALE_FACTS = "this incident has changed since the form was opened: nothing was changed; reload it to see the changes"


def check_fresh(form: Form, current: schemas.BreachView) -> None:
    """The edit form carries the version it was rendered from; another operator's change since (any new
    version of the incident) makes it stale: a 409 with nothing changed, never a silent undo."""
    if form.text("version") != str(current.version):
        raise Conflict(STALE_FACTS)


def _given(form: Form, name: str) -> bool:
    """Whether the post says anything about ``name``: a field left out of a partial post changes nothing."""
    if name in FACT_GROUPS:
        return name in form.all("_present")
    return form.has(name)


def _translations(form: Form, languages: Iterable[str], stored: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The stored translations with the posted fields applied (one left out of the post stays as stored)."""
    out = {language: dict(texts) for language, texts in stored.items()}
    for language in languages:
        texts = out.setdefault(language, {})
        for name in TRANSLATED:
            key = f"tr__{language}__{name}"
            if form.has(key):
                value = form.text(key)
                if value is None:
                    texts.pop(name, None)
                else:
                    texts[name] = value
    return {language: texts for language, texts in out.items() if texts}


def patch_body(
    form: Form, zone: ZoneInfo, current: schemas.BreachView, languages: Iterable[str] = ()
) -> schemas.BreachPatch:
    """Only the facts the edit form changed (the form shows the stored ones): the service makes each
    change a new version, so a field sent unchanged (a time shown to the minute, a list in another order)
    must not look like one, and a field not sent at all is not a change either. The affected people only
    when the estimate was changed. A form rendered from an older version is refused (:func:`check_fresh`)."""
    check_fresh(form, current)
    languages = list(languages)
    body = facts(form, zone, languages)
    body.setdefault("aware_at", None)
    body["translations"] = _translations(form, languages, current.translations)
    stored = {
        "categories": [item.key for item in current.categories],
        "data_types": [item.key for item in current.data_types],
    }
    changed: dict[str, Any] = {}
    for name, value in body.items():
        if name != "translations" and not _given(form, name):
            continue
        before = stored.get(name, getattr(current, name, None))
        if name in ("aware_at", "occurred_from", "occurred_to"):
            if (form.text(name) or "") == local_input(getattr(current, name), zone):
                continue
        elif isinstance(value, list) and isinstance(before, list):
            if sorted(map(str, value)) == sorted(map(str, before)):
                continue
        elif value == before:
            continue
        changed[name] = value
    if changed.get("aware_at", "") is None:
        del changed["aware_at"]  # a cleared awareness time is not a change the API knows
    # Identified subjects (ids, a selector) are never replaced by a number typed here: only an estimate is edited.
    estimate = form.number("estimated_count")
    if current.affected.kind == "estimate" and estimate is not None and estimate != current.affected.count:
        changed["affected"] = {"estimated_count": estimate}
    return convert(schemas.BreachPatch, changed)


def confirm_body(form: Form, zone: ZoneInfo) -> schemas.ConfirmBody:
    return convert(
        schemas.ConfirmBody,
        _drop_none({"aware_at": local_moment(form.text("aware_at"), zone), "note": form.text("note")}),
    )


def dismiss_body(form: Form) -> schemas.DismissBody:
    return convert(schemas.DismissBody, {"reason": form.text("reason") or ""})


def factor_targets(rules: BreachPolicy, targets: Iterable[str]) -> list[dict[str, Any]]:
    """For each category / data type of the incident: the ENISA factors the policy allows for its data
    type, and the policy's defaults (checked in the form)."""
    out = []
    for target in targets:
        spec = rules.data_spec(target)
        if spec is None:
            continue
        allowed = [
            {"name": name, "description": factor.description, "adjust": factor.adjust}
            for name, factor in rules.enisa.factors.items()
            if rules.factor_allowed(target, name)
        ]
        out.append({"key": target, "type": spec.type, "factors": allowed, "defaults": list(spec.factors)})
    return out


def assessment_body(form: Form, targets: Iterable[str]) -> schemas.AssessmentBody:
    """The ENISA form as ``POST /assessment``'s body. Each target's factor boxes replace the policy's
    defaults for it (they are shown checked), as ``dpc_factors`` does in the API."""
    body: dict[str, Any] = {
        "ease_of_identification": form.text("ease_of_identification") or "",
        "confidentiality": form.text("confidentiality"),
        "integrity": form.text("integrity"),
        "availability": form.text("availability"),
        "malicious": form.choice("malicious"),
        "eu_main_establishment": form.choice("eu_main_establishment"),
        "consequences": form.all("consequences"),
        "contained": form.checked("contained"),
        "mitigated": form.checked("mitigated"),
        "disproportionate_effort": form.checked("disproportionate_effort"),
        "note": form.text("note"),
        "dpc_factors": {
            target: form.all(f"dpc__{target}") for target in targets if form.checked(f"dpc_shown__{target}")
        },
    }
    trust, data = form.text("recipient_trust"), form.text("recipient_data")
    if trust or data:
        body["recipient"] = _drop_none({"trust": trust, "data": data})
    overrides = {}
    for name in OVERRIDES:
        value = form.choice(f"override_{name}")
        if value is not None:
            overrides[name] = {"value": value, "justification": form.text(f"justification_{name}") or ""}
    if overrides:
        body["overrides"] = overrides
    return convert(schemas.AssessmentBody, _drop_none(body))


def authority_body(form: Form, zone: ZoneInfo) -> schemas.AuthorityNotificationBody:
    return convert(
        schemas.AuthorityNotificationBody,
        _drop_none(
            {
                "recipient": form.text("recipient") or "",
                "authority": form.text("authority"),
                "kind": form.text("kind"),
                "sent_at": local_moment(form.text("sent_at"), zone),
                "reason_for_delay": form.text("reason_for_delay"),
                "note": form.text("note"),
            }
        ),
    )


def public_body(form: Form, zone: ZoneInfo) -> schemas.PublicCommunicationBody:
    return convert(
        schemas.PublicCommunicationBody,
        _drop_none(
            {
                "channel": form.text("channel") or "",
                "url": form.text("url"),
                "published_at": local_moment(form.text("published_at"), zone),
            }
        ),
    )


def close_body(form: Form) -> schemas.CloseBody:
    return convert(
        schemas.CloseBody,
        _drop_none({"note": form.text("note"), "california_not_required": form.text("california_not_required")}),
    )

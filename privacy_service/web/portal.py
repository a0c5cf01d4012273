"""The request portal's pages: form parsing, view models and rendering.

Nothing here decides anything about a request: the form becomes the API's own
:class:`~privacy_service.dsr.schemas.RequestCreate`, :class:`~privacy_service.dsr.service.DsrService`
validates and acts, and its answers (and its errors) are turned into pages in the visitor's language.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.utils.scope.state import ScopeState

from privacy_service.config import Settings
from privacy_service.dsr import schemas
from privacy_service.dsr.answer import AnswerData
from privacy_service.dsr.flows import Status
from privacy_service.errors import InvalidInput
from privacy_service.policy.document import PolicyDocument
from privacy_service.policy.render import policy_view
from privacy_service.subjects.schemas import ShortText
from privacy_service.web.i18n import (
    format_locale,
    language_links,
    local_time,
    long_date,
    messages,
    remembered_choice,
)
from privacy_service.web.pages import HTML_CSP, html_response

# The portal's pages may load one script of ours (progressive enhancement only).
PORTAL_CSP = HTML_CSP + "; script-src 'self'"
TOKEN_COOKIE = "privacy_request"  # noqa: S105 - the cookie's name, not a secret
PORTAL_PATH = "/privacy/request"
SHORT_TEXT_MAX = 320
REASON_MAX = 2000
# Where an error the service reports about a field of the API body is shown on the form.
SERVICE_FIELDS = {
    "identity.email": ("email", "email_invalid"),
    "identity.phone": ("phone", "phone_invalid"),
    "changes.email": ("new_email", "new_email_invalid"),
    "changes.phone": ("new_phone", "new_phone_invalid"),
    "changes": ("changes", "changes_required"),
}
ANSWERED = frozenset({Status.COMPLETED, Status.PARTIALLY_COMPLETED, Status.DENIED})
UNANSWERED_END = frozenset({Status.VERIFICATION_FAILED, Status.EXPIRED, Status.CANCELLED})


def request_path(request_id: object) -> str:
    return f"/privacy/requests/{request_id}"


def field_id(name: str) -> str:
    return name.replace(".", "-").replace("_", "-")


# -- the request form ---------------------------------------------------------------------------


@dataclass(slots=True)
class RequestForm:
    """What the visitor typed (shown back to them only), the API body built from it, and the errors."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    body: schemas.RequestCreate | None = None


def request_types(document: PolicyDocument) -> list[str]:
    """The request types the policy offers (its rights with a request type), in the policy's order."""
    return [right.request_type for right in document.spec.rights.values() if right.request_type is not None]


def _fits(value: str, maximum: int) -> bool:
    try:
        msgspec.convert(value, ShortText if maximum == SHORT_TEXT_MAX else schemas.Reason)
    except msgspec.ValidationError:
        return False
    return True


def default_regime(settings: Settings, document: PolicyDocument, language: str) -> str:
    """The law the form preselects: the one configured for the visitor's language, if the policy has it."""
    chosen = settings.dsr_default_regime_by_language.get(language)
    return chosen if chosen in document.spec.regimes else settings.dsr_default_regime


def parse_request_form(
    form: Mapping[str, str], document: PolicyDocument, language: str, default_regime: str
) -> RequestForm:
    """Check what only the form can get wrong (a choice not made, a field too long) and build the API body.

    Everything else (the identifier's format, whether the corrections are acceptable) is checked by
    :meth:`DsrService.submit`, exactly as for an API client; see :func:`service_errors`.
    """
    m = messages(language)["errors"]
    profile_names = list(document.profile_fields)
    names = ["type", "identity_kind", "email", "phone", "new_email", "new_phone", "regime", "language", "reason"]
    values = {name: str(form.get(name, "")).strip() for name in names}
    values.update({f"profile.{name}": str(form.get(f"profile.{name}", "")).strip() for name in profile_names})
    values["regime"] = values["regime"] or default_regime
    values["language"] = values["language"] or language
    result = RequestForm(values=values)
    errors = result.errors

    kind = values["type"]
    if kind not in request_types(document):
        errors["type"] = m["type_required"]
    identity_kind = values["identity_kind"]
    if identity_kind not in ("email", "phone"):
        errors["identity_kind"] = m["identity_kind_required"]
    elif not values[identity_kind]:
        errors[identity_kind] = m[f"{identity_kind}_required"]
    for name in ("email", "phone", "new_email", "new_phone", *(f"profile.{n}" for n in profile_names)):
        if values[name] and not _fits(values[name], SHORT_TEXT_MAX):
            errors.setdefault(name, m["too_long"].format(max=SHORT_TEXT_MAX))
    if values["reason"] and not _fits(values["reason"], REASON_MAX):
        errors["reason"] = m["too_long"].format(max=REASON_MAX)
    if values["regime"] not in document.spec.regimes:
        errors["regime"] = m["choice_invalid"]
    if values["language"] not in document.languages:
        errors["language"] = m["choice_invalid"]

    changes: dict[str, Any] | None = None
    if kind == "rectify":
        profile = {name: values[f"profile.{name}"] for name in profile_names if values[f"profile.{name}"]}
        changes = {"profile": profile}
        for api_name, name in (("email", "new_email"), ("phone", "new_phone")):
            if values[name]:
                changes[api_name] = values[name]
    if errors:
        return result
    body: dict[str, Any] = {
        "type": kind,
        "identity": {identity_kind: values[identity_kind]},
        "regime": values["regime"],
        "language": values["language"],
    }
    if changes is not None:
        body["changes"] = changes
    if values["reason"]:
        body["reason"] = values["reason"]
    result.body = msgspec.convert(body, schemas.RequestCreate)
    return result


def form_view(document: PolicyDocument, language: str, form: RequestForm) -> dict[str, Any]:
    """The form's choices, worded from the policy: request types (its rights), laws, profile fields by category."""
    notice = document.notices[language]
    m = messages(language)
    rights = {right.request_type: key for key, right in document.spec.rights.items() if right.request_type}
    groups: dict[str, list[dict[str, Any]]] = {}
    for name, category in document.profile_fields.items():
        named = notice.profile_fields.get(name)
        groups.setdefault(category, []).append(
            {
                "name": f"profile.{name}",
                "label": named.name if named else name,
                "hint": named.description if named else None,
            }
        )
    types = request_types(document)
    return {
        "title": m["form"]["title"],
        "values": form.values,
        "errors": form.errors,
        "anchors": {"type": f"type-{types[0]}", "identity_kind": "identity-kind-email"},
        "types": [
            {
                "value": value,
                "label": m["types"].get(value, value),
                "description": notice.rights[rights[value]].description if value in rights else None,
            }
            for value in types
        ],
        "profile_groups": [
            {
                "name": _named(notice.data_categories, category),
                "fields": fields,
                "open": any(form.values.get(item["name"]) or item["name"] in form.errors for item in fields),
            }
            for category, fields in groups.items()
        ],
        "regimes": [{"value": key, "name": _named(notice.regimes, key)} for key in document.spec.regimes],
    }


def service_errors(exc: InvalidInput, language: str) -> dict[str, str]:
    """The service's verdict on the body, as messages next to the form's fields (never its raw text)."""
    m = messages(language)["errors"]
    errors: dict[str, str] = {}
    for item in exc.extra.get("errors", []):
        target = SERVICE_FIELDS.get(str(item.get("field", "")))
        if target is not None:
            errors.setdefault(target[0], m[target[1]])
    return errors or {"type": m["choice_invalid"]}


# -- the status page ----------------------------------------------------------------------------


def _named(entries: Mapping[str, Any], key: str) -> str:
    named = entries.get(key)
    return str(named.name) if named is not None else key


def _steps(view: schemas.RequestView, language: str, zone: tzinfo) -> list[dict[str, Any]]:
    """The steps of the request, each done, current or to come, with when it was done."""
    m = messages(language)["status"]
    reached = {step.status: step.at for step in view.history}
    status = Status(view.status)
    steps: list[dict[str, Any]] = [{"label": m["step_received"], "state": "done", "at": view.received_at}]
    verified = {"label": m["step_verified"], "state": "upcoming", "at": view.verified_at}
    if view.verified_at is not None:
        verified["state"] = "done"
    elif status == Status.AWAITING_VERIFICATION:
        verified["state"] = "current"
    steps.append(verified)
    if Status.AWAITING_REVIEW in reached:
        review_done = status != Status.AWAITING_REVIEW
        steps.append(
            {
                "label": m["step_review"],
                "state": "done" if review_done else "current",
                "at": reached.get(Status.PROCESSING) if review_done else None,
            }
        )
    if status in UNANSWERED_END:
        steps.append({"label": m["step_closed"], "state": "done", "at": view.completed_at or reached.get(status)})
    else:
        answer = {"label": m["step_answer"], "state": "upcoming", "at": view.completed_at}
        if status in ANSWERED:
            answer["state"] = "done"
        elif status in (Status.PROCESSING, Status.VERIFIED):
            answer["state"] = "current"
        steps.append(answer)
    for step in steps:
        step["at"] = local_time(step["at"], language, zone) if step["at"] is not None else None
    return steps


def _recipient_names(document: PolicyDocument, stored: list[str], language: str) -> list[str]:
    """Recipients are stored by their name in the default language; show them in the visitor's."""
    default = document.notices[document.default_language].recipients
    ids = {named.name: key for key, named in default.items()}
    notice = document.notices[language]
    return [_named(notice.recipients, ids[name]) if name in ids else name for name in stored]


def _shown(value: Any) -> str:
    return str(value) if isinstance(value, str | int | float | bool) else msgspec.json.encode(value).decode()


def data_view(answer: AnswerData, document: PolicyDocument, language: str, zone: tzinfo) -> list[dict[str, Any]]:
    """The customer's data by category, in the policy's order, each with its purposes and retention."""
    m = messages(language)
    notice = document.notices[language]
    labels = notice.labels
    subject = answer.subject
    fields: dict[str, list[dict[str, str]]] = {}
    for kind in ("email", "phone", "external_id"):
        value = getattr(subject, kind)
        category = document.identifier_fields.get(kind)
        if value is not None and category is not None:
            fields.setdefault(category, []).append({"label": m["answer"][kind], "value": value})
    for name, value in subject.profile.items():
        category = subject.profile_categories.get(name) or document.profile_fields.get(name)
        if category is not None:
            fields.setdefault(category, []).append(
                {"label": _named(notice.profile_fields, name), "value": _shown(value)}
            )
    groups = []
    for category in policy_view(document, language)["data_categories"]:
        key = category["key"]
        if key not in answer.held:
            continue
        retention = category["retention"]
        records = answer.records.get(key, [])
        groups.append(
            {
                "id": "data-" + key.replace(".", "-"),
                "name": category["name"],
                "description": category["description"],
                "fields": fields.get(key, []),
                "records": [
                    {
                        "when": local_time(record.occurred_at, language, zone),
                        "kind": m["answer"]["kinds"].get(record.kind, record.kind),
                        "details": [(name, _shown(value)) for name, value in record.data.items()],
                    }
                    for record in records
                ],
                "count": answer.held[key],
                "more": answer.held[key] > len(records),
                "purposes": [purpose["name"] for purpose in category["purposes"]],
                # "6 months after your account is closed" / "Then: Deleted", in the notice's own words.
                "kept": [retention["summary"], f"{labels.retention_action}{labels.colon}{retention['action_label']}"],
                "kept_longer": retention["legal_duty"]["summary"] if retention["legal_duty"] else None,
            }
        )
    return groups


def status_view(
    view: schemas.RequestView, document: PolicyDocument, language: str, answer: AnswerData | None = None
) -> dict[str, Any]:
    """Everything the status page shows, worded in ``language``; no personal data but what the answer holds
    (``answer``: the customer's own data, for the verified visitor of an answered access request)."""
    m = messages(language)
    notice = document.notices[language]
    zone = document.display_zone
    result = view.result or {}
    categories = [_named(notice.data_categories, key) for key in result.get("categories", [])]
    changed = []
    for name in result.get("changed_fields", []):
        if name.startswith("profile."):
            changed.append(_named(notice.profile_fields, name.removeprefix("profile.")))
        else:
            changed.append(m["form"][f"new_{name}"] if f"new_{name}" in m["form"] else name)
    kept = [
        {
            "category": _named(notice.data_categories, item["category"]),
            "basis": item["basis"],
            # A legal hold keeps with no end date (its basis says so): no date, not a 500.
            "until": long_date(datetime.fromisoformat(item["until"]), language) if item["until"] else "—",
        }
        for item in result.get("kept", [])
    ]
    return {
        "id": str(view.id),
        "type": view.type,
        "type_label": m["types"].get(view.type, view.type),
        "status": view.status,
        "status_label": m["statuses"][view.status],
        "next": m["next"][view.status],
        "received": local_time(view.received_at, language, zone),
        "due": long_date(view.due_at, language),
        "due_iso": view.due_at.date().isoformat(),
        "open": Status(view.status) not in ANSWERED | UNANSWERED_END,
        "extended": view.extended,
        "overdue": view.overdue,
        "steps": _steps(view, language, zone),
        "history": [
            {"at": local_time(step.at, language, zone), "label": m["statuses"][step.status]} for step in view.history
        ],
        "zone": document.spec.display_time_zone,
        "answered": Status(view.status) in ANSWERED,
        "data_found": result.get("data_found"),
        "categories": categories,
        "records": result.get("records"),
        "data": data_view(answer, document, language, zone) if answer is not None else None,
        "download": view.export_url is not None,
        "download_until": long_date(view.export_expires_at, language) if view.export_expires_at else None,
        "changed": changed,
        "erased": [_named(notice.data_categories, key) for key in result.get("erased", [])],
        "kept": kept,
        "recipients": _recipient_names(document, result.get("recipients_to_notify", []), language),
        "decision": view.decision if view.status == Status.DENIED else None,
    }


# -- rendering ----------------------------------------------------------------------------------


def base_context(request: Request[Any, Any, Any], language: str, page_path: str) -> dict[str, Any]:
    """What every portal page needs: its words, the language switch, the CSRF token."""
    document: PolicyDocument = request.app.state.policy
    settings: Settings = request.app.state.runtime.settings
    m = messages(language)
    return {
        "language": language,
        "m": m,
        # The verification code's validity, as the mail states it (one setting for both).
        "code_minutes": settings.dsr_code_ttl_minutes,
        "date_locale": format_locale(language),
        "brand": f"{document.spec.controller.name} · {m['site']['brand']}",
        "languages": language_links(document.languages, page_path, language),
        "csrf_token": ScopeState.from_scope(request.scope).csrf_token or "",
        "errors": {},
        "values": {},
        "anchors": {},
        "field_id": field_id,
    }


def remember_language(request: Request[Any, Any, Any], language: str) -> list[Cookie]:
    """A ``?lang=`` choice is remembered for the visitor's next pages."""
    return remembered_choice(request, language, path="/privacy", samesite="lax")


def render(
    template: str,
    context: Mapping[str, Any],
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    cookies: list[Cookie] | None = None,
) -> Response[bytes]:
    return html_response(template, context, csp=PORTAL_CSP, status_code=status_code, headers=headers, cookies=cookies)

"""What the console's request pages show, built from the services' answers (no rule of the request's flow here).

The queue reads ``Reading.list_requests`` (the API's own keyset listing); a request's page reads
``Reading.view`` (what the API shows an operator), ``Reading.case_file`` (identity and note) and the
portal's ``status_view`` (the customer's answer, in the customer's language). Which decisions are
offered follows the state machine's table (``dsr.flows``); the services check them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args
from urllib.parse import urlencode

import msgspec

from privacy_service.dsr import schemas
from privacy_service.dsr.flows import EXTENDABLE, TRANSITIONS, Status
from privacy_service.dsr.reading import ANY_STATUS, OPEN_STATUSES, CaseFile
from privacy_service.errors import InvalidInput
from privacy_service.policy.document import PolicyDocument
from privacy_service.web.i18n import messages
from privacy_service.web.portal import status_view

REQUEST_TYPES: tuple[str, ...] = get_args(schemas.RequestType)
OVERDUE = {"yes": True, "no": False}
CURSOR_MAX = 100  # the API's own bound on ``after``
# What a reason may be: the API's body (schemas.Reason: 1 to 2000 characters), checked by msgspec.
REASON_MAX = 2000
DAYS_MAX = 92


@dataclass(frozen=True, slots=True)
class QueueFilters:
    status: str = OPEN_STATUSES  # the open requests unless the operator asks for all or one status
    type: str | None = None
    regime: str | None = None
    overdue: str | None = None  # "yes" / "no"
    after: str | None = None

    def query(self, **changes: str | None) -> str:
        """The queue's query string with these filters (and ``changes``), empty values left out."""
        values = {
            "status": self.status,
            "type": self.type,
            "regime": self.regime,
            "overdue": self.overdue,
            "after": self.after,
        }
        values.update(changes)
        kept = {name: value for name, value in values.items() if value}
        return "?" + urlencode(kept) if kept else ""


def parse_filters(params: Mapping[str, str], regimes: list[str]) -> QueueFilters:
    """The queue's GET form; a value the form never offers is refused (422), not silently ignored."""

    def pick(name: str, allowed: list[str] | tuple[str, ...]) -> str | None:
        value = params.get(name) or None
        if value is not None and value not in allowed:
            raise InvalidInput(f"{name}: not one of the offered values")
        return value

    after = params.get("after") or None
    if after is not None and len(after) > CURSOR_MAX:
        raise InvalidInput("after: not a cursor returned by this page")
    return QueueFilters(
        status=pick("status", [OPEN_STATUSES, ANY_STATUS, *(s.value for s in Status)]) or OPEN_STATUSES,
        type=pick("type", REQUEST_TYPES),
        regime=pick("regime", regimes),
        overdue=pick("overdue", tuple(OVERDUE)),
        after=after,
    )


def allowed_actions(view: schemas.RequestView, now: datetime) -> dict[str, bool]:
    """The decisions the page offers, read from the state machine (the services check them again)."""
    targets = TRANSITIONS[Status(view.status)]
    return {
        "approve": Status.PROCESSING in targets,
        "deny": Status.DENIED in targets,
        "extend": Status(view.status) in EXTENDABLE and not view.extended and now <= view.due_at,
        "cancel": Status.CANCELLED in targets,
    }


def reason_error(reason: str, c: Mapping[str, Any]) -> str | None:
    """The API's check of a reason (its body's msgspec constraints), worded for the form."""
    if not reason:
        return str(c["reason_required"])
    try:
        msgspec.convert({"reason": reason}, schemas.DenyBody)
    except msgspec.ValidationError:
        return str(c["reason_too_long"]).format(max=REASON_MAX)
    return None


def days_value(text: str) -> int | None:
    """The extension's days as the API's body takes them (``ExtendBody.days``); ValueError if not."""
    if not text:
        return None
    if not text.isdigit() or len(text) > 3:
        raise ValueError(text)
    try:
        return msgspec.convert({"reason": "x", "days": int(text)}, schemas.ExtendBody).days
    except msgspec.ValidationError:
        raise ValueError(text) from None


def _field_label(document: PolicyDocument, language: str, name: str) -> str:
    if name.startswith("profile."):
        short = name.removeprefix("profile.")
        named = document.notices[language].profile_fields.get(short)
        return str(named.name) if named is not None else short
    form = messages(language)["form"]
    return str(form.get(f"new_{name}", name))


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def changes_view(
    view: schemas.RequestView, document: PolicyDocument, language: str, c: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """A correction as rows ``field: from -> to``; a value the service did not give (no subjects:read,
    or not awaiting review for ``from``) is None and the page says why."""
    rows = []
    for name, change in (view.changes or {}).items():
        has_to = change.to is not msgspec.UNSET
        has_from = change.from_ is not msgspec.UNSET
        rows.append(
            {
                "field": _field_label(document, language, name),
                "to": (_shown(change.to) if change.to is not None else c["removed"]) if has_to else None,
                "from": (_shown(change.from_) if change.from_ is not None else c["none_on_file"]) if has_from else None,
                "has_to": has_to,
                "has_from": has_from,
            }
        )
    return rows


def page_view(
    view: schemas.RequestView,
    case: CaseFile,
    document: PolicyDocument,
    language: str,
    c: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """Everything the request's page shows (``c``: the console's requests words in the operator's language)."""
    customer_language = view.language if view.language in document.languages else document.default_language
    changes = changes_view(view, document, language, c)
    return {
        "view": view,
        "case": case,
        "changes": changes,
        "values_hidden": bool(changes) and not any(row["has_to"] for row in changes),
        "from_missing": any(row["has_to"] and not row["has_from"] for row in changes),
        "actions": allowed_actions(view, now),
        "answer": status_view(view, document, customer_language),
        "customer_language": customer_language,
        "cm": messages(customer_language),
    }

"""The subjects area's forms, read from a posted form into what the services take, with the problems to show.

Nothing a visitor typed is ever put back into an error text: an identifier or a hold's reason may be personal
data, so errors are fixed sentences from the catalog and the identifier field comes back empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from privacy_service.retention.schemas import HoldCreate
from privacy_service.subjects.service import IDENTIFIERS
from privacy_service.web.console.reasons import chosen_reason

IDENTIFIER_MAX = 320  # the API's longest identifier (an e-mail address)
HOLD_REASON_MAX = 500  # retention.schemas.Reason
# Why a hold is released / a subject erased from the console: codes, recorded in the audit log as they are.
RELEASE_REASONS = ("matter_closed", "claim_time_barred", "court_order_lifted", "placed_in_error")
ERASE_REASONS = ("request_outside_portal", "regulator_or_court", "duplicate_or_test")

Form = Mapping[str, Any]
Errors = dict[str, str]


def _text(form: Form, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def lookup_form(form: Form, s: Mapping[str, Any]) -> tuple[str, str, Errors]:
    """The kind of identifier and its value (one of the API's: e-mail, phone or external id)."""
    kind, value = _text(form, "kind"), _text(form, "value")
    errors: Errors = {}
    if kind not in IDENTIFIERS:
        errors["kind"] = s["errors"]["kind_required"]
    if not value:
        errors["value"] = s["errors"]["value_required"]
    elif len(value) > IDENTIFIER_MAX or "\x00" in value:
        errors["value"] = s["errors"]["value_invalid"]
    return kind, value, errors


def _end_of_day(day: date, zone: ZoneInfo) -> datetime:
    """A hold "until 31 March" lasts through that day in the operator's zone (shown as 31 March, 23:59)."""
    return datetime.combine(day, time.max, tzinfo=zone)


def hold_form(form: Form, s: Mapping[str, Any], zone: ZoneInfo) -> tuple[HoldCreate | None, Errors]:
    reason, until_text = _text(form, "reason"), _text(form, "until")
    errors: Errors = {}
    if not reason:
        errors["reason"] = s["errors"]["reason_required"]
    elif len(reason) > HOLD_REASON_MAX or "\x00" in reason:
        errors["reason"] = s["errors"]["reason_too_long"]
    until: datetime | None = None
    if until_text:
        try:
            until = _end_of_day(date.fromisoformat(until_text), zone)
        except ValueError:
            errors["until"] = s["errors"]["until_invalid"]
    if errors:
        return None, errors
    return HoldCreate(reason=reason, until=until), {}


def reason_form(
    form: Form, s: Mapping[str, Any], reasons: tuple[str, ...], *, confirm: str | None
) -> tuple[dict[str, str] | None, Errors]:
    """A reason from ``reasons`` and an optional case reference (``reasons.chosen_reason``); with ``confirm``,
    the subject's id typed again."""
    chosen, errors = chosen_reason(form, reasons, s["errors"])
    if confirm is not None and _text(form, "confirm").lower() != confirm.lower():
        errors = {"confirm": s["errors"]["confirm_mismatch"], **errors}
        return None, errors
    return chosen, errors

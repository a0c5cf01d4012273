"""Why an operator did something, as the console records it in the permanent audit log: a code from a fixed
list and, optionally, a case reference.

The audit log is hash-chained and never erased, so nothing typed freely may go into it: free text about a
decision tends to name the person it concerns, and that name could then never be removed. A reason is
therefore one of the area's codes (shown in the operator's language from the catalog) and a case reference
shaped like a ticket number (no spaces, so no sentence, so no personal data), recorded as ``console.reason``.
One home for the pattern, for every area that asks why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# The API's case reference (subjects.schemas.CaseReference): no spaces, so no sentence, so no personal data.
CASE_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{2,63}")
REFERENCE_MAX = 64
ACTION = "console.reason"  # the audit action beside the service's own event

Form = Mapping[str, Any]
Errors = dict[str, str]


def _text(form: Form, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def chosen_reason(
    form: Form, reasons: tuple[str, ...], words: Mapping[str, str]
) -> tuple[dict[str, str] | None, Errors]:
    """The posted ``reason`` (one of ``reasons``) and optional ``reference``, as recorded; or the errors.

    ``words`` holds the area's ``reason_choose`` and ``reference_invalid`` sentences: fixed texts, never
    what was typed (it may be personal data).
    """
    code, reference = _text(form, "reason"), _text(form, "reference")
    errors: Errors = {}
    if code not in reasons:
        errors["reason"] = words["reason_choose"]
    if reference and not CASE_REFERENCE.fullmatch(reference):
        errors["reference"] = words["reference_invalid"]
    if errors:
        return None, errors
    return ({"reason": code, "reference": reference} if reference else {"reason": code}), {}

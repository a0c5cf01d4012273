"""Structured security/operations events for a SIEM: one JSON log line each, ids and counts only.

Every line carries ``siem=true``, an ``event`` name, ``category`` and ``outcome``, so a collector can
route them without parsing messages. Never pass personal data: identities, bodies and returned
data stay out; request, delivery and system ids are opaque.
"""

from __future__ import annotations

from typing import Any

import structlog

log = structlog.get_logger("privacy_service.siem")


def emit(event: str, *, category: str, outcome: str, alert: bool = False, **fields: Any) -> None:
    method = log.error if alert else (log.warning if outcome == "failure" else log.info)
    method(event, siem=True, category=category, outcome=outcome, **fields)

"""Failures that monitoring must see even though the request that met them is rolled back.

A :class:`DataIntegrityError` (stored ciphertext that fails to open, a data key that is gone) aborts
its request, and the request's transaction rolls back with every audit event in it. This application
hook runs after that rollback and records the failure in a transaction of its own, so repeated
failures (tampering) show up in the audit trail that :mod:`privacy_service.breaches.jobs` watches.
"""

from __future__ import annotations

import uuid

import structlog
from litestar.types import Scope
from sqlalchemy.exc import SQLAlchemyError

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.errors import DataIntegrityError

log = structlog.get_logger("privacy_service.breaches.signals")
INTEGRITY_ACTION = "integrity.failure"


async def record_integrity_failure(exc: Exception, scope: Scope) -> None:
    if not isinstance(exc, DataIntegrityError):
        return
    state = scope["litestar_app"].state
    operator = scope.get("state", {}).get("operator")
    actor = operator.actor if operator is not None else Actor("anonymous", "-")
    subject_id = scope.get("path_params", {}).get("subject_id")
    route = scope.get("path_template") or "-"
    try:
        async with state.db.transaction() as session:
            audit.record(
                session,
                at=state.clock.now(),
                actor=actor,
                action=INTEGRITY_ACTION,
                subject_id=subject_id if isinstance(subject_id, uuid.UUID) else None,
                request_id=scope.get("state", {}).get("request_id"),
                outcome="failed",
                detail={"where": str(route)[:100], "method": scope.get("method", "-")},
            )
    except (SQLAlchemyError, OSError) as failure:
        log.warning("integrity_failure_not_recorded", error=type(failure).__name__)

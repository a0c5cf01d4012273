"""Scheduled and command-line checks of the audit chain, each one recorded (``audit_verifications``).

``audit verify`` and the worker's daily ``audit-verify`` job both seal pending entries, check the
chain, and store the verdict, so that ``GET /metrics`` can say when the chain was last verified and
whether the latest check passed: an alert fires when checks stop or one fails.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from privacy_service.audit.checkpoints import SignedCheckpoint
from privacy_service.audit.models import AuditVerification
from privacy_service.audit.service import Verification, seal_pending, verify_chain
from privacy_service.runtime import Runtime

log = structlog.get_logger("privacy_service.audit")
PROBLEM_LENGTH = 200


async def verify_and_record(
    runtime: Runtime,
    *,
    actor: str,
    from_checkpoint: bool = False,
    external: Sequence[SignedCheckpoint] = (),
) -> Verification:
    """Seal, verify, and store the verdict (the caller says it: ``audit verify`` on stderr, the worker in its log)."""
    await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
    verdict = await verify_chain(runtime.db, runtime.audit_key, from_checkpoint=from_checkpoint, external=external)
    async with runtime.db.transaction() as session:
        session.add(
            AuditVerification(
                at=runtime.clock.now(),
                actor=actor,
                ok=verdict.ok,
                from_checkpoint=from_checkpoint,
                checked=verdict.checked,
                start_seq=verdict.start_seq,
                head_seq=verdict.head_seq,
                external=verdict.external,
                broken_seq=verdict.broken_seq,
                problem=verdict.problem[:PROBLEM_LENGTH] if verdict.problem else None,
            )
        )
    return verdict


async def scheduled_verify(runtime: Runtime) -> Verification:
    """The worker's daily check, from the newest signed checkpoint; a broken chain is logged at critical."""
    verdict = await verify_and_record(runtime, actor="worker", from_checkpoint=True)
    if not verdict.ok:
        log.critical("audit_chain_broken", broken_seq=verdict.broken_seq, problem=verdict.problem)
    return verdict

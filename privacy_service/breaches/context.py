"""What every breach use case shares: the incident row, its transitions, its versions, its notices.

:class:`BreachBase` holds the collaborators (session, keys, policy, rules, clock, actor) and the small
steps the use cases are made of. The use cases live by concept: ``incidents`` (record and change the
facts), ``assessment`` (severity and decisions), ``notifications`` (authority, people, public),
``closing`` (open duties, close) and ``register`` (views, register, CSV); ``clocks`` holds the legal
clocks. :class:`~privacy_service.breaches.service.BreachService` joins them. Services never commit.

Every change to an incident is a new version with a snapshot (GDPR Art. 33(5): facts, effects, remedial
action, decisions and their reasons) and an audit event without personal data. Input is checked before
anything is written, so a refused request leaves the incident exactly as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.breaches.flows import Status, check
from privacy_service.breaches.models import AuthorityNotice, Breach, BreachSubject, BreachTransition, BreachVersion
from privacy_service.breaches.policy import BreachPolicy
from privacy_service.clock import Clock
from privacy_service.crypto.service import KeyService
from privacy_service.errors import InvalidInput, NotFound
from privacy_service.notify.models import OutboxMessage
from privacy_service.policy.document import PolicyDocument

DELIVERY_STATES = ("affected", "pending", "queued", "sent", "failed", "skipped_erased", "skipped_no_email")


def require_aware(value: datetime, field: str) -> datetime:
    if value.tzinfo is None:
        raise InvalidInput(f"{field} must include a timezone offset (e.g. 2026-01-31T10:00:00Z)")
    return value


@dataclass(slots=True)
class BreachBase:
    session: AsyncSession
    keys: KeyService
    policy: PolicyDocument
    rules: BreachPolicy
    clock: Clock
    actor: Actor
    request_id: str | None = None
    is_sqlite: bool = True

    # -- helpers -------------------------------------------------------------------------

    async def _get(self, breach_id: uuid.UUID, *, for_update: bool = False) -> Breach:
        query = select(Breach).where(col(Breach.id) == breach_id)
        if for_update and not self.is_sqlite:
            query = query.with_for_update()
        breach = (await self.session.exec(query)).one_or_none()
        if breach is None:
            raise NotFound("no breach incident with this id")
        return breach

    def _transition(self, breach: Breach, target: Status, note: str | None = None) -> None:
        if breach.status == target:
            return
        check(breach.status, target)
        self.session.add(
            BreachTransition(
                breach_id=breach.id,
                from_status=breach.status,
                to_status=target,
                at=self.clock.now(),
                actor_type=self.actor.type,
                actor_id=self.actor.id,
                note=note,
            )
        )
        breach.status = target

    def _version(self, breach: Breach, action: str, changed: Sequence[str], **detail: Any) -> None:
        """A new version: snapshot in breach_versions, an audit event (ids, names and counts only)."""
        now = self.clock.now()
        if action != "create":
            breach.version += 1
        breach.updated_at = now
        self.session.add(breach)
        self.session.add(
            BreachVersion(
                breach_id=breach.id,
                version=breach.version,
                at=now,
                actor_type=self.actor.type,
                actor_id=self.actor.id,
                action=action,
                changed=list(changed),
                snapshot=snapshot(breach),
            )
        )
        audit.record(
            self.session,
            at=now,
            actor=self.actor,
            action=f"breach.{action}",
            request_id=self.request_id,
            detail={"breach_id": str(breach.id), "version": breach.version, "changed": list(changed), **detail},
        )

    def _not_future(self, value: datetime, field: str) -> datetime:
        require_aware(value, field)
        if value > self.clock.now():
            raise InvalidInput(f"{field} is in the future")
        return value

    async def _notices(self, breach_id: uuid.UUID) -> list[AuthorityNotice]:
        rows = await self.session.exec(
            select(AuthorityNotice)
            .where(col(AuthorityNotice.breach_id) == breach_id)
            .order_by(col(AuthorityNotice.seq))
        )
        return list(rows.all())

    async def delivery_counts(self, breach_id: uuid.UUID) -> dict[str, int]:
        """Recipients per state; a queued message the outbox already sent (or gave up on) counts as such."""
        counts = dict.fromkeys(DELIVERY_STATES, 0)
        rows = await self.session.exec(
            select(BreachSubject.status, OutboxMessage.status, func.count())
            .select_from(BreachSubject)
            .outerjoin(OutboxMessage, col(OutboxMessage.id) == col(BreachSubject.outbox_message_id))
            .where(col(BreachSubject.breach_id) == breach_id)
            .group_by(col(BreachSubject.status), col(OutboxMessage.status))
        )
        for status, outbox_status, count in rows.all():
            if status == "queued" and outbox_status == "sent":
                status = "sent"
            elif status == "queued" and outbox_status == "dead":
                status = "failed"
            counts[status] = counts.get(status, 0) + int(count)
        return counts


def snapshot(breach: Breach) -> dict[str, Any]:
    """The incident as it stands (facts, effects, remedial action, decisions), for the version history."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "status": breach.status,
        "title": breach.title,
        "description": breach.description,
        "detected_at": iso(breach.detected_at),
        "aware_at": iso(breach.aware_at),
        "occurred_from": iso(breach.occurred_from),
        "occurred_to": iso(breach.occurred_to),
        "nature": list(breach.nature),
        "categories": list(breach.categories),
        "data_types": list(breach.data_types),
        "affected_countries": list(breach.affected_countries),
        "affected": {
            "kind": breach.affected_kind,
            "count": breach.affected_count,
            "selector": breach.affected_selector,
        },
        "approx_records": breach.approx_records,
        "encrypted": breach.encrypted,
        "key_compromised": breach.key_compromised,
        "backup_exists": breach.backup_exists,
        "exfiltration_known": breach.exfiltration_known,
        "malicious": breach.malicious,
        "mitigation": breach.mitigation,
        "consequences": breach.consequences,
        "measures_proposed": breach.measures_proposed,
        "advice": breach.advice,
        "translations": dict(breach.translations),
        "assessment": breach.assessment,
        "authority_deadline": iso(breach.authority_deadline),
        "authority_notified_at": iso(breach.authority_notified_at),
        "authority_notified_late": breach.authority_notified_late,
        "subject_notice_requested_at": (breach.subject_notice or {}).get("requested_at"),
        "public_communication": breach.public_notice,
        "closed_at": iso(breach.closed_at),
        "closing_note": breach.closing_note,
    }

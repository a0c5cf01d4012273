"""Fan-out: which systems a request concerns, the signed webhooks queued for them, and their answers.

``plan_fanout`` runs when a request reaches ``processing``, before the vault changes (an erasure
removes the identities the systems need); ``Fanout.enqueue`` writes one delivery per system in the
same transaction, so a webhook exists exactly when the request's new status does. The request then
waits until every *required* system has answered (``outcome``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.config import Settings
from privacy_service.crypto.fields import Binding, DataKey
from privacy_service.dsr.flows import OPEN
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.dsr.schemas import Changes
from privacy_service.policy.document import PolicyDocument
from privacy_service.subjects.schemas import SubjectOut
from privacy_service.systems.events import emit
from privacy_service.systems.flows import FINAL, DeliveryStatus, owes_answer
from privacy_service.systems.models import Delivery, DownstreamSystem, Fanout
from privacy_service.systems.schemas import SystemProgress

API_VERSION = "2.0"
EXTENSION = "privacy-service"
REQUEST_TYPES = {"access": "access", "portability": "portability", "erase": "erasure", "rectify": "rectification"}
# identity kind -> (subject identifier, format); OpenDSR has no phone type: "phone_number" is ours.
IDENTITY_SOURCES = {
    "email": ("email", "raw"),
    "email_sha256": ("email", "sha256"),
    "phone": ("phone", "raw"),
    "phone_sha256": ("phone", "sha256"),
    "controller_customer_id": ("external_id", "raw"),
}
IDENTITY_TYPES = {"email": "email", "phone": "phone_number", "external_id": "controller_customer_id"}


def payload_binding(request_id: uuid.UUID, delivery_id: uuid.UUID) -> Binding:
    return Binding("system_deliveries", request_id, delivery_id, "payload")


def recipient_binding(request_id: uuid.UUID) -> Binding:
    return Binding("system_fanouts", request_id, None, "recipient")


def remember_recipient(
    session: AsyncSession, key: DataKey, request_id: uuid.UUID, to: str | None, now: datetime
) -> None:
    """Keep the completion mail's address (sealed) for a request that waits for systems or connections:
    an erasure removes it from the vault before the request completes (``recipient`` reads it back)."""
    recipient = key.seal(to.encode(), recipient_binding(request_id)) if to else None
    session.add(Fanout(request_id=request_id, recipient_ct=recipient, created_at=now))


def callback_url(settings: Settings, delivery_id: uuid.UUID) -> str:
    return f"{settings.base_url.rstrip('/')}/v1/systems/callbacks/{delivery_id}"


@dataclass(frozen=True, slots=True)
class Target:
    system: DownstreamSystem
    identities: list[dict[str, str]]
    changes: dict[str, Any] | None = None


@dataclass(slots=True)
class Plan:
    targets: list[Target] = field(default_factory=list)
    # Systems that hold this request type but accept none of the identities the subject has.
    skipped: list[DownstreamSystem] = field(default_factory=list)

    def enqueue(
        self,
        session: AsyncSession,
        request: PrivacyRequest,
        key: DataKey,
        *,
        settings: Settings,
        now: datetime,
        actor: Actor,
        http_request_id: str | None = None,
    ) -> bool:
        """Queue one sealed webhook per system; True if a required system's answer must be awaited."""
        if not self.targets and not self.skipped:
            return False
        due = min(request.due_at, now + timedelta(days=settings.systems_answer_days))
        waiting = False
        for target in self.targets:
            delivery_id = uuid.uuid4()
            body = msgspec.json.encode(_body(request, target, delivery_id, due, settings))
            session.add(
                Delivery(
                    id=delivery_id,
                    request_id=request.id,
                    system_id=target.system.id,
                    required=target.system.required,
                    status=DeliveryStatus.PENDING,
                    next_attempt_at=now,
                    payload=key.seal(body, payload_binding(request.id, delivery_id)),
                    created_at=now,
                    answer_due_at=due,
                )
            )
            waiting = waiting or target.system.required
        audit.record(
            session,
            at=now,
            actor=actor,
            action="systems.fanout",
            subject_id=request.subject_id,
            request_id=http_request_id,
            detail={
                "dsr_id": str(request.id),
                "systems": [str(t.system.id) for t in self.targets],
                "identity_types": sorted({i["identity_type"] for t in self.targets for i in t.identities}),
                "skipped": [str(s.id) for s in self.skipped],
                "awaiting": waiting,
            },
        )
        emit(
            "webhook_fanout",
            category="privacy.downstream",
            outcome="success",
            dsr_id=str(request.id),
            systems=len(self.targets),
            skipped=len(self.skipped),
            awaiting=waiting,
        )
        return waiting


def _body(
    request: PrivacyRequest, target: Target, delivery_id: uuid.UUID, due: datetime, settings: Settings
) -> dict[str, Any]:
    extension: dict[str, Any] = {
        "delivery_id": str(delivery_id),
        "system": target.system.name,
        "data_categories": sorted(target.system.categories),
        "request_due_time": request.due_at.isoformat(),
    }
    if target.changes is not None:
        extension["changes"] = target.changes
    return {
        "api_version": API_VERSION,
        "subject_request_id": str(request.id),
        "subject_request_type": REQUEST_TYPES[request.type],
        "regulation": request.regime,
        "submitted_time": request.received_at.isoformat(),
        "expected_completion_time": due.isoformat(),
        "subject_identities": target.identities,
        "status_callback_url": callback_url(settings, delivery_id),
        "extensions": {EXTENSION: extension},
    }


def _identities(system: DownstreamSystem, subject: SubjectOut) -> list[dict[str, str]]:
    """Only the identities the system asked for, in the form it asked for."""
    found: list[dict[str, str]] = []
    for kind in system.identities:
        source, form = IDENTITY_SOURCES[kind]
        value: str | None = getattr(subject, source)
        if value is None:
            continue
        if form == "sha256":
            value = hashlib.sha256(value.encode()).hexdigest()
        found.append({"identity_type": IDENTITY_TYPES[source], "identity_value": value, "identity_format": form})
    return found


def _changes_for(system: DownstreamSystem, changes: Changes, policy: PolicyDocument) -> dict[str, Any] | None:
    """The corrected values in the system's categories (Art. 19); None if none concern it."""
    held = set(system.categories)
    profile = {name: value for name, value in changes.profile.items() if policy.profile_fields.get(name) in held}
    found: dict[str, Any] = {"profile": profile} if profile else {}
    for kind in ("email", "phone"):
        value = getattr(changes, kind)
        if value is not None and policy.identifier_fields.get(kind) in held:
            found[kind] = value
    return found or None


async def active_systems(session: AsyncSession) -> list[DownstreamSystem]:
    query = select(DownstreamSystem).where(col(DownstreamSystem.removed_at).is_(None))
    return list((await session.exec(query.order_by(col(DownstreamSystem.name)))).all())


async def plan_fanout(
    session: AsyncSession,
    policy: PolicyDocument,
    request: PrivacyRequest,
    read_subject: Callable[[uuid.UUID], Awaitable[SubjectOut]],
    changes: Changes | None = None,
) -> Plan:
    """The systems a request concerns: those holding its type (for a rectification, one of the changed
    categories), with the subject's identities each one needs. A request without a matched customer
    concerns none: there is no one to look up and no key to seal an answer under."""
    plan = Plan()
    if request.subject_id is None:
        return plan
    systems = [s for s in await active_systems(session) if request.type in s.request_types]
    if not systems:
        return plan
    subject = await read_subject(request.subject_id)
    for system in systems:
        corrected = None
        if changes is not None:
            corrected = _changes_for(system, changes, policy)
            if corrected is None:
                continue
        identities = _identities(system, subject)
        if identities:
            plan.targets.append(Target(system, identities, corrected))
        else:
            plan.skipped.append(system)
    return plan


# -- answers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """Every required system has answered: what each said, and whether a required one failed."""

    summary: list[dict[str, Any]]
    failed: bool


async def _deliveries(session: AsyncSession, request_id: uuid.UUID) -> list[tuple[Delivery, DownstreamSystem]]:
    rows = await session.exec(
        select(Delivery, DownstreamSystem)
        .join(DownstreamSystem, col(Delivery.system_id) == col(DownstreamSystem.id))
        .where(col(Delivery.request_id) == request_id)
        .order_by(col(DownstreamSystem.name))
    )
    return [(d, s) for d, s in rows.all()]


async def outcome(session: AsyncSession, request_id: uuid.UUID) -> Outcome | None:
    """None while a required system still owes its answer."""
    rows = await _deliveries(session, request_id)
    if any(d.required and owes_answer(d.status, d.answer) for d, _ in rows):
        return None
    summary = [
        {"system": s.name, "required": d.required, "delivery": d.status, "answer": d.answer}
        for d, s in rows
        if d.status != DeliveryStatus.CANCELLED
    ]
    return Outcome(summary, any(d.required and d.answer == "failed" for d, _ in rows))


async def progress(session: AsyncSession, request_id: uuid.UUID, now: datetime) -> list[SystemProgress]:
    return [
        SystemProgress(
            system=s.name,
            required=d.required,
            delivery=d.status,
            answer=d.answer,
            answered_at=d.answered_at,
            due_at=d.answer_due_at,
            overdue=owes_answer(d.status, d.answer) and d.answer_due_at < now,
        )
        for d, s in await _deliveries(session, request_id)
    ]


async def recipient(session: AsyncSession, key: DataKey, request_id: uuid.UUID) -> str | None:
    """Where the completion mail goes, as resolved when the request started waiting."""
    fanout = await session.get(Fanout, request_id)
    if fanout is None or fanout.recipient_ct is None:
        return None
    return key.open(fanout.recipient_ct, recipient_binding(request_id)).decode()


async def escalate_overdue(session: AsyncSession, now: datetime, actor: Actor) -> list[dict[str, str]]:
    """Systems past their answer date on open requests: lines for the operator digest; each escalated
    (audited, logged) once."""
    rows = await session.exec(
        select(Delivery, DownstreamSystem)
        .join(DownstreamSystem, col(Delivery.system_id) == col(DownstreamSystem.id))
        .join(PrivacyRequest, col(Delivery.request_id) == col(PrivacyRequest.id))
        .where(
            col(Delivery.status) != DeliveryStatus.CANCELLED,
            col(Delivery.answer_due_at) < now,
            or_(col(Delivery.answer).is_(None), col(Delivery.answer).not_in([a.value for a in FINAL])),
            col(PrivacyRequest.status).in_([s.value for s in OPEN]),
        )
        .order_by(col(Delivery.answer_due_at))
    )
    lines: list[dict[str, str]] = []
    for delivery, system in rows.all():
        if delivery.escalated_at is None:
            delivery.escalated_at = now
            session.add(delivery)
            audit.record(
                session,
                at=now,
                actor=actor,
                action="systems.escalated",
                detail={"dsr_id": str(delivery.request_id), "system_id": str(system.id), "delivery": delivery.status},
            )
            emit(
                "downstream_overdue",
                category="privacy.downstream",
                outcome="failure",
                dsr_id=str(delivery.request_id),
                system_id=str(system.id),
                system=system.name,
                delivery=delivery.status,
            )
        lines.append(
            {
                "request_id": str(delivery.request_id),
                "system": system.name,
                "required": "required" if delivery.required else "optional",
                "delivery": delivery.status,
                "answer": delivery.answer or "none",
                "due_at": delivery.answer_due_at.date().isoformat(),
            }
        )
    return lines

"""Breach use cases: record, assess, notify on the clock, register, close. Services never commit.

Every change to an incident is a new version with a snapshot (GDPR Art. 33(5): facts, effects, remedial
action, decisions and their reasons) and an audit event without personal data. Input is checked before
anything is written, so a refused request leaves the incident exactly as it was.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import msgspec
from sqlalchemy import Uuid, delete, func, literal, update
from sqlalchemy import insert as sa_insert
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.breaches import schemas
from privacy_service.breaches.flows import CLOCK_RUNNING, Status, check, check_action
from privacy_service.breaches.messaging import (
    OUTBOX_KEY_PURPOSE,
    NoticeFacts,
    authority_content,
    category_names,
    subject_notice_content,
)
from privacy_service.breaches.models import AuthorityNotice, Breach, BreachSubject, BreachTransition, BreachVersion
from privacy_service.breaches.policy import AvailabilityLevel, BreachPolicy, ConfidentialityLevel, IntegrityLevel
from privacy_service.breaches.severity import DecisionFacts, Decisions, ScoreInput, decide, score
from privacy_service.clock import Clock
from privacy_service.crypto.service import KeyService
from privacy_service.db import UTCDateTime
from privacy_service.errors import Conflict, InvalidInput, NotFound
from privacy_service.notify.models import OutboxMessage
from privacy_service.policy.document import PolicyDocument
from privacy_service.spreadsheet import csv_cell
from privacy_service.subjects.models import Record, Subject
from privacy_service.subjects.schemas import Language

CHUNK = 1000
DELIVERY_STATES = ("affected", "pending", "queued", "sent", "failed", "skipped_erased", "skipped_no_email")
FACT_FIELDS = (
    "title",
    "description",
    "aware_at",
    "occurred_from",
    "occurred_to",
    "nature",
    "categories",
    "affected",
    "approx_records",
    "encrypted",
    "key_compromised",
    "backup_exists",
    "exfiltration_known",
    "malicious",
    "mitigation",
    "consequences",
    "measures_proposed",
    "advice",
    "translations",
)


class LateNotification(InvalidInput):
    slug = "late-notification-reason-required"
    title = "A notification after the 72-hour deadline must give the reasons for the delay"


class AlreadyNotified(Conflict):
    slug = "already-notified"
    title = "This notification has already been made"


class OpenDuties(Conflict):
    slug = "open-duties"
    title = "The incident still has duties to fulfil"


class NotRequired(Conflict):
    slug = "notification-not-required"
    title = "The assessment does not call for this notification"


def _aware(value: datetime, field: str) -> datetime:
    if value.tzinfo is None:
        raise InvalidInput(f"{field} must include a timezone offset (e.g. 2026-01-31T10:00:00Z)")
    return value


def human_span(delta: timedelta) -> str:
    """'41h 05m', or 'overdue by 3h 10m'."""
    seconds = int(delta.total_seconds())
    sign, seconds = ("overdue by ", -seconds) if seconds < 0 else ("", seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{sign}{hours}h {rest // 60:02d}m"


def _cell(value: Any) -> str:
    """A register cell: dates, flags and lists spelled out, then neutralised (``spreadsheet.csv_cell``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return csv_cell("; ".join(str(item) for item in value))
    return csv_cell(value)


REGISTER_COLUMNS = (
    "id",
    "status",
    "source",
    "title",
    "detected_at",
    "aware_at",
    "occurred_from",
    "occurred_to",
    "nature",
    "categories",
    "affected_basis",
    "affected_subjects",
    "approx_records",
    "encrypted",
    "key_compromised",
    "backup_exists",
    "exfiltration_known",
    "malicious",
    "description",
    "consequences",
    "mitigation",
    "measures_proposed",
    "severity",
    "band",
    "notify_authority",
    "authority_reasons",
    "notify_subjects",
    "subject_reasons",
    "public_communication",
    "authority_deadline",
    "authority_notified_at",
    "authority_notified_late",
    "authority_notices",
    "subjects_sent",
    "subjects_erased_not_contacted",
    "subjects_unreachable",
    "closed_at",
    "closing_note",
    "version",
)


@dataclass(slots=True)
class BreachService:
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

    def _categories(self, keys: Sequence[str]) -> list[str]:
        unknown = sorted({key for key in keys if not self.policy.is_category(key)})
        if unknown:
            raise InvalidInput(
                "categories are not data categories of the policy: " + ", ".join(unknown)[:300],
                extra={
                    "errors": [{"field": "categories", "message": f"unknown category {key}"} for key in unknown[:20]]
                },
            )
        return list(dict.fromkeys(keys))

    def _not_future(self, value: datetime, field: str) -> datetime:
        _aware(value, field)
        if value > self.clock.now():
            raise InvalidInput(f"{field} is in the future")
        return value

    def _check_window(self, start: datetime | None, end: datetime | None, aware_at: datetime | None) -> None:
        if start is not None:
            self._not_future(start, "occurred_from")
        if end is not None:
            self._not_future(end, "occurred_to")
        if start is not None and end is not None and end < start:
            raise InvalidInput("occurred_to is before occurred_from")
        if start is not None and aware_at is not None and aware_at < start:
            raise InvalidInput("aware_at is before the breach began (occurred_from)")

    @staticmethod
    def _translations(value: Mapping[Language, schemas.Texts]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for language, texts in value.items():
            if language == "en":
                raise InvalidInput("translations: the incident's own texts are the English ones")
            given = {name: text for name, text in msgspec.structs.asdict(texts).items() if text is not None}
            if given:
                out[language] = given
        return out

    async def _check_affected(self, affected: schemas.Affected) -> None:
        given = [name for name in ("subject_ids", "selector", "estimated_count") if getattr(affected, name) is not None]
        if len(given) != 1:
            raise InvalidInput("affected must give exactly one of subject_ids, selector or estimated_count")
        if affected.subject_ids is not None:
            ids = list(dict.fromkeys(affected.subject_ids))
            if not ids:
                raise InvalidInput("affected.subject_ids is empty (give an estimated_count when none are known)")
            found: set[uuid.UUID] = set()
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                found.update((await self.session.exec(select(Subject.id).where(col(Subject.id).in_(chunk)))).all())
            missing = [str(sid) for sid in ids if sid not in found]
            if missing:
                raise InvalidInput(
                    f"affected.subject_ids: {len(missing)} ids are not subjects of the vault",
                    extra={"unknown_subject_ids": missing[:20]},
                )
        if affected.selector is not None:
            selector = affected.selector
            self._categories([selector.category])
            _aware(selector.created_from, "affected.selector.created_from")
            _aware(selector.created_to, "affected.selector.created_to")
            if selector.created_to <= selector.created_from:
                raise InvalidInput("affected.selector: created_to must be after created_from")

    async def _set_affected(self, breach: Breach, affected: schemas.Affected) -> None:
        """Replace the affected set (checked already). Subject sets live in breach_subjects."""
        await self.session.exec(delete(BreachSubject).where(col(BreachSubject.breach_id) == breach.id))
        breach.affected_selector = None
        if affected.estimated_count is not None:
            breach.affected_kind, breach.affected_count = "estimate", affected.estimated_count
            return
        now = self.clock.now()
        if affected.subject_ids is not None:
            ids = list(dict.fromkeys(affected.subject_ids))
            for start in range(0, len(ids), CHUNK):
                await self.session.exec(
                    sa_insert(BreachSubject),
                    params=[
                        {"breach_id": breach.id, "subject_id": sid, "status": "affected", "updated_at": now}
                        for sid in ids[start : start + CHUNK]
                    ],
                )
            breach.affected_kind, breach.affected_count = "subjects", len(ids)
            return
        selector = affected.selector
        assert selector is not None  # noqa: S101 - checked by _check_affected
        matching = (
            select(
                literal(breach.id, type_=Uuid()).label("breach_id"),
                col(Record.subject_id),
                literal("affected").label("status"),
                literal(now, type_=UTCDateTime()).label("updated_at"),
            )
            .where(
                col(Record.category) == selector.category,
                col(Record.created_at) >= selector.created_from,
                col(Record.created_at) < selector.created_to,
            )
            .distinct()
        )
        await self.session.exec(
            sa_insert(BreachSubject).from_select(["breach_id", "subject_id", "status", "updated_at"], matching)
        )
        count = (
            await self.session.exec(
                select(func.count()).select_from(BreachSubject).where(col(BreachSubject.breach_id) == breach.id)
            )
        ).one()
        breach.affected_kind, breach.affected_count = "selector", int(count)
        breach.affected_selector = {
            "category": selector.category,
            "created_from": selector.created_from.isoformat(),
            "created_to": selector.created_to.isoformat(),
        }
        if breach.approx_records is None:
            records = (
                await self.session.exec(
                    select(func.count())
                    .select_from(Record)
                    .where(
                        col(Record.category) == selector.category,
                        col(Record.created_at) >= selector.created_from,
                        col(Record.created_at) < selector.created_to,
                    )
                )
            ).one()
            breach.approx_records = int(records)

    # -- recording -----------------------------------------------------------------------

    async def create(self, body: schemas.BreachCreate) -> Breach:
        now = self.clock.now()
        aware_at = self._not_future(body.aware_at, "aware_at") if body.aware_at is not None else now
        self._check_window(body.occurred_from, body.occurred_to, aware_at)
        categories = self._categories(body.categories)
        translations = self._translations(body.translations)
        await self._check_affected(body.affected)
        breach = Breach(
            id=uuid.uuid4(),
            status=Status.OPEN,
            source="operator",
            title=body.title,
            description=body.description,
            detected_at=now,
            aware_at=aware_at,
            occurred_from=body.occurred_from,
            occurred_to=body.occurred_to,
            nature=list(dict.fromkeys(body.nature)),
            categories=categories,
            approx_records=body.approx_records,
            encrypted=body.encrypted,
            key_compromised=body.key_compromised,
            backup_exists=body.backup_exists,
            exfiltration_known=body.exfiltration_known,
            malicious=body.malicious,
            mitigation=body.mitigation,
            consequences=body.consequences,
            measures_proposed=body.measures_proposed,
            advice=body.advice,
            translations=translations,
            authority_deadline=aware_at + self.rules.authority_deadline,
            created_at=now,
            updated_at=now,
        )
        await self._set_affected(breach, body.affected)
        self.session.add(breach)
        self.session.add(
            BreachTransition(
                breach_id=breach.id, to_status=Status.OPEN, at=now, actor_type=self.actor.type, actor_id=self.actor.id
            )
        )
        self._version(breach, "create", FACT_FIELDS)
        return breach

    async def open_draft(
        self,
        *,
        signal: str,
        title: str,
        description: str,
        categories: Sequence[str],
        subject_ids: Sequence[uuid.UUID],
        nature: Sequence[str] = ("confidentiality",),
    ) -> Breach:
        """A suspected breach found by monitoring: a draft for review; the clock starts on confirmation."""
        now = self.clock.now()
        known = [key for key in categories if self.policy.is_category(key)]
        breach = Breach(
            id=uuid.uuid4(),
            status=Status.DRAFT,
            source="monitoring",
            signal=signal,
            title=title[:200],
            description=description,
            detected_at=now,
            nature=list(nature),
            categories=known,
            malicious=True,
            created_at=now,
            updated_at=now,
        )
        affected = (
            schemas.Affected(subject_ids=list(subject_ids)) if subject_ids else schemas.Affected(estimated_count=0)
        )
        await self._set_affected(breach, affected)
        self.session.add(breach)
        self.session.add(
            BreachTransition(
                breach_id=breach.id, to_status=Status.DRAFT, at=now, actor_type=self.actor.type, actor_id=self.actor.id
            )
        )
        self._version(breach, "create", FACT_FIELDS, signal=signal.split(":", 1)[0])
        return breach

    async def update(self, breach_id: uuid.UUID, body: schemas.BreachPatch) -> Breach:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "update")
        given = {name: getattr(body, name) for name in FACT_FIELDS if getattr(body, name) is not msgspec.UNSET}
        changed: list[str] = []
        notices = await self._notices(breach.id)
        if "aware_at" in given:
            if breach.status == Status.DRAFT:
                raise Conflict("a draft has no awareness time yet: confirm it (POST .../confirm) with aware_at")
            if notices and given["aware_at"] != breach.aware_at:
                raise Conflict("aware_at is fixed once the supervisory authority has been notified")
            self._not_future(given["aware_at"], "aware_at")
        aware_at = given.get("aware_at", breach.aware_at)
        start = given["occurred_from"] if "occurred_from" in given else breach.occurred_from
        end = given["occurred_to"] if "occurred_to" in given else breach.occurred_to
        self._check_window(start, end, aware_at)
        if "categories" in given:
            given["categories"] = self._categories(given["categories"])
        if "nature" in given:
            given["nature"] = list(dict.fromkeys(given["nature"]))
        if "translations" in given:
            given["translations"] = self._translations(given["translations"])
        if "affected" in given:
            if breach.subject_notice is not None:
                raise Conflict("the affected people cannot change once their notification was requested")
            await self._check_affected(given["affected"])
        for name, value in given.items():
            if name == "affected":
                await self._set_affected(breach, value)
                changed.append(name)
            elif getattr(breach, name) != value:
                setattr(breach, name, value)
                changed.append(name)
        if not changed:
            return breach
        if "aware_at" in changed and breach.aware_at is not None:
            breach.authority_deadline = breach.aware_at + self.rules.authority_deadline
            breach.reminders_sent = []
        breach.facts_version += 1
        self._version(breach, "update", changed)
        return breach

    async def confirm(self, breach_id: uuid.UUID, body: schemas.ConfirmBody) -> Breach:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "confirm")
        aware_at = self._not_future(body.aware_at, "aware_at") if body.aware_at is not None else self.clock.now()
        self._transition(breach, Status.OPEN, body.note)
        breach.aware_at = aware_at
        breach.authority_deadline = aware_at + self.rules.authority_deadline
        self._version(breach, "confirm", ["status", "aware_at"])
        return breach

    async def dismiss(self, breach_id: uuid.UUID, body: schemas.DismissBody) -> Breach:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "dismiss")
        self._transition(breach, Status.DISMISSED, "not a personal data breach")
        breach.closing_note, breach.closed_at = body.reason, self.clock.now()
        self._version(breach, "dismiss", ["status", "closing_note"])
        return breach

    # -- assessment ----------------------------------------------------------------------

    def _levels(
        self, breach: Breach, body: schemas.AssessmentBody
    ) -> tuple[ConfidentialityLevel, IntegrityLevel, AvailabilityLevel]:
        nature = set(breach.nature)
        defaults = {
            "confidentiality": (
                "none"
                if "confidentiality" not in nature
                else "unknown_recipients"
                if breach.exfiltration_known
                else "exposed"
            ),
            "integrity": "none"
            if "integrity" not in nature
            else "recoverable"
            if breach.backup_exists
            else "unrecoverable",
            "availability": "none"
            if "availability" not in nature
            else "recoverable"
            if breach.backup_exists
            else "full",
        }
        levels: dict[str, str] = {}
        for element, default in defaults.items():
            given: str | None = getattr(body, element)
            if given is not None and given != "none" and element not in nature:
                raise InvalidInput(
                    f"{element} is scored {given} but the incident's nature does not include {element}; "
                    "update the facts first"
                )
            levels[element] = given if given is not None else default
        return (
            cast(ConfidentialityLevel, levels["confidentiality"]),
            cast(IntegrityLevel, levels["integrity"]),
            cast(AvailabilityLevel, levels["availability"]),
        )

    def _factors(self, breach: Breach, body: schemas.AssessmentBody) -> dict[str, list[str]]:
        for category, names in body.dpc_factors.items():
            if category not in breach.categories:
                raise InvalidInput(f"dpc_factors: {category} is not a category of this incident")
            for name in names:
                if not self.rules.factor_allowed(category, name):
                    spec = self.rules.enisa.data_categories[category]
                    allowed = sorted(n for n, f in self.rules.enisa.factors.items() if f.applies_to == spec.type)
                    raise InvalidInput(
                        f"dpc_factors: {name!r} is not an ENISA factor for {spec.type} data ({category}); "
                        f"allowed: {', '.join(allowed)}"
                    )
        return {category: list(dict.fromkeys(names)) for category, names in body.dpc_factors.items()}

    async def assess(self, breach_id: uuid.UUID, body: schemas.AssessmentBody) -> Breach:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "assess")
        if not breach.categories:
            raise InvalidInput("the incident has no data categories: add them (PATCH) before assessing")
        confidentiality, integrity, availability = self._levels(breach, body)
        factors = self._factors(breach, body)
        malicious = breach.malicious if body.malicious is None else body.malicious
        if body.contained and (malicious or confidentiality != "known_recipients"):
            raise InvalidInput(
                "contained applies only when known, trusted recipients received the data by mistake "
                "(confidentiality: known_recipients, not malicious)"
            )
        unintelligible = breach.encrypted and not breach.key_compromised
        severity = score(
            self.rules,
            ScoreInput(
                categories=breach.categories,
                factors=factors,
                ease=body.ease_of_identification,
                confidentiality=confidentiality,
                integrity=integrity,
                availability=availability,
                malicious=malicious,
                unintelligible=unintelligible,
            ),
        )
        decisions = decide(
            self.rules,
            severity,
            DecisionFacts(
                affected_subjects=breach.affected_count,
                confidentiality=confidentiality,
                availability=availability,
                malicious=malicious,
                unintelligible=unintelligible,
                contained=body.contained,
                mitigated=body.mitigated,
                disproportionate_effort=body.disproportionate_effort,
            ),
        )
        overridden = self._apply_overrides(decisions, body.overrides)
        now = self.clock.now()
        breach.assessment = {
            "assessed_at": now.isoformat(),
            "by": {"type": self.actor.type, "id": self.actor.id},
            "facts_version": breach.facts_version,
            "policy_version": self.rules.version,
            "inputs": {
                "ease_of_identification": body.ease_of_identification,
                "confidentiality": confidentiality,
                "integrity": integrity,
                "availability": availability,
                "malicious": malicious,
                "unintelligible": unintelligible,
                "dpc_factors": factors,
                "contained": body.contained,
                "mitigated": body.mitigated,
                "disproportionate_effort": body.disproportionate_effort,
                "affected_subjects": breach.affected_count,
            },
            "severity": severity.as_dict(),
            "decisions": decisions.as_dict(),
            "note": body.note,
        }
        breach.assessed_version = breach.facts_version
        breach.severity, breach.band = severity.se, decisions.band
        breach.notify_authority = decisions.notify_authority.value
        breach.notify_subjects = decisions.notify_subjects.value
        breach.public_communication = decisions.public_communication.value
        if breach.status == Status.OPEN:
            self._transition(breach, Status.ASSESSED)
        self._version(
            breach,
            "assess",
            ["assessment"],
            band=decisions.band,
            se=severity.se,
            notify_authority=breach.notify_authority,
            notify_subjects=breach.notify_subjects,
            overridden=overridden,
        )
        return breach

    @staticmethod
    def _apply_overrides(decisions: Decisions, overrides: schemas.Overrides | None) -> list[str]:
        if overrides is None:
            return []
        done = []
        for name, decision in decisions.items():
            override: schemas.Override | None = getattr(overrides, name, None)
            if override is None:
                continue
            decision.computed = decision.value
            decision.value = override.value
            decision.justification = override.justification
            decision.reasons.append(
                f"Overridden by an operator ({'yes' if override.value else 'no'}): {override.justification}"
            )
            done.append(name)
        return done

    # -- notifications -------------------------------------------------------------------

    async def _notices(self, breach_id: uuid.UUID) -> list[AuthorityNotice]:
        rows = await self.session.exec(
            select(AuthorityNotice)
            .where(col(AuthorityNotice.breach_id) == breach_id)
            .order_by(col(AuthorityNotice.seq))
        )
        return list(rows.all())

    async def notify_authority(self, breach_id: uuid.UUID, body: schemas.AuthorityNotificationBody) -> AuthorityNotice:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "notify_authority")
        if not breach.notify_authority:
            raise NotRequired(
                "the assessment concluded the authority need not be notified; to notify anyway, override that "
                "decision with a justification (POST .../assessment)"
            )
        notices = await self._notices(breach.id)
        kind = body.kind or ("follow_up" if notices else "initial")
        if kind == "initial" and notices:
            raise AlreadyNotified(
                "the initial notification was already recorded; send further information as a follow_up (Art. 33(4))"
            )
        if kind == "follow_up" and not notices:
            raise Conflict("a follow-up needs an initial notification first")
        authority = body.authority or self.rules.lead_authority
        if authority not in self.policy.spec.authorities:
            raise InvalidInput(f"authority {authority!r} is not one of the policy's authorities")
        sent_at = self._not_future(body.sent_at, "sent_at") if body.sent_at is not None else self.clock.now()
        assert breach.aware_at is not None  # noqa: S101 - set on every open incident
        assert breach.authority_deadline is not None  # noqa: S101 - set with aware_at
        if sent_at < breach.aware_at:
            raise InvalidInput("sent_at is before the incident's aware_at")
        late = kind == "initial" and sent_at > breach.authority_deadline
        if late and body.reason_for_delay is None:
            raise LateNotification(
                f"the deadline was {breach.authority_deadline.isoformat()}; give reason_for_delay (GDPR Art. 33(1))",
                extra={"authority_deadline": breach.authority_deadline.isoformat()},
            )
        facts = NoticeFacts(
            seq=len(notices) + 1,
            kind=kind,
            authority=authority,
            recipient=body.recipient,
            sent_at=sent_at,
            late=late,
            delay_reason=body.reason_for_delay,
            note=body.note,
        )
        counts = await self.delivery_counts(breach.id) if breach.subject_notice else None
        notice = AuthorityNotice(
            id=uuid.uuid4(),
            breach_id=breach.id,
            seq=facts.seq,
            kind=kind,
            authority=authority,
            recipient=body.recipient,
            sent_at=sent_at,
            recorded_at=self.clock.now(),
            late=late,
            delay_reason=body.reason_for_delay,
            content=authority_content(breach, self.policy, facts, notices, counts),
            actor_type=self.actor.type,
            actor_id=self.actor.id,
        )
        self.session.add(notice)
        if kind == "initial":
            breach.authority_notified_at, breach.authority_notified_late = sent_at, late
        self._transition(breach, Status.NOTIFYING)
        self._version(
            breach, "authority_notification", ["authority_notifications"], seq=facts.seq, kind=kind, late=late
        )
        return notice

    async def authority_notice(self, breach_id: uuid.UUID, seq: int) -> AuthorityNotice:
        notice = (
            await self.session.exec(
                select(AuthorityNotice).where(
                    col(AuthorityNotice.breach_id) == breach_id, col(AuthorityNotice.seq) == seq
                )
            )
        ).one_or_none()
        if notice is None:
            raise NotFound("no authority notification with this number for this incident")
        return notice

    async def request_subject_notifications(self, breach_id: uuid.UUID) -> Breach:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "notify_subjects")
        if not breach.notify_subjects:
            raise NotRequired(
                "the assessment does not call for telling the data subjects; to tell them anyway, override that "
                "decision with a justification (POST .../assessment)"
            )
        if breach.subject_notice is not None:
            raise AlreadyNotified("the data subjects' notification was already requested; see its delivery status")
        if breach.assessed_version != breach.facts_version:
            raise Conflict("the facts changed since the assessment: assess again before telling people")
        if breach.affected_kind == "estimate":
            raise Conflict(
                "the affected people are only estimated: identify them (PATCH affected with subject_ids or a "
                "selector), or assess with disproportionate_effort for a public communication (Art. 34(3)(c))"
            )
        await self.keys.create_key(self.session, breach.id, OUTBOX_KEY_PURPOSE)
        now = self.clock.now()
        result = await self.session.exec(
            update(BreachSubject)
            .where(col(BreachSubject.breach_id) == breach.id, col(BreachSubject.status) == "affected")
            .values(status="pending", updated_at=now)
        )
        pending = int(result.rowcount or 0)
        breach.subject_notice = {
            "requested_at": now.isoformat(),
            "by": {"type": self.actor.type, "id": self.actor.id},
            "recipients": pending,
            "content": subject_notice_content(breach, self.policy),
        }
        self._transition(breach, Status.NOTIFYING)
        self._version(breach, "subject_notifications", ["subject_notifications"], recipients=pending)
        return breach

    async def public_communication(self, breach_id: uuid.UUID, body: schemas.PublicCommunicationBody) -> Breach:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "public_communication")
        if breach.public_notice is not None:
            raise AlreadyNotified("the public communication was already recorded")
        published_at = self._not_future(body.published_at, "published_at") if body.published_at else self.clock.now()
        breach.public_notice = {
            "channel": body.channel,
            "url": body.url,
            "published_at": published_at.isoformat(),
            "by": {"type": self.actor.type, "id": self.actor.id},
        }
        self._transition(breach, Status.NOTIFYING)
        self._version(breach, "public_communication", ["public_communication"])
        return breach

    # -- delivery status -----------------------------------------------------------------

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

    async def subject_notification_view(self, breach_id: uuid.UUID) -> schemas.SubjectNotificationView:
        breach = await self._get(breach_id)
        return subject_view(breach, await self.delivery_counts(breach.id))

    async def recipients(
        self, breach_id: uuid.UUID, *, status: str | None, after: uuid.UUID | None, limit: int
    ) -> schemas.RecipientPage:
        await self._get(breach_id)
        query = (
            select(BreachSubject, OutboxMessage.status)
            .outerjoin(OutboxMessage, col(OutboxMessage.id) == col(BreachSubject.outbox_message_id))
            .where(col(BreachSubject.breach_id) == breach_id)
        )
        if after is not None:
            query = query.where(col(BreachSubject.subject_id) > after)
        rows = (await self.session.exec(query.order_by(col(BreachSubject.subject_id)).limit(limit + 1))).all()
        items = []
        for row, outbox_status in rows[:limit]:
            effective = row.status
            if row.status == "queued" and outbox_status in ("sent", "dead"):
                effective = "sent" if outbox_status == "sent" else "failed"
            items.append(schemas.RecipientView(row.subject_id, effective, row.updated_at, row.error))
        if status is not None:
            items = [item for item in items if item.status == status]
        return schemas.RecipientPage(
            items=items, next_cursor=str(rows[limit - 1][0].subject_id) if len(rows) > limit else None
        )

    # -- duties and closing --------------------------------------------------------------

    def open_duties(self, breach: Breach, counts: dict[str, int] | None) -> list[str]:
        if breach.status in (Status.DRAFT, Status.DISMISSED, Status.CLOSED):
            return ["review"] if breach.status == Status.DRAFT else []
        duties = []
        if breach.assessment is None:
            return ["assessment"]
        if breach.assessed_version != breach.facts_version:
            duties.append("reassessment")
        if breach.notify_authority and breach.authority_notified_at is None:
            duties.append("authority_notification")
        if breach.notify_subjects:
            if breach.subject_notice is None:
                duties.append("subject_notifications")
            elif counts is not None:
                if counts["affected"] + counts["pending"] + counts["queued"]:
                    duties.append("subject_delivery")
                elif counts["failed"] + counts["skipped_no_email"] and breach.public_notice is None:
                    duties.append("unreachable_subjects")
        if breach.public_communication and breach.public_notice is None:
            duties.append("public_communication")
        return duties

    async def close(self, breach_id: uuid.UUID, body: schemas.CloseBody) -> Breach:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "close")
        counts = await self.delivery_counts(breach.id) if breach.subject_notice else None
        duties = self.open_duties(breach, counts)
        if duties:
            raise OpenDuties(
                "the incident cannot be closed while duties remain: " + ", ".join(duties),
                extra={"open_duties": duties},
            )
        self._transition(breach, Status.CLOSED, "duties done")
        breach.closed_at, breach.closing_note = self.clock.now(), body.note
        self._version(breach, "close", ["status", "closing_note"])
        return breach

    # -- reading -------------------------------------------------------------------------

    def clock_view(self, breach: Breach) -> schemas.ClockView:
        sent = list(breach.reminders_sent)
        if breach.aware_at is None or breach.authority_deadline is None:
            return schemas.ClockView("not_started", None, None, None, sent)
        deadline = breach.authority_deadline
        if breach.authority_notified_at is not None:
            state = "met_late" if breach.authority_notified_late else "met"
            return schemas.ClockView(state, deadline, None, None, sent)
        if breach.notify_authority is False or breach.status not in CLOCK_RUNNING:
            return schemas.ClockView("not_required", deadline, None, None, sent)
        left = deadline - self.clock.now()
        state = "overdue" if left.total_seconds() < 0 else "running"
        return schemas.ClockView(state, deadline, int(left.total_seconds()), human_span(left), sent)

    async def view(self, breach_id: uuid.UUID) -> schemas.BreachView:
        return await self._view(await self._get(breach_id))

    async def _view(self, breach: Breach) -> schemas.BreachView:
        transitions = (
            await self.session.exec(
                select(BreachTransition)
                .where(col(BreachTransition.breach_id) == breach.id)
                .order_by(col(BreachTransition.id))
            )
        ).all()
        notices = await self._notices(breach.id)
        counts = await self.delivery_counts(breach.id) if breach.subject_notice else None
        assessment = breach.assessment
        return schemas.BreachView(
            id=breach.id,
            status=breach.status,
            version=breach.version,
            source=breach.source,
            title=breach.title,
            description=breach.description,
            detected_at=breach.detected_at,
            aware_at=breach.aware_at,
            occurred_from=breach.occurred_from,
            occurred_to=breach.occurred_to,
            nature=list(breach.nature),
            categories=[
                schemas.CategoryRef(item["key"], item["name"])
                for item in category_names(self.policy, breach.categories, "en")
            ],
            affected=schemas.AffectedView(breach.affected_kind, breach.affected_count, breach.affected_selector),
            approx_records=breach.approx_records,
            encrypted=breach.encrypted,
            key_compromised=breach.key_compromised,
            backup_exists=breach.backup_exists,
            exfiltration_known=breach.exfiltration_known,
            malicious=breach.malicious,
            mitigation=breach.mitigation,
            consequences=breach.consequences,
            measures_proposed=breach.measures_proposed,
            advice=breach.advice,
            translations=dict(breach.translations),
            clock=self.clock_view(breach),
            severity=breach.severity,
            band=breach.band,
            assessment=assessment,
            assessment_stale=assessment is not None and breach.assessed_version != breach.facts_version,
            decisions=(assessment or {}).get("decisions"),
            authority_notifications=[notice_summary(notice) for notice in notices],
            subject_notifications=subject_view(breach, counts) if counts is not None else None,
            public_communication=breach.public_notice,
            open_duties=self.open_duties(breach, counts),
            closed_at=breach.closed_at,
            closing_note=breach.closing_note,
            history=[schemas.Transition(t.to_status, t.at, t.actor_type, t.note) for t in transitions],
        )

    async def register(
        self, *, status: str | None, band: str | None, after: str | None, limit: int
    ) -> schemas.BreachPage:
        """The breach register (Art. 33(5)): every incident, notified or not, newest first."""
        query = select(Breach)
        if status is not None:
            query = query.where(col(Breach.status) == status)
        if band is not None:
            query = query.where(col(Breach.band) == band)
        if after is not None:
            at_text, _, id_text = after.partition("_")
            try:
                cursor_at, cursor_id = datetime.fromisoformat(at_text), uuid.UUID(id_text)
            except ValueError:
                raise InvalidInput("after: not a cursor returned by this endpoint") from None
            query = query.where(
                or_(
                    col(Breach.detected_at) < cursor_at,
                    (col(Breach.detected_at) == cursor_at) & (col(Breach.id) < cursor_id),
                )
            )
        rows = (
            await self.session.exec(
                query.order_by(col(Breach.detected_at).desc(), col(Breach.id).desc()).limit(limit + 1)
            )
        ).all()
        page = rows[:limit]
        return schemas.BreachPage(
            items=[await self._view(row) for row in page],
            next_cursor=f"{page[-1].detected_at.isoformat()}_{page[-1].id}" if len(rows) > limit else None,
        )

    async def versions(self, breach_id: uuid.UUID) -> list[schemas.VersionView]:
        await self._get(breach_id)
        rows = await self.session.exec(
            select(BreachVersion).where(col(BreachVersion.breach_id) == breach_id).order_by(col(BreachVersion.version))
        )
        return [
            schemas.VersionView(r.version, r.at, r.actor_type, r.actor_id, r.action, list(r.changed), r.snapshot)
            for r in rows.all()
        ]

    async def register_csv(self) -> str:
        """The register as CSV, one row per incident, oldest first."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(REGISTER_COLUMNS)
        rows = (await self.session.exec(select(Breach).order_by(col(Breach.detected_at), col(Breach.id)))).all()
        for breach in rows:
            counts = await self.delivery_counts(breach.id) if breach.subject_notice else None
            notices = await self._notices(breach.id)
            writer.writerow([_cell(value) for value in register_row(breach, counts, notices)])
        audit.record(
            self.session,
            at=self.clock.now(),
            actor=self.actor,
            action="breach.register.export",
            request_id=self.request_id,
            detail={"incidents": len(rows)},
        )
        return buffer.getvalue()


def _reasons(breach: Breach, name: str) -> str:
    decisions = (breach.assessment or {}).get("decisions") or {}
    return " ".join(decisions.get(name, {}).get("reasons", []))


def register_row(breach: Breach, counts: dict[str, int] | None, notices: Iterable[AuthorityNotice]) -> list[Any]:
    counts = counts or {}
    return [
        breach.id,
        breach.status,
        breach.source,
        breach.title,
        breach.detected_at,
        breach.aware_at,
        breach.occurred_from,
        breach.occurred_to,
        breach.nature,
        breach.categories,
        breach.affected_kind,
        breach.affected_count,
        breach.approx_records,
        breach.encrypted,
        breach.key_compromised,
        breach.backup_exists,
        breach.exfiltration_known,
        breach.malicious,
        breach.description,
        breach.consequences,
        breach.mitigation,
        breach.measures_proposed,
        breach.severity,
        breach.band,
        breach.notify_authority,
        _reasons(breach, "notify_authority"),
        breach.notify_subjects,
        _reasons(breach, "notify_subjects"),
        breach.public_communication,
        breach.authority_deadline,
        breach.authority_notified_at,
        breach.authority_notified_late,
        [f"#{n.seq} {n.kind} {n.sent_at.isoformat()} to {n.recipient}" for n in notices],
        counts.get("sent"),
        counts.get("skipped_erased"),
        (counts.get("failed", 0) + counts.get("skipped_no_email", 0)) if counts else None,
        breach.closed_at,
        breach.closing_note,
        breach.version,
    ]


def subject_view(breach: Breach, counts: dict[str, int]) -> schemas.SubjectNotificationView:
    requested = (breach.subject_notice or {}).get("requested_at")
    return schemas.SubjectNotificationView(
        requested_at=datetime.fromisoformat(requested) if requested else None,
        counts=schemas.DeliveryCounts(total=sum(counts.values()), **counts),
        done=requested is not None and not (counts["affected"] + counts["pending"] + counts["queued"]),
    )


def notice_summary(notice: AuthorityNotice) -> schemas.AuthorityNoticeSummary:
    return schemas.AuthorityNoticeSummary(
        seq=notice.seq,
        kind=notice.kind,
        authority=notice.authority,
        recipient=notice.recipient,
        sent_at=notice.sent_at,
        late=notice.late,
        reason_for_delay=notice.delay_reason,
        documents=document_links(notice),
    )


def document_links(notice: AuthorityNotice) -> dict[str, dict[str, str]]:
    base = f"/v1/breaches/{notice.breach_id}/authority-notifications/{notice.seq}"
    return {
        language: {fmt: f"{base}?format={fmt}&lang={language}" for fmt in ("json", "html", "markdown")}
        for language in ("en", "zh")
    }


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

"""Notifying: the supervisory authority (Art. 33), the people affected (Art. 34), the public (Art. 34(3)(c))."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, select

from privacy_service.breaches import schemas
from privacy_service.breaches.authorities import required_authorities
from privacy_service.breaches.context import BreachBase
from privacy_service.breaches.flows import Status, check_action
from privacy_service.breaches.messaging import (
    OUTBOX_KEY_PURPOSE,
    NoticeFacts,
    authority_content,
    subject_notice_content,
)
from privacy_service.breaches.models import AuthorityNotice, Breach, BreachSubject
from privacy_service.errors import Conflict, InvalidInput, NotFound
from privacy_service.notify.models import OutboxMessage


class LateNotification(InvalidInput):
    slug = "late-notification-reason-required"
    title = "A notification after the 72-hour deadline must give the reasons for the delay"


class AlreadyNotified(Conflict):
    slug = "already-notified"
    title = "This notification has already been made"


class NotRequired(Conflict):
    slug = "notification-not-required"
    title = "The assessment does not call for this notification"


class Notifications(BreachBase):
    __slots__ = ()

    async def notify_authority(self, breach_id: uuid.UUID, body: schemas.AuthorityNotificationBody) -> AuthorityNotice:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "notify_authority")
        if not breach.notify_authority:
            raise NotRequired(
                "the assessment concluded the authority need not be notified; to notify anyway, override that "
                "decision with a justification (POST .../assessment)"
            )
        notices = await self._notices(breach.id)
        # Without a one-stop-shop each authority concerned gets its own initial notice (EDPB 9/2022).
        _, required = required_authorities(breach.assessment)
        initial_to = {notice.authority for notice in notices if notice.kind == "initial"}
        pending = [key for key in required if key not in initial_to]
        authority = body.authority or next(iter(pending + required), self.rules.lead_authority)
        ref = self.rules.authority(self.policy, authority)
        if ref is None:
            raise InvalidInput(
                "authority is neither one of the policy's authorities nor sa.<country> of an EEA supervisory "
                "authority in policies/breach.yaml"
            )
        kind = body.kind or ("follow_up" if authority in initial_to else "initial")
        if kind == "initial" and authority in initial_to:
            raise AlreadyNotified(
                "the initial notification to this authority was already recorded; send further information as a "
                "follow_up (Art. 33(4))"
            )
        if kind == "follow_up" and authority not in initial_to:
            raise Conflict("a follow-up needs an initial notification to the same authority first")
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
            content=authority_content(breach, self.policy, self.rules, ref, facts, notices, counts),
            actor_type=self.actor.type,
            actor_id=self.actor.id,
        )
        self.session.add(notice)
        if kind == "initial" and breach.authority_notified_at is None:
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

"""Closing an incident: the duties still open, and closing once none remain."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from privacy_service.breaches import schemas
from privacy_service.breaches.authorities import required_authorities
from privacy_service.breaches.clocks import california_notice_pending
from privacy_service.breaches.context import BreachBase
from privacy_service.breaches.flows import Status, check_action
from privacy_service.breaches.models import Breach
from privacy_service.breaches.policy import BreachPolicy
from privacy_service.errors import Conflict

CALIFORNIA_NOT_REQUIRED = "No notice to California residents is owed (Cal. Civ. Code §1798.82): "


class OpenDuties(Conflict):
    slug = "open-duties"
    title = "The incident still has duties to fulfil"


def california_notice_owed(rules: BreachPolicy, breach: Breach) -> bool:
    """Cal. Civ. Code §1798.82 has no risk threshold: readable data whose confidentiality was breached is
    notified to the California residents concerned, whatever the GDPR assessment decided, unless nobody has been
    told yet (subject notice or public communication) only because the duty does not apply, which the close
    request must then say (``california_not_required``)."""
    return rules.california_deadline is not None and california_notice_pending(breach)


def open_duties(
    breach: Breach,
    counts: dict[str, int] | None,
    notified: Collection[str] = (),
    *,
    rules: BreachPolicy | None = None,
) -> list[str]:
    """What remains before the incident may close (``counts``: subject-notice delivery, when requested;
    ``notified``: the authorities that have an initial notice; ``rules``: the breach policy, for the California
    notice duty, which a close request may lift with a justification)."""
    if breach.status in (Status.DRAFT, Status.DISMISSED, Status.CLOSED):
        return ["review"] if breach.status == Status.DRAFT else []
    duties = []
    if breach.assessment is None:
        return ["assessment"]
    if breach.assessed_version != breach.facts_version:
        duties.append("reassessment")
    one_stop_shop, required = required_authorities(breach.assessment)
    if breach.notify_authority and (
        breach.authority_notified_at is None or (not one_stop_shop and any(key not in notified for key in required))
    ):
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
    # Telling the people (a duty above) meets the California notice too; without one, it is a duty of its own.
    telling = {"subject_notifications", "public_communication"}
    if rules is not None and california_notice_owed(rules, breach) and not telling & set(duties):
        duties.append("california_notice")
    return duties


class Closing(BreachBase):
    __slots__ = ()

    async def close(self, breach_id: uuid.UUID, body: schemas.CloseBody) -> Breach:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "close")
        counts = await self.delivery_counts(breach.id) if breach.subject_notice else None
        notified = {notice.authority for notice in await self._notices(breach.id) if notice.kind == "initial"}
        duties = open_duties(breach, counts, notified, rules=self.rules)
        justified = body.california_not_required is not None
        if justified:
            duties = [duty for duty in duties if duty != "california_notice"]
        if duties:
            raise OpenDuties(
                "the incident cannot be closed while duties remain: " + ", ".join(duties),
                extra={"open_duties": duties},
            )
        self._transition(breach, Status.CLOSED, "duties done")
        note = body.note
        if body.california_not_required is not None:
            # Kept with the closing note (in the register and the version snapshot); the audit event says only
            # that a justification was given (it is free text).
            california = f"{CALIFORNIA_NOT_REQUIRED}{body.california_not_required}"
            note = california if note is None else f"{note}\n\n{california}"
        breach.closed_at, breach.closing_note = self.clock.now(), note
        self._version(breach, "close", ["status", "closing_note"], california_not_required=justified)
        return breach

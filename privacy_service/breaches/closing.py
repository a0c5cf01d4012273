"""Closing an incident: the duties still open, and closing once none remain."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from privacy_service.breaches import schemas
from privacy_service.breaches.authorities import required_authorities
from privacy_service.breaches.context import BreachBase
from privacy_service.breaches.flows import Status, check_action
from privacy_service.breaches.models import Breach
from privacy_service.errors import Conflict


class OpenDuties(Conflict):
    slug = "open-duties"
    title = "The incident still has duties to fulfil"


def open_duties(breach: Breach, counts: dict[str, int] | None, notified: Collection[str] = ()) -> list[str]:
    """What remains before the incident may close (``counts``: subject-notice delivery, when requested;
    ``notified``: the authorities that have an initial notice)."""
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
    return duties


class Closing(BreachBase):
    __slots__ = ()

    async def close(self, breach_id: uuid.UUID, body: schemas.CloseBody) -> Breach:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "close")
        counts = await self.delivery_counts(breach.id) if breach.subject_notice else None
        notified = {notice.authority for notice in await self._notices(breach.id) if notice.kind == "initial"}
        duties = open_duties(breach, counts, notified)
        if duties:
            raise OpenDuties(
                "the incident cannot be closed while duties remain: " + ", ".join(duties),
                extra={"open_duties": duties},
            )
        self._transition(breach, Status.CLOSED, "duties done")
        breach.closed_at, breach.closing_note = self.clock.now(), body.note
        self._version(breach, "close", ["status", "closing_note"])
        return breach

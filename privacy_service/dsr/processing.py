"""Answering a verified request: the flow that reaches the vault, downstream systems and the mail.

A request is processed on its own body only: what its verified submitter asked for (``changes`` of
a correction, the type). Nothing here reads another request.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import msgspec

from privacy_service.audit.service import Actor
from privacy_service.connections import flow as connected
from privacy_service.crypto.fields import DataKey
from privacy_service.dsr import schemas
from privacy_service.dsr.context import DsrBase
from privacy_service.dsr.flows import Status
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.errors import Conflict, InvalidInput
from privacy_service.subjects.erasure import erase_subject
from privacy_service.subjects.schemas import SubjectPatch
from privacy_service.systems import fanout as downstream

# Shown when a verified correction cannot be written (say, the new address belongs to another account).
RECTIFY_REFUSED = {
    "en": "The correction could not be applied as submitted: the new e-mail address or phone number is already in "
    "use, or a field is no longer accepted. Please contact us or submit a corrected request.",
    "zh": "无法按提交的内容进行更正。新的电子邮箱或电话号码已被使用或某个字段不再被接受。请联系我们或重新提交请求。",
}
IDENTIFIER_CHANGES = ("email", "phone")
REVIEW_NOTE = "correction of an identifier or of identity/financial data: operator review"


def changed_names(changes: schemas.Changes) -> list[str]:
    """The fields a correction touches, as ``email``, ``phone`` and ``profile.<name>``."""
    return sorted(
        [*(f"profile.{name}" for name in changes.profile), *(k for k in IDENTIFIER_CHANGES if getattr(changes, k))]
    )


class Processing(DsrBase):
    __slots__ = ()

    def _changes(self, request: PrivacyRequest, key: DataKey) -> schemas.Changes:
        raw = key.open(request.changes_ct or b"", self._binding(request, "changes"))
        return msgspec.json.decode(raw, type=schemas.Changes)

    def _needs_review(self, request: PrivacyRequest, key: DataKey) -> bool:
        """A correction an e-mailed code alone must not apply: an identifier, or a field the policy does
        not list in ``rectify_without_review`` (identity and financial data by default)."""
        if request.type != "rectify":
            return False
        changes = self._changes(request, key)
        if any(getattr(changes, name) is not None for name in IDENTIFIER_CHANGES):
            return True
        return not set(changes.profile) <= self.policy.rectify_without_review

    async def _process_or_queue(self, request: PrivacyRequest, key: DataKey) -> None:
        """A verified request (by code or by a controller system): processed now if its type is
        auto-approved and it needs no review, else queued for an operator with the reason."""
        review = self._needs_review(request, key)
        if request.type in self.settings.dsr_auto_approve and not review:
            self.actor = Actor.system("auto-approval")
            await self._process(request, key)
        else:
            self._transition(request, Status.AWAITING_REVIEW, note=REVIEW_NOTE if review else None)
            await self._notify(request, key, "received")

    async def _process(self, request: PrivacyRequest, key: DataKey) -> None:
        self._transition(request, Status.PROCESSING)
        # Resolved first: for a phone identity the address is the subject's, which erasure removes.
        to = await self._recipient(request, key)
        # Also before the vault changes: the downstream systems are sent the identities as they were.
        changes = self._changes(request, key) if request.type == "rectify" else None
        plan = await downstream.plan_fanout(self.session, self.policy, request, self.subjects.read, changes)
        # Likewise the connected databases' tasks (their identities, the categories an erasure keeps).
        work = await connected.plan_work(
            self.session,
            self.policy,
            self.rules,
            self.subjects,
            request,
            policy_dir=self.settings.policy_dir,
            now=self.clock.now(),
        )
        partial = False
        if request.subject_id is None:
            result: dict[str, Any] = {"data_found": False}
        elif request.type in ("access", "portability"):
            held = await self.subjects.categories_held(request.subject_id)
            result = {"data_found": True, "categories": sorted(held), "records": sum(held.values())}
        elif request.type == "rectify":
            rectified = await self._rectify(request, key)
            if rectified is None:
                await self._deny(request, key, RECTIFY_REFUSED.get(request.language, RECTIFY_REFUSED["en"]), to=to)
                return
            result = rectified
        else:
            result = await self._erase(request)
            partial = bool(result["kept"])
        request.result = result
        now = self.clock.now()
        waiting = plan.enqueue(
            self.session,
            request,
            key,
            settings=self.settings,
            now=now,
            actor=self.actor,
            http_request_id=self.request_id,
        )
        if work.enqueue(self.session, request, key, now=now, actor=self.actor, http_request_id=self.request_id):
            waiting = True
        if waiting:
            downstream.remember_recipient(self.session, key, request.id, to, now)
            # Stays processing until every required system has answered and every connection task
            # is done (finish_after_systems).
            return
        await self._complete(request, key, to=to, partial=partial)

    async def _complete(self, request: PrivacyRequest, key: DataKey, *, to: str | None, partial: bool) -> None:
        now = self.clock.now()
        download = request.type in ("access", "portability") and request.subject_id is not None
        if download:
            request.export_expires_at = now + timedelta(days=self.settings.dsr_export_ttl_days)
            if request.token_expires_at and request.token_expires_at < request.export_expires_at:
                request.token_expires_at = request.export_expires_at
        request.completed_at = now
        self._transition(request, Status.PARTIALLY_COMPLETED if partial else Status.COMPLETED)
        await self._notify(
            request,
            key,
            "completed",
            to=to,
            partial=partial,
            download=download,
            export_until=request.export_expires_at.date().isoformat() if request.export_expires_at else "",
        )

    async def _deny(self, request: PrivacyRequest, key: DataKey, reason: str, *, to: str | None = None) -> None:
        request.decision_ct = key.seal(reason.encode(), self._binding(request, "decision"))
        request.completed_at = self.clock.now()
        self._transition(request, Status.DENIED)
        await self._notify(request, key, "denied", to=to, reason=reason)

    async def finish_after_systems(self, request_id: uuid.UUID) -> bool:
        """Complete a request that waited for downstream systems once every required one has answered
        and every connection task is done.

        Partial if the vault or a connected database kept data (erasure), a required system reported failure,
        or an erasure's connection was removed before it ran.
        """
        request = await self._get(request_id, for_update=True)
        if request.status != Status.PROCESSING:
            return False
        answers = await downstream.outcome(self.session, request.id)
        if answers is None:
            return False
        tasks = await connected.outcome(self.session, request.id)
        if tasks is None:
            return False
        key = await self._request_key(request)
        result = dict(request.result or {})
        result["systems"] = answers.summary
        if tasks.systems:
            result = connected.merge(result, tasks)
        request.result = result
        to = await downstream.recipient(self.session, key, request.id)
        partial = bool(result.get("kept")) or answers.failed or tasks.failed
        await self._complete(request, key, to=to, partial=partial)
        return True

    async def _rectify(self, request: PrivacyRequest, key: DataKey) -> dict[str, Any] | None:
        """Write the corrections; None if the vault refuses them (the caller denies the request).

        The write runs in a savepoint: a refusal found at flush time (a unique identifier) must not
        fail the whole verification, which would leave the request unverifiable until it expires.
        """
        changes = self._changes(request, key)
        assert request.subject_id is not None  # noqa: S101 - checked by the caller
        patch = SubjectPatch(profile=changes.profile) if changes.profile else SubjectPatch()
        if changes.email is not None:
            patch.email = changes.email
        if changes.phone is not None:
            patch.phone = changes.phone
        try:
            async with self.session.begin_nested():
                await self.subjects.patch(request.subject_id, patch)
        except (InvalidInput, Conflict):
            return None
        categories = sorted(
            {self.policy.profile_fields[name] for name in changes.profile}
            | {self.policy.identifier_fields[k] for k in IDENTIFIER_CHANGES if getattr(changes, k)}
        )
        return {
            "data_found": True,
            "changed_fields": changed_names(changes),
            "categories": categories,
            # Art. 19: recipients of these categories are told of the rectification.
            "recipients_to_notify": self.rules.recipients(categories),
        }

    async def _erase(self, request: PrivacyRequest) -> dict[str, Any]:
        """The erasure every path runs (subjects.erasure): holds and legal duties keep, the rest is shredded."""
        assert request.subject_id is not None  # noqa: S101 - checked by the caller
        erasure = await erase_subject(self.session, self.subjects, self.rules, self.clock, request.subject_id)
        return erasure.result

"""Erasure of a subject, as the law asks for it: one use case for every path that erases.

A data-subject request and an operator's ``DELETE /v1/subjects/{id}`` run the same steps: a legal hold
keeps everything (nothing is erased), a legal duty (e.g. AML) keeps its categories restricted until
the duty ends, everything else is crypto-shredded. The answer says what was erased and what was
kept, on which basis and until when. Setting a duty aside needs a justification, a basis and a case
reference (the caller checks the scope for it), and is audited with it and with the duties it set
aside; an override refused (a legal hold, or a subject already erased) is audited with it too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.clock import Clock
from privacy_service.dsr.deadlines import DeadlineRules
from privacy_service.errors import NotFound
from privacy_service.retention.rules import record_anchors, subject_anchors
from privacy_service.subjects.models import Record, Subject, SubjectStatus
from privacy_service.subjects.schemas import EraseOverride, ErasureReport
from privacy_service.subjects.service import Retention, SubjectService


@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure did: the vault's own report, and the answer in the shape a request's result has
    (``erased`` categories, ``kept`` as ``[{category, basis, until}]``, ``recipients_to_notify``)."""

    report: ErasureReport
    result: dict[str, Any]
    # A legal hold kept everything: nothing was erased.
    held: bool = False
    # Duties set aside by an override, as [{category, basis, until}].
    overridden: tuple[dict[str, Any], ...] = ()
    # An override asked for on a subject already erased: nothing was set aside (the first report).
    override_refused: bool = False


def _kept(category: str, basis: str, until: str | None) -> dict[str, Any]:
    return {"category": category, "basis": basis, "until": until}


async def _previous_erasure(session: AsyncSession, subjects: SubjectService, subject: Subject) -> Erasure:
    """An erased subject erased again: the first erasure's report (idempotent), with what it kept."""
    report = await subjects.erase(subject.id)
    rows = await session.exec(
        select(Record.category, func.max(Record.retain_until))
        .where(col(Record.subject_id) == subject.id, col(Record.restricted).is_(True))
        .group_by(col(Record.category))
    )
    until = {category: latest for category, latest in rows.all()}
    kept = []
    for category, basis in sorted(report.kept.items()):
        # Kept profile fields have no row of their own: the subject's date covers them.
        latest = until.get(category) or subject.retained_until
        kept.append(_kept(category, basis, latest.isoformat() if latest else None))
    return Erasure(report, {"data_found": True, "erased": [], "kept": kept, "recipients_to_notify": []})


def _audit_override(
    subjects: SubjectService,
    session: AsyncSession,
    subject_id: uuid.UUID,
    override: EraseOverride,
    *,
    categories: list[str],
    refused: str | None = None,
) -> None:
    detail: dict[str, Any] = {
        "basis": override.basis,
        "reference": override.reference,
        "overridden_categories": categories,
    }
    if refused is not None:
        detail["refused"] = refused
    subjects.audit_sink(
        session,
        at=subjects.clock.now(),
        actor=subjects.actor,
        action="subject.erase.override",
        subject_id=subject_id,
        request_id=subjects.request_id,
        outcome="ok" if refused is None else "failed",
        detail=detail,
    )


async def _latest_record_times(
    session: AsyncSession, subject_id: uuid.UUID
) -> dict[str, tuple[datetime | None, datetime | None]]:
    """Per category of the subject's records: the latest ``occurred_at`` and ``created_at``."""
    rows = await session.exec(
        select(col(Record.category), func.max(col(Record.occurred_at)), func.max(col(Record.created_at)))
        .where(col(Record.subject_id) == subject_id, col(Record.restricted).is_(False))
        .group_by(col(Record.category))
    )
    return {category: (occurred, stored) for category, occurred, stored in rows.all()}


async def legal_duties(
    session: AsyncSession, rules: DeadlineRules, subject: Subject, held: Iterable[str], now: datetime
) -> dict[str, Retention]:
    """Which of the ``held`` categories of an active subject a legal duty would keep if it were erased
    at ``now``, on which basis and until when (what :func:`erase_subject` keeps; the console shows it
    before an erasure)."""
    # The anchors are the purge's (retention.rules), so a kept category ends when the purge would
    # end it. One difference: the erasure closes an account that is still open (SubjectService.erase
    # records it), so the account closing is now; every other trigger already happened or never will.
    anchors = subject_anchors(subject)
    if anchors["account_closed_at"] is None:
        anchors["account_closed_at"] = now
    latest = await _latest_record_times(session, subject.id)
    duties: dict[str, Retention] = {}
    for category in held:
        # A duty on the records' own time runs from the category's latest record (exactly).
        occurred, stored = latest.get(category, (None, None))
        own = record_anchors(occurred, stored, anchors) if stored is not None else anchors
        duty = rules.legal_duty(category, own)
        if duty is not None and duty.until > now:
            duties[category] = duty
    return duties


async def erase_subject(
    session: AsyncSession,
    subjects: SubjectService,
    rules: DeadlineRules,
    clock: Clock,
    subject_id: uuid.UUID,
    *,
    override: EraseOverride | None = None,
) -> Erasure:
    """Erase a subject, keeping what a legal hold or a legal duty keeps (``Erasure.result`` is the
    answer a data-subject request records). With ``override`` the legal duties are set aside (a hold
    never is: release it first) and the erasure is audited with its basis and reference; an override
    that sets nothing aside (held, or already erased) is audited as refused."""
    subject = await session.get(Subject, subject_id)
    if subject is None:
        raise NotFound("no subject with this id")
    if subject.status != SubjectStatus.ACTIVE and subject.erased_at is not None:
        previous = await _previous_erasure(session, subjects, subject)
        if override is None:
            return previous
        _audit_override(subjects, session, subject_id, override, categories=[], refused="already_erased")
        return Erasure(previous.report, previous.result, override_refused=True)
    held = await subjects.categories_held(subject_id)
    now = clock.now()
    duties = await legal_duties(session, rules, subject, held, now)
    under_hold = await subjects.under_hold(subject_id)
    overridden: tuple[dict[str, Any], ...] = ()
    keep = duties
    if override is not None and under_hold:
        _audit_override(subjects, session, subject_id, override, categories=[], refused="legal_hold")
    elif override is not None:
        overridden = tuple(
            _kept(category, duty.basis, duty.until.isoformat()) for category, duty in sorted(duties.items())
        )
        keep = {}
        _audit_override(subjects, session, subject_id, override, categories=sorted(duties))
    report = await subjects.erase(subject_id, keep)
    result = {
        "data_found": True,
        "erased": sorted(category for category in held if category not in report.kept),
        # A legal hold keeps every category (basis from the report, no end date); a duty keeps some.
        "kept": [
            _kept(
                category,
                report.kept[category],
                keep[category].until.isoformat()
                if category in keep and keep[category].basis == report.kept[category]
                else None,
            )
            for category in sorted(report.kept)
        ],
        "recipients_to_notify": rules.recipients(sorted(held)),
    }
    return Erasure(report, result, held=under_hold, overridden=overridden)

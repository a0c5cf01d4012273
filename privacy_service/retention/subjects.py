"""Step 2 of a run: subjects. A subject with nothing live left is erased (or restricted, with the
data a legal duty keeps and the duty's end); one with live data loses only its due profile fields
and identifiers."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    cast,
    false,
    func,
    or_,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.crypto.fields import Binding, DecryptionFailed
from privacy_service.crypto.keys import KeyError_
from privacy_service.crypto.service import PRIMARY, KeyShredded
from privacy_service.errors import DataIntegrityError
from privacy_service.retention.context import ACTOR, EngineBase
from privacy_service.retention.rules import (
    SUBJECT_ANCHORS,
    State,
    classify,
    record_anchors,
    rule_sql,
    subject_anchors,
    wide_select,
)
from privacy_service.retention.tally import (
    SUBJECTS_KEY,
    Tally,
    field_key,
)
from privacy_service.subjects.models import Record, Subject, SubjectStatus
from privacy_service.subjects.service import IDENTIFIERS, SUBJECTS, Retention, SubjectService


@dataclass(frozen=True, slots=True)
class CategoryState:
    live: int = 0
    duty: int = 0
    due: int = 0
    # The latest event and storage times among records kept by a duty: the duty's exact end.
    duty_occurred: datetime | None = None
    duty_stored: datetime | None = None

    def with_row(self, state: State, occurred_at: datetime, stored_at: datetime) -> CategoryState:
        """These counts with one more record, classified row by row."""
        if state is not State.DUTY:
            return CategoryState(
                self.live + (state is State.LIVE),
                self.duty,
                self.due + (state is State.DUE),
                self.duty_occurred,
                self.duty_stored,
            )
        return CategoryState(
            self.live,
            self.duty + 1,
            self.due,
            max(filter(None, (self.duty_occurred, occurred_at))),
            max(filter(None, (self.duty_stored, stored_at))),
        )


@dataclass(slots=True)
class SubjectDecision:
    held: bool
    nothing_live: bool
    field_states: dict[str, State]
    keep: dict[str, Retention]
    # erase | restrict | drop_fields | None
    action: str | None


class SubjectSteps(EngineBase):
    __slots__ = ()

    def _subject_candidates(self) -> ColumnElement[bool]:
        """A superset of the subjects a rule could act on (decide() settles it exactly): a subject
        -level period may be over, the account is closed, or the subject holds no profile field or
        identifier (then only its records can make it "nothing live"). A subject with a field still
        live can only lose fields, and only once some field's period may be over."""
        possible = [rule_sql(self._bounds[c], SUBJECT_ANCHORS, None).possible for c in self.subject_level_categories]
        no_fields = and_(
            *(getattr(Subject, f"{kind}_ct").is_(None) for kind in IDENTIFIERS),
            cast(col(Subject.profile_fields), String) == "{}",
        )
        return or_(col(Subject.account_closed_at).is_not(None), no_fields, *possible)

    async def _record_states(
        self, session: AsyncSession, subjects: Sequence[Subject]
    ) -> dict[uuid.UUID, dict[str, CategoryState]]:
        ids = [s.id for s in subjects]
        rules = list(self._record_sql().values())
        known = list(self._bounds)
        live = or_(col(Record.category).not_in(known), *(r.live for r in rules))
        duty = or_(*(r.duty for r in rules)) if rules else false()
        due_ = or_(*(r.due for r in rules)) if rules else false()
        window = or_(*(r.window for r in rules)) if rules else false()
        rows = await session.exec(
            wide_select(
                col(Record.subject_id),
                col(Record.category),
                func.sum(case((live, 1), else_=0)),
                func.sum(case((duty, 1), else_=0)),
                func.sum(case((due_, 1), else_=0)),
                func.max(case((duty, col(Record.occurred_at)), else_=None)),
                func.max(case((duty, col(Record.created_at)), else_=None)),
                func.sum(case((window, 1), else_=0)),
            )
            .join(Subject, col(Subject.id) == col(Record.subject_id))
            .where(col(Record.subject_id).in_(ids), col(Record.restricted).is_(False))
            .group_by(col(Record.subject_id), col(Record.category))
        )
        states: dict[uuid.UUID, dict[str, CategoryState]] = {}
        windows = False
        for subject_id, category, n_live, n_duty, n_due, duty_occurred, duty_stored, n_window in rows.all():
            states.setdefault(subject_id, {})[category] = CategoryState(
                int(n_live or 0), int(n_duty or 0), int(n_due or 0), duty_occurred, duty_stored
            )
            windows = windows or bool(n_window)
        if windows:
            by_id = {s.id: s for s in subjects}
            window_rows = await session.exec(
                wide_select(
                    col(Record.subject_id), col(Record.category), col(Record.occurred_at), col(Record.created_at)
                ).where(col(Record.subject_id).in_(ids), col(Record.restricted).is_(False), window)
            )
            for subject_id, category, occurred_at, stored_at in window_rows.all():
                anchors = record_anchors(occurred_at, stored_at, subject_anchors(by_id[subject_id]))
                found = classify(self._bounds[category].rule, anchors, self.now)
                states[subject_id][category] = states[subject_id][category].with_row(found, occurred_at, stored_at)
        return states

    def _subject_categories(self, subject: Subject) -> set[str]:
        present = set(subject.profile_fields.values())
        for kind in IDENTIFIERS:
            category = self.policy.identifier_fields.get(kind)
            if category is not None and getattr(subject, f"{kind}_ct") is not None:
                present.add(category)
        return present

    def _has_live_field(self, subject: Subject) -> bool:
        anchors = subject_anchors(subject)
        for category in self._subject_categories(subject):
            bound = self._bounds.get(category)
            if bound is None or classify(bound.rule, anchors, self.now) is State.LIVE:
                return True
        return False

    def _duty_end(self, category: str, anchors: Mapping[str, datetime | None]) -> datetime | None:
        duty = self._bounds[category].rule.legal_duty
        return duty.ends_at(anchors) if duty is not None else None

    def decide(self, subject: Subject, records: Mapping[str, CategoryState], held: bool) -> SubjectDecision:
        anchors = subject_anchors(subject)
        field_states: dict[str, State] = {}
        live = any(stats.live for stats in records.values())
        ends: dict[str, list[datetime | None]] = {}
        for category in self._subject_categories(subject):
            bound = self._bounds.get(category)
            state = classify(bound.rule, anchors, self.now) if bound else State.LIVE
            live = live or state is State.LIVE
            if state is not State.LIVE and bound is not None:
                field_states[category] = state
            if state is State.DUTY:
                ends.setdefault(category, []).append(self._duty_end(category, anchors))
        for category, stats in records.items():
            if stats.duty:
                # A duty on the records' own time: the latest record's end covers all, to the exact
                # instant (adding a calendar period never moves a later anchor to an earlier end).
                latest = record_anchors(stats.duty_occurred, stats.duty_stored, anchors)
                ends.setdefault(category, []).append(self._duty_end(category, latest))
        keep: dict[str, Retention] = {}
        unknown_end = False
        for category, candidates in ends.items():
            duty = self._bounds[category].rule.legal_duty
            if duty is None or any(end is None for end in candidates):
                unknown_end = True
                continue
            keep[category] = Retention(duty.basis, max(end for end in candidates if end is not None))
        due_fields = [c for c, s in field_states.items() if s is State.DUE]
        # Something's period must be over: a subject holding nothing at all is left alone.
        over = bool(field_states) or any(stats.duty or stats.due for stats in records.values())
        live = live or not over
        action: str | None = None
        if not live and not unknown_end:
            action = "restrict" if keep else "erase"
        elif due_fields:
            action = "drop_fields"
        if held:
            action = None
        return SubjectDecision(held, not live, field_states, keep, action)

    def _count_subject(self, tally: Tally, decision: SubjectDecision) -> None:
        for category, state in decision.field_states.items():
            counts = tally[field_key(category)]
            counts.selected += 1
            if decision.held:
                counts.skipped_hold += 1
            elif state is State.DUTY:
                counts.skipped_legal_duty += 1
            elif self._bounds[category].rule.action == "anonymise":
                counts.anonymised += 1
            else:
                counts.purged += 1
        if decision.nothing_live:
            counts = tally[SUBJECTS_KEY]
            counts.selected += 1
            if decision.held:
                counts.skipped_hold += 1
            elif decision.action == "erase":
                counts.purged += 1
            elif decision.action == "restrict":
                counts.restricted += 1
            else:
                counts.skipped_legal_duty += 1

    async def subjects_batch(
        self, session: AsyncSession, after: uuid.UUID | None, limit: int, *, act: bool
    ) -> tuple[Tally, uuid.UUID | None]:
        """Decide (and with ``act``, carry out) what happens to the next ``limit`` candidate subjects."""
        tally = Tally()
        query = select(Subject).where(col(Subject.status) == SubjectStatus.ACTIVE, self._subject_candidates())
        if after is not None:
            query = query.where(col(Subject.id) > after)
        query = query.order_by(col(Subject.id)).limit(limit)
        if act and self.postgres:
            query = query.with_for_update()
        subjects = (await session.exec(query)).all()
        if not subjects:
            return tally, None
        held = await self.held_among(session, (s.id for s in subjects))
        # A subject with a live profile field or identifier can only lose fields: its records
        # (purged by step 1 on their own) do not change what happens to it.
        undecided = [s for s in subjects if not self._has_live_field(s)]
        states = await self._record_states(session, undecided) if undecided else {}
        for subject in subjects:
            decision = self.decide(subject, states.get(subject.id, {}), subject.id in held)
            if not act or decision.action is None:
                self._count_subject(tally, decision)
                continue
            outcome = Tally()
            self._count_subject(outcome, decision)
            try:
                async with session.begin_nested():
                    await self._apply(session, subject, decision)
            except (DataIntegrityError, KeyShredded, KeyError_, DecryptionFailed, IntegrityError) as exc:
                # One damaged subject must not stop the run; it is reported by id and error type.
                failed = Tally()
                for key, counts in outcome.counts.items():
                    acted = counts.purged + counts.anonymised + counts.restricted
                    failed[key].selected = counts.selected
                    failed[key].skipped_legal_duty = counts.skipped_legal_duty
                    if acted:
                        failed.error(key, subject.id, exc)
                outcome = failed
            tally.add(outcome)
        return tally, (subjects[-1].id if len(subjects) == limit else None)

    async def _apply(self, session: AsyncSession, subject: Subject, decision: SubjectDecision) -> None:
        due_fields = sorted(c for c, s in decision.field_states.items() if s is State.DUE)
        month = subject.created_at.astimezone(UTC).strftime("%Y-%m")
        await self._aggregate(
            session,
            Counter(
                {
                    (category, "profile", month, ""): 1
                    for category in due_fields
                    if self._bounds[category].rule.action == "anonymise"
                }
            ),
        )
        if decision.action in ("erase", "restrict"):
            service = SubjectService(session, self.keys, self.policy, self.clock, ACTOR, self._actor_request_id())
            await service.erase(subject.id, decision.keep)
            return
        key = await self.keys.load_key(session, subject.id, PRIMARY)
        binding = Binding(SUBJECTS, subject.id, None, "profile")
        profile: dict[str, Any] = {}
        if subject.profile_ct is not None:
            profile = msgspec.json.decode(key.open(subject.profile_ct, binding))
        fields = {name: category for name, category in subject.profile_fields.items() if category not in due_fields}
        subject.profile_ct = key.seal(msgspec.json.encode({k: v for k, v in profile.items() if k in fields}), binding)
        subject.profile_fields = fields
        for kind in IDENTIFIERS:
            if self.policy.identifier_fields.get(kind) in due_fields:
                setattr(subject, f"{kind}_bidx", None)
                setattr(subject, f"{kind}_ct", None)
        subject.updated_at = self.clock.now()
        session.add(subject)
        self._audit(session, "retention.subject.fields_purged", subject.id, categories=due_fields)

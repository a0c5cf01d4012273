"""What a retention rule makes due, per item and as SQL conditions that agree with it.

:func:`classify` is the reference decision for one item (*live*, *duty* or *due*); :func:`rule_sql`
builds the same partition as SQL from the cut-offs of :mod:`retention.cutoffs`, and the ``*_ANCHORS``
maps say which column is the anchor of each trigger for each kind of row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    SQLColumnExpression,
    Table,
    and_,
    false,
    func,
    or_,
    true,
)
from sqlmodel import col, select

from privacy_service.dsr.models import PrivacyRequest
from privacy_service.policy.document import RetentionRule
from privacy_service.retention.cutoffs import Cut, cut, due
from privacy_service.subjects.models import Record, Subject

RECORDS: Table = Record.metadata.tables["records"]
# The data category of privacy-request rows (dsr_requests); its rule says how long they are kept.
REQUEST_CATEGORY = "system.privacy_request"

Anchor = SQLColumnExpression[Any]


class State(StrEnum):
    LIVE = "live"
    DUTY = "duty"
    DUE = "due"


def classify(rule: RetentionRule, anchors: Mapping[str, datetime | None], now: datetime) -> State:
    """The reference decision for one item: every SQL condition below agrees with it."""
    if not due(rule.period, anchors.get(rule.trigger), now):
        return State.LIVE
    duty = rule.legal_duty
    if duty is not None and not due(duty.period, anchors.get(duty.trigger), now):
        return State.DUTY
    return State.DUE


def wide_select(*columns: Any) -> Any:
    """sqlmodel's select() is typed for up to four columns; wider row queries are built here."""
    return select(*columns)


# -- SQL conditions ------------------------------------------------------------------------------


def _le(anchor: Anchor | None, bound: datetime | None) -> ColumnElement[bool]:
    # NULL (trigger not happened) compares as unknown: never true in WHERE, CASE WHEN, AND or OR.
    if anchor is None or bound is None:
        return false()
    return anchor <= bound


def _after(anchor: Anchor | None, bound: datetime | None) -> ColumnElement[bool]:
    if anchor is None or bound is None:
        return true()
    return or_(anchor.is_(None), anchor > bound)


def _between(anchor: Anchor | None, bounds: Cut) -> ColumnElement[bool]:
    if anchor is None or bounds.lo is None or bounds.hi is None or bounds.exact:
        return false()
    return and_(anchor > bounds.lo, anchor <= bounds.hi)


def _activity() -> Anchor:
    return func.coalesce(col(Subject.last_activity_at), col(Subject.created_at))


# Anchors of each trigger, per kind of row (None: the trigger never applies to it).
# Anchors of each trigger, per kind of row (None: the trigger never applies to it). A record's
# ``occurred_at`` is the event it describes (refused at write if in the future, so it cannot stretch
# a period); data without an event time of its own (profile fields, identifiers) occurs when it is
# collected, and a privacy request when it is received.
RECORD_ANCHORS: Mapping[str, Callable[[], Anchor | None]] = {
    "occurred_at": lambda: col(Record.occurred_at),
    "collected_at": lambda: col(Record.created_at),
    "request_completed_at": lambda: col(Record.created_at),
    "account_closed_at": lambda: col(Subject.account_closed_at),
    "last_activity_at": _activity,
}
SUBJECT_ANCHORS: Mapping[str, Callable[[], Anchor | None]] = {
    "occurred_at": lambda: col(Subject.created_at),
    "collected_at": lambda: col(Subject.created_at),
    "request_completed_at": lambda: None,
    "account_closed_at": lambda: col(Subject.account_closed_at),
    "last_activity_at": _activity,
}
REQUEST_ANCHORS: Mapping[str, Callable[[], Anchor | None]] = {
    "occurred_at": lambda: col(PrivacyRequest.received_at),
    "collected_at": lambda: col(PrivacyRequest.received_at),
    "request_completed_at": lambda: col(PrivacyRequest.completed_at),
    "account_closed_at": lambda: col(Subject.account_closed_at),
    "last_activity_at": _activity,
}


SUBJECT_TRIGGERS = frozenset({"account_closed_at", "last_activity_at"})


def subject_anchors(subject: Subject) -> dict[str, datetime | None]:
    return {
        "occurred_at": subject.created_at,
        "collected_at": subject.created_at,
        "request_completed_at": None,
        "account_closed_at": subject.account_closed_at,
        "last_activity_at": subject.last_activity_at or subject.created_at,
    }


def record_anchors(
    occurred_at: datetime | None, stored_at: datetime | None, subject: Mapping[str, datetime | None]
) -> dict[str, datetime | None]:
    """One record's anchors (as RECORD_ANCHORS reads them), on top of its subject's."""
    return {**subject, "occurred_at": occurred_at, "collected_at": stored_at, "request_completed_at": stored_at}


@dataclass(frozen=True, slots=True)
class Bound:
    """One rule's cut-offs at the run's ``now``."""

    rule: RetentionRule
    period: Cut
    duty: Cut | None

    @classmethod
    def of(cls, rule: RetentionRule, now: datetime) -> Bound:
        return cls(rule, cut(rule.period, now), cut(rule.legal_duty.period, now) if rule.legal_duty else None)

    @property
    def exact(self) -> bool:
        return self.period.exact and (self.duty is None or self.duty.exact)

    @property
    def reads_subject(self) -> bool:
        """For records: does the rule (or its duty) run from an event of the subject's?"""
        triggers = {self.rule.trigger, *((self.rule.legal_duty.trigger,) if self.rule.legal_duty else ())}
        return bool(triggers & SUBJECT_TRIGGERS)


@dataclass(frozen=True, slots=True)
class RuleSql:
    """A partition of one category's rows: live, due, duty, or window (decided row by row)."""

    live: ColumnElement[bool]
    due: ColumnElement[bool]
    duty: ColumnElement[bool]
    window: ColumnElement[bool]
    possible: ColumnElement[bool]  # a superset of "period over", for prefiltering
    selected: ColumnElement[bool]  # due or duty (period over, certainly), in fewer terms


def rule_sql(
    bound: Bound, anchors: Mapping[str, Callable[[], Anchor | None]], category: ColumnElement[bool] | None
) -> RuleSql:
    rule = bound.rule
    anchor = anchors[rule.trigger]()
    period_over = _le(anchor, bound.period.lo)
    if rule.legal_duty is None or bound.duty is None:
        duty_over: ColumnElement[bool] = true()
        duty_running: ColumnElement[bool] = false()
        duty_window: ColumnElement[bool] = false()
    else:
        duty_anchor = anchors[rule.legal_duty.trigger]()
        duty_over = _le(duty_anchor, bound.duty.lo)
        duty_running = _after(duty_anchor, bound.duty.hi)
        duty_window = _between(duty_anchor, bound.duty)
    match = category if category is not None else true()
    return RuleSql(
        live=and_(match, _after(anchor, bound.period.hi)),
        due=and_(match, period_over, duty_over),
        duty=and_(match, period_over, duty_running),
        window=and_(match, or_(_between(anchor, bound.period), and_(period_over, duty_window))),
        possible=and_(match, _le(anchor, bound.period.hi)),
        # Without a month-end window the duty is certainly over or running: no need to look.
        selected=and_(match, period_over)
        if bound.duty is None or bound.duty.exact
        else and_(match, period_over, or_(duty_over, duty_running)),
    )

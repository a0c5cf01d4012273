"""The legal clock: when an answer is due, per regime, read from the policy files.

GDPR counts a month by Reg. 1182/71: the receipt day is not counted, the period ends on the same date
next month or the last day of a shorter month (31 Jan -> 28/29 Feb), and a period ending on a
weekend or public holiday rolls to the next working day. CCPA counts calendar days for the answer and
business days for the acknowledgement. PIPL sets no number; the policy configures working days.
Working days and rolling follow each regime's calendar (privacy_service/calendars.py: the public
holidays of the jurisdictions the policy names, China's make-up working days, the policy's own
closed days). Every number and calendar comes from the policy, none from this code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from privacy_service.calendars import WorkingCalendar, regime_calendar
from privacy_service.errors import InvalidInput
from privacy_service.policy.document import PolicyDocument, RetentionDuty
from privacy_service.policy.duration import Duration
from privacy_service.subjects.service import Retention

_DUE_BY_DAY_SIZE = 4096  # (regime, day) entries kept; a few per day in service


class Period(Protocol):
    def add_to(self, moment: datetime) -> datetime: ...


@dataclass(frozen=True, slots=True)
class RegimeRule:
    name: str
    deadline: Period | None
    deadline_working_days: int | None
    extension: Period | None
    extension_working_days: int | None
    roll_to_working_day: bool
    calendar: WorkingCalendar = field(default_factory=WorkingCalendar)
    acknowledge: Period | None = None
    acknowledge_working_days: int | None = None

    def __post_init__(self) -> None:
        if (self.deadline is None) == (self.deadline_working_days is None):
            raise ValueError(f"regime {self.name}: give exactly one of deadline or deadline_working_days")

    def roll(self, moment: datetime) -> datetime:
        rolled = self.calendar.roll(moment.date())
        return moment + timedelta(days=(rolled - moment.date()).days)

    def add_working_days(self, moment: datetime, days: int) -> datetime:
        later = self.calendar.add_working_days(moment.date(), days)
        return moment + timedelta(days=(later - moment.date()).days)

    @property
    def due_by_day(self) -> bool:
        """The deadline depends on the day of receipt only (in the calendar's zone), not its time: a
        period of whole days, months or years, or working days. Then every request received that day
        is due at the same moment."""
        return self.deadline is None or (isinstance(self.deadline, Duration) and not self.deadline.has_time)


@dataclass(frozen=True, slots=True)
class DeadlineRules:
    regimes: dict[str, RegimeRule]
    duties: Mapping[str, RetentionDuty] = field(default_factory=dict)
    recipients_by_category: dict[str, tuple[str, ...]] = field(default_factory=dict)
    art15: Callable[[list[str], str], dict[str, Any]] = field(default=lambda categories, language: {})
    # due_at per (regime, day of receipt) where the deadline depends on the day only (see RegimeRule.due_by_day):
    # intake asks for every request, and the calendar's walk over holidays costs more than the rest of it.
    _due_by_day: dict[tuple[str, date], datetime] = field(default_factory=dict, init=False, compare=False, repr=False)

    def _local(self, rule: RegimeRule, moment: datetime) -> datetime:
        """``moment`` in the regime calendar's time zone: days are counted and rolled there."""
        return moment.astimezone(rule.calendar.zone)

    def _end_of_day(self, rule: RegimeRule, moment: datetime) -> datetime:
        """A period ends at the end of its last day in the regime calendar's time zone (returned in UTC)."""
        local = self._local(rule, moment)
        return datetime.combine(local.date(), time(23, 59, 59), tzinfo=rule.calendar.zone).astimezone(UTC)

    def local_date(self, regime: str, moment: datetime) -> date:
        """The day ``moment`` falls on in the regime calendar's time zone (a deadline's last day)."""
        return self._local(self.rule(regime), moment).date()

    def is_working_day(self, regime: str, day: date) -> bool:
        return self.rule(regime).calendar.is_working_day(day)

    def rule(self, regime: str) -> RegimeRule:
        try:
            return self.regimes[regime]
        except KeyError:
            raise InvalidInput(f"regime {regime} is not configured in the policy") from None

    def _unrolled_due(self, rule: RegimeRule, received_at: datetime) -> datetime:
        if rule.deadline is not None:
            return rule.deadline.add_to(received_at)
        return rule.add_working_days(received_at, rule.deadline_working_days or 0)

    def due_at(self, regime: str, received_at: datetime) -> datetime:
        rule = self.rule(regime)
        local = self._local(rule, received_at)
        if not rule.due_by_day:
            return self._due_at(rule, local)
        key = (regime, local.date())
        due = self._due_by_day.get(key)
        if due is None:
            if len(self._due_by_day) >= _DUE_BY_DAY_SIZE:
                self._due_by_day.clear()
            due = self._due_by_day[key] = self._due_at(rule, local)
        return due

    def _due_at(self, rule: RegimeRule, local: datetime) -> datetime:
        due = self._unrolled_due(rule, local)
        if rule.roll_to_working_day:
            due = rule.roll(due)
        return self._end_of_day(rule, due)

    def acknowledge_due_at(self, regime: str, received_at: datetime) -> datetime | None:
        """When receipt must have been confirmed (CCPA: 10 business days, 11 CCR §7021(a)); None if never."""
        rule = self.rule(regime)
        received_at = self._local(rule, received_at)
        if rule.acknowledge is not None:
            due = rule.acknowledge.add_to(received_at)
        elif rule.acknowledge_working_days is not None:
            due = rule.add_working_days(received_at, rule.acknowledge_working_days)
        else:
            return None
        if rule.roll_to_working_day:
            due = rule.roll(due)
        return self._end_of_day(rule, due)

    def extended_due_at(self, regime: str, received_at: datetime, due_at: datetime, days: int | None) -> datetime:
        """The latest allowed due date after the one extension; ``days`` may ask for less.

        The extension runs on from the end of the original period (before any weekend roll),
        so GDPR's "two further months" ends three calendar months after receipt.
        """
        rule = self.rule(regime)
        if rule.extension is None and rule.extension_working_days is None:
            raise InvalidInput(f"the policy allows no extension under {regime}")
        original = self._unrolled_due(rule, self._local(rule, received_at))
        ceiling = (
            rule.extension.add_to(original)
            if rule.extension is not None
            else rule.add_working_days(original, rule.extension_working_days or 0)
        )
        if rule.roll_to_working_day:
            ceiling = rule.roll(ceiling)
        ceiling = self._end_of_day(rule, ceiling)
        if days is None:
            return ceiling
        wanted = self._end_of_day(rule, self._local(rule, due_at) + timedelta(days=days))
        if wanted > ceiling:
            raise InvalidInput(f"{regime} allows extending to {self._local(rule, ceiling).date()} at most")
        return wanted

    def legal_duty(self, category: str, anchors: Mapping[str, datetime | None]) -> Retention | None:
        """If a law keeps this category after erasure: the basis and when the duty ends."""
        duty = self.duties.get(category)
        if duty is None:
            return None
        until = duty.ends_at(anchors)
        if until is None:
            return None
        return Retention(basis=duty.basis, until=until)

    def processing_information(self, categories: list[str], language: str) -> dict[str, Any]:
        """GDPR Art. 15(1)(a)-(h) for the categories held, from the policy."""
        return self.art15(categories, language)

    def recipients(self, categories: Iterable[str]) -> list[str]:
        names: set[str] = set()
        for category in categories:
            names.update(self.recipients_by_category.get(category, ()))
        return sorted(names)


def build_deadline_rules(policy: PolicyDocument) -> DeadlineRules:
    """Everything the request workflow reads from the policy, in one place."""
    regimes = {
        name: RegimeRule(
            name=name,
            deadline=regime.deadline.period,
            deadline_working_days=regime.deadline.working_days,
            extension=regime.extension.period if regime.extension else None,
            extension_working_days=regime.extension.working_days if regime.extension else None,
            roll_to_working_day=regime.roll_to_working_day,
            calendar=regime_calendar(policy.spec, regime),
            acknowledge=regime.acknowledge.period if regime.acknowledge else None,
            acknowledge_working_days=regime.acknowledge.working_days if regime.acknowledge else None,
        )
        for name, regime in policy.spec.regimes.items()
    }
    duties = {
        category: rule.legal_duty for category, rule in policy.retention_rules().items() if rule.legal_duty is not None
    }
    default_notice = policy.notices[policy.default_language]
    recipients = {
        category: tuple(
            default_notice.recipients[name].name if name in default_notice.recipients else name
            for name in spec.recipients
        )
        for category, spec in policy.data_categories.items()
    }
    return DeadlineRules(
        regimes=regimes,
        duties=duties,
        recipients_by_category=recipients,
        art15=lambda categories, language: art15_information(policy, categories, language),
    )


def art15_information(policy: PolicyDocument, categories: list[str], language: str) -> dict[str, Any]:
    """GDPR Art. 15(1)(a)-(h) / PIPL Art. 45 for the categories held, worded in the request's language."""
    notice = policy.notices.get(language) or policy.notices[policy.default_language]
    spec = policy.spec

    def name(table: Mapping[str, Any], key: str) -> str:
        entry = table.get(key)
        return entry.name if entry is not None else key

    held = []
    for key in categories:
        category = spec.data_categories.get(key)
        if category is None:
            continue
        rule = policy.retention_rule(key)
        held.append(
            {
                "category": key,
                "name": name(notice.data_categories, key),
                "purposes": [
                    {
                        "purpose": name(notice.purposes, purpose),
                        "legal_basis_gdpr": spec.purposes[purpose].legal_basis.gdpr,
                        "legal_basis_pipl": spec.purposes[purpose].legal_basis.pipl,
                    }
                    for purpose in category.purposes
                ],
                "source": name(notice.sources, category.source),
                "recipients": [name(notice.recipients, r) for r in category.recipients],
                "transfers": [name(notice.transfers, t) for t in category.transfers],
                "retention": {
                    "period": str(rule.period),
                    "trigger": rule.trigger,
                    "action": rule.action,
                    "legal_duty": (
                        {
                            "basis": rule.legal_duty.basis,
                            "period": str(rule.legal_duty.period),
                            "trigger": rule.legal_duty.trigger,
                        }
                        if rule.legal_duty
                        else None
                    ),
                },
            }
        )
    return {
        "policy_version": policy.version,
        "controller": spec.controller.model_dump(mode="json", exclude_none=True),
        "dpo": spec.dpo.model_dump(mode="json", exclude_none=True),
        "categories": held,
        "rights": [name(notice.rights, right) for right in spec.rights],
        "complaint_authorities": [
            {"name": name(notice.authorities, key), "url": authority.url} for key, authority in spec.authorities.items()
        ],
        "automated_decisions": notice.sections["automated_decisions"].body,
    }

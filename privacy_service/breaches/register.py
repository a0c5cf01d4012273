"""Reading incidents: one incident's view, the breach register (Art. 33(5)), its versions and CSV export."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlmodel import col, or_, select

from privacy_service.audit import service as audit
from privacy_service.breaches import schemas
from privacy_service.breaches.clocks import authority_clock, california_clock
from privacy_service.breaches.closing import open_duties
from privacy_service.breaches.context import BreachBase
from privacy_service.breaches.messaging import (
    category_names,
)
from privacy_service.breaches.models import AuthorityNotice, Breach, BreachTransition, BreachVersion
from privacy_service.breaches.notifications import notice_summary, subject_view
from privacy_service.clock import as_utc
from privacy_service.errors import InvalidInput
from privacy_service.spreadsheet import csv_cell


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
    "data_types",
    "affected_countries",
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
    "recipient",
    "likely_consequences",
    "severity",
    "band",
    "notify_authority",
    "authorities_concerned",
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


class Register(BreachBase):
    __slots__ = ()

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
            data_types=[schemas.CategoryRef(key, self.rules.data_type_name(key, "en")) for key in breach.data_types],
            affected_countries=list(breach.affected_countries),
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
            clock=authority_clock(breach, self.clock.now()),
            california_clock=california_clock(self.rules, breach, self.clock.now()),
            severity=breach.severity,
            band=breach.band,
            assessment=assessment,
            assessment_stale=assessment is not None and breach.assessed_version != breach.facts_version,
            decisions=(assessment or {}).get("decisions"),
            authority_notifications=[notice_summary(notice) for notice in notices],
            subject_notifications=subject_view(breach, counts) if counts is not None else None,
            public_communication=breach.public_notice,
            open_duties=open_duties(
                breach, counts, {notice.authority for notice in notices if notice.kind == "initial"}, rules=self.rules
            ),
            closed_at=breach.closed_at,
            closing_note=breach.closing_note,
            history=[schemas.Transition(t.to_status, t.at, t.actor_type, t.note) for t in transitions],
        )

    async def register(
        self, *, status: str | None, band: str | None, after: str | None, limit: int
    ) -> schemas.BreachPage:
        """The breach register (Art. 33(5)): every incident, notified or not, newest first."""
        page, cursor = await self.register_rows(status=status, band=band, after=after, limit=limit)
        return schemas.BreachPage(items=[await self._view(row) for row in page], next_cursor=cursor)

    async def register_rows(
        self, *, status: str | None, band: str | None, after: str | None, limit: int
    ) -> tuple[list[Breach], str | None]:
        """One page of the register's incidents (newest first, keyset) and the next page's cursor, in one
        query: a list (the console's) that shows each incident's own columns and clock needs no more."""
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
            if cursor_at.tzinfo is None:
                raise InvalidInput("after: not a cursor returned by this endpoint")
            cursor_at = as_utc(cursor_at, "after")  # an offset with no UTC equivalent is a 422, not an OverflowError
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
        page = list(rows[:limit])
        cursor = f"{page[-1].detected_at.isoformat()}_{page[-1].id}" if len(rows) > limit else None
        return page, cursor

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


def _recipient(breach: Breach) -> str | None:
    recipient = ((breach.assessment or {}).get("inputs") or {}).get("recipient")
    return f"{recipient['trust']}, {recipient['data']}" if recipient else None


def register_row(breach: Breach, counts: dict[str, int] | None, notices: Iterable[AuthorityNotice]) -> list[Any]:
    counts = counts or {}
    assessment = breach.assessment or {}
    inputs = assessment.get("inputs") or {}
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
        breach.data_types,
        breach.affected_countries,
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
        _recipient(breach),
        inputs.get("consequences") or [],
        breach.severity,
        breach.band,
        breach.notify_authority,
        [item["key"] for item in (assessment.get("authorities") or {}).get("authorities", [])],
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

"""Recording an incident and changing its facts: create, a monitoring draft, update, confirm, dismiss."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Uuid, delete, func, literal
from sqlalchemy import insert as sa_insert
from sqlmodel import col, select

from privacy_service.breaches import schemas
from privacy_service.breaches.clocks import authority_deadline
from privacy_service.breaches.context import BreachBase, require_aware
from privacy_service.breaches.flows import Status, check_action
from privacy_service.breaches.models import Breach, BreachSubject, BreachTransition
from privacy_service.db import UTCDateTime
from privacy_service.errors import Conflict, InvalidInput
from privacy_service.subjects.models import Record, Subject
from privacy_service.subjects.schemas import Language

CHUNK = 1000
FACT_FIELDS = (
    "title",
    "description",
    "aware_at",
    "occurred_from",
    "occurred_to",
    "nature",
    "categories",
    "data_types",
    "affected_countries",
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


class Incidents(BreachBase):
    __slots__ = ()

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

    def _data_types(self, keys: Sequence[str]) -> list[str]:
        taxonomy = self.rules.enisa.taxonomy
        # Positions, not the values: an error names what the policy knows, never repeats the input.
        unknown = [index for index, key in enumerate(keys) if key not in taxonomy]
        if unknown:
            raise InvalidInput(
                f"{len(unknown)} data_types are not data types of the breach taxonomy (policies/breach.yaml); "
                "see 'allowed'",
                extra={
                    "errors": [
                        {"field": f"data_types[{index}]", "message": "not a data type of the breach taxonomy"}
                        for index in unknown[:20]
                    ],
                    "allowed": sorted(taxonomy),
                },
            )
        return list(dict.fromkeys(keys))

    @staticmethod
    def _some_data(categories: Sequence[str], data_types: Sequence[str]) -> None:
        if not categories and not data_types:
            raise InvalidInput("name the data involved: at least one of categories or data_types")

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
            require_aware(selector.created_from, "affected.selector.created_from")
            require_aware(selector.created_to, "affected.selector.created_to")
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
        data_types = self._data_types(body.data_types)
        self._some_data(categories, data_types)
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
            data_types=data_types,
            affected_countries=list(dict.fromkeys(body.affected_countries)),
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
            authority_deadline=authority_deadline(self.rules, aware_at),
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
        if "data_types" in given:
            given["data_types"] = self._data_types(given["data_types"])
        if "categories" in given or "data_types" in given:
            self._some_data(given.get("categories", breach.categories), given.get("data_types", breach.data_types))
        if "affected_countries" in given:
            given["affected_countries"] = list(dict.fromkeys(given["affected_countries"]))
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
            breach.authority_deadline = authority_deadline(self.rules, breach.aware_at)
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
        breach.authority_deadline = authority_deadline(self.rules, aware_at)
        self._version(breach, "confirm", ["status", "aware_at"])
        return breach

    async def dismiss(self, breach_id: uuid.UUID, body: schemas.DismissBody) -> Breach:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "dismiss")
        self._transition(breach, Status.DISMISSED, "not a personal data breach")
        breach.closing_note, breach.closed_at = body.reason, self.clock.now()
        self._version(breach, "dismiss", ["status", "closing_note"])
        return breach

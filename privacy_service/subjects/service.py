"""Vault use cases: create, read, patch, look up, add records, lifecycle events, erase.

Services never commit: the HTTP request or the CLI command owns the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import Table, bindparam, delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor, AuditSink
from privacy_service.clock import Clock, as_utc
from privacy_service.crypto.fields import NORMALISERS, Binding, DataKey, DecryptionFailed, InvalidIdentifier
from privacy_service.crypto.keys import KeyError_
from privacy_service.crypto.service import PRIMARY, RETENTION, KeyService, KeyShredded
from privacy_service.errors import Conflict, DataIntegrityError, Gone, InvalidInput, NotFound
from privacy_service.policy.document import PolicyDocument
from privacy_service.retention.models import LegalHold
from privacy_service.subjects import schemas
from privacy_service.subjects.models import Record, Subject, SubjectStatus

IDENTIFIERS = ("email", "phone", "external_id")
LEGAL_HOLD_BASIS = "legal hold (kept for legal claims while the hold lasts, GDPR Art. 17(3)(e))"
SUBJECTS = "subjects"
RECORDS = "records"
_RECORDS_TABLE: Table = Record.__table__  # type: ignore[attr-defined]
# Erasure keeping a category: each kept record re-sealed under the retention key and restricted.
_RESEAL = (
    update(_RECORDS_TABLE)
    .where(_RECORDS_TABLE.c.id == bindparam("record_id"))
    .values(data_ct=bindparam("sealed"), restricted=True, retain_until=bindparam("until"))
)
_RESEAL_CHUNK = 1000

_encode = msgspec.json.encode


def _decode(raw: bytes) -> Any:
    return msgspec.json.decode(raw)


MAX_DEPTH = 16


def check_depth(value: Any, field: str, limit: int = MAX_DEPTH) -> None:
    """Reject JSON values nested deeper than ``limit`` (profiles and records are shallow documents)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise InvalidInput(f"{field} is nested more than {limit} levels deep")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _require_aware(value: datetime, field: str) -> datetime:
    return as_utc(value, field)


# How far ahead of the vault's clock a client's time may be (clock skew) when it is an anchor
# retention runs from: the default of Settings.retention_max_future_skew_seconds.
DEFAULT_FUTURE_SKEW = timedelta(minutes=5)


@dataclass(slots=True)
class SubjectService:
    session: AsyncSession
    keys: KeyService
    policy: PolicyDocument
    clock: Clock
    actor: Actor
    request_id: str | None = None
    audit_sink: AuditSink = audit.record
    future_skew: timedelta = DEFAULT_FUTURE_SKEW

    # -- helpers -------------------------------------------------------------------------

    def _past(self, value: datetime, field: str) -> datetime:
        """A client's time that retention runs from (an event, not a promise): in UTC, and not in
        the future beyond the clock-skew allowance, or it could stretch a retention period."""
        utc = _require_aware(value, field)
        if utc > self.clock.now() + self.future_skew:
            allowed = int(self.future_skew.total_seconds())
            raise InvalidInput(
                f"{field} is in the future (more than {allowed} s ahead of the service's clock)",
                extra={"errors": [{"field": field, "message": "must not be in the future"}]},
            )
        return utc

    def _audit(self, action: str, subject_id: uuid.UUID | None, **detail: Any) -> None:
        self.audit_sink(
            self.session,
            at=self.clock.now(),
            actor=self.actor,
            action=action,
            subject_id=subject_id,
            request_id=self.request_id,
            detail=detail,
        )

    def _normalise(self, kind: str, value: str) -> str:
        try:
            return NORMALISERS[kind](value)
        except InvalidIdentifier as exc:
            raise InvalidInput(f"{kind}: {exc}", extra={"errors": [{"field": kind, "message": str(exc)}]}) from None

    def _check_profile(self, profile: dict[str, Any]) -> dict[str, str]:
        unknown = sorted(name for name in profile if name not in self.policy.profile_fields)
        if unknown:
            raise InvalidInput(
                "profile fields without a data category in the policy: " + ", ".join(unknown)[:300],
                extra={
                    "errors": [
                        {"field": f"profile.{name}", "message": "unknown profile field"} for name in unknown[:20]
                    ]
                },
            )
        return {name: self.policy.profile_fields[name] for name in profile}

    def _set_identifier(self, subject: Subject, key: DataKey, kind: str, value: str | None) -> None:
        if value is None:
            setattr(subject, f"{kind}_bidx", None)
            setattr(subject, f"{kind}_ct", None)
            return
        normalised = self._normalise(kind, value)
        setattr(subject, f"{kind}_bidx", self.keys.indexer.index(kind, normalised))
        setattr(subject, f"{kind}_ct", key.seal(normalised.encode(), Binding(SUBJECTS, subject.id, None, kind)))

    def _set_profile(self, subject: Subject, key: DataKey, profile: dict[str, Any]) -> None:
        check_depth(profile, "profile")
        subject.profile_fields = self._check_profile(profile)
        subject.profile_ct = key.seal(_encode(profile), Binding(SUBJECTS, subject.id, None, "profile"))

    async def _flush_unique(self) -> None:
        try:
            await self.session.flush()
        except IntegrityError:
            raise Conflict("another subject already has one of these identifiers") from None

    @staticmethod
    def _found(subject: Subject | None) -> Subject:
        if subject is None:
            raise NotFound("no subject with this id")
        return subject

    @staticmethod
    def _active(subject: Subject) -> Subject:
        if subject.status != SubjectStatus.ACTIVE:
            raise Gone("this subject has been erased (any data a legal duty keeps is restricted)")
        return subject

    async def _get_row(self, subject_id: uuid.UUID) -> Subject:
        return self._found(await self.session.get(Subject, subject_id))

    async def _get_active(self, subject_id: uuid.UUID) -> Subject:
        return self._active(await self._get_row(subject_id))

    async def _key(self, subject_id: uuid.UUID) -> DataKey:
        try:
            return await self.keys.load_key(self.session, subject_id)
        except (KeyShredded, KeyError_) as exc:
            raise DataIntegrityError("the subject's data key is unavailable") from exc

    async def _get_active_with_key(self, subject_id: uuid.UUID) -> tuple[Subject, DataKey]:
        """``_get_active`` and ``_key`` in one query: the key row is joined to the subject row."""
        row, key_row = await self.keys.get_with_key_row(self.session, Subject, subject_id)
        subject = self._active(self._found(row))
        try:
            return subject, await self.keys.unwrap_row(key_row, subject_id)
        except (KeyShredded, KeyError_) as exc:
            raise DataIntegrityError("the subject's data key is unavailable") from exc

    @staticmethod
    def _open(key: DataKey, blob: bytes | None, binding: Binding) -> bytes | None:
        if blob is None:
            return None
        try:
            return key.open(blob, binding)
        except DecryptionFailed as exc:
            raise DataIntegrityError(f"stored {binding.table}.{binding.field} failed to decrypt") from exc

    # -- use cases -----------------------------------------------------------------------

    async def create(self, body: schemas.SubjectCreate) -> uuid.UUID:
        now = self.clock.now()
        subject = Subject(id=uuid.uuid4(), language=body.language, created_at=now, updated_at=now)
        key = await self.keys.create_key(self.session, subject.id)
        for kind in IDENTIFIERS:
            self._set_identifier(subject, key, kind, getattr(body, kind))
        self._set_profile(subject, key, body.profile)
        self.session.add(subject)
        await self._flush_unique()
        self._audit("subject.create", subject.id, fields=sorted(body.profile))
        return subject.id

    def _render(self, subject: Subject, key: DataKey) -> schemas.SubjectOut:
        def ident(kind: str) -> str | None:
            raw = self._open(key, getattr(subject, f"{kind}_ct"), Binding(SUBJECTS, subject.id, None, kind))
            return raw.decode() if raw is not None else None

        profile_raw = self._open(key, subject.profile_ct, Binding(SUBJECTS, subject.id, None, "profile"))
        return schemas.SubjectOut(
            id=subject.id,
            status=subject.status,
            language=subject.language,
            email=ident("email"),
            phone=ident("phone"),
            external_id=ident("external_id"),
            profile=_decode(profile_raw) if profile_raw else {},
            profile_categories=dict(subject.profile_fields),
            created_at=subject.created_at,
            updated_at=subject.updated_at,
            last_activity_at=subject.last_activity_at,
            account_closed_at=subject.account_closed_at,
        )

    async def read(self, subject_id: uuid.UUID) -> schemas.SubjectOut:
        # Recorded first, so the event rides on the read's own query (db.carry_appended_rows). A
        # subject not found or not active raises, and the transaction rolls the event back: callers
        # must not swallow that error and commit.
        self._audit("subject.read", subject_id)
        subject, key = await self._get_active_with_key(subject_id)
        return self._render(subject, key)

    async def patch(self, subject_id: uuid.UUID, body: schemas.SubjectPatch) -> schemas.SubjectUpdated:
        """Apply a partial update; the answer says what changed (reading it back is a separate, audited read)."""
        unchanged = all(getattr(body, kind) is msgspec.UNSET for kind in IDENTIFIERS) and body.language is msgspec.UNSET
        if unchanged and (body.profile is msgspec.UNSET or not body.profile):
            raise InvalidInput(
                "nothing to change: give at least one of email, phone, external_id, language or a profile field",
                extra={"errors": [{"field": "body", "message": "no field to change"}]},
            )
        subject = await self._get_active(subject_id)
        key = await self._key(subject_id)
        changed: list[str] = []
        for kind in IDENTIFIERS:
            value = getattr(body, kind)
            if value is not msgspec.UNSET:
                self._set_identifier(subject, key, kind, value)
                changed.append(kind)
        if body.language is not msgspec.UNSET:
            subject.language = body.language
            changed.append("language")
        if body.profile is not msgspec.UNSET:
            raw = self._open(key, subject.profile_ct, Binding(SUBJECTS, subject.id, None, "profile"))
            profile: dict[str, Any] = _decode(raw) if raw else {}
            for name, value in body.profile.items():
                if value is None:
                    profile.pop(name, None)
                else:
                    profile[name] = value
                changed.append(f"profile.{name}")
            self._set_profile(subject, key, profile)
        subject.updated_at = self.clock.now()
        self.session.add(subject)
        await self._flush_unique()
        self._audit("subject.update", subject_id, fields=sorted(changed))
        return schemas.SubjectUpdated(
            id=subject.id, status=subject.status, updated_at=subject.updated_at, changed=sorted(changed)
        )

    async def lookup(self, kind: str, value: str) -> list[schemas.SubjectRef]:
        bidx = self.keys.indexer.index(kind, self._normalise(kind, value))
        column = col(getattr(Subject, f"{kind}_bidx"))
        rows = (await self.session.exec(select(Subject).where(column == bidx))).all()
        self._audit("subject.lookup", rows[0].id if rows else None, by=kind, found=len(rows))
        return [schemas.SubjectRef(id=row.id, status=row.status, created_at=row.created_at) for row in rows]

    async def add_record(self, subject_id: uuid.UUID, body: schemas.RecordCreate) -> uuid.UUID:
        if not self.policy.is_category(body.category):
            raise InvalidInput(
                "category is not a data category of the policy",
                extra={"errors": [{"field": "category", "message": "unknown data category"}]},
            )
        occurred_at = self._past(body.occurred_at, "occurred_at")
        check_depth(body.data, "data")
        await self._get_active(subject_id)
        key = await self._key(subject_id)
        record_id = uuid.uuid4()
        self.session.add(
            Record(
                id=record_id,
                subject_id=subject_id,
                kind=body.kind,
                category=body.category,
                occurred_at=occurred_at,
                created_at=self.clock.now(),
                data_ct=key.seal(_encode(body.data), Binding(RECORDS, subject_id, record_id, "data")),
            )
        )
        self._audit("record.create", subject_id, record_id=str(record_id), kind=body.kind, category=body.category)
        return record_id

    def _render_record(self, key: DataKey, row: Record) -> schemas.RecordOut:
        raw = self._open(key, row.data_ct, Binding(RECORDS, row.subject_id, row.id, "data"))
        return schemas.RecordOut(
            id=row.id,
            subject_id=row.subject_id,
            kind=row.kind,
            category=row.category,
            occurred_at=row.occurred_at,
            created_at=row.created_at,
            data=_decode(raw) if raw else {},
        )

    async def list_records(self, subject_id: uuid.UUID, *, after: uuid.UUID | None, limit: int) -> schemas.RecordPage:
        await self._get_active(subject_id)
        key = await self._key(subject_id)
        query = select(Record).where(col(Record.subject_id) == subject_id, col(Record.restricted).is_(False))
        if after is not None:
            query = query.where(col(Record.id) > after)
        rows = (await self.session.exec(query.order_by(col(Record.id)).limit(limit + 1))).all()
        page = rows[:limit]
        self._audit("record.read", subject_id, count=len(page))
        return schemas.RecordPage(
            items=[self._render_record(key, row) for row in page],
            next_cursor=str(page[-1].id) if len(rows) > limit else None,
        )

    async def read_record(self, subject_id: uuid.UUID, record_id: uuid.UUID) -> schemas.RecordOut:
        await self._get_active(subject_id)
        row = await self.session.get(Record, record_id)
        if row is None or row.subject_id != subject_id or row.restricted:
            raise NotFound("no record with this id for this subject")
        out = self._render_record(await self._key(subject_id), row)
        self._audit("record.read", subject_id, record_id=str(record_id))
        return out

    async def post_event(self, subject_id: uuid.UUID, body: schemas.EventCreate) -> schemas.EventAccepted:
        subject = await self._get_active(subject_id)
        at = self._past(body.at, "at") if body.at is not None else self.clock.now()
        if body.type == "account_closed":
            subject.account_closed_at = at
        elif subject.last_activity_at is None or at > subject.last_activity_at:
            subject.last_activity_at = at
        subject.updated_at = self.clock.now()
        self.session.add(subject)
        self._audit(f"subject.event.{body.type}", subject_id)
        return schemas.EventAccepted(subject_id=subject_id, type=body.type, at=at)

    async def erase(self, subject_id: uuid.UUID, keep: Mapping[str, Retention] | None = None) -> schemas.ErasureReport:
        """Crypto-shred the subject's data and delete it, except categories a legal duty keeps.

        Kept data is re-sealed under a separate "retention" key, marked restricted (normal reads no
        longer return it) and dated for purge when the duty ends. Idempotent: a second call reports
        the first erasure. One transaction: an interruption leaves nothing half-done.
        """
        keep = keep or {}
        subject = await self._get_row(subject_id)
        if subject.status != SubjectStatus.ACTIVE and subject.erased_at is not None:
            return schemas.ErasureReport(
                subject_id, subject.status, subject.erased_at, 0, 0, True, kept=dict(subject.profile_fields)
            )
        now = self.clock.now()
        if await self.under_hold(subject_id):
            # A legal hold keeps everything, unchanged, until it is released (retention/).
            kept = dict.fromkeys(await self.categories_held(subject_id), LEGAL_HOLD_BASIS)
            self._audit("subject.erase.held", subject_id, kept_categories=sorted(kept))
            return schemas.ErasureReport(subject_id, subject.status, now, 0, 0, False, kept=kept)
        kept_summary: dict[str, str] = {}
        retention_key: DataKey | None = None
        if keep:
            # Only kept data needs the key: erasing everything works even if the key is damaged.
            key = await self._key(subject_id)
            retention_key = await self.keys.create_key(self.session, subject_id, RETENTION)
            retained = self._retained_fields(subject, key, keep)
            for category in await self._reseal_kept_records(subject_id, key, retention_key, keep):
                kept_summary[category] = keep[category].basis
            if retained:
                subject.retained_ct = retention_key.seal(
                    _encode(retained), Binding(SUBJECTS, subject.id, None, "retained")
                )
                for category in {category for category, _ in retained.values()}:
                    kept_summary[category] = keep[category].basis
            if kept_summary:
                subject.retained_until = max(keep[category].until for category in kept_summary)
        destroyed = await self.keys.shred(self.session, subject_id, PRIMARY)
        if not kept_summary and retention_key is not None:
            destroyed += await self.keys.shred(self.session, subject_id, RETENTION)
        delete_rows = delete(Record).where(col(Record.subject_id) == subject_id, col(Record.restricted).is_(False))
        deleted = await self.session.exec(delete_rows)
        for kind in IDENTIFIERS:
            setattr(subject, f"{kind}_bidx", None)
            setattr(subject, f"{kind}_ct", None)
        subject.profile_ct = None
        # After erasure profile_fields records what was kept and why (category -> legal basis).
        subject.profile_fields = kept_summary
        subject.status = SubjectStatus.RESTRICTED if kept_summary else SubjectStatus.ERASED
        subject.erased_at = subject.updated_at = now
        if subject.account_closed_at is None:
            subject.account_closed_at = now  # erasure ends the business relationship
        self.session.add(subject)
        records_deleted = int(deleted.rowcount or 0)
        self._audit(
            "subject.erase",
            subject_id,
            keys_destroyed=destroyed,
            records_deleted=records_deleted,
            kept_categories=sorted(kept_summary),
        )
        return schemas.ErasureReport(
            subject_id, subject.status, now, destroyed, records_deleted, False, kept=kept_summary
        )

    async def under_hold(self, subject_id: uuid.UUID) -> bool:
        """Whether an active legal hold protects the subject (it keeps everything, unchanged)."""
        now = self.clock.now()
        held = select(col(LegalHold.id)).where(col(LegalHold.subject_id) == subject_id, LegalHold.active_at(now))
        return (await self.session.exec(held.limit(1))).first() is not None

    async def _reseal_kept_records(
        self, subject_id: uuid.UUID, key: DataKey, retention_key: DataKey, keep: Mapping[str, Retention]
    ) -> set[str]:
        """Re-seal the records of kept categories under the retention key and restrict them, in
        chunks (rows, not ORM objects: one UPDATE executemany per chunk). Returns the categories
        that had records."""
        query = (
            select(col(Record.id), col(Record.category), col(Record.data_ct))
            .where(col(Record.subject_id) == subject_id, col(Record.category).in_(list(keep)))
            .order_by(col(Record.id))
            .limit(_RESEAL_CHUNK)
        )
        connection = await self.session.connection()
        categories: set[str] = set()
        after: uuid.UUID | None = None
        while True:
            rows = (await self.session.exec(query if after is None else query.where(col(Record.id) > after))).all()
            if not rows:
                return categories
            resealed = []
            for record_id, category, data_ct in rows:
                binding = Binding(RECORDS, subject_id, record_id, "data")
                plain = self._open(key, data_ct, binding)
                sealed = retention_key.seal(plain or b"{}", binding)
                resealed.append({"record_id": record_id, "sealed": sealed, "until": keep[category].until})
                categories.add(category)
            await connection.execute(_RESEAL, resealed)
            after = rows[-1][0]

    def _retained_fields(
        self, subject: Subject, key: DataKey, keep: Mapping[str, Retention]
    ) -> dict[str, tuple[str, Any]]:
        """Profile fields and identifiers whose category is kept: name -> (category, value)."""
        retained: dict[str, tuple[str, Any]] = {}
        raw = self._open(key, subject.profile_ct, Binding(SUBJECTS, subject.id, None, "profile"))
        profile: dict[str, Any] = _decode(raw) if raw else {}
        for name, value in profile.items():
            category = subject.profile_fields.get(name)
            if category is not None and category in keep:
                retained[name] = (category, value)
        for kind in IDENTIFIERS:
            category = self.policy.identifier_fields.get(kind)
            blob = getattr(subject, f"{kind}_ct")
            if category is not None and category in keep and blob is not None:
                plain = self._open(key, blob, Binding(SUBJECTS, subject.id, None, kind))
                retained[kind] = (category, plain.decode() if plain else None)
        return retained

    async def contact_email(self, subject_id: uuid.UUID) -> str | None:
        """The subject's e-mail address, for mail about their own requests (not audited as a read)."""
        subject = await self._get_active(subject_id)
        raw = self._open(await self._key(subject_id), subject.email_ct, Binding(SUBJECTS, subject.id, None, "email"))
        return raw.decode() if raw else None

    async def categories_held(self, subject_id: uuid.UUID) -> dict[str, int]:
        """Data categories held about an active subject, with record counts (profile fields count 0)."""
        subject = await self._get_active(subject_id)
        held: dict[str, int] = dict.fromkeys(subject.profile_fields.values(), 0)
        for kind in IDENTIFIERS:
            category = self.policy.identifier_fields.get(kind)
            if category and getattr(subject, f"{kind}_ct") is not None:
                held.setdefault(category, 0)
        rows = await self.session.exec(
            select(Record.category, func.count())
            .where(col(Record.subject_id) == subject_id, col(Record.restricted).is_(False))
            .group_by(col(Record.category))
        )
        for category, count in rows.all():
            held[category] = held.get(category, 0) + int(count)
        return held


@dataclass(frozen=True, slots=True)
class Retention:
    """Why and until when a category survives erasure."""

    basis: str
    until: datetime

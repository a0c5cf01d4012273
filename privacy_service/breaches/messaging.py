"""What a breach says to whom: the Art. 33(3) notice to the authority (JSON, HTML, Markdown; en and zh),
the Art. 34(2) notice to each affected person (through the outbox), and the team's e-mails.

Subject notices are queued in batches by :func:`queue_subject_notices`: each batch, in one transaction,
decrypts the addresses of a few hundred pending recipients from the vault, writes one outbox message per
recipient sealed under the incident's outbox key, and marks the recipients ``queued``. An interrupted run
leaves its batch ``pending`` (rolled back), a rerun carries on, and the (breach, subject) primary key means
nobody is queued twice. Addresses exist in clear only in memory and, sealed, in the outbox until sent.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib.resources import files
from typing import Any

import structlog
import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.breaches.models import AuthorityNotice, Breach, BreachSubject
from privacy_service.breaches.policy import AuthorityRef, BreachPolicy
from privacy_service.clock import Clock
from privacy_service.crypto.fields import Binding, DataKey, DecryptionFailed
from privacy_service.crypto.keys import WrappedKey
from privacy_service.crypto.models import DataKeyRow
from privacy_service.crypto.service import PRIMARY, REQUEST, KeyService, wrap_context
from privacy_service.db import Database
from privacy_service.notify.models import OutboxMessage
from privacy_service.notify.service import enqueue
from privacy_service.policy.document import PolicyDocument
from privacy_service.subjects.models import Subject, SubjectStatus
from privacy_service.subjects.service import SUBJECTS

log = structlog.get_logger("privacy_service.breaches")
# deliver_pending opens a sealed outbox payload with its owner's "request"-purpose key; an incident's
# outbox key is that key of the incident (owner id = breach id).
OUTBOX_KEY_PURPOSE = REQUEST
SUBJECT_TEMPLATE = "breach_subject_notice"
DISPATCHER = Actor.system("breach-notices")
LANGUAGES = ("en", "zh")
TEXT_FIELDS = ("title", "description", "mitigation", "consequences", "measures_proposed", "advice")


@lru_cache(maxsize=1)
def labels() -> Mapping[str, Mapping[str, str]]:
    """``templates/labels.yaml``: the words of the authority notice in each language."""
    text = files("privacy_service.breaches").joinpath("templates/labels.yaml").read_text(encoding="utf-8")
    loaded: dict[str, dict[str, str]] = yaml.safe_load(text)
    return loaded


def texts_in(breach: Breach, language: str) -> tuple[dict[str, str | None], bool]:
    """The incident's free texts in ``language`` (English where no translation was given)."""
    english = {name: getattr(breach, name) for name in TEXT_FIELDS}
    if language == "en":
        return english, False
    given = breach.translations.get(language) or {}
    merged = {name: given.get(name) or english[name] for name in TEXT_FIELDS}
    untranslated = any(english[name] and not given.get(name) for name in TEXT_FIELDS)
    return merged, untranslated


def category_names(document: PolicyDocument, keys: Sequence[str], language: str) -> list[dict[str, str]]:
    notice = document.notices.get(language) or document.notices[document.default_language]
    return [
        {"key": key, "name": notice.data_categories[key].name if key in notice.data_categories else key} for key in keys
    ]


def _contact(contact: Any) -> dict[str, str | None]:
    return {"name": contact.name, "email": contact.email, "address": contact.address, "phone": contact.phone}


# -- the authority notice (Art. 33(3)) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoticeFacts:
    seq: int
    kind: str
    authority: str
    recipient: str
    sent_at: datetime
    late: bool
    delay_reason: str | None
    note: str | None


def _named(rules: BreachPolicy, keys: Sequence[str], kind: str) -> list[dict[str, str]]:
    name = rules.data_type_name if kind == "data_type" else rules.consequence_name
    return [{"key": key, "en": name(key, "en"), "zh": name(key, "zh")} for key in keys]


def assessment_factors(breach: Breach, rules: BreachPolicy) -> dict[str, Any]:
    """What the assessment reasoned with beyond the facts: recipient, likely consequences, authorities."""
    assessment = breach.assessment or {}
    inputs = assessment.get("inputs") or {}
    return {
        "recipient": inputs.get("recipient"),
        "consequences": _named(rules, inputs.get("consequences") or [], "consequence"),
        "authorities": assessment.get("authorities"),
    }


def authority_content(
    breach: Breach,
    document: PolicyDocument,
    rules: BreachPolicy,
    authority: AuthorityRef,
    facts: NoticeFacts,
    previous: Sequence[AuthorityNotice],
    delivery: Mapping[str, int] | None,
) -> dict[str, Any]:
    """The Art. 33(3) content as notified: facts, free texts (English and any translations), contacts,
    and the assessment's factors (recipient, likely consequences: Art. 33(3)(c); authorities concerned)."""
    spec = document.spec
    assessment = breach.assessment or {}
    return {
        "breach_id": str(breach.id),
        "notice": {
            "seq": facts.seq,
            "kind": facts.kind,
            "authority": {"key": facts.authority, "name": authority.name, "country": authority.country},
            "recipient": facts.recipient,
            "sent_at": facts.sent_at.isoformat(),
            "late": facts.late,
            "reasons_for_delay": facts.delay_reason,
            "note": facts.note,
            "previous": [
                {"seq": notice.seq, "kind": notice.kind, "sent_at": notice.sent_at.isoformat()} for notice in previous
            ],
        },
        "controller": _contact(spec.controller),
        "dpo": _contact(spec.dpo),
        "nature": {
            "types": list(breach.nature),
            "occurred_from": breach.occurred_from.isoformat() if breach.occurred_from else None,
            "occurred_to": breach.occurred_to.isoformat() if breach.occurred_to else None,
            "aware_at": breach.aware_at.isoformat() if breach.aware_at else None,
            "detected_at": breach.detected_at.isoformat(),
            "malicious": breach.malicious,
            "exfiltration_known": breach.exfiltration_known,
            "encrypted": breach.encrypted,
            "key_compromised": breach.key_compromised,
            "backup_exists": breach.backup_exists,
        },
        "categories": list(breach.categories),
        "data_types": _named(rules, breach.data_types, "data_type"),
        "affected_countries": list(breach.affected_countries),
        "assessment_factors": assessment_factors(breach, rules),
        "data_subjects": {
            "approximate_number": breach.affected_count,
            "basis": "estimate" if breach.affected_kind == "estimate" else "identified",
        },
        "records": {"approximate_number": breach.approx_records},
        "texts": {name: getattr(breach, name) for name in TEXT_FIELDS},
        "translations": dict(breach.translations),
        "risk": {
            "method": "ENISA 2013",
            "severity": breach.severity,
            "band": breach.band,
        },
        "subjects_informed": {
            "required": bool(breach.notify_subjects),
            "public_communication": bool(breach.public_communication),
            "delivery": dict(delivery) if delivery is not None else None,
            "reasons": (assessment.get("decisions") or {}).get("notify_subjects", {}).get("reasons", []),
        },
    }


# Markdown passes raw HTML through to whatever renders it: every value written into the Markdown notice
# has HTML's special characters as entities and Markdown's link, code, emphasis and table characters
# backslash-escaped, so an incident text like "<script>" or "[x](javascript:...)" stays text.
_MARKDOWN_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", **{char: "\\" + char for char in "\\`*_[]|~"}}
)


def markdown_text(value: object) -> str:
    """``value`` as inert Markdown text."""
    return str(value).translate(_MARKDOWN_ESCAPES)


@lru_cache(maxsize=2)
def _documents(fmt: str) -> Environment:
    if fmt == "markdown":
        return Environment(
            loader=PackageLoader("privacy_service.breaches", "templates"),
            undefined=StrictUndefined,
            autoescape=False,  # noqa: S701 - Markdown, escaped by markdown_text on every output
            finalize=markdown_text,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
    return Environment(
        loader=PackageLoader("privacy_service.breaches", "templates"),
        undefined=StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _when(value: str | None) -> str | None:
    if not value:
        return None
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M UTC")


def _document_context(content: Mapping[str, Any], document: PolicyDocument, language: str) -> dict[str, Any]:
    words = labels()[language]
    texts = dict(content["texts"])
    translated = False
    if language != "en":
        given = (content.get("translations") or {}).get(language) or {}
        for name in TEXT_FIELDS:
            if given.get(name):
                texts[name] = given[name]
            elif texts.get(name):
                translated = True
    notice = content["notice"]
    nature = content["nature"]
    occurred = None
    if nature["occurred_from"] and nature["occurred_to"]:
        occurred = words["range"].format(start=_when(nature["occurred_from"]), end=_when(nature["occurred_to"]))
    elif nature["occurred_from"]:
        occurred = words["from"].format(start=_when(nature["occurred_from"]))
    if not nature["encrypted"]:
        protection = words["not_encrypted"]
    else:
        protection = words["encrypted_exposed" if nature["key_compromised"] else "encrypted_safe"]
    authority_notice = document.notices.get(language) or document.notices[document.default_language]
    authority_key = notice["authority"]["key"]
    authority_name = (
        authority_notice.authorities[authority_key].name
        if authority_key in authority_notice.authorities
        else notice["authority"]["name"]
    )
    risk = content["risk"]
    informed = content["subjects_informed"]
    factors = content.get("assessment_factors") or {}
    recipient = factors.get("recipient")
    competent = factors.get("authorities") or {}
    return {
        "language": language,
        "l": words,
        "breach_id": content["breach_id"],
        "notice": notice,
        "kind": words[notice["kind"]],
        "authority": authority_name,
        "sent_at": _when(notice["sent_at"]),
        "previous": [
            {"seq": item["seq"], "kind": words[item["kind"]], "sent_at": _when(item["sent_at"])}
            for item in notice["previous"]
        ],
        "controller": content["controller"],
        "dpo": content["dpo"],
        "types": [words[kind] for kind in nature["types"]],
        "occurred": occurred,
        "aware_at": _when(nature["aware_at"]),
        "categories": category_names(document, content["categories"], language)
        + [{"key": item["key"], "name": item[language]} for item in content.get("data_types", [])],
        "recipient": (
            words["recipient_line"].format(
                trust=words[f"trust.{recipient['trust']}"], data=words[f"data.{recipient['data']}"]
            )
            if recipient
            else None
        ),
        "likely_consequences": [item[language] for item in factors.get("consequences", [])],
        "one_stop_shop": competent.get("one_stop_shop", True),
        "authorities_concerned": [f"{item['name']} ({item['country']})" for item in competent.get("authorities", [])],
        "countries": content.get("affected_countries", []),
        "subjects": content["data_subjects"]["approximate_number"],
        "subjects_basis": words[content["data_subjects"]["basis"]],
        "records": content["records"]["approximate_number"],
        "texts": texts,
        "translated": translated,
        "protection": protection,
        "severity": risk["severity"],
        "band": words[f"bands.{risk['band']}"] if risk["band"] else None,
        "informed": words["yes"] if informed["required"] else words["no"],
        "public": informed["public_communication"],
    }


def render_authority_notice(content: Mapping[str, Any], document: PolicyDocument, language: str, fmt: str) -> str:
    """The notice as a document: ``fmt`` is ``html`` or ``markdown``; ``language`` en or zh."""
    language = language if language in labels() else "en"
    name = "authority_notice.html" if fmt == "html" else "authority_notice.md"
    return _documents(fmt).get_template(name).render(**_document_context(content, document, language))


# -- the subject notice (Art. 34(2)) --------------------------------------------------------------


def subject_notice_content(breach: Breach, document: PolicyDocument) -> dict[str, dict[str, Any]]:
    """Per language, everything a subject's e-mail says (frozen when notification is requested)."""
    dpo = document.spec.dpo
    out: dict[str, dict[str, Any]] = {}
    for language in document.languages:
        texts, _ = texts_in(breach, language)
        out[language] = {
            "what_happened": texts["description"],
            "occurred": breach.occurred_from.date().isoformat() if breach.occurred_from else None,
            "categories": [item["name"] for item in category_names(document, breach.categories, language)],
            "consequences": texts["consequences"],
            "measures": " ".join(part for part in (texts["mitigation"], texts["measures_proposed"]) if part) or None,
            "advice": texts["advice"],
            "dpo_name": dpo.name,
            "dpo_email": dpo.email,
            "dpo_phone": dpo.phone,
            "controller": document.spec.controller.name,
            "reference": str(breach.id)[:8],
        }
    return out


@dataclass(frozen=True, slots=True)
class QueueResult:
    queued: int = 0
    skipped_erased: int = 0
    skipped_no_email: int = 0
    failed: int = 0
    batches: int = 0

    def __add__(self, other: QueueResult) -> QueueResult:
        return QueueResult(
            self.queued + other.queued,
            self.skipped_erased + other.skipped_erased,
            self.skipped_no_email + other.skipped_no_email,
            self.failed + other.failed,
            self.batches + other.batches,
        )


async def _subject_keys(
    session: AsyncSession, keys: KeyService, subject_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, DataKey]:
    """The batch's data keys in one query (one round trip per batch, not per recipient)."""
    if not subject_ids:
        return {}
    query = select(DataKeyRow).where(col(DataKeyRow.subject_id).in_(subject_ids), col(DataKeyRow.purpose) == PRIMARY)
    found: dict[uuid.UUID, DataKey] = {}
    for row in (await session.exec(query)).all():
        material = await keys.provider.unwrap(
            WrappedKey(row.kek_version, row.wrapped), wrap_context(row.subject_id, row.id, PRIMARY)
        )
        found[row.subject_id] = DataKey(row.id, material)
    return found


async def _queue_batch(
    session: AsyncSession, keys: KeyService, clock: Clock, rows: Sequence[BreachSubject]
) -> QueueResult:
    now = clock.now()
    outcome: Counter[str] = Counter()
    by_breach: dict[uuid.UUID, list[BreachSubject]] = {}
    for row in rows:
        by_breach.setdefault(row.breach_id, []).append(row)
    subject_ids = [row.subject_id for row in rows]
    subjects = {
        subject.id: subject
        for subject in (await session.exec(select(Subject).where(col(Subject.id).in_(subject_ids)))).all()
    }
    active = [sid for sid, subject in subjects.items() if subject.status == SubjectStatus.ACTIVE and subject.email_ct]
    data_keys = await _subject_keys(session, keys, active)
    for breach_id, group in by_breach.items():
        breach = await session.get(Breach, breach_id)
        if breach is None or not breach.subject_notice:
            continue
        content: dict[str, dict[str, Any]] = breach.subject_notice["content"]
        outbox_key = await keys.load_key(session, breach_id, OUTBOX_KEY_PURPOSE)
        counts: Counter[str] = Counter()
        for row in group:
            subject = subjects.get(row.subject_id)
            row.updated_at = now
            if subject is None or subject.status != SubjectStatus.ACTIVE:
                # Erased (or restricted after erasure): counted, never contacted.
                row.status = "skipped_erased"
            elif subject.email_ct is None:
                row.status = "skipped_no_email"
            elif row.subject_id not in data_keys:
                row.status, row.error = "failed", "KeyUnavailable"
                _integrity_failure(session, now, row.subject_id, breach_id)
            else:
                try:
                    email = (
                        data_keys[row.subject_id]
                        .open(subject.email_ct, Binding(SUBJECTS, subject.id, None, "email"))
                        .decode()
                    )
                except DecryptionFailed:
                    row.status, row.error = "failed", "DecryptionFailed"
                    _integrity_failure(session, now, row.subject_id, breach_id)
                else:
                    language = subject.language if subject.language in content else next(iter(content))
                    row.outbox_message_id = enqueue(
                        session,
                        template=SUBJECT_TEMPLATE,
                        language=language,
                        to=email,
                        now=now,
                        key=outbox_key,
                        owner_id=breach_id,
                        **content[language],
                    )
                    row.status = "queued"
            counts[row.status] += 1
            session.add(row)
        audit.record(
            session,
            at=now,
            actor=DISPATCHER,
            action="breach.subject_notices.queued",
            detail={"breach_id": str(breach_id), **dict(sorted(counts.items()))},
        )
        outcome.update(counts)
    return QueueResult(outcome["queued"], outcome["skipped_erased"], outcome["skipped_no_email"], outcome["failed"], 1)


def _integrity_failure(session: AsyncSession, now: datetime, subject_id: uuid.UUID, breach_id: uuid.UUID) -> None:
    # Monitoring counts these (repeated failures suggest tampering or a lost key).
    log.error("breach_notice_decrypt_failed", breach_id=str(breach_id))
    audit.record(
        session,
        at=now,
        actor=DISPATCHER,
        action="integrity.failure",
        subject_id=subject_id,
        outcome="failed",
        detail={"where": "breach.subject_notice", "breach_id": str(breach_id)},
    )


async def queue_subject_notices(
    db: Database, keys: KeyService, clock: Clock, *, batch: int = 200, max_batches: int | None = None
) -> QueueResult:
    """Turn pending recipients into outbox messages, one transaction per batch, until none are left."""
    total = QueueResult()
    while max_batches is None or total.batches < max_batches:
        async with db.transaction() as session:
            query = (
                select(BreachSubject)
                .where(col(BreachSubject.status) == "pending")
                .order_by(col(BreachSubject.breach_id), col(BreachSubject.subject_id))
                .limit(batch)
            )
            if not db.settings.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = (await session.exec(query)).all()
            if not rows:
                break
            total += await _queue_batch(session, keys, clock, rows)
    await sync_delivery(db, clock)
    return total


async def sync_delivery(db: Database, clock: Clock) -> None:
    """Copy the outbox's outcome to the recipients (sent, or failed once dead-lettered)."""
    now = clock.now()
    async with db.transaction() as session:
        for outbox_status, status in (("sent", "sent"), ("dead", "failed")):
            sent_ids = select(OutboxMessage.id).where(col(OutboxMessage.status) == outbox_status)
            await session.exec(
                update(BreachSubject)
                .where(col(BreachSubject.status) == "queued", col(BreachSubject.outbox_message_id).in_(sent_ids))
                .values(status=status, updated_at=now, error=None if status == "sent" else "dead-lettered")
            )


# -- the team's e-mail -------------------------------------------------------------------------


def team_mail(session: AsyncSession, policy: BreachPolicy, now: datetime, template: str, **context: Any) -> None:
    """Operator mail carries ids, counts and times only (no personal data), so it is not sealed."""
    enqueue(session, template=template, language="en", to=policy.team_email, now=now, **context)

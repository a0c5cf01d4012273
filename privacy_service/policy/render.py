"""The published forms of a policy: a per-language JSON view and W3C DPV JSON-LD.

Both are built from the loaded :class:`PolicyDocument` only (the HTML page renders the same view),
so the notice people read, the one machines read and the rules the service applies cannot differ.
"""

from __future__ import annotations

import json
from typing import Any

from privacy_service.calendars import regime_sources
from privacy_service.policy.document import (
    GDPR_ARTICLES,
    PIPL_ARTICLES,
    SECTIONS,
    Deadline,
    Named,
    Notice,
    PolicyDocument,
    RetentionRule,
    Units,
)
from privacy_service.policy.duration import Duration

JSON_MEDIA_TYPE = "application/json"
JSONLD_MEDIA_TYPE = "application/ld+json"
_UNIT_NAMES = ("years", "months", "weeks", "days", "hours", "minutes", "seconds")

DPV_CONTEXT: dict[str, str] = {
    "dpv": "https://w3id.org/dpv#",
    "pd": "https://w3id.org/dpv/pd#",
    "eu-gdpr": "https://w3id.org/dpv/legal/eu/gdpr#",
    "dct": "http://purl.org/dc/terms/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "schema": "https://schema.org/",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}
_DPV_GDPR_BASES = {
    "consent": ("dpv:Consent", "eu-gdpr:A6-1-a"),
    "contract": ("dpv:Contract", "eu-gdpr:A6-1-b"),
    "legal_obligation": ("dpv:LegalObligation", "eu-gdpr:A6-1-c"),
    "vital_interests": ("dpv:VitalInterest", "eu-gdpr:A6-1-d"),
    "public_task": ("dpv:OfficialAuthorityOfController", "eu-gdpr:A6-1-e"),
    "legitimate_interests": ("dpv:LegitimateInterest", "eu-gdpr:A6-1-f"),
}
_DPV_RECIPIENTS = {"processor": "dpv:DataProcessor", "controller": "dpv:DataController", "authority": "dpv:Authority"}


def encode(value: Any) -> bytes:
    """The bytes served for a view: UTF-8, compact, keys in the order the view defines them."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def describe_duration(duration: Duration, units: Units) -> str:
    parts = []
    for name in _UNIT_NAMES:
        count = getattr(duration, name)
        if count:
            template: str = getattr(units, name if count != 1 else name[:-1])
            parts.append(template.format(n=count))
    return units.joiner.join(parts) or units.days.format(n=0)


def _deadline(deadline: Deadline | None, units: Units) -> dict[str, Any] | None:
    if deadline is None:
        return None
    if deadline.period is not None:
        return {"period": str(deadline.period), "text": describe_duration(deadline.period, units)}
    return {"working_days": deadline.working_days, "text": units.working_days.format(n=deadline.working_days)}


def _named(notice_table: dict[str, Named], key: str) -> dict[str, Any]:
    entry = notice_table[key]
    return {"id": key, "name": entry.name, "description": entry.description}


def _retention(rule: RetentionRule, notice: Notice) -> dict[str, Any]:
    labels = notice.labels
    out: dict[str, Any] = {
        "period": str(rule.period),
        "trigger": rule.trigger,
        "action": rule.action,
        "summary": labels.retention_summary.format(
            period=describe_duration(rule.period, labels.units), trigger=getattr(labels.triggers, rule.trigger)
        ),
        "action_label": getattr(labels.actions, rule.action),
        "erasable_on_request": rule.erasable_on_request,
        "legal_duty": None,
    }
    if rule.legal_duty is not None:
        duty = rule.legal_duty
        out["legal_duty"] = {
            "basis": duty.basis,
            "period": str(duty.period),
            "trigger": duty.trigger,
            "summary": labels.legal_duty_summary.format(
                period=describe_duration(duty.period, labels.units),
                trigger=getattr(labels.triggers, duty.trigger),
                basis=duty.basis,
            ),
        }
    return out


def policy_view(document: PolicyDocument, language: str) -> dict[str, Any]:
    """The policy in one language, as published at ``GET /v1/policy`` and rendered at ``/privacy``."""
    spec = document.spec
    notice = document.notices[language]
    labels = notice.labels

    def legal_basis(purpose: str) -> dict[str, Any]:
        basis = spec.purposes[purpose].legal_basis
        return {
            "gdpr": {
                "basis": basis.gdpr,
                "article": GDPR_ARTICLES[basis.gdpr],
                "label": getattr(labels.gdpr_bases, basis.gdpr),
            },
            "pipl": {
                "basis": basis.pipl,
                "article": PIPL_ARTICLES[basis.pipl],
                "label": getattr(labels.pipl_bases, basis.pipl),
            },
        }

    categories = []
    for key, category in spec.data_categories.items():
        categories.append(
            {
                "key": key,
                **{k: v for k, v in _named(notice.data_categories, key).items() if k != "id"},
                "source": _named(notice.sources, category.source),
                "provision": category.provision,
                "purposes": [
                    {**_named(notice.purposes, purpose), "legal_basis": legal_basis(purpose)}
                    for purpose in category.purposes
                ],
                "recipients": [_named(notice.recipients, recipient) for recipient in category.recipients],
                "transfers": [_named(notice.transfers, transfer) for transfer in category.transfers],
                "retention": _retention(document.retention_rule(key), notice),
            }
        )

    return {
        "version": spec.version,
        "effective_date": spec.effective_date.isoformat(),
        "language": language,
        "languages": list(document.languages),
        "title": labels.title,
        "version_line": labels.version_line.format(
            version=spec.version, effective_date=spec.effective_date.isoformat()
        ),
        "controller": spec.controller.model_dump(mode="json", exclude_none=True),
        "dpo": spec.dpo.model_dump(mode="json", exclude_none=True),
        "requests": spec.requests.model_dump(mode="json", exclude_none=True),
        "tracking": spec.tracking.model_dump(mode="json"),
        "sections": [
            {
                "id": section,
                "reference": reference,
                "heading": notice.sections[section].heading,
                "body": notice.sections[section].body,
            }
            for section, reference in SECTIONS
        ],
        "data_categories": categories,
        "purposes": [
            {**_named(notice.purposes, key), "legal_basis": legal_basis(key), "dpv": purpose.dpv}
            for key, purpose in spec.purposes.items()
        ],
        "sources": [
            {**_named(notice.sources, key), "from_data_subject": source.from_data_subject}
            for key, source in spec.sources.items()
        ],
        "recipients": [
            {
                **_named(notice.recipients, key),
                "kind": recipient.kind,
                "kind_label": getattr(labels.recipient_kinds, recipient.kind),
                "country": recipient.country,
            }
            for key, recipient in spec.recipients.items()
        ],
        "transfers": [
            {
                **_named(notice.transfers, key),
                "countries": list(transfer.countries),
                "mechanism": transfer.mechanism,
                "article": transfer.article,
                "recipients": [_named(notice.recipients, recipient) for recipient in transfer.recipients],
            }
            for key, transfer in spec.transfers.items()
        ],
        "rights": [
            {**_named(notice.rights, key), "regimes": list(right.regimes), "request_type": right.request_type}
            for key, right in spec.rights.items()
        ],
        "regimes": [
            {
                **_named(notice.regimes, key),
                "deadline": _deadline(regime.deadline, labels.units),
                "extension": _deadline(regime.extension, labels.units),
                "acknowledge": _deadline(regime.acknowledge, labels.units),
                "roll_to_working_day": regime.roll_to_working_day,
                "calendars": [source.label for source in regime_sources(spec, regime)],
                "authorities": [
                    {
                        **_named(notice.authorities, authority),
                        "official_name": spec.authorities[authority].name,
                        "url": spec.authorities[authority].url,
                        "country": spec.authorities[authority].country,
                    }
                    for authority in regime.authorities
                ],
            }
            for key, regime in spec.regimes.items()
        ],
    }


def policy_jsonld(document: PolicyDocument, language: str, base_url: str) -> dict[str, Any]:
    """The policy as W3C Data Privacy Vocabulary JSON-LD: one ``dpv:Process`` per category and purpose.

    A purpose carries its own legal basis, so a category used for two purposes is two processes;
    each names the personal data, the purpose, the GDPR basis, the recipients and the storage
    duration (plus the legal duty that may extend it).
    """
    spec = document.spec
    notice = document.notices[language]
    labels = notice.labels
    notice_id = f"{base_url.rstrip('/')}/v1/policy/versions/{spec.version}"

    def text(value: str) -> dict[str, str]:
        return {"@value": value, "@language": language}

    def node(kind: str, key: str) -> str:
        return f"{notice_id}#{kind}-{key}"

    def storage(rule: RetentionRule) -> list[dict[str, Any]]:
        conditions: list[dict[str, Any]] = [
            {
                "@type": "dpv:StorageDuration",
                "dpv:hasDuration": {
                    "@type": "dpv:Duration",
                    "rdf:value": {"@value": str(rule.period), "@type": "xsd:duration"},
                },
                "rdfs:comment": text(_retention(rule, notice)["summary"]),
            }
        ]
        if rule.legal_duty is not None:
            conditions.append(
                {
                    "@type": "dpv:StorageDuration",
                    "dpv:hasDuration": {
                        "@type": "dpv:Duration",
                        "rdf:value": {"@value": str(rule.legal_duty.period), "@type": "xsd:duration"},
                    },
                    "dpv:hasLegalBasis": "dpv:LegalObligation",
                    "rdfs:comment": text(_retention(rule, notice)["legal_duty"]["summary"]),
                }
            )
        return conditions

    processes = []
    for key, category in spec.data_categories.items():
        personal_data: dict[str, Any] = {
            "@id": node("data", key),
            "@type": ["dpv:PersonalData", *([category.dpv] if category.dpv else [])],
            "rdfs:label": text(notice.data_categories[key].name),
            "dct:identifier": key,
        }
        for purpose_key in category.purposes:
            purpose = spec.purposes[purpose_key]
            processes.append(
                {
                    "@id": node("process", f"{key}.{purpose_key}"),
                    "@type": "dpv:Process",
                    "dpv:hasDataController": {"@id": f"{notice_id}#controller"},
                    "dpv:hasPersonalData": personal_data,
                    "dpv:hasPurpose": {
                        "@id": node("purpose", purpose_key),
                        "@type": purpose.dpv or "dpv:Purpose",
                        "rdfs:label": text(notice.purposes[purpose_key].name),
                    },
                    "dpv:hasLegalBasis": list(_DPV_GDPR_BASES[purpose.legal_basis.gdpr]),
                    "dpv:hasRecipient": [
                        {
                            "@id": node("recipient", recipient),
                            "@type": _DPV_RECIPIENTS[spec.recipients[recipient].kind],
                            "rdfs:label": text(notice.recipients[recipient].name),
                        }
                        for recipient in category.recipients
                    ],
                    "dpv:hasStorageCondition": storage(document.retention_rule(key)),
                }
            )

    controller = spec.controller
    return {
        "@context": DPV_CONTEXT,
        "@id": notice_id,
        "@type": "dpv:PrivacyNotice",
        "dct:title": text(labels.title),
        "dct:language": language,
        "dct:hasVersion": spec.version,
        "dct:valid": {"@value": spec.effective_date.isoformat(), "@type": "xsd:date"},
        "dpv:hasDataController": {
            "@id": f"{notice_id}#controller",
            "@type": "dpv:DataController",
            "schema:name": controller.name,
            **({"schema:email": controller.email} if controller.email else {}),
            **({"schema:address": controller.address} if controller.address else {}),
            **({"schema:url": controller.url} if controller.url else {}),
        },
        "dpv:hasProcess": processes,
    }

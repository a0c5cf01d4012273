"""Publishing policy versions, reading them back, and comparing them. Services never commit.

A published version is an immutable snapshot: the files' content (for `policy diff`), its SHA-256
content hash, and the JSON and JSON-LD views in every language exactly as they were served, so
``GET /v1/policy/versions/{version}`` returns the same bytes for ever.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.errors import Conflict, NotFound
from privacy_service.policy.document import PolicyDocument
from privacy_service.policy.models import PolicyVersion
from privacy_service.policy.render import encode, policy_jsonld, policy_view

SNAPSHOT_FORMAT = 1
# What a new version may change without that counting as a change of content.
_BOOKKEEPING = ("version", "effective_date")


def snapshot(document: PolicyDocument, base_url: str) -> dict[str, Any]:
    """The stored form of a version: the files' content and every rendered view, as text."""
    return {
        "format": SNAPSHOT_FORMAT,
        "languages": list(document.languages),
        "source": document.source(),
        "rendered": {
            "json": {lang: encode(policy_view(document, lang)).decode() for lang in document.languages},
            "jsonld": {lang: encode(policy_jsonld(document, lang, base_url)).decode() for lang in document.languages},
        },
    }


def _substance(source: dict[str, Any]) -> dict[str, Any]:
    policy = {key: value for key, value in source["policy"].items() if key not in _BOOKKEEPING}
    return {"policy": policy, "notices": source["notices"]}


async def latest_version(session: AsyncSession) -> PolicyVersion | None:
    result = await session.exec(select(PolicyVersion).order_by(col(PolicyVersion.id).desc()).limit(1))
    return result.first()


async def list_versions(session: AsyncSession) -> list[PolicyVersion]:
    """Every published version, newest first."""
    result = await session.exec(select(PolicyVersion).order_by(col(PolicyVersion.id).desc()))
    return list(result.all())


async def get_version(session: AsyncSession, version: str) -> PolicyVersion:
    result = await session.exec(select(PolicyVersion).where(col(PolicyVersion.version) == version))
    row = result.first()
    if row is None:
        raise NotFound("no published policy version has this name")
    return row


async def publish(
    session: AsyncSession, document: PolicyDocument, *, now: datetime, base_url: str, actor: Actor
) -> PolicyVersion:
    """Record the loaded policy as a new immutable version.

    Refused (409) when this version is already published (with the same content: nothing to do;
    with different content: the version must be bumped), when nothing but the version and the
    effective date changed since the latest version, or when the effective date goes backwards.
    """
    version = document.version
    result = await session.exec(select(PolicyVersion).where(col(PolicyVersion.version) == version))
    existing = result.first()
    if existing is not None:
        if existing.content_hash == document.content_hash:
            raise Conflict(f"policy version {version} is already published with this content; nothing to publish")
        raise Conflict(
            f"policy version {version} is already published with different content; "
            "published versions are immutable, so bump `version` in policy.yaml and publish again"
        )
    latest = await latest_version(session)
    if latest is not None:
        if _substance(latest.document["source"]) == _substance(document.source()):
            raise Conflict(f"nothing changed since policy version {latest.version}; nothing to publish")
        if document.effective_date < latest.effective_date:
            raise Conflict(
                f"effective_date {document.effective_date.isoformat()} is earlier than that of policy version "
                f"{latest.version} ({latest.effective_date.isoformat()})"
            )
    row = PolicyVersion(
        version=version,
        content_hash=document.content_hash,
        effective_date=document.effective_date,
        published_at=now,
        document=snapshot(document, base_url),
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"policy version {version} was published concurrently") from None
    audit.record(
        session,
        at=now,
        actor=actor,
        action="policy.publish",
        detail={"version": version, "content_hash": document.content_hash},
    )
    return row


# -- diff --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # "added", "removed" or "changed"
    path: str
    old: Any = None
    new: Any = None

    def __str__(self) -> str:
        def show(value: Any) -> str:
            text = json.dumps(value, ensure_ascii=False)
            return text if len(text) <= 120 else text[:117] + "..."

        if self.kind == "added":
            return f"+ {self.path}: {show(self.new)}"
        if self.kind == "removed":
            return f"- {self.path}: {show(self.old)}"
        return f"~ {self.path}: {show(self.old)} -> {show(self.new)}"


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
        for index, item in enumerate(value):
            _flatten(item, f"{path}[{index}]", out)
    else:
        out[path] = value


def diff_sources(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Leaf-level differences between two snapshots' ``source`` (lists of plain values compare whole)."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    _flatten(old, "", before)
    _flatten(new, "", after)
    changes = [Change("removed", path, old=before[path]) for path in before if path not in after]
    changes += [Change("added", path, new=after[path]) for path in after if path not in before]
    changes += [
        Change("changed", path, old=before[path], new=after[path])
        for path in before
        if path in after and before[path] != after[path]
    ]
    return sorted(changes, key=lambda change: change.path)

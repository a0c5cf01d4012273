"""Creating, listing, revoking and authenticating operator API keys.

A key looks like ``psk_<key id>_<secret>``. The key id is public (it finds the row); only the
SHA-256 of the whole key is stored, compared in constant time. The key is shown once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.errors import Conflict, InvalidInput, NotFound
from privacy_service.operators.models import Operator
from privacy_service.security import constant_time_equals

SCOPES = (
    "subjects:read",
    "subjects:write",
    # The answer to an access request (the full export), fetched with an operator key: granted deliberately.
    "subjects:export",
    # Erasing data a legal duty keeps (with a written reason, audited): granted deliberately.
    "subjects:erase-override",
    "requests:manage",
    "retention:run",
    "breaches:manage",
    "audit:read",
    "keys:manage",
    "systems:manage",
    # Prometheus figures (GET /metrics): counts only, never personal data.
    "metrics:read",
)
# Only these scopes let an operator key receive decrypted personal data.
READING_SCOPES = frozenset({"subjects:read", "subjects:export"})
# Every route declares who may call it in its ``opt`` (tests/security/test_authorization_matrix.py walks
# the route table and fails on a route without one):
#   "scopes": {...}         an operator key holding every scope named (operator_guard checks it)
#   "public": True          anyone, without a credential (rate-limited per client address where it does work)
#   "subject_token": True   the data subject's own request token; with "scopes", also an operator key with them
#   "credential": "<what>"  its own credential (a system's signature, the metrics token); operator keys do not apply
#   "console": True         a signed-in operator console session (web/console), holding every scope in
#                           "console_scopes" (none: any signed-in operator); operator keys do not apply
#   "pii": True             answers decrypted personal data: an operator key needs a reading scope for it
ACCESS_KINDS = ("scopes", "public", "subject_token", "credential", "console")
KEY_PREFIX = "psk_"
_KEY_SHAPE = re.compile(r"^psk_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$")
_NAME_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,99}$")


@dataclass(frozen=True, slots=True)
class AuthenticatedOperator:
    id: uuid.UUID
    name: str
    scopes: frozenset[str]

    @property
    def actor(self) -> Actor:
        return Actor("operator", str(self.id))


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_key_id(key: str) -> str | None:
    match = _KEY_SHAPE.match(key)
    return match.group(1) if match else None


def parse_scopes(raw: str) -> frozenset[str]:
    scopes = frozenset(part.strip() for part in raw.replace(" ", ",").split(",") if part.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        raise InvalidInput(f"unknown scopes: {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise InvalidInput("at least one scope is required")
    return scopes


async def create_operator(
    session: AsyncSession,
    *,
    name: str,
    scopes: frozenset[str],
    now: datetime,
    expires_at: datetime | None = None,
    actor: Actor | None = None,
) -> tuple[Operator, str]:
    """Create an operator and return it with its key (the only time the key exists in clear)."""
    if not _NAME_SHAPE.match(name):
        raise InvalidInput("name must be 1-100 letters, digits, spaces or ._@-")
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    operator = Operator(
        id=uuid.uuid4(),
        name=name,
        key_id=key_id,
        key_hash=hash_key(key),
        scopes=" ".join(sorted(scopes)),
        created_at=now,
        expires_at=expires_at,
    )
    session.add(operator)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"an operator named {name!r} already exists") from None
    audit.record(
        session,
        at=now,
        actor=actor or Actor.system("cli"),
        action="operator.create",
        detail={"operator_id": str(operator.id), "scopes": sorted(scopes)},
    )
    return operator, key


async def revoke_operator(session: AsyncSession, *, name: str, now: datetime, actor: Actor | None = None) -> Operator:
    operator = (await session.exec(select(Operator).where(col(Operator.name) == name))).one_or_none()
    if operator is None:
        raise NotFound(f"no operator named {name!r}")
    if operator.revoked_at is None:
        operator.revoked_at = now
        session.add(operator)
        audit.record(
            session,
            at=now,
            actor=actor or Actor.system("cli"),
            action="operator.revoke",
            detail={"operator_id": str(operator.id)},
        )
    return operator


async def list_operators(session: AsyncSession) -> list[Operator]:
    return list((await session.exec(select(Operator).order_by(col(Operator.created_at)))).all())


async def authenticate(session: AsyncSession, key: str, now: datetime) -> AuthenticatedOperator | None:
    key_id = parse_key_id(key)
    if key_id is None:
        return None
    operator = (await session.exec(select(Operator).where(col(Operator.key_id) == key_id))).one_or_none()
    presented = hash_key(key)
    if operator is None:
        constant_time_equals(presented, presented)  # same work whether or not the id exists
        return None
    if not constant_time_equals(operator.key_hash, presented):
        return None
    if operator.revoked_at is not None or (operator.expires_at is not None and operator.expires_at <= now):
        return None
    return AuthenticatedOperator(operator.id, operator.name, frozenset(operator.scopes.split()))

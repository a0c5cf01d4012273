"""Operator authentication for routes: ``Authorization: Bearer psk_...`` plus required scopes.

Route handlers declare ``opt={"scopes": {...}}``. Authenticated keys are cached for a few seconds
(keyed by the key's hash) so a hot API does not pay a database round trip per call; revocation
therefore takes effect within ``AUTH_CACHE_SECONDS``.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy.exc import SQLAlchemyError

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.errors import Forbidden, Unauthenticated
from privacy_service.operators.service import AuthenticatedOperator, authenticate, hash_key, parse_key_id
from privacy_service.ratelimit import Limit

AUTH_CACHE_SECONDS = 5.0
log = structlog.get_logger("privacy_service.operators")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="privacy-service"'}


class OperatorAuthenticator:
    def __init__(self, ttl: float = AUTH_CACHE_SECONDS) -> None:
        self._ttl = ttl
        self._cache: dict[bytes, tuple[float, AuthenticatedOperator]] = {}

    def forget_all(self) -> None:
        self._cache.clear()

    async def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], key: str) -> AuthenticatedOperator | None:
        digest = hash_key(key)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        state = connection.app.state
        async with state.db.sessionmaker() as session:
            operator = await authenticate(session, key, state.clock.now())
        if operator is None:
            self._cache.pop(digest, None)
            return None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, operator)
        return operator


async def record_failed_auth(connection: ASGIConnection[Any, Any, Any, Any], key: str) -> None:
    """Audit a rejected key (breach monitoring counts bursts): its public key id only, never the key."""
    state = connection.app.state
    key_id = parse_key_id(key)
    try:
        async with state.db.transaction() as session:
            audit.record(
                session,
                at=state.clock.now(),
                actor=Actor("operator_key", key_id or "malformed"),
                action="operator.auth_failed",
                outcome="failed",
                detail={"key_id": key_id} if key_id else {"well_formed": False},
            )
    except (SQLAlchemyError, OSError) as exc:
        log.warning("auth_failure_not_recorded", error=type(exc).__name__)


def bearer_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def operator_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    key = bearer_key(connection)
    if key is None:
        raise Unauthenticated("send an operator key as 'Authorization: Bearer psk_...'", headers=_CHALLENGE)
    operator = await connection.app.state.authenticator(connection, key)
    if operator is None:
        await record_failed_auth(connection, key)
        raise Unauthenticated("the operator key is unknown, revoked or expired", headers=_CHALLENGE)
    state = connection.app.state
    state.rate_limiter.check("operator", str(operator.id), Limit.parse(state.runtime.settings.rate_limits["operator"]))
    required: set[str] = set(handler.opt.get("scopes", ()))
    missing = sorted(required - operator.scopes)
    if missing:
        raise Forbidden(f"this key lacks the scope(s): {', '.join(missing)}")
    connection.scope.setdefault("state", {})["operator"] = operator


def current_operator(connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticatedOperator:
    operator: AuthenticatedOperator = connection.scope["state"]["operator"]
    return operator

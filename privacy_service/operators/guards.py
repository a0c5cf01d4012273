"""Operator authentication for routes: ``Authorization: Bearer psk_...`` plus required scopes.

Route handlers declare ``opt={"scopes": {...}}``. Authenticated keys are cached for a few seconds
(keyed by the key's hash) so a hot API does not pay a database round trip per call; revocation
therefore takes effect within ``AUTH_CACHE_SECONDS``.

Rejected keys are limited per client address, an IPv6 client per /64 (``rate_limits["auth_failed"]``):
once an address has used up its failures, every request from it that presents a key is answered 429
with Retry-After, before the key is even looked up. A key not known right is taken from that budget
before it is looked up, atomically, and given back if it is right: keys sent at once cannot all pass
a look at the budget before any failure is counted, so at most the limit are ever checked.
Rejections are audited in aggregate (see :class:`FailedAuthGate`), so a flood of junk keys costs a
handful of audit rows, not one each, while breach monitoring still sees how many there were.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy.exc import SQLAlchemyError

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.errors import Forbidden, Unauthenticated
from privacy_service.operators.service import AuthenticatedOperator, authenticate, hash_key, parse_key_id
from privacy_service.ratelimit import Limit, Limiter, LocalLimiter, RateLimited, RateLimiter, check, client_key

AUTH_CACHE_SECONDS = 5.0
# Rejected attempts from one address are recorded at the 1st, 2nd, 4th, 8th... of each window.
AUTH_FAILURE_WINDOW_SECONDS = 600.0
MAX_TRACKED_ADDRESSES = 10_000
_MANY = "*"  # audit only: addresses beyond MAX_TRACKED_ADDRESSES share one tally (never a bucket)
_BUCKET = "auth_failed"
_KEY_IDS_PER_ROW = 10
_SOURCE_CONTEXT = b"privacy-service/auth-source/v1|"
log = structlog.get_logger("privacy_service.operators")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="privacy-service"'}


@dataclass(slots=True)
class _Tally:
    window_started: float
    attempts: int = 0  # rejected attempts in the current window
    unrecorded: int = 0  # since the last audit row (carried into the next window)
    throttled: int = 0
    malformed: int = 0
    key_ids: set[str] = field(default_factory=set)


class FailedAuthGate:
    """Per client address: a token bucket of failed authentications, and a tally of rejected attempts.

    The buckets are the app's :class:`~privacy_service.ratelimit.Limiter`: in Redis when configured,
    so the lock-out holds across every API process (and, while Redis is out of reach, per process: it
    never lapses); else a :class:`RateLimiter` of its own, bounded the same way: junk from many
    addresses evicts junk, never an address at its limit wholesale, and a new address always starts
    with a full bucket, so its key is always checked. Only the audit tally overflows: beyond
    ``MAX_TRACKED_ADDRESSES`` addresses whose window is still open, new addresses' rejections are
    counted together (``"*"``).

    The tally turns into an audit row at the 1st, 2nd, 4th, 8th, ... rejected attempt of each window
    (``AUTH_FAILURE_WINDOW_SECONDS``), carrying the count since the previous row: 300 junk keys in a
    burst make 9 rows, not 300, and the first attempt is on record at once. What came after the last
    row is carried into the first row of the address's next window. The tally is process memory
    (each process audits its own share of the attempts; breach monitoring sums the rows).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        window: float = AUTH_FAILURE_WINDOW_SECONDS,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
        limiter: Limiter | None = None,
    ) -> None:
        self._clock = clock
        self._window = window
        self._max = max_addresses
        self._buckets: Limiter = limiter or LocalLimiter(RateLimiter(clock, max_keys=max_addresses))
        self._tallies: dict[str, _Tally] = {}
        self._next_expiry = 0.0

    def _tracked(self) -> int:
        return len(self._tallies) - (_MANY in self._tallies)

    def _tally(self, address: str, now: float) -> tuple[str, _Tally]:
        found = self._tallies.get(address)
        if found is not None:
            return address, found
        if self._tracked() >= self._max and now >= self._next_expiry:
            self._tallies = {
                source: tally
                for source, tally in self._tallies.items()
                if source == _MANY or now - tally.window_started < self._window
            }
            # No window ends before this: until then a full table is not scanned again per request.
            starts = [tally.window_started for source, tally in self._tallies.items() if source != _MANY]
            self._next_expiry = min(starts, default=now) + self._window
        if self._tracked() >= self._max:
            address = _MANY
        return address, self._tallies.setdefault(address, _Tally(now))

    async def retry_after(self, address: str, limit: Limit) -> float | None:
        """Seconds until ``address`` may present a key again, or None if it may now (nothing consumed)."""
        return await self._buckets.wait(_BUCKET, address, limit)

    async def admit(self, address: str, limit: Limit) -> float | None:
        """Take one failure from ``address``'s budget before its key is checked: None if it may be
        checked, else the seconds until it may (nothing taken). :meth:`accepted` gives it back."""
        return await self._buckets.hit(_BUCKET, address, limit)

    async def accepted(self, address: str, limit: Limit) -> None:
        """The key :meth:`admit` let through was right: its failure is given back."""
        await self._buckets.refund(_BUCKET, address, limit)

    async def reject(self, address: str, key_id: str | None, *, throttled: bool) -> tuple[str, dict[str, Any]] | None:
        """Tally one rejected attempt for the audit (a failed key, or one refused with 429 unchecked);
        the budget was charged by :meth:`admit`.

        Returns (address or "*", audit detail) when a row is due, else None.
        """
        now = self._clock()
        address, source = self._tally(address, now)
        if now - source.window_started >= self._window:
            source.window_started, source.attempts = now, 0
        source.attempts += 1
        source.unrecorded += 1
        source.throttled += throttled
        if key_id is None:
            source.malformed += 1
        elif len(source.key_ids) < _KEY_IDS_PER_ROW:
            source.key_ids.add(key_id)
        if source.attempts & (source.attempts - 1):
            return None  # not a power of two: aggregated into the next row
        detail: dict[str, Any] = {
            "attempts": source.unrecorded,
            "throttled": source.throttled,
            "malformed": source.malformed,
            "key_ids": sorted(source.key_ids),
        }
        source.unrecorded = source.throttled = source.malformed = 0
        source.key_ids = set()
        return address, detail

    async def reset(self) -> None:
        await self._buckets.reset()
        self._tallies.clear()
        self._next_expiry = 0.0


class OperatorAuthenticator:
    def __init__(self, ttl: float = AUTH_CACHE_SECONDS, failures: FailedAuthGate | None = None) -> None:
        self._ttl = ttl
        self._cache: dict[bytes, tuple[float, AuthenticatedOperator]] = {}
        self.failures = failures or FailedAuthGate()

    def forget_all(self) -> None:
        self._cache.clear()

    def cached(self, key: str) -> AuthenticatedOperator | None:
        """The operator of a key found right within ``ttl`` seconds, without a lookup; else None."""
        found = self._cache.get(hash_key(key))
        if found is not None and time.monotonic() - found[0] < self._ttl:
            return found[1]
        return None

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


def source_tag(audit_key: bytes, address: str) -> str:
    """A pseudonym for a client address (an address is personal data): tells sources apart in the audit
    log, and an investigator holding the audit key can test a suspected address against it."""
    if address == _MANY:
        return "many"
    return hmac.new(audit_key, _SOURCE_CONTEXT + address.encode(), hashlib.sha256).hexdigest()[:16]


def _failure_limit(connection: ASGIConnection[Any, Any, Any, Any]) -> Limit:
    return Limit.parse(connection.app.state.runtime.settings.rate_limits["auth_failed"])


async def record_failed_auth(
    connection: ASGIConnection[Any, Any, Any, Any], key: str, address: str, *, throttled: bool
) -> None:
    """Count a rejected key and, when one is due, audit the aggregate: the address's pseudonym, how many
    attempts, and their public key ids only (never a key). Breach monitoring sums the attempts."""
    state = connection.app.state
    key_id = parse_key_id(key)
    due = await state.authenticator.failures.reject(address, key_id, throttled=throttled)
    if due is None:
        return
    source, detail = due
    try:
        async with state.db.transaction() as session:
            audit.record(
                session,
                at=state.clock.now(),
                actor=Actor("client", source_tag(state.runtime.audit_key, source)),
                action="operator.auth_failed",
                outcome="failed",
                detail=detail,
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
    state = connection.app.state
    address = client_key(connection, state.runtime.settings.trusted_proxies)
    failures: FailedAuthGate = state.authenticator.failures
    failure_limit = _failure_limit(connection)
    operator = state.authenticator.cached(key)
    # A key found right moments ago is no guess: only a locked-out address waits. Any other key takes
    # a failure from the budget before it is looked up, and gives it back if it is right.
    if operator is not None:
        wait = await failures.retry_after(address, failure_limit)
    else:
        wait = await failures.admit(address, failure_limit)
    if wait is not None:
        await record_failed_auth(connection, key, address, throttled=True)
        raise RateLimited(wait)
    if operator is None:
        operator = await state.authenticator(connection, key)
        if operator is None:
            await record_failed_auth(connection, key, address, throttled=False)
            raise Unauthenticated("the operator key is unknown, revoked or expired", headers=_CHALLENGE)
        await failures.accepted(address, failure_limit)
    limit = Limit.parse(state.runtime.settings.rate_limits["operator"])
    await check(state.rate_limiter, "operator", str(operator.id), limit)
    required: set[str] = set(handler.opt.get("scopes", ()))
    missing = sorted(required - operator.scopes)
    if missing:
        raise Forbidden(f"this key lacks the scope(s): {', '.join(missing)}")
    connection.scope.setdefault("state", {})["operator"] = operator


def current_operator(connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticatedOperator:
    operator: AuthenticatedOperator = connection.scope["state"]["operator"]
    return operator

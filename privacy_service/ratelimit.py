"""Token-bucket rate limits, per process, keyed by (bucket, key).

Limits are per process: with N API replicas the effective limit is N times higher, which the
defaults allow for. Keys are opaque (client address, operator id, blind index of an identity),
never plaintext PII.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from privacy_service.errors import DomainError


class RateLimited(DomainError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(f"rate limit reached; retry after {seconds} s", headers={"Retry-After": str(seconds)})


@dataclass(frozen=True, slots=True)
class Limit:
    """``burst`` requests at once, refilled at ``per_minute`` per minute."""

    burst: int
    per_minute: float

    @classmethod
    def parse(cls, text: str) -> Limit:
        """'30/min' or '30/min burst 10'."""
        rate, _, burst = text.partition("burst")
        count, _, unit = rate.strip().partition("/")
        per_minute = float(count) * {"s": 60, "sec": 60, "min": 1, "h": 1 / 60, "hour": 1 / 60}[unit.strip()]
        return cls(int(burst) if burst.strip() else max(1, int(float(count))), per_minute)


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def hit(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> float | None:
        """Take ``cost`` tokens; None if allowed, else seconds until enough tokens exist."""
        now = self._clock()
        rate = limit.per_minute / 60.0
        tokens, updated = self._buckets.get((bucket, key), (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - updated) * rate)
        if tokens < cost:
            self._buckets[(bucket, key)] = (tokens, now)
            return (cost - tokens) / rate if rate > 0 else 3600.0
        if len(self._buckets) >= self._max_keys:
            self._evict(now, rate, limit.burst)
        self._buckets[(bucket, key)] = (tokens - cost, now)
        return None

    def check(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> None:
        retry_after = self.hit(bucket, key, limit, cost)
        if retry_after is not None:
            raise RateLimited(retry_after)

    def _evict(self, now: float, rate: float, burst: int) -> None:
        """Drop buckets that have refilled completely (they carry no state worth keeping)."""
        full_after = burst / rate if rate > 0 else 0.0
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
        if len(self._buckets) >= self._max_keys:
            self._buckets.clear()

    def reset(self) -> None:
        self._buckets.clear()


def client_address(connection: ASGIConnection[Any, Any, Any, Any], trusted_proxies: int) -> str:
    """The caller's address; X-Forwarded-For is honoured only behind the configured number of proxies."""
    if trusted_proxies > 0:
        forwarded = [part.strip() for part in connection.headers.get("x-forwarded-for", "").split(",") if part.strip()]
        if len(forwarded) >= trusted_proxies:
            return forwarded[-trusted_proxies]
    client = connection.client
    return client.host if client else "unknown"


def ip_rate_limit(
    bucket: str,
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Coroutine[Any, Any, None]]:
    """A guard limiting one public endpoint per client address (limit from settings.rate_limits).

    A coroutine on purpose: Litestar hands a plain-function guard to a worker thread on every call,
    which costs more than the check and would touch the limiter's buckets from several threads.
    """

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        state = connection.app.state
        settings = state.runtime.settings
        limit = Limit.parse(settings.rate_limits.get(bucket, settings.rate_limits["default"]))
        state.rate_limiter.check(f"ip:{bucket}", client_address(connection, settings.trusted_proxies), limit)

    return guard

"""Token-bucket rate limits, per process, keyed by (bucket, key).

Limits are per process: with N API replicas the effective limit is N times higher, which the
defaults allow for. Keys are opaque (client address, operator id, blind index of an identity),
never plaintext PII.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
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
        self._windows: dict[str, deque[float]] = {}

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

    def take_all(self, quotas: Sequence[tuple[str, int]], window: float) -> float | None:
        """Count one event against every ``(key, limit)``: at most ``limit`` per key in any ``window`` s.

        All or nothing: None if every key had room (the event is counted for each), else the seconds
        until each has room again (nothing counted). A sliding log, not a bucket: "10 a day" means
        no 24 hours ever hold more than 10.
        """
        now = self._clock()
        logs = []
        wait = 0.0
        for key, limit in quotas:
            log = self._windows.get(key) or deque()
            while log and now - log[0] >= window:
                log.popleft()
            if len(log) >= limit:
                wait = max(wait, log[len(log) - limit] + window - now if limit > 0 else window)
            logs.append((key, log))
        if wait > 0:
            return wait
        if len(self._windows) + len(logs) > self._max_keys:
            self._windows = {k: v for k, v in self._windows.items() if v and now - v[-1] < window}
            if len(self._windows) + len(logs) > self._max_keys:
                self._windows.clear()
        for key, log in logs:
            log.append(now)
            self._windows[key] = log
        return None

    def reset(self) -> None:
        self._buckets.clear()
        self._windows.clear()


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


# Takes one verification-code mail for an identity (its blind index): None if it may be sent now
# (and it is counted), else the seconds until one may.
CodeQuota = Callable[[bytes], float | None]
DAY_SECONDS = 86_400.0


def code_quota(connection: ASGIConnection[Any, Any, Any, Any]) -> CodeQuota:
    """How many verification codes may be mailed to an identity, for a caller at this client address.

    The limit must protect a customer's inbox without letting a stranger hold the customer's rights
    shut, so it limits *mail*, never intake:

    - A request is always accepted (the per-address ``intake`` limit aside), so filing requests in
      someone's name cannot lock them out of filing their own. Over a cap the request is accepted
      with the same answer, but no code is mailed; a resend later sends one (answered 429 with
      ``Retry-After`` while the caps still hold).
    - At most ``dsr_codes_per_identity_per_day`` code mails reach one identity in any 24 hours,
      whoever asks: the bound on what a mail-bomber can put in the inbox.
    - At most ``dsr_codes_per_identity_and_address_per_day`` of them for callers at one client
      address: a stranger uses a small share of the day's mails, and the owner, from their own
      address, still gets a code and can verify their request.
    - Resends are capped per request too (``dsr_resend_max_per_request``, checked by the service).

    Exhausting the daily cap takes callers at several addresses (cap / per-address share); against
    that the owner waits for the 24-hour window to move, or writes to the controller. Counted per
    process, in memory, like every limit here.
    """
    state = connection.app.state
    settings = state.runtime.settings
    limiter: RateLimiter = state.rate_limiter
    address = client_address(connection, settings.trusted_proxies)

    def take(bidx: bytes) -> float | None:
        identity = "code:" + bidx.hex()
        return limiter.take_all(
            [
                (identity, settings.dsr_codes_per_identity_per_day),
                (f"{identity}:{address}", settings.dsr_codes_per_identity_and_address_per_day),
            ],
            DAY_SECONDS,
        )

    return take

"""What every limiter shares: the limit's shape, the two answers a caller can get, the interface.

Two kinds of count, whichever process or store holds them:

- **Token buckets** (:meth:`Limiter.hit`, :meth:`Limiter.refund`): ``burst`` requests at once,
  refilled at ``per_minute``; per client address, per operator, per address of a failed key.
- **Sliding logs** (:meth:`Limiter.take_all`): at most N events per key in any window, counted for
  several keys at once or for none; the code mails to an identity (a day).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from privacy_service.errors import DomainError

# Seconds a client is told to wait when limits cannot be checked (Redis out of reach).
UNAVAILABLE_RETRY_SECONDS = 5


class RateLimited(DomainError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(f"rate limit reached; retry after {seconds} s", headers={"Retry-After": str(seconds)})


class LimitsUnavailable(DomainError):
    """A limit that must not be skipped could not be checked (the shared store is out of reach)."""

    status = 503
    slug = "unavailable"
    title = "Service unavailable"
    transient = True

    def __init__(self) -> None:
        super().__init__(
            "limits cannot be checked right now; nothing was changed. Retry shortly.",
            headers={"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)},
        )


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


class Limiter(Protocol):
    """Token buckets and sliding logs, in this process (:class:`~.memory.LocalLimiter`) or shared by
    every process in Redis (:class:`~.shared.RedisLimiter`)."""

    async def hit(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> float | None:
        """Take ``cost`` tokens; None if allowed, else seconds until enough tokens exist."""
        ...

    async def wait(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> float | None:
        """Like :meth:`hit` without taking anything: None if ``cost`` tokens are there now."""
        ...

    async def refund(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> None:
        """Put back ``cost`` tokens taken by :meth:`hit` (an attempt that turned out not to count; never
        above the burst). Take first, refund after: concurrent attempts never all pass a look."""
        ...

    async def take_all(self, quotas: Sequence[tuple[str, int]], window: float) -> float | None:
        """Count one event against every ``(key, limit)``: at most ``limit`` per key in any ``window`` s.

        All or nothing: None if every key had room (the event is counted for each), else the seconds
        until each has room again (nothing counted). A sliding log, not a bucket: "10 a day" means no
        24 hours ever hold more than 10.
        """
        ...

    async def give_back(self, key: str) -> None:
        """Forget the newest event counted for ``key`` by :meth:`take_all` (an event that turned out
        not to count); nothing when none is left in its window."""
        ...

    async def reset(self) -> None:
        """Forget every count (tests, and an operator lifting every limit at once)."""
        ...

    async def status(self) -> str:
        """Where the counts are kept now, for ``/readyz``: "shared (Redis)", or "per process" and why."""
        ...

    async def close(self) -> None:
        """Release connections (the app's shutdown)."""
        ...


async def check(limiter: Limiter, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> None:
    """:meth:`Limiter.hit`, raising :class:`RateLimited` (429 with Retry-After) when refused."""
    retry_after = await limiter.hit(bucket, key, limit, cost)
    if retry_after is not None:
        raise RateLimited(retry_after)

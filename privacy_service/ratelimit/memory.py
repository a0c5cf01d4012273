"""The embedded limiter: token buckets and sliding logs in this process's memory.

Without ``PRIVACY_REDIS_URL`` every API process counts on its own (with N processes a limit of L
lets N x L through); with it, :mod:`privacy_service.ratelimit.shared` counts in Redis and falls back
to these buckets while Redis is out of reach. Keys are opaque (client address, operator id, blind
index of an identity), never plaintext PII.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from privacy_service.ratelimit.base import Limit, RateLimited


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    limit: Limit

    def level(self, now: float) -> float:
        """Tokens now, under the bucket's own limit."""
        return min(float(self.limit.burst), self.tokens + (now - self.updated) * self.limit.per_minute / 60.0)

    def used(self, now: float) -> float:
        """How far towards its cap: 0 when full (nothing worth keeping), 1 when empty."""
        return 1.0 - self.level(now) / self.limit.burst if self.limit.burst > 0 else 1.0


@dataclass(slots=True)
class _Log:
    events: deque[float]
    limit: int
    window: float

    def used(self, now: float) -> float:
        """Like :meth:`_Bucket.used`, after dropping the events that have left the window."""
        while self.events and now - self.events[0] >= self.window:
            self.events.popleft()
        return len(self.events) / self.limit if self.limit > 0 else 1.0


_Key = TypeVar("_Key")
_Entry = TypeVar("_Entry")


def _make_room(table: OrderedDict[_Key, _Entry], max_keys: int, needed: int, used: Callable[[_Entry], float]) -> None:
    """Bound ``table`` (kept in order of last use) so ``needed`` new keys fit, never forgetting it wholesale.

    Entries with nothing to remember (``used`` 0: a refilled bucket, an empty log) go first. If that is
    not enough, the entries furthest from their cap go, the least recently used first among equals.
    A caller at its cap is thus forgotten only once every entry is at its cap: filling the table with
    fresh junk keys evicts junk keys. Each pass frees a tenth of the table, so its cost (a scan and a
    sort) is paid once per ``max_keys / 10`` new keys, not per request.
    """
    if len(table) + needed <= max_keys:
        return
    target = max_keys - max(needed, max_keys // 10)
    scored = [(used(entry), rank, key) for rank, (key, entry) in enumerate(table.items())]
    live = [item for item in scored if item[0] > 0.0]
    for _, _, key in heapq.nsmallest(max(0, len(live) - target), live) + [i for i in scored if i[0] <= 0.0]:
        del table[key]


class RateLimiter:
    """Token buckets (:meth:`hit`) and sliding logs (:meth:`take_all`), each table bounded by ``max_keys``.

    Synchronous: its callers on the event loop go through :class:`LocalLimiter`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._windows: OrderedDict[str, _Log] = OrderedDict()

    def _bucket(self, bucket: str, key: str, limit: Limit, now: float) -> _Bucket:
        found = self._buckets.get((bucket, key))
        if found is None:
            _make_room(self._buckets, self._max_keys, 1, lambda entry: entry.used(now))
            found = self._buckets[(bucket, key)] = _Bucket(float(limit.burst), now, limit)
        else:
            self._buckets.move_to_end((bucket, key))
            found.tokens, found.updated, found.limit = found.level(now), now, limit
        return found

    def hit(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> float | None:
        """Take ``cost`` tokens; None if allowed, else seconds until enough tokens exist."""
        entry = self._bucket(bucket, key, limit, self._clock())
        if entry.tokens < cost:
            return _refill_wait(entry.tokens, limit, cost)
        entry.tokens -= cost
        return None

    def wait(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> float | None:
        """Like :meth:`hit` without taking anything: None if ``cost`` tokens are there now."""
        entry = self._buckets.get((bucket, key))
        if entry is None:
            return None
        tokens = min(float(limit.burst), entry.tokens + (self._clock() - entry.updated) * limit.per_minute / 60.0)
        return None if tokens >= cost else _refill_wait(tokens, limit, cost)

    def refund(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> None:
        """Put back ``cost`` tokens taken by :meth:`hit`, never above the burst; nothing for a bucket
        not held (a missing bucket is full)."""
        if (bucket, key) in self._buckets:
            entry = self._bucket(bucket, key, limit, self._clock())
            entry.tokens = min(float(limit.burst), entry.tokens + cost)

    def check(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> None:
        retry_after = self.hit(bucket, key, limit, cost)
        if retry_after is not None:
            raise RateLimited(retry_after)

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
            found = self._windows.get(key)
            log = found.events if found is not None else deque()
            while log and now - log[0] >= window:
                log.popleft()
            if len(log) >= limit:
                wait = max(wait, log[len(log) - limit] + window - now if limit > 0 else window)
            if found is not None:
                found.limit, found.window = limit, window
                self._windows.move_to_end(key)
            logs.append((key, limit, log, found))
        if wait > 0:
            return wait
        new = sum(1 for *_, found in logs if found is None)
        _make_room(self._windows, self._max_keys, new, lambda entry: entry.used(now))
        for key, limit, log, found in logs:
            log.append(now)
            if found is None or key not in self._windows:
                self._windows[key] = _Log(log, limit, window)
        return None

    def give_back(self, key: str) -> None:
        """Forget the newest event counted for ``key`` by :meth:`take_all` (an event that turned out
        not to count); nothing when none is left in its window."""
        found = self._windows.get(key)
        if found is not None and found.events:
            found.events.pop()

    def reset(self) -> None:
        self._buckets.clear()
        self._windows.clear()


def _refill_wait(tokens: float, limit: Limit, cost: float) -> float:
    rate = limit.per_minute / 60.0
    return (cost - tokens) / rate if rate > 0 else 3600.0


class LocalLimiter:
    """A :class:`~privacy_service.ratelimit.base.Limiter` over this process's :class:`RateLimiter`."""

    def __init__(self, limiter: RateLimiter | None = None) -> None:
        self.memory = limiter or RateLimiter()

    async def hit(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> float | None:
        return self.memory.hit(bucket, key, limit, cost)

    async def wait(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> float | None:
        return self.memory.wait(bucket, key, limit, cost)

    async def refund(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> None:
        self.memory.refund(bucket, key, limit, cost)

    async def take_all(self, quotas: Sequence[tuple[str, int]], window: float) -> float | None:
        return self.memory.take_all(quotas, window)

    async def give_back(self, key: str) -> None:
        self.memory.give_back(key)

    async def reset(self) -> None:
        self.memory.reset()

    async def status(self) -> str:
        return "per process"

    async def close(self) -> None:
        return None

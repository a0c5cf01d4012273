"""Token-bucket rate limits, per process, keyed by (bucket, key).

Limits are per process: with N API replicas the effective limit is N times higher, which the
defaults allow for. Keys are opaque (client address, operator id, blind index of an identity),
never plaintext PII.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

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
    """Token buckets (:meth:`hit`) and sliding logs (:meth:`take_all`), each table bounded by ``max_keys``."""

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


def client_address(connection: ASGIConnection[Any, Any, Any, Any], trusted_proxies: int) -> str:
    """The caller's address; X-Forwarded-For is honoured only behind the configured number of proxies."""
    if trusted_proxies > 0:
        forwarded = [part.strip() for part in connection.headers.get("x-forwarded-for", "").split(",") if part.strip()]
        if len(forwarded) >= trusted_proxies:
            return forwarded[-trusted_proxies]
    client = connection.client
    return client.host if client else "unknown"


def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_key(address: str) -> str:
    """What per-address limits count: an IPv4 address, or an IPv6 address's /64.

    One host routinely holds a whole IPv6 /64 (the smallest subnet handed out), so counting each IPv6
    address would give it 2^64 fresh limits. IPv4-mapped IPv6 counts as its IPv4 address.
    """
    ip = _parse(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


def network_key(address: str) -> str:
    """A caller's source network: the IPv4 /24 or the IPv6 /64 (for the code-mail shares, see code_quota)."""
    ip = _parse(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Network((int(ip) >> 8 << 8, 24)))
    return address_key(str(ip))


def client_key(connection: ASGIConnection[Any, Any, Any, Any], trusted_proxies: int) -> str:
    """The caller as per-address rate limits see it (:func:`address_key` of :func:`client_address`)."""
    return address_key(client_address(connection, trusted_proxies))


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
        state.rate_limiter.check(f"ip:{bucket}", client_key(connection, settings.trusted_proxies), limit)

    return guard


DAY_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class CodeQuota:
    """The code mails to an identity (its blind index), for one caller: see :func:`code_quota`."""

    # Take one code mail: None if it may be sent now (and it is counted), else seconds until one may.
    take: Callable[[bytes], Awaitable[float | None]]
    # The caller entered a code for this identity correctly: give its network's share one mail back.
    confirmed: Callable[[bytes], Awaitable[None]]


def code_quota(connection: ASGIConnection[Any, Any, Any, Any]) -> CodeQuota:
    """How many verification codes may be mailed to an identity, for a caller from this source network.

    The limit must protect a customer's inbox without letting a stranger hold the customer's rights
    shut, so it limits *mail*, never intake:

    - A request is always accepted (the per-address ``intake`` limit aside), so filing requests in
      someone's name cannot lock them out of filing their own. Over a cap the request is accepted
      with the same answer, but no code is mailed; a resend later sends one (answered 429 with
      ``Retry-After`` while the caps still hold).
    - At most ``dsr_codes_per_identity_per_day`` code mails reach one identity in any 24 hours,
      whoever asks: the hard bound on what a mail-bomber can put in the inbox.
    - At most ``dsr_codes_per_identity_and_address_per_day`` of them for callers from one source
      network (an IPv4 /24 or an IPv6 /64, see :func:`network_key`), so neither one host nor its
      neighbours' addresses multiply a stranger's share.
    - ``dsr_codes_reserved_for_new_networks`` of the daily mails are held back: a network that has sent
      no code to this identity today may take one of them when the rest are used up. The owner, from
      their own network, thus still gets a code after strangers have used the shared part.
    - Resends are capped per request too (``dsr_resend_max_per_request``, checked by the service).
    - A code entered correctly gives the network it was entered from its mail back
      (:attr:`CodeQuota.confirmed`): the per-network share bounds what a stranger, who never sees the
      codes, can take of the day, not a customer who files several requests in one sitting (issue 20
      item 6: access, correction and deletion, then a fourth, each confirmed). The daily total per
      identity is not given back: the inbox bound holds whoever asks.

    The trade-off: any bound on the inbox is a number a third party can use up, since nothing tells
    the owner's request from a stranger's before the code is entered. A larger reserve means more
    networks are needed to lock the owner out, and fewer repeat codes (beyond each network's first)
    in the day; the inbox bound stays the same. With the defaults (10 a day, 3 per network,
    5 reserved) a lock-out takes callers in 7 different networks within 24 hours instead of 4
    addresses; against that the owner waits for the window to move, or writes to the controller.
    Counted per process, in memory, like every limit here.
    """
    state = connection.app.state
    settings = state.runtime.settings
    limiter: RateLimiter = state.rate_limiter
    network = network_key(client_address(connection, settings.trusted_proxies))
    total = settings.dsr_codes_per_identity_per_day
    reserve = min(settings.dsr_codes_reserved_for_new_networks, total)

    async def take(bidx: bytes) -> float | None:
        identity = "code:" + bidx.hex()
        source = f"{identity}:{network}"
        shared = limiter.take_all(
            [(identity, total - reserve), (source, settings.dsr_codes_per_identity_and_address_per_day)],
            DAY_SECONDS,
        )
        if shared is None or reserve == 0:
            return shared
        # A limit of 1 on the source's log: only a network with no code to this identity today.
        first = limiter.take_all([(identity + ":reserve", reserve), (source, 1)], DAY_SECONDS)
        return None if first is None else min(shared, first)

    async def confirmed(bidx: bytes) -> None:
        limiter.give_back(f"code:{bidx.hex()}:{network}")

    return CodeQuota(take, confirmed)

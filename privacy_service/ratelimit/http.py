"""Limits as HTTP requests meet them: who the caller is, the per-address guard, the code-mail quota."""

from __future__ import annotations

import ipaddress
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.exceptions import ImproperlyConfiguredException
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler

from privacy_service.ratelimit.base import Limit, Limiter, check


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


@lru_cache(maxsize=4096)
def _keys(address: str) -> tuple[str, str]:
    """(:func:`address_key`, :func:`network_key`) of an address, parsed once: every public request
    needs one or both, and a caller's next request comes from the same address. Bounded, so a flood
    of made-up forwarded addresses only evicts entries."""
    ip = _parse(address)
    if ip is None:
        return address, address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip), str(ipaddress.IPv4Network((int(ip) >> 8 << 8, 24)))
    network = str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return network, network


def address_key(address: str) -> str:
    """What per-address limits count: an IPv4 address, or an IPv6 address's /64.

    One host routinely holds a whole IPv6 /64 (the smallest subnet handed out), so counting each IPv6
    address would give it 2^64 fresh limits. IPv4-mapped IPv6 counts as its IPv4 address.
    """
    return _keys(address)[0]


def network_key(address: str) -> str:
    """A caller's source network: the IPv4 /24 or the IPv6 /64 (for the code-mail shares, see code_quota)."""
    return _keys(address)[1]


def client_key(connection: ASGIConnection[Any, Any, Any, Any], trusted_proxies: int) -> str:
    """The caller as per-address rate limits see it (:func:`address_key` of :func:`client_address`)."""
    return address_key(client_address(connection, trusted_proxies))


@lru_cache(maxsize=64)
def _limit(text: str) -> Limit:
    # The settings hold a handful of limit texts; parsing one on every request is wasted work.
    return Limit.parse(text)


# The guards ip_rate_limit made: they read nothing of the route handler they are given.
_LIMIT_GUARDS: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


def ip_rate_limit(
    bucket: str,
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Coroutine[Any, Any, None]]:
    """A guard limiting one public endpoint per client address (limit from settings.rate_limits).

    A coroutine on purpose: Litestar hands a plain-function guard to a worker thread on every call,
    which costs more than the check and would touch the limiter's buckets from several threads.
    """

    name = f"ip:{bucket}"

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        state = connection.app.state
        settings = state.runtime.settings
        limit = _limit(settings.rate_limits.get(bucket, settings.rate_limits["default"]))
        await check(state.rate_limiter, name, client_key(connection, settings.trusted_proxies), limit)

    _LIMIT_GUARDS.add(guard)
    return guard


class RateLimitedRoute(HTTPRouteHandler):
    """A route handler (``@RateLimitedRoute(path, http_method=...)``) guarded by :func:`ip_rate_limit`
    alone, its guards handed the route handler itself: Litestar hands every guard a ``copy`` of the
    handler (in case a guard changes it), which cost more than the rate-limit check (~7 µs against
    ~2 µs). Any other guard on the route, from any layer, is refused when the app is built."""

    def on_registration(self, app: Litestar) -> None:
        super().on_registration(app)
        others = [guard for guard in self.resolve_guards() if guard not in _LIMIT_GUARDS]
        if others:
            raise ImproperlyConfiguredException(
                f"{self}: RateLimitedRoute takes ip_rate_limit guards only, not {others}"
            )

    async def authorize_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
        for guard in self.resolve_guards():
            await cast("Awaitable[None]", guard(connection, self))  # ip_rate_limit's: coroutines


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
    Counted in Redis when ``PRIVACY_REDIS_URL`` is set (one count for every API process; while Redis is
    out of reach a code mail is refused with 503, see :mod:`.shared`), else in this process's memory.
    """
    state = connection.app.state
    settings = state.runtime.settings
    limiter: Limiter = state.rate_limiter
    network = network_key(client_address(connection, settings.trusted_proxies))
    total = settings.dsr_codes_per_identity_per_day
    reserve = min(settings.dsr_codes_reserved_for_new_networks, total)

    async def take(bidx: bytes) -> float | None:
        identity = "code:" + bidx.hex()
        source = f"{identity}:{network}"
        shared = await limiter.take_all(
            [(identity, total - reserve), (source, settings.dsr_codes_per_identity_and_address_per_day)],
            DAY_SECONDS,
        )
        if shared is None or reserve == 0:
            return shared
        # A limit of 1 on the source's log: only a network with no code to this identity today.
        first = await limiter.take_all([(identity + ":reserve", reserve), (source, 1)], DAY_SECONDS)
        return None if first is None else min(shared, first)

    async def confirmed(bidx: bytes) -> None:
        await limiter.give_back(f"code:{bidx.hex()}:{network}")

    return CodeQuota(take, confirmed)

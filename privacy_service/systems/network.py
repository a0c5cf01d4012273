"""Where webhooks may go: public internet addresses only, checked after resolving the name.

A ``systems:manage`` key chooses the callback URL, and webhooks carry identities: without this check
it could point them at the service's own network (a database on 127.0.0.1, a cloud metadata endpoint,
an office subnet) and read the delivery log as a port scan. The host is resolved and *every* address
it resolves to must be public, once at registration and again for each POST, right before the
connection: :class:`PinnedTransport` resolves, checks, then connects to the address it checked (the
URL keeps its name in the Host header and in TLS SNI and certificate checks), so a name that resolves
to something else a moment later (DNS rebinding) changes nothing.

PRIVACY_SYSTEMS_ALLOW_PRIVATE_NETWORKS=true lets development and test set-ups use private and loopback
receivers. Cloud metadata endpoints are refused even then: no receiver lives there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from typing import Protocol

import httpx

RESOLVE_SECONDS = 5.0
# Instance metadata services (AWS, GCP, Azure, Oracle: 169.254.169.254; AWS IPv6; Alibaba) and their names.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedDestination(Exception):
    """The host is not a public internet destination (or cannot be resolved): nothing is sent."""


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to (IP literals resolve to themselves); raises OSError."""
        ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``, off the event loop)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is where it really goes."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def refusal(address: str, *, allow_private: bool) -> str | None:
    """Why ``address`` is no webhook destination (``None``: it is one)."""
    try:
        ip = _embedded_ipv4(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return "not an address"
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if allow_private:
        return None
    for reason, hit in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not public", not ip.is_global),
    ):
        if hit:
            return reason
    return None


def _name(host: str) -> str:
    return host.lower().rstrip(".")


async def public_addresses(
    resolver: Resolver, host: str, port: int, *, allow_private: bool, timeout: float | None = RESOLVE_SECONDS
) -> list[str]:
    """Resolve ``host`` and check every address; raises :class:`RefusedDestination` if any is refused."""
    if _name(host) in METADATA_NAMES:
        raise RefusedDestination("metadata")
    try:
        async with asyncio.timeout(timeout):
            addresses = await resolver.resolve(host.strip("[]"), port)
    except (OSError, TimeoutError, ValueError):  # ValueError: a name IDNA cannot encode
        raise RefusedDestination("unresolvable") from None
    if not addresses:
        raise RefusedDestination("unresolvable")
    for address in addresses:
        reason = refusal(address, allow_private=allow_private)
        if reason is not None:
            raise RefusedDestination(reason)
    return addresses


async def check_destination(url: str, resolver: Resolver, *, allow_private: bool) -> None:
    """Registration's check of a callback URL (already known to be an absolute http(s) URL httpx reads).

    With private networks allowed (development), only metadata endpoints are refused and the name need
    not resolve yet; each POST still resolves and pins it.
    """
    parts = httpx.URL(url)  # read as the sender reads it
    host = parts.raw_host.decode("ascii")  # IDNA-encoded, as DNS sees it
    if allow_private:
        if _name(host) in METADATA_NAMES or (_is_ip_literal(host) and refusal(host, allow_private=True)):
            raise RefusedDestination("metadata")
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    await public_addresses(resolver, host, port, allow_private=False)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects only to the address it has just resolved and checked.

    The request goes to the checked IP; its Host header (set by httpx from the URL) and the TLS server
    name stay the registered host's, so certificates are verified against the name as usual. One
    connection pool per host name: a TLS connection verified for one name is never reused for another
    name that happens to share the address.
    """

    def __init__(self, resolver: Resolver, *, allow_private: bool, ssl_context: ssl.SSLContext | None = None) -> None:
        self._resolver = resolver
        self._allow_private = allow_private
        self._ssl = ssl_context  # default: httpx's (certifi's CA bundle), made on first use
        self._pools: dict[tuple[str, str, int], httpx.AsyncHTTPTransport] = {}

    def _pool(self, key: tuple[str, str, int]) -> httpx.AsyncHTTPTransport:
        pool = self._pools.get(key)
        if pool is None:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            pool = self._pools[key] = httpx.AsyncHTTPTransport(verify=self._ssl, trust_env=False)
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.raw_host.decode("ascii")  # IDNA-encoded, as DNS and TLS see it
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        timeout = request.extensions.get("timeout", {}).get("connect", RESOLVE_SECONDS)
        addresses = await public_addresses(
            self._resolver, host, port, allow_private=self._allow_private, timeout=timeout
        )
        pinned = addresses[0].split("%", 1)[0]
        if not _is_ip_literal(host):
            request.extensions = {**request.extensions, "sni_hostname": host}
        request.url = request.url.copy_with(host=pinned)
        return await self._pool((request.url.scheme, host, port)).handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()

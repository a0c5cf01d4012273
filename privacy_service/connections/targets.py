"""Where a connection may point: never at the service's own database, never at a link-local address.

Three layers, because a host name says little about where it leads:

1. at registration (and again at each test), the host is resolved (``getaddrinfo``, short timeout,
   trailing dot and case normalised) and every address it resolves to is checked: link-local and
   cloud metadata addresses (169.254.0.0/16, fe80::/10) are refused, and so is any address outside
   ``connections_allowed_networks`` when that list is set. If the port and database name are those of
   the service's own database and the two hosts share an address (every loopback address counts as
   one), the URL is refused: ``127.0.0.1``, ``[::1]`` and ``localhost.`` all reach ``localhost``.
2. every new connection an engine opens (the test's and the worker's) is checked as the server sees
   it: the peer address it really reached goes through the same address check, and the server's
   identity (PostgreSQL: ``system_identifier`` from ``pg_control_system()`` when the user may read it,
   else the postmaster's start time and port; with ``current_database()``) is compared with the
   service's own database. A match raises :class:`TargetRefused` before any statement of ours runs.
3. the service's own database is PostgreSQL or SQLite (config refuses anything else); a SQLite
   file is compared by resolved path at registration (urls.py).

Messages never repeat the host, an address or the URL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from privacy_service.config import Settings
from privacy_service.errors import InvalidInput
from privacy_service.systems.network import METADATA_ADDRESSES, METADATA_NAMES

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RESOLVE_SECONDS = 2.0
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOOPBACK = "loopback"  # every loopback (and unspecified) address reaches this machine

OWN_DATABASE = "url: this is the service's own database; a connection reaches another database"
OWN_SERVER = (
    "the database reached is the service's own database (same server and database name); "
    "a connection reaches another database"
)


class TargetRefused(InvalidInput):
    """A connection that leads where none may go (422). ``reason``: ``own_database`` or ``target_address``."""

    def __init__(self, detail: str, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


def host_name(host: str) -> str:
    """A host as compared: lower case, no brackets, no trailing dot (``localhost.`` is ``localhost``)."""
    return host.strip("[]").lower().rstrip(".")


def _address(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):  # where an IPv6 address that carries an IPv4 one goes
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def allowed_networks(settings: Settings) -> list[Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in settings.connections_allowed_networks]


def address_refusal(address: str, networks: Sequence[Network]) -> str | None:
    """Why a connection may not go to ``address`` (``None``: it may)."""
    ip = _address(address)
    if ip is None:
        return "not an address"
    if ip in METADATA_ADDRESSES or ip.is_link_local:
        return "link-local or cloud metadata"
    if ip.is_multicast:
        return "multicast"
    if networks and not any(ip.version == net.version and ip in net for net in networks):
        return "outside connections_allowed_networks"
    return None


def _refused(reason: str) -> TargetRefused:
    return TargetRefused(f"url: the host leads to an address a connection may not reach ({reason})", "target_address")


async def resolve(host: str, port: int, timeout: float = RESOLVE_SECONDS) -> set[str]:
    """Every address ``host`` resolves to (an IP literal: itself); empty if it does not resolve in time."""
    try:
        async with asyncio.timeout(timeout):
            infos = await asyncio.get_running_loop().getaddrinfo(host_name(host), port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError, ValueError):
        return set()
    return {str(info[4][0]) for info in infos}


def _places(addresses: Iterable[str]) -> set[str]:
    """Addresses as places: every loopback and unspecified address is this machine."""
    places: set[str] = set()
    for address in addresses:
        ip = _address(address)
        if ip is None:
            continue
        places.add(_LOOPBACK if ip.is_loopback or ip.is_unspecified else str(ip))
    return places


async def check_target(stored: str, settings: Settings) -> None:
    """Refuse (422, :class:`TargetRefused`) a server URL whose host resolves to a refused address or to
    the service's own database server with the same port and database name. SQLite: nothing to do here."""
    url = make_url(stored)
    if url.get_backend_name() == "sqlite" or not url.host:
        return
    from privacy_service.connections.urls import DEFAULT_PORTS, own_database

    dialect = url.get_backend_name()
    port = url.port or DEFAULT_PORTS[dialect]
    host = host_name(url.host)
    if host in METADATA_NAMES:
        raise _refused("link-local or cloud metadata")
    timeout = min(RESOLVE_SECONDS, settings.connections_test_timeout_seconds)
    addresses = await resolve(host, port, timeout)
    networks = allowed_networks(settings)
    if not addresses and networks:
        raise _refused("the host does not resolve, and connections_allowed_networks is set")
    for address in addresses:
        reason = address_refusal(address, networks)
        if reason is not None:
            raise _refused(reason)
    own = own_database(settings)
    if own is None or own.host is None or (own.dialect, own.port, own.database) != (dialect, port, url.database):
        return
    if host_name(own.host) == host:
        raise TargetRefused(OWN_DATABASE, "own_database")
    own_places = _places(await resolve(own.host, port, timeout))
    if own_places & _places(addresses):
        raise TargetRefused(OWN_DATABASE, "own_database")


# -- the server as it answers ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """Who answered: a PostgreSQL cluster (system identifier, else start time and port) and a database."""

    database: str
    system_id: str | None
    started: str
    port: str

    def same_as(self, other: ServerIdentity) -> bool:
        if self.database != other.database:
            return False
        if self.system_id is not None and other.system_id is not None:
            return self.system_id == other.system_id  # a replica of the same cluster counts as the same
        return (self.started, self.port) == (other.started, other.port)


_PG_IDENTITY = (
    "SELECT has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE'), current_database(), "
    "pg_postmaster_start_time()::text, current_setting('port')"
)


def read_identity(dbapi_connection: Any) -> ServerIdentity:
    """A PostgreSQL server's identity, read on a DBAPI connection (sync; inside SQLAlchemy's greenlet)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(_PG_IDENTITY)
        allowed, database, started, port = cursor.fetchone()
        system_id = None
        if allowed:
            cursor.execute("SELECT system_identifier::text FROM pg_catalog.pg_control_system()")
            system_id = cursor.fetchone()[0]
    finally:
        cursor.close()
    return ServerIdentity(str(database), system_id, str(started), str(port))


async def own_identity(connection: AsyncConnection) -> ServerIdentity | None:
    """The service's own database's identity (None when it is SQLite)."""
    if connection.dialect.name != "postgresql":
        return None
    allowed, database, started, port = (await connection.execute(text(_PG_IDENTITY))).one()
    system_id = None
    if allowed:
        system_id = await connection.scalar(text("SELECT system_identifier::text FROM pg_catalog.pg_control_system()"))
    return ServerIdentity(str(database), system_id, str(started), str(port))


def _peer(dbapi_connection: Any) -> str | None:
    """The address the driver's socket really reached (asyncpg, aiomysql); None if it cannot be told."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    transport = getattr(driver, "_transport", None) or getattr(getattr(driver, "_writer", None), "transport", None)
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def guard(engine: AsyncEngine, own: ServerIdentity | None, networks: Sequence[Network]) -> None:
    """Check every new connection of ``engine`` before use: the address reached, and that the server is
    not the service's own database. Raises :class:`TargetRefused` from ``engine.connect()``."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        return

    @event.listens_for(engine.sync_engine, "connect")
    def _check(dbapi_connection: Any, _record: Any) -> None:
        peer = _peer(dbapi_connection)
        if peer is not None:
            reason = address_refusal(peer, networks)
            if reason is not None:
                dbapi_connection.close()
                raise _refused(reason)
        if own is None or dialect != "postgresql":
            return
        found = read_identity(dbapi_connection)
        dbapi_connection.rollback()
        if found.same_as(own):
            dbapi_connection.close()
            raise TargetRefused(OWN_SERVER, "own_database")

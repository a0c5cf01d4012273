"""Connection URLs: which are accepted, how they are normalised to an async driver, what may be shown.

Only PostgreSQL (asyncpg), MySQL/MariaDB (aiomysql) and SQLite (aiosqlite) are accepted. Messages
never repeat the URL or a part of it: a URL holds a password, and a mistyped one may hold anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from privacy_service.config import Settings
from privacy_service.connections.targets import OWN_DATABASE, host_name
from privacy_service.errors import InvalidInput

# The scheme as written -> (dialect, the async driver it is reached with).
_DRIVERS = {
    "postgresql": ("postgresql", "postgresql+asyncpg"),
    "postgresql+asyncpg": ("postgresql", "postgresql+asyncpg"),
    "postgres": ("postgresql", "postgresql+asyncpg"),
    "mysql": ("mysql", "mysql+aiomysql"),
    "mysql+aiomysql": ("mysql", "mysql+aiomysql"),
    "mariadb": ("mysql", "mysql+aiomysql"),
    "mariadb+aiomysql": ("mysql", "mysql+aiomysql"),
    "sqlite": ("sqlite", "sqlite+aiosqlite"),
    "sqlite+aiosqlite": ("sqlite", "sqlite+aiosqlite"),
}
# Query options a URL may carry; anything else (a socket path, local_infile, init commands) is refused.
_OPTIONS = {"postgresql": frozenset({"ssl"}), "mysql": frozenset({"charset"}), "sqlite": frozenset()}
# asyncpg's sslmode values (``ssl=require``); anything else fails inside the driver.
_PG_SSL = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}

# Control characters, surrogates and other unprintables have no place in a URL (nor in a file name).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# A DNS name or an IPv4 address; or an IPv6 address (written in brackets, kept without them).
_HOST = re.compile(r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})|[0-9A-Fa-f:.]{2,45})$")
MAX_PATH = 1024

SHAPE = (
    "url must be a database URL: postgresql://user:password@host:port/database, "
    "mysql://user:password@host:port/database (MariaDB too) or sqlite:////absolute/path/to/file.db"
)


@dataclass(frozen=True, slots=True)
class Target:
    """What may be shown about a connection: never the user name or the password."""

    dialect: str
    host: str | None
    port: int | None
    database: str | None


def _parse(raw: str) -> URL:
    if _UNPRINTABLE.search(raw):
        raise InvalidInput(SHAPE)
    try:
        url = make_url(raw.strip())
        port = url.port  # a port that is not a number raises here or at parse time
    except (ArgumentError, ValueError, TypeError):
        raise InvalidInput(SHAPE) from None
    if port is not None and not 0 < port < 65536:
        raise InvalidInput(SHAPE)
    # Percent-decoding may yield what the raw text could not hold (``db%00x``): check the parts as read.
    for part in (url.username, url.password, url.host, url.database):
        if part is not None and _UNPRINTABLE.search(part):
            raise InvalidInput(SHAPE)
    for value in url.query.values():
        if not isinstance(value, str) or len(value) > 100:  # one short value per option
            raise InvalidInput("url: each query option takes one short value")
    return url


def normalise(raw: str, settings: Settings) -> tuple[str, Target]:
    """The URL to store (async driver, password included) and what may be shown; 422 if refused."""
    url = _parse(raw)
    driver = _DRIVERS.get(url.drivername.lower())
    if driver is None:
        raise InvalidInput("url: unsupported database; use postgresql, mysql (MySQL or MariaDB) or sqlite")
    dialect, drivername = driver
    url = url.set(drivername=drivername)
    unknown = sorted(set(url.query) - _OPTIONS[dialect])
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[dialect])) or "none"
        raise InvalidInput(f"url: query options are limited for {dialect} (allowed: {allowed})")
    _check_options(url, dialect)
    if dialect == "sqlite":
        target = _check_sqlite(url, settings)
    else:
        target = _check_server(url, dialect, settings)
    return url.render_as_string(hide_password=False), target


def _check_options(url: URL, dialect: str) -> None:
    """Option values the driver would choke on (an unknown charset fails deep inside aiomysql)."""
    ssl, charset = url.query.get("ssl"), url.query.get("charset")
    if dialect == "postgresql" and ssl is not None and ssl not in _PG_SSL:
        raise InvalidInput("url: ssl is one of " + ", ".join(sorted(_PG_SSL)))
    if dialect == "mysql" and charset is not None:
        from pymysql.charset import charset_by_name

        if not isinstance(charset, str) or charset_by_name(charset) is None:
            raise InvalidInput("url: charset is not a MySQL character set (e.g. utf8mb4)")


def _check_server(url: URL, dialect: str, settings: Settings) -> Target:
    if not url.host or not url.database:
        raise InvalidInput(f"url: a {dialect} URL names a host and a database")
    if not _HOST.match(url.host) or len(url.database) > 255:
        raise InvalidInput(SHAPE)
    port = url.port or DEFAULT_PORTS[dialect]
    own = own_database(settings)
    # By name here (case and a trailing dot ignored); targets.check_target also compares the addresses
    # both names resolve to, and every connection compares the server's identity.
    if (
        own is not None
        and own.dialect == dialect
        and (own.host, own.port, own.database)
        == (
            host_name(url.host),
            port,
            url.database,
        )
    ):
        raise InvalidInput(OWN_DATABASE)
    return Target(dialect, url.host, port, url.database)


def _check_sqlite(url: URL, settings: Settings) -> Target:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise InvalidInput("url: a sqlite URL names a database file by its absolute path (sqlite:////path/file.db)")
    path = Path(database)
    if not path.is_absolute() or ".." in path.parts or len(database) > MAX_PATH:
        raise InvalidInput("url: a sqlite database file is named by its absolute path (sqlite:////path/file.db)")
    try:
        is_dir = path.is_dir()
        own = any(_same_file(path, own) for own in _own_files(settings))
    except (OSError, ValueError):  # a name the file system refuses (too long a component, say)
        raise InvalidInput("url: the sqlite path cannot name a file on this system") from None
    if is_dir:
        raise InvalidInput("url: the sqlite path is a directory, not a database file")
    if own:
        raise InvalidInput("url: this is one of the service's own files; a connection reaches another database")
    return Target("sqlite", None, None, str(path))


def own_database(settings: Settings) -> Target | None:
    """The service's own database server (None: SQLite), its host as compared (``targets.host_name``)."""
    if settings.is_sqlite:
        return None
    url = make_url(settings.database_url)
    driver = _DRIVERS.get(url.drivername.lower())
    if driver is None or not url.host:
        return None
    return Target(driver[0], host_name(url.host), url.port or DEFAULT_PORTS.get(driver[0]), url.database)


def _own_files(settings: Settings) -> list[Path]:
    files = [settings.keyring_path, settings.resolved_keystore_path]
    if settings.sqlite_path is not None:
        files.append(settings.sqlite_path)
    return files


def _same_file(path: Path, own: Path) -> bool:
    try:
        return path.resolve() == own.resolve() or (path.exists() and own.exists() and path.samefile(own))
    except OSError:
        return False


def target_of(stored: str) -> Target:
    """What may be shown about a stored (already normalised) URL."""
    url = make_url(stored)
    dialect = _DRIVERS[url.drivername][0]
    if dialect == "sqlite":
        return Target(dialect, None, None, url.database)
    return Target(dialect, url.host, url.port or DEFAULT_PORTS[dialect], url.database)


def engine_url(stored: str) -> URL:
    """The URL an engine connects with: a SQLite file is opened read-write but never created (a
    missing file is an error, not a new empty database that every check would then find wanting)."""
    url = make_url(stored)
    if url.get_backend_name() == "sqlite":
        return url.set(database=f"file:{url.database}", query={"mode": "rw", "uri": "true"})
    return url

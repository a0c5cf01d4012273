"""Small target databases for the connection registry's tests: two tables on SQLite, PostgreSQL and
MariaDB, the Fides dataset describing them, and a policy directory holding that dataset."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import aiomysql
import asyncpg
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import IN_CI, POSTGRES_URL, ROOT, _dsn, _with_database, isolated

MARIADB_URL = os.environ.get("PRIVACY_TEST_MARIADB_URL", "mysql+aiomysql://root@127.0.0.1:3306/test")
# A password that must never come back: in a response, a log line, an audit entry or an error.
CANARY_PASSWORD = "Canary-Pw-4417-zq"
CANARY_USER = "c2_probe"

DATASET = """\
dataset:
  - fides_key: c2_shop
    name: C2 test shop
    description: Two small tables a connection test checks
    collections:
      - name: c2_customers
        fields:
          - name: id
            data_categories: [user.unique_id]
            fides_meta:
              primary_key: true
          - name: email
            data_categories: [user.contact.email]
            fides_meta:
              identity: email
              data_type: string
          - name: full_name
            data_categories: [user.name]
      - name: c2_orders
        fields:
          - name: id
            data_categories: [system.operations]
            fides_meta:
              primary_key: true
          - name: customer_id
            data_categories: [user.unique_id]
            fides_meta:
              references:
                - dataset: c2_shop
                  field: c2_customers.id
                  direction: from
          - name: total
            data_categories: [system.operations]
"""


def policy_dir(tmp_path: Path) -> Path:
    """The shipped policies plus datasets/c2_shop.yml."""
    target = tmp_path / "policies"
    if not target.exists():
        shutil.copytree(ROOT / "policies", target)
        (target / "datasets").mkdir(exist_ok=True)
        (target / "datasets" / "c2_shop.yml").write_text(DATASET)
    return target


def tables(*, with_total: bool = True) -> MetaData:
    metadata = MetaData()
    Table(
        "c2_customers",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("email", String(200)),
        Column("full_name", String(200)),
    )
    orders = [Column("id", Integer, primary_key=True), Column("customer_id", Integer)]
    Table("c2_orders", metadata, *orders, *([Column("total", Integer)] if with_total else []))
    return metadata


async def make_tables(url: str, *, with_total: bool = True) -> None:
    """(Re)create the two tables, empty, in the target database."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(tables().drop_all)
            await connection.run_sync(tables(with_total=with_total).create_all)
    finally:
        await engine.dispose()


def sqlite_target(tmp_path: Path, *, with_total: bool = True) -> Path:
    path = tmp_path / "shop.db"
    isolated(asyncio.run, make_tables(f"sqlite+aiosqlite:///{path}", with_total=with_total))
    return path


@pytest.fixture(scope="session")
def postgres_target() -> Iterator[str]:
    """A fresh PostgreSQL database for the target tables; a URL with the canary password (the test
    server trusts local connections, so the password travels but is not checked)."""
    name = f"c2_target_{os.getpid()}_{secrets.token_hex(3)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(_dsn(POSTGRES_URL), timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        isolated(asyncio.run, admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL not reachable at PRIVACY_TEST_POSTGRES_URL ({type(exc).__name__})"
        if IN_CI:
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    url = make_url(_with_database(POSTGRES_URL, name)).set(password=CANARY_PASSWORD)
    yield url.render_as_string(hide_password=False)
    isolated(asyncio.run, admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def mariadb_target() -> Iterator[str]:
    """MariaDB's test database, reached as a user created here with the canary password."""
    admin_url = make_url(MARIADB_URL)

    async def admin(*statements: str) -> None:
        conn = await aiomysql.connect(
            host=admin_url.host or "127.0.0.1",
            port=admin_url.port or 3306,
            user=admin_url.username or "root",
            password=admin_url.password or "",
            db=admin_url.database,
            connect_timeout=5,
        )
        try:
            async with conn.cursor() as cursor:
                for statement in statements:
                    await cursor.execute(statement)
            await conn.commit()
        finally:
            conn.close()

    try:
        isolated(
            asyncio.run,
            admin(
                f"DROP USER IF EXISTS '{CANARY_USER}'@'%'",
                f"CREATE USER '{CANARY_USER}'@'%' IDENTIFIED BY '{CANARY_PASSWORD}'",
                f"GRANT ALL PRIVILEGES ON `{admin_url.database}`.* TO '{CANARY_USER}'@'%'",
            ),
        )
    except (OSError, aiomysql.Error) as exc:
        message = f"MariaDB not reachable at PRIVACY_TEST_MARIADB_URL ({type(exc).__name__})"
        if IN_CI:
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    yield admin_url.set(username=CANARY_USER, password=CANARY_PASSWORD).render_as_string(hide_password=False)
    isolated(asyncio.run, admin(f"DROP USER IF EXISTS '{CANARY_USER}'@'%'"))

"""``privacy-service connections add|test|list|remove`` as a real subprocess on a fresh SQLite database,
against target tables on SQLite and MariaDB. The URL's password reaches the command through an
environment variable or stdin, and never comes back on stdout or stderr."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from privacy_service.config import Settings
from tests.api.connections_support import (
    CANARY_PASSWORD,
    CANARY_USER,
    make_tables,
    mariadb_target,
    policy_dir,
    sqlite_target,
)
from tests.conftest import isolated
from tests.integration.test_cli import _env, cli, ok, one_line_error

__all__ = ["mariadb_target"]  # a fixture used by name below


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    result = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/privacy.db",
        keyring_path=tmp_path / "keyring.json",
        policy_dir=policy_dir(tmp_path),
    )
    ok(cli(result, "db", "upgrade"))
    return result


def run(
    settings: Settings, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv: this interpreter running this package
        [sys.executable, "-m", "privacy_service", "connections", *args],
        env=_env(settings) | {"PRIVACY_CONNECTIONS_TEST_TIMEOUT_SECONDS": "2"} | (env or {}),
        cwd=settings.keyring_path.parent,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def no_secret(*results: subprocess.CompletedProcess[str]) -> None:
    for result in results:
        assert CANARY_PASSWORD not in result.stdout + result.stderr, result


def test_add_test_list_remove_on_sqlite(settings: Settings, tmp_path: Path) -> None:
    path = sqlite_target(tmp_path)
    added = ok(run(settings, "add", "--name", "shop", "--dataset", "c2_shop", "--url-env", "SHOP_URL",
                   env={"SHOP_URL": f"sqlite:///{path}"}))  # fmt: skip
    uuid.UUID(added.stdout.strip())  # the id, alone on stdout
    assert "connections test --name shop" in added.stderr
    tested = ok(run(settings, "test", "--name", "shop"))
    assert "ok: 2 collections checked" in tested.stderr
    listed = ok(run(settings, "list"))
    assert "shop" in listed.stdout
    assert str(path) in listed.stdout
    assert " ok" in listed.stdout

    isolated(asyncio.run, make_tables(f"sqlite+aiosqlite:///{path}", with_total=False))
    failed = run(settings, "test", "--name", "shop")
    assert failed.returncode == 1
    assert "lacks collections or fields" in failed.stderr
    assert "missing: c2_orders.total" in failed.stderr
    assert "Traceback" not in failed.stderr

    one_line_error(run(settings, "add", "--name", "shop", "--dataset", "c2_shop", "--url-env", "SHOP_URL",
                       env={"SHOP_URL": f"sqlite:///{path}"}), "already registered")  # fmt: skip
    ok(run(settings, "remove", "--name", "shop"))
    assert "shop" not in ok(run(settings, "list")).stdout
    assert "removed" in ok(run(settings, "list", "--all")).stdout
    one_line_error(run(settings, "remove", "--name", "shop"), "no registered connection")
    one_line_error(run(settings, "test", "--name", "shop"), "no registered connection")


def test_refusals_are_one_line_and_never_echo_the_url(settings: Settings, tmp_path: Path) -> None:
    secret_url = f"oracle://scott:{CANARY_PASSWORD}@db.example/orcl"
    results = [
        run(settings, "add", "--name", "x", "--dataset", "c2_shop", "--url-env", "X", env={"X": secret_url}),
        run(settings, "add", "--name", "x", "--dataset", "c2_shop", stdin=secret_url + "\n"),
        run(settings, "add", "--name", "x", "--dataset", "nope", "--url-env", "X", env={"X": f"sqlite:///{tmp_path}/a.db"}),
        run(settings, "add", "--name", "x", "--dataset", "c2_shop", "--url-env", "X", env={"X": str(tmp_path)}),
        run(settings, "add", "--name", "x", "--dataset", "c2_shop", "--url-env", "UNSET_VARIABLE"),
        run(settings, "add", "--name", "x", "--dataset", "c2_shop", "--url-env", "X", env={"X": f"sqlite:///{tmp_path}"}),
    ]  # fmt: skip
    expected = ["unsupported database", "unsupported database", "no dataset", "must be a database URL",
                "UNSET_VARIABLE is not set", "directory"]  # fmt: skip
    for result, says in zip(results, expected, strict=True):
        one_line_error(result, says)
    no_secret(*results)
    assert "shop" not in ok(run(settings, "list")).stdout


def test_add_from_a_hidden_prompt_and_a_plain_url_warns(settings: Settings, tmp_path: Path) -> None:
    path = sqlite_target(tmp_path)
    prompted = ok(run(settings, "add", "--name", "piped", "--dataset", "c2_shop", stdin=f"sqlite:///{path}\n"))
    assert f"sqlite:///{path}" not in prompted.stdout + prompted.stderr  # not echoed
    plain = ok(run(settings, "add", "--name", "plain", "--dataset", "c2_shop", "--url", f"sqlite:///{path}"))
    assert "prefer --url-env" in plain.stderr


def test_mariadb_with_a_password(settings: Settings, mariadb_target: str) -> None:
    isolated(asyncio.run, make_tables(mariadb_target))
    try:
        ok(run(settings, "add", "--name", "maria", "--dataset", "c2_shop", "--url-env", "DB",
               env={"DB": mariadb_target.replace("mysql+aiomysql://", "mariadb://", 1)}))  # fmt: skip
        wrong = mariadb_target.replace(CANARY_PASSWORD, "Wrong-Pw-0000")
        ok(run(settings, "add", "--name", "wrong", "--dataset", "c2_shop", "--url-env", "DB", env={"DB": wrong}))
        tested = ok(run(settings, "test", "--name", "maria"))
        refused = run(settings, "test", "--name", "wrong")
        assert refused.returncode == 1
        assert "authentication failed" in refused.stderr
        listed = ok(run(settings, "list"))
        assert "127.0.0.1:3306" in listed.stdout
        assert CANARY_USER not in listed.stdout
        no_secret(tested, refused, listed)
        assert "Wrong-Pw-0000" not in refused.stderr + listed.stdout
    finally:
        from tests.api.test_connections_api import _drop

        isolated(asyncio.run, _drop(mariadb_target))

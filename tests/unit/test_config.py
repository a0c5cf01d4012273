"""Settings errors are one line naming the PRIVACY_ variable; the CLI prints that line and exits 2."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from privacy_service.cli import app
from privacy_service.config import ConfigError, KeyProviderKind, load_settings

KEY_32 = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PRIVACY_ variable from the caller's shell, and no .env file, leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("PRIVACY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_load(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite+aiosqlite:///./var/privacy.db"
    assert settings.keyring_path == Path("./var/keyring.json")
    assert settings.key_provider is KeyProviderKind.LOCAL
    monkeypatch.setenv("PRIVACY_DATABASE_URL", "postgresql+asyncpg://app@db.internal:5432/privacy")
    monkeypatch.setenv("PRIVACY_PORT", "9000")
    settings = load_settings()
    assert not settings.is_sqlite
    assert settings.port == 9000


@pytest.mark.parametrize("url", ["mysql://root@localhost/privacy", "sqlite:///plain-driver.db", "postgres://x/y", ""])
def test_bad_database_url(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    message = _error(monkeypatch, PRIVACY_DATABASE_URL=url)
    assert message.startswith("invalid setting PRIVACY_DATABASE_URL:")
    assert "sqlite+aiosqlite://" in message  # says what would be accepted


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PRIVACY_PORT", "0"),
        ("PRIVACY_PORT", "65536"),
        ("PRIVACY_PORT", "eighty"),
        ("PRIVACY_SMTP_PORT", "-25"),
        ("PRIVACY_DB_POOL_SIZE", "0"),
    ],
)
def test_bad_number(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    assert _error(monkeypatch, **{name: value}).startswith(f"invalid setting {name}:")


def test_bad_setting_in_dotenv_file_is_named_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PRIVACY_PORT=99999\n")
    assert _error(monkeypatch).startswith("invalid setting PRIVACY_PORT:")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("not*base64*secret-4417", "base64"),
        (base64.b64encode(b"secret-4417-too-short").decode(), "32 bytes"),
    ],
)
def test_bad_blind_index_key(monkeypatch: pytest.MonkeyPatch, value: str, reason: str) -> None:
    message = _error(monkeypatch, PRIVACY_BLIND_INDEX_KEY_SOURCE="env", PRIVACY_BLIND_INDEX_KEY=value)
    assert message.startswith("invalid setting PRIVACY_BLIND_INDEX_KEY:")
    assert reason in message
    assert value not in message
    assert "4417" not in message


def test_blind_index_key_required_when_taken_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, PRIVACY_BLIND_INDEX_KEY_SOURCE="env")
    assert message.startswith("invalid setting PRIVACY_BLIND_INDEX_KEY:")


def test_vault_provider_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(
        monkeypatch,
        PRIVACY_KEY_PROVIDER="vault",
        PRIVACY_BLIND_INDEX_KEY_SOURCE="env",
        PRIVACY_BLIND_INDEX_KEY=KEY_32,
        PRIVACY_AUDIT_KEY=KEY_32,
    )
    assert message.startswith("invalid setting PRIVACY_VAULT_TOKEN:")


def test_vault_provider_needs_keys_that_the_local_keyring_would_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVACY_KEY_PROVIDER", "vault")
    monkeypatch.setenv("PRIVACY_VAULT_TOKEN", "hvs.secret-token-4417")
    assert _error(monkeypatch).startswith("invalid setting PRIVACY_AUDIT_KEY:")
    monkeypatch.setenv("PRIVACY_AUDIT_KEY", KEY_32)
    assert _error(monkeypatch).startswith("invalid setting PRIVACY_BLIND_INDEX_KEY_SOURCE:")
    monkeypatch.setenv("PRIVACY_BLIND_INDEX_KEY_SOURCE", "env")
    monkeypatch.setenv("PRIVACY_BLIND_INDEX_KEY", KEY_32)
    settings = load_settings()
    assert settings.key_provider is KeyProviderKind.VAULT
    assert "secret-token-4417" not in repr(settings)


def test_unknown_provider_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _error(monkeypatch, PRIVACY_KEY_PROVIDER="kms").startswith("invalid setting PRIVACY_KEY_PROVIDER:")


# -- the CLI turns these into one line and exit code 2 ---------------------------------------


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def _assert_one_line_error(stderr: str, *expected: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in stderr


def test_cli_with_bad_database_url_prints_one_line_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVACY_DATABASE_URL", "mysql://root:hunter2@localhost/privacy")
    code, stdout, stderr = _invoke("keys", "status")
    assert code == 2
    assert stdout == ""
    _assert_one_line_error(stderr, "PRIVACY_DATABASE_URL")
    assert "hunter2" not in stderr


def test_cli_with_unsafe_keyring_file_prints_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keyring = tmp_path / "keyring.json"
    keyring.write_text(json.dumps({"format": 1}))
    keyring.chmod(0o644)
    monkeypatch.setenv("PRIVACY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/privacy.db")
    monkeypatch.setenv("PRIVACY_KEYRING_PATH", str(keyring))
    code, stdout, stderr = _invoke("keys", "status")
    assert code == 2
    assert stdout == ""
    _assert_one_line_error(stderr, "chmod 600")

    keyring.chmod(0o600)
    code, _, stderr = _invoke("keys", "status")
    assert code == 2
    _assert_one_line_error(stderr, "malformed")

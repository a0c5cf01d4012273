"""constant_time_equals: the secret comparison every credential check goes through."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest

from privacy_service import security
from privacy_service.security import constant_time_equals

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (b"", b"", True),
        (b"psk_secret", b"psk_secret", True),
        (bytes(range(256)), bytes(range(256)), True),
        (b"psk_secret", b"psk_secreT", False),  # last byte differs
        (b"Psk_secret", b"psk_secret", False),  # first byte differs
        (b"psk_secret", b"psk_secre", False),  # a prefix is not equal
        (b"psk_secret", b"psk_secret\x00", False),  # nor is a padded value
        (b"", b"x", False),
    ],
)
def test_equal_unequal_and_different_lengths(a: bytes, b: bytes, expected: bool) -> None:
    assert constant_time_equals(a, b) is expected
    assert constant_time_equals(b, a) is expected


def test_it_is_hmac_compare_digest_underneath(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return True  # a value == would never give for these inputs

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    assert constant_time_equals(b"one", b"two") is True
    assert calls == [(b"one", b"two")]
    assert security.hmac is hmac


def test_no_secret_is_compared_any_other_way() -> None:
    """Code review in a test: compare_digest appears only in security.py."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "privacy_service").rglob("*.py")
        if path.name != "security.py" and "compare_digest" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
    users = {
        str(path.relative_to(ROOT / "privacy_service"))
        for path in (ROOT / "privacy_service").rglob("*.py")
        if "constant_time_equals(" in path.read_text(encoding="utf-8") and path.name != "security.py"
    }
    assert {"operators/service.py", "dsr/verification.py", "audit/service.py", "crypto/keys.py"} <= users

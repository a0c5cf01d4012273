"""Webhook/callback signatures: the documented algorithm, the replay window, and the example receiver
agreeing with the service byte for byte."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import sys
from datetime import UTC, datetime, timedelta
from types import ModuleType

import pytest

from privacy_service.systems.signing import (
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    sign,
    verify,
)
from tests.conftest import ROOT

KEY = b"pss_unit-test-key"
BODY = b'{"subject_request_id":"r-1","subject_request_type":"access"}'
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    headers = sign(KEY, "sk_1", BODY, NOW)
    timestamp = str(int(NOW.timestamp()))
    assert headers[TIMESTAMP_HEADER] == timestamp
    assert headers[KEY_ID_HEADER] == "sk_1"
    expected = hmac.new(KEY, timestamp.encode() + b"." + BODY, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"v1={expected}"


def test_verify_accepts_within_the_window_and_returns_the_mac() -> None:
    headers = sign(KEY, "sk_1", BODY, NOW)
    signature = verify(
        KEY,
        BODY,
        timestamp=headers[TIMESTAMP_HEADER],
        signature=headers[SIGNATURE_HEADER],
        now=NOW + timedelta(seconds=299),
        window_seconds=300,
    )
    assert signature.hex() == headers[SIGNATURE_HEADER].removeprefix("v1=")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"timestamp": None}, "unsigned"),
        ({"signature": ""}, "unsigned"),
        ({"timestamp": "yesterday"}, "malformed"),
        ({"now": NOW + timedelta(seconds=301)}, "stale"),
        ({"now": NOW - timedelta(seconds=301)}, "stale"),
        ({"body": BODY + b" "}, "bad_signature"),
        ({"key": b"pss_other"}, "bad_signature"),
        ({"signature": "v0=00"}, "bad_signature"),
        ({"signature": "v1=not-hex"}, "bad_signature"),
    ],
)
def test_verify_refuses(change: dict[str, object], reason: str) -> None:
    headers = sign(KEY, "sk_1", BODY, NOW)
    arguments: dict[str, object] = {
        "key": KEY,
        "body": BODY,
        "timestamp": headers[TIMESTAMP_HEADER],
        "signature": headers[SIGNATURE_HEADER],
        "now": NOW,
    } | change
    with pytest.raises(SignatureError) as refused:
        verify(
            arguments["key"],  # type: ignore[arg-type]
            arguments["body"],  # type: ignore[arg-type]
            timestamp=arguments["timestamp"],  # type: ignore[arg-type]
            signature=arguments["signature"],  # type: ignore[arg-type]
            now=arguments["now"],  # type: ignore[arg-type]
            window_seconds=300,
        )
    assert refused.value.reason == reason


def test_any_of_several_signatures_may_match() -> None:
    headers = sign(KEY, "sk_1", BODY, NOW)
    several = f"v1={'00' * 32}, {headers[SIGNATURE_HEADER]}"
    verify(KEY, BODY, timestamp=headers[TIMESTAMP_HEADER], signature=several, now=NOW, window_seconds=60)


def _example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("PRIVACY_SIGNING_KEY", KEY.decode())
    monkeypatch.delenv("RECEIVER_DATA", raising=False)
    spec = importlib.util.spec_from_file_location("example_receiver", ROOT / "examples" / "receiver.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "example_receiver", module)
    spec.loader.exec_module(module)
    return module


def test_the_example_receiver_signs_exactly_like_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    example = _example(monkeypatch)
    headers = sign(KEY, "sk_1", BODY, NOW)
    assert example.sign(headers[TIMESTAMP_HEADER], BODY) == headers[SIGNATURE_HEADER]

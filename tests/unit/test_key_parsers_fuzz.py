"""Hypothesis against the wrapped-DEK parsers (the other half of decryption; fields are fuzzed in
test_fields.py): whatever bytes a key-store row holds, unwrapping fails only with a KeyError_."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy_service.crypto.keys import KeyError_, LocalKeyring, UnwrapFailed, VaultTransitProvider, WrappedKey
from privacy_service.crypto.service import PRIMARY, wrap_context
from tests.fakes.vault import FakeTransit

CONTEXT = wrap_context(uuid.UUID("00000000-0000-4000-8000-00000000000a"), uuid.uuid4(), PRIMARY)
DEK = bytes(range(32))


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> LocalKeyring:
    return LocalKeyring.open_or_create(tmp_path_factory.mktemp("keys") / "keyring.json")


@pytest.fixture(scope="module")
def wrapped(keyring: LocalKeyring) -> WrappedKey:
    return keyring.wrap_sync(DEK, CONTEXT)


@settings(max_examples=200, deadline=None)
@given(version=st.integers(-(2**31), 2**32 - 1), blob=st.binary(max_size=120))
def test_local_unwrap_of_arbitrary_rows_raises_only_key_errors(
    keyring: LocalKeyring, version: int, blob: bytes
) -> None:
    with pytest.raises(KeyError_):
        keyring.unwrap_sync(WrappedKey(version, blob), CONTEXT)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_local_unwrap_of_a_damaged_real_row_fails_authentication(
    keyring: LocalKeyring, wrapped: WrappedKey, data: st.DataObject
) -> None:
    blob = bytearray(wrapped.blob)
    index = data.draw(st.integers(0, len(blob) - 1), label="index")
    blob[index] ^= data.draw(st.integers(1, 255), label="xor")
    cut = data.draw(st.integers(0, 3), label="truncate")
    with pytest.raises(UnwrapFailed):
        keyring.unwrap_sync(WrappedKey(wrapped.kek_version, bytes(blob[: len(blob) - cut])), CONTEXT)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40) | st.from_regex(r"vault:v[^:]{0,4}:[A-Za-z0-9+/=]{0,12}", fullmatch=True))
def test_vault_ciphertext_version_parses_or_raises_unwrap_failed(text: str) -> None:
    try:
        version = VaultTransitProvider._version_of(text)
    except UnwrapFailed:
        return
    assert version >= 1
    assert text.startswith(f"vault:v{version}:")


@settings(max_examples=100, deadline=None)
@given(
    blob=st.binary(max_size=80)
    | st.from_regex(r"vault:v[0-9]{1,3}:[A-Za-z0-9+/=]{0,40}", fullmatch=True).map(str.encode)
)
async def test_vault_unwrap_of_arbitrary_rows_raises_only_unwrap_failed(blob: bytes) -> None:
    provider = VaultTransitProvider(FakeTransit(), "privacy")
    await provider.wrap(DEK, CONTEXT)  # creates the Transit key
    with pytest.raises(UnwrapFailed):
        await provider.unwrap(WrappedKey(1, blob), CONTEXT)


def test_the_real_row_opens(keyring: LocalKeyring, wrapped: WrappedKey) -> None:
    assert keyring.unwrap_sync(wrapped, CONTEXT) == DEK

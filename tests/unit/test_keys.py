"""KEK providers: the local keyring file and Vault Transit (against the in-memory FakeTransit)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import uuid
from pathlib import Path

import pytest
from hvac import exceptions as hvac_exceptions

from privacy_service.crypto.keys import (
    KeyringError,
    LocalKeyring,
    UnknownKekVersion,
    UnwrapFailed,
    VaultTransitProvider,
    WrappedKey,
)
from privacy_service.crypto.service import PRIMARY, wrap_context
from tests.fakes.vault import FakeTransit

SUBJECT_A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
SUBJECT_B = uuid.UUID("00000000-0000-4000-8000-00000000000b")
KEY_ID = uuid.UUID("00000000-0000-4000-8000-0000000000d1")
CONTEXT_A = wrap_context(SUBJECT_A, KEY_ID, PRIMARY)
CONTEXT_B = wrap_context(SUBJECT_B, KEY_ID, PRIMARY)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    return tmp_path / "secrets" / "keyring.json"


@pytest.fixture
def keyring(keyring_path: Path) -> LocalKeyring:
    return LocalKeyring.open_or_create(keyring_path)


# -- LocalKeyring: the file ----------------------------------------------------------------


def test_keyring_file_is_created_owner_only(keyring: LocalKeyring, keyring_path: Path) -> None:
    assert _mode(keyring_path) == 0o600
    document = json.loads(keyring_path.read_text())
    assert document["current"] == 1
    assert len(base64.b64decode(document["keks"]["1"]["key"])) == 32
    assert len(keyring.blind_index_key) == 32


def test_open_or_create_reuses_an_existing_keyring(keyring: LocalKeyring, keyring_path: Path) -> None:
    again = LocalKeyring.open_or_create(keyring_path)
    assert again.blind_index_key == keyring.blind_index_key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602, 0o610])
def test_keyring_readable_by_group_or_others_is_refused(keyring: LocalKeyring, keyring_path: Path, mode: int) -> None:
    os.chmod(keyring_path, mode)
    with pytest.raises(KeyringError, match="chmod 600") as caught:
        LocalKeyring(keyring_path)
    assert "\n" not in str(caught.value)
    with pytest.raises(KeyringError):
        LocalKeyring.open_or_create(keyring_path)


def test_missing_keyring_is_a_keyring_error(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="does not exist"):
        LocalKeyring(tmp_path / "absent.json")


_GOOD_KEY = base64.b64encode(bytes(range(32))).decode()
_VALID = {
    "format": 1,
    "current": 1,
    "keks": {"1": {"key": _GOOD_KEY, "created_at": "2026-01-01T00:00:00+00:00"}},
    "blind_index_key": _GOOD_KEY,
}


def _variant(**changes: object) -> bytes:
    document = json.loads(json.dumps(_VALID))
    document.update(changes)
    return json.dumps(document).encode()


MALFORMED = {
    "not json": b"{ this is not json",
    "not utf-8": b"\xff\xfe\x00garbage",
    "empty": b"",
    "a list": b"[]",
    "null": b"null",
    "no keks": json.dumps({k: v for k, v in _VALID.items() if k != "keks"}).encode(),
    "no blind index key": json.dumps({k: v for k, v in _VALID.items() if k != "blind_index_key"}).encode(),
    "kek entry is a string": _variant(keks={"1": _GOOD_KEY}),
    "kek key not base64": _variant(keks={"1": {"key": "%%%not-base64%%%"}}),
    "kek key too short": _variant(keks={"1": {"key": base64.b64encode(b"short").decode()}}),
    "version not a number": _variant(keks={"one": {"key": _GOOD_KEY}}),
    "bad created_at": _variant(keks={"1": {"key": _GOOD_KEY, "created_at": "yesterday"}}),
    "current not a number": _variant(current="latest"),
    "current missing from keks": _variant(current=7),
    "blind index key not base64": _variant(blind_index_key="***"),
}


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_keyring_is_a_one_line_keyring_error(keyring_path: Path, content: bytes) -> None:
    keyring_path.parent.mkdir(parents=True)
    keyring_path.write_bytes(content)
    os.chmod(keyring_path, 0o600)
    with pytest.raises(KeyringError) as caught:
        LocalKeyring(keyring_path)
    message = str(caught.value)
    assert str(keyring_path) in message
    assert "\n" not in message
    assert _GOOD_KEY not in message


def test_valid_variant_of_the_malformed_cases_loads(keyring_path: Path) -> None:
    """The malformed cases above differ from this document only in the part they break."""
    keyring_path.parent.mkdir(parents=True)
    keyring_path.write_bytes(_variant())
    os.chmod(keyring_path, 0o600)
    assert LocalKeyring(keyring_path).blind_index_key == bytes(range(32))


# -- LocalKeyring: wrapping ----------------------------------------------------------------


async def test_wrap_unwrap_round_trip(keyring: LocalKeyring) -> None:
    dek = secrets.token_bytes(32)
    wrapped = await keyring.wrap(dek, CONTEXT_A)
    assert wrapped.kek_version == 1
    assert dek not in wrapped.blob
    assert await keyring.unwrap(wrapped, CONTEXT_A) == dek
    again = await keyring.wrap(dek, CONTEXT_A)
    assert again.blob != wrapped.blob  # fresh nonce every time


async def test_unwrap_with_another_context_fails(keyring: LocalKeyring) -> None:
    wrapped = await keyring.wrap(secrets.token_bytes(32), CONTEXT_A)
    with pytest.raises(UnwrapFailed):
        await keyring.unwrap(wrapped, CONTEXT_B)
    with pytest.raises(UnwrapFailed):
        await keyring.unwrap(wrapped, wrap_context(SUBJECT_A, KEY_ID, "records"))


async def test_every_flipped_bit_position_fails_to_unwrap(keyring: LocalKeyring) -> None:
    wrapped = await keyring.wrap(secrets.token_bytes(32), CONTEXT_A)
    for index in range(len(wrapped.blob)):
        with pytest.raises(UnwrapFailed):
            await keyring.unwrap(WrappedKey(wrapped.kek_version, _flip(wrapped.blob, index)), CONTEXT_A)


async def test_truncated_or_mislabelled_wrapped_key_fails(keyring: LocalKeyring) -> None:
    wrapped = await keyring.wrap(secrets.token_bytes(32), CONTEXT_A)
    for size in (0, 4, 20, len(wrapped.blob) - 1):
        with pytest.raises(UnwrapFailed):
            await keyring.unwrap(WrappedKey(1, wrapped.blob[:size]), CONTEXT_A)
    with pytest.raises(UnwrapFailed):
        await keyring.unwrap(WrappedKey(2, wrapped.blob), CONTEXT_A)


async def test_another_keyring_cannot_unwrap(keyring: LocalKeyring, tmp_path: Path) -> None:
    wrapped = await keyring.wrap(secrets.token_bytes(32), CONTEXT_A)
    other = LocalKeyring.open_or_create(tmp_path / "other.json")
    with pytest.raises(UnwrapFailed):
        await other.unwrap(wrapped, CONTEXT_A)


async def test_rotate_adds_a_current_version_and_old_keys_still_unwrap(
    keyring: LocalKeyring, keyring_path: Path
) -> None:
    dek = secrets.token_bytes(32)
    old = await keyring.wrap(dek, CONTEXT_A)
    index_key = keyring.blind_index_key

    assert await keyring.rotate() == 2
    assert await keyring.current_version() == 2
    versions = await keyring.versions()
    assert [(v.version, v.current) for v in versions] == [(1, False), (2, True)]
    assert all(v.created_at is not None and v.created_at.tzinfo is not None for v in versions)
    assert _mode(keyring_path) == 0o600
    assert keyring.blind_index_key == index_key  # the index key is never rotated with the KEKs

    fresh = await keyring.wrap(dek, CONTEXT_A)
    assert fresh.kek_version == 2
    assert await keyring.unwrap(old, CONTEXT_A) == dek
    assert await keyring.unwrap(fresh, CONTEXT_A) == dek

    rewrapped = await keyring.rewrap(old, CONTEXT_A)
    assert rewrapped.kek_version == 2
    assert await keyring.unwrap(rewrapped, CONTEXT_A) == dek
    with pytest.raises(UnwrapFailed):
        await keyring.rewrap(old, CONTEXT_B)


async def test_second_instance_picks_up_a_rotation(keyring: LocalKeyring, keyring_path: Path) -> None:
    reader = LocalKeyring(keyring_path)
    watcher = LocalKeyring(keyring_path)
    dek = secrets.token_bytes(32)
    assert await keyring.rotate() == 2
    under_new = await keyring.wrap(dek, CONTEXT_A)
    assert under_new.kek_version == 2

    # A version it has never seen forces the reader to re-read the file at once.
    assert await reader.unwrap(under_new, CONTEXT_A) == dek
    assert (await reader.wrap(dek, CONTEXT_A)).kek_version == 2
    # Status queries re-read the file too.
    assert await watcher.current_version() == 2
    assert reader.blind_index_key == keyring.blind_index_key


async def test_retire(keyring: LocalKeyring) -> None:
    with pytest.raises(KeyringError, match="current"):
        await keyring.retire(1)
    old = await keyring.wrap(secrets.token_bytes(32), CONTEXT_A)
    await keyring.rotate()
    with pytest.raises(KeyringError, match="current"):
        await keyring.retire(2)
    await keyring.retire(1)
    assert [v.version for v in await keyring.versions()] == [2]
    with pytest.raises(UnknownKekVersion):
        await keyring.unwrap(old, CONTEXT_A)
    # A fresh instance agrees: the KEK is gone from the file, not just from memory.
    with pytest.raises(UnknownKekVersion):
        await LocalKeyring(keyring.path).unwrap(old, CONTEXT_A)


# -- Vault Transit (FakeTransit) -----------------------------------------------------------

KEY_NAME = "privacy-service"
MOUNT = "kms"


@pytest.fixture
def transit() -> FakeTransit:
    return FakeTransit()


@pytest.fixture
def vault(transit: FakeTransit) -> VaultTransitProvider:
    return VaultTransitProvider(transit, KEY_NAME, mount_point=MOUNT)


async def test_vault_wrap_unwrap_round_trip(vault: VaultTransitProvider, transit: FakeTransit) -> None:
    dek = secrets.token_bytes(32)
    wrapped = await vault.wrap(dek, CONTEXT_A)
    assert wrapped.kek_version == 1
    assert wrapped.blob.startswith(b"vault:v1:")
    assert dek not in wrapped.blob
    assert base64.b64encode(dek) not in wrapped.blob
    assert await vault.unwrap(wrapped, CONTEXT_A) == dek
    # The provider talks to the mount it was given.
    assert transit.read_key(KEY_NAME, mount_point=MOUNT)["data"]["latest_version"] == 1
    with pytest.raises(hvac_exceptions.InvalidPath):
        transit.read_key(KEY_NAME)


async def test_vault_key_bound_to_subject_a_does_not_unwrap_for_subject_b(vault: VaultTransitProvider) -> None:
    wrapped = await vault.wrap(secrets.token_bytes(32), CONTEXT_A)
    with pytest.raises(UnwrapFailed):
        await vault.unwrap(wrapped, CONTEXT_B)
    with pytest.raises(UnwrapFailed):
        await vault.unwrap(wrapped, b"")


async def test_vault_tampered_wrapped_key_fails_with_unwrap_failed(vault: VaultTransitProvider) -> None:
    wrapped = await vault.wrap(secrets.token_bytes(32), CONTEXT_A)
    prefix = len(b"vault:v1:")
    body = base64.b64decode(wrapped.blob[prefix:])
    for index in (0, 11, 12, len(body) // 2, len(body) - 1):
        tampered = wrapped.blob[:prefix] + base64.b64encode(_flip(body, index))
        with pytest.raises(UnwrapFailed):
            await vault.unwrap(WrappedKey(1, tampered), CONTEXT_A)
    for broken in (wrapped.blob[:-4], b"vault:v1:%%%", b"\xff\xfe", b"vault:v9:" + wrapped.blob[prefix:]):
        with pytest.raises(UnwrapFailed):
            await vault.unwrap(WrappedKey(1, broken), CONTEXT_A)


async def test_vault_key_from_another_vault_does_not_unwrap(vault: VaultTransitProvider) -> None:
    wrapped = await vault.wrap(secrets.token_bytes(32), CONTEXT_A)
    elsewhere = VaultTransitProvider(FakeTransit(), KEY_NAME, mount_point=MOUNT)
    await elsewhere.wrap(secrets.token_bytes(32), CONTEXT_A)  # creates its own, different key
    with pytest.raises(UnwrapFailed):
        await elsewhere.unwrap(wrapped, CONTEXT_A)


async def test_vault_rotate_rewrap_and_versions(vault: VaultTransitProvider) -> None:
    dek = secrets.token_bytes(32)
    old = await vault.wrap(dek, CONTEXT_A)
    assert await vault.current_version() == 1

    assert await vault.rotate() == 2
    assert await vault.current_version() == 2
    versions = await vault.versions()
    assert [(v.version, v.current) for v in versions] == [(1, False), (2, True)]
    assert all(v.created_at is not None and v.created_at.tzinfo is not None for v in versions)

    assert (await vault.wrap(dek, CONTEXT_A)).kek_version == 2
    assert await vault.unwrap(old, CONTEXT_A) == dek
    rewrapped = await vault.rewrap(old, CONTEXT_A)
    assert rewrapped.kek_version == 2
    assert rewrapped.blob.startswith(b"vault:v2:")
    assert await vault.unwrap(rewrapped, CONTEXT_A) == dek
    with pytest.raises(UnwrapFailed):  # re-wrapping inside Vault keeps the subject binding
        await vault.unwrap(rewrapped, CONTEXT_B)


async def test_vault_retire_makes_old_versions_undecryptable(vault: VaultTransitProvider) -> None:
    dek = secrets.token_bytes(32)
    v1 = await vault.wrap(dek, CONTEXT_A)
    await vault.rotate()
    v2 = await vault.wrap(dek, CONTEXT_A)
    await vault.rotate()

    await vault.retire(1)
    assert [v.version for v in await vault.versions()] == [2, 3]
    with pytest.raises(UnwrapFailed):
        await vault.unwrap(v1, CONTEXT_A)
    with pytest.raises(UnwrapFailed):
        await vault.rewrap(v1, CONTEXT_A)
    assert await vault.unwrap(v2, CONTEXT_A) == dek


async def test_vault_retiring_an_already_retired_version_does_not_revive_newer_ones(
    vault: VaultTransitProvider,
) -> None:
    dek = secrets.token_bytes(32)
    await vault.wrap(dek, CONTEXT_A)
    await vault.rotate()
    v2 = await vault.wrap(dek, CONTEXT_A)
    await vault.rotate()
    await vault.retire(2)
    await vault.retire(1)  # idempotent clean-up of an older version must not lower the floor
    assert [v.version for v in await vault.versions()] == [3]
    with pytest.raises(UnwrapFailed):
        await vault.unwrap(v2, CONTEXT_A)


async def test_vault_refuses_to_retire_the_current_version(vault: VaultTransitProvider) -> None:
    await vault.wrap(secrets.token_bytes(32), CONTEXT_A)
    await vault.rotate()
    with pytest.raises(hvac_exceptions.InvalidRequest, match="cannot set min decryption version"):
        await vault.retire(2)  # Vault itself refuses; the CLI checks before it gets this far
    assert [v.version for v in await vault.versions()] == [1, 2]

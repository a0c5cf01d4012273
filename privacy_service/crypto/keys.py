"""Key-encryption keys (KEKs) behind one small protocol.

A KEK never leaves its provider in a usable form for anything but wrapping and unwrapping
per-subject data keys (DEKs). Two implementations:

* :class:`LocalKeyring`: a JSON file (0600) holding versioned AES-256 KEKs and, separately,
  the blind-index key. Created on first run; re-read when another process rotates it.
* :class:`VaultTransitProvider`: HashiCorp Vault's Transit engine wraps and unwraps DEKs;
  the KEK never enters this process and re-wrapping happens inside Vault.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import re
import secrets
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy_service.security import constant_time_equals

WRAP_FORMAT = 1
_WRAP_HEADER = struct.Struct(">BI")  # format version, KEK version
_WRAP_AAD_PREFIX = b"privacy-service/dek-wrap/v1|"
_VAULT_CIPHERTEXT = re.compile(r"vault:v([1-9][0-9]{0,9}):", re.ASCII)
KEY_BYTES = 32


class KeyError_(Exception):
    """Base for key-management failures (named to avoid shadowing the builtin)."""


class UnknownKekVersion(KeyError_):
    def __init__(self, version: int) -> None:
        super().__init__(f"KEK version {version} is not available")
        self.version = version


class UnwrapFailed(KeyError_):
    """The wrapped key was altered, bound to another subject, or the KEK is wrong."""


class KeyringError(KeyError_):
    """The keyring file is unusable (bad permissions, bad format)."""


@dataclass(frozen=True, slots=True)
class WrappedKey:
    kek_version: int
    blob: bytes


@dataclass(frozen=True, slots=True)
class KekInfo:
    version: int
    created_at: datetime | None
    current: bool


class KeyProvider(Protocol):
    """Wraps and unwraps data keys with a versioned key-encryption key."""

    name: str

    async def wrap(self, dek: bytes, context: bytes) -> WrappedKey: ...

    async def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes: ...

    async def rewrap(self, wrapped: WrappedKey, context: bytes) -> WrappedKey:
        """Re-encrypt under the current KEK version."""
        ...

    async def rotate(self) -> int:
        """Add a KEK version, make it current and return its number."""
        ...

    async def current_version(self) -> int: ...

    async def versions(self) -> list[KekInfo]: ...

    async def retire(self, version: int) -> None:
        """Destroy an old KEK version (callers first check that no DEK still uses it)."""
        ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


class LocalKeyring:
    """KEKs in a local JSON file, created 0600 on first use.

    The file also holds the blind-index key, which is separate from every KEK and is never
    rotated by ``keys rotate`` (rotating it would orphan every lookup index).
    """

    name = "local"
    _RELOAD_INTERVAL = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keks: dict[int, tuple[AESGCM, datetime | None]] = {}
        self._current = 0
        self._index_key = b""
        self._audit_key = b""
        self._mtime_ns = 0
        self._checked_at = 0.0
        self._load()

    @classmethod
    def open_or_create(cls, path: Path) -> LocalKeyring:
        if not path.exists():
            cls.create(path)
        return cls(path)

    @staticmethod
    def create(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        now = datetime.now(UTC).isoformat()
        document = {
            "format": 1,
            "current": 1,
            "keks": {"1": {"key": _b64(secrets.token_bytes(KEY_BYTES)), "created_at": now}},
            "blind_index_key": _b64(secrets.token_bytes(KEY_BYTES)),
            "audit_key": _b64(secrets.token_bytes(KEY_BYTES)),
        }
        # Write a private temp file, then link it into place: the keyring appears complete or not at
        # all, and a process racing us keeps whichever keyring was linked first.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(document, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @property
    def blind_index_key(self) -> bytes:
        return self._index_key

    @property
    def audit_key(self) -> bytes:
        """HMAC key for audit checkpoints; added to keyrings created before it existed."""
        if not self._audit_key:
            with self._locked_document() as document:
                document.setdefault("audit_key", _b64(secrets.token_bytes(KEY_BYTES)))
        return self._audit_key

    def _load(self) -> None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            raise KeyringError(f"keyring file {self.path} does not exist") from None
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyringError(f"keyring file {self.path} is readable by others; run: chmod 600 {self.path}")
        try:
            document = json.loads(self.path.read_text())
            keks: dict[int, tuple[AESGCM, datetime | None]] = {}
            for version, entry in document["keks"].items():
                created = entry.get("created_at")
                keks[int(version)] = (
                    AESGCM(_unb64(entry["key"])),
                    datetime.fromisoformat(created) if created else None,
                )
            current = int(document["current"])
            index_key = _unb64(document["blind_index_key"])
            audit_key = _unb64(document["audit_key"]) if "audit_key" in document else b""
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyringError(f"keyring file {self.path} is malformed ({type(exc).__name__})") from None
        if current not in keks:
            raise KeyringError(f"keyring file {self.path} names current KEK {current}, which it lacks")
        self._keks, self._current, self._index_key, self._audit_key = keks, current, index_key, audit_key
        self._mtime_ns = info.st_mtime_ns

    def _refresh(self, force: bool = False) -> None:
        """Pick up a rotation done by another process (CLI) without a restart."""
        now = time.monotonic()
        if not force and now - self._checked_at < self._RELOAD_INTERVAL:
            return
        self._checked_at = now
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_mtime_ns != self._mtime_ns:
                self._load()

    def _kek(self, version: int) -> AESGCM:
        entry = self._keks.get(version)
        if entry is None:
            self._refresh(force=True)
            entry = self._keks.get(version)
            if entry is None:
                raise UnknownKekVersion(version)
        return entry[0]

    def wrap_sync(self, dek: bytes, context: bytes) -> WrappedKey:
        self._refresh()
        version = self._current
        header = _WRAP_HEADER.pack(WRAP_FORMAT, version)
        nonce = secrets.token_bytes(12)
        sealed = self._kek(version).encrypt(nonce, dek, header + _WRAP_AAD_PREFIX + context)
        return WrappedKey(version, header + nonce + sealed)

    def unwrap_sync(self, wrapped: WrappedKey, context: bytes) -> bytes:
        blob = wrapped.blob
        if len(blob) < _WRAP_HEADER.size + 12 + 16:
            raise UnwrapFailed("wrapped key is truncated")
        fmt, version = _WRAP_HEADER.unpack_from(blob)
        if fmt != WRAP_FORMAT or version != wrapped.kek_version:
            raise UnwrapFailed("wrapped key header does not match")
        header = blob[: _WRAP_HEADER.size]
        nonce = blob[_WRAP_HEADER.size : _WRAP_HEADER.size + 12]
        try:
            return self._kek(version).decrypt(
                nonce, blob[_WRAP_HEADER.size + 12 :], header + _WRAP_AAD_PREFIX + context
            )
        except InvalidTag:
            raise UnwrapFailed("wrapped key failed authentication") from None

    async def wrap(self, dek: bytes, context: bytes) -> WrappedKey:
        return self.wrap_sync(dek, context)

    async def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        return self.unwrap_sync(wrapped, context)

    async def rewrap(self, wrapped: WrappedKey, context: bytes) -> WrappedKey:
        return self.wrap_sync(self.unwrap_sync(wrapped, context), context)

    async def current_version(self) -> int:
        self._refresh(force=True)
        return self._current

    async def versions(self) -> list[KekInfo]:
        self._refresh(force=True)
        return [KekInfo(v, created, v == self._current) for v, (_, created) in sorted(self._keks.items())]

    @contextlib.contextmanager
    def _locked_document(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write the file under an exclusive lock, replacing it atomically."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            document: dict[str, Any] = json.loads(self.path.read_text())
            yield document
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(tmp_fd, "w") as handle:
                json.dump(document, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._load()

    async def rotate(self) -> int:
        with self._locked_document() as document:
            version = max(int(v) for v in document["keks"]) + 1
            document["keks"][str(version)] = {
                "key": _b64(secrets.token_bytes(KEY_BYTES)),
                "created_at": datetime.now(UTC).isoformat(),
            }
            document["current"] = version
        return version

    async def retire(self, version: int) -> None:
        with self._locked_document() as document:
            if int(document["current"]) == version:
                raise KeyringError("the current KEK version cannot be retired")
            document["keks"].pop(str(version), None)


class TransitClient(Protocol):
    """The slice of ``hvac.Client().secrets.transit`` this provider uses."""

    def encrypt_data(self, name: str, plaintext: str, mount_point: str = ...) -> dict[str, Any]: ...

    def decrypt_data(self, name: str, ciphertext: str, mount_point: str = ...) -> dict[str, Any]: ...

    def rewrap_data(self, name: str, ciphertext: str, mount_point: str = ...) -> dict[str, Any]: ...

    def rotate_key(self, name: str, mount_point: str = ...) -> Any: ...

    def read_key(self, name: str, mount_point: str = ...) -> dict[str, Any]: ...

    def update_key_configuration(self, name: str, mount_point: str = ..., **kwargs: Any) -> Any: ...


class VaultTransitProvider:
    """DEKs wrapped by Vault Transit (``vault:vN:...`` ciphertexts).

    The subject binding (context) is prefixed to the DEK before encryption and checked after
    decryption, so a wrapped key copied to another subject's row fails to unwrap.
    """

    name = "vault"

    def __init__(self, transit: TransitClient, key_name: str, mount_point: str = "transit") -> None:
        self._transit = transit
        self._key = key_name
        self._mount = mount_point

    @classmethod
    def from_settings(cls, url: str, token: str, key_name: str, mount_point: str) -> VaultTransitProvider:
        import hvac

        client = hvac.Client(url=url, token=token)
        return cls(client.secrets.transit, key_name, mount_point)

    @staticmethod
    def _version_of(ciphertext: str) -> int:
        match = _VAULT_CIPHERTEXT.match(ciphertext)
        if match is None:
            raise UnwrapFailed("not a Vault Transit ciphertext")
        return int(match.group(1))

    async def wrap(self, dek: bytes, context: bytes) -> WrappedKey:
        payload = _b64(_binding(context) + dek)
        response = await asyncio.to_thread(
            self._transit.encrypt_data, name=self._key, plaintext=payload, mount_point=self._mount
        )
        ciphertext: str = response["data"]["ciphertext"]
        return WrappedKey(self._version_of(ciphertext), ciphertext.encode("ascii"))

    async def _open(self, call: Callable[..., dict[str, Any]], wrapped: WrappedKey) -> dict[str, Any]:
        """Run a Transit call that must decrypt ``wrapped``; Vault's refusals become :class:`UnwrapFailed`."""
        from hvac.exceptions import InvalidRequest

        try:
            ciphertext = wrapped.blob.decode("ascii")
        except UnicodeDecodeError:
            raise UnwrapFailed("not a Vault Transit ciphertext") from None
        try:
            return await asyncio.to_thread(call, name=self._key, ciphertext=ciphertext, mount_point=self._mount)
        except InvalidRequest as exc:
            # HTTP 400: tampered, foreign, malformed or retired (too old). Vault's reasons hold no key material.
            reason = "; ".join(exc.errors or ["no reason given"])
            raise UnwrapFailed(f"Vault refused the wrapped key: {reason}") from None

    async def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        response = await self._open(self._transit.decrypt_data, wrapped)
        plain = _unb64(response["data"]["plaintext"])
        binding = _binding(context)
        if not constant_time_equals(plain[: len(binding)], binding):
            raise UnwrapFailed("wrapped key is bound to another subject")
        return plain[len(binding) :]

    async def rewrap(self, wrapped: WrappedKey, context: bytes) -> WrappedKey:
        response = await self._open(self._transit.rewrap_data, wrapped)
        ciphertext: str = response["data"]["ciphertext"]
        return WrappedKey(self._version_of(ciphertext), ciphertext.encode("ascii"))

    async def _read(self) -> dict[str, Any]:
        response = await asyncio.to_thread(self._transit.read_key, name=self._key, mount_point=self._mount)
        data: dict[str, Any] = response["data"]
        return data

    async def rotate(self) -> int:
        await asyncio.to_thread(self._transit.rotate_key, name=self._key, mount_point=self._mount)
        return await self.current_version()

    async def current_version(self) -> int:
        return int((await self._read())["latest_version"])

    async def versions(self) -> list[KekInfo]:
        data = await self._read()
        latest = int(data["latest_version"])
        minimum = int(data.get("min_decryption_version", 1))
        result = []
        for version, created in sorted(data["keys"].items(), key=lambda item: int(item[0])):
            if int(version) < minimum:
                continue
            when = datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None
            result.append(KekInfo(int(version), when, int(version) == latest))
        return result

    async def retire(self, version: int) -> None:
        """Raise Vault's ``min_decryption_version`` past ``version``, which retires every older version too.

        Never lowers it: that would bring already retired versions back.
        """
        if version < int((await self._read()).get("min_decryption_version", 1)):
            return
        await asyncio.to_thread(
            self._transit.update_key_configuration,
            name=self._key,
            mount_point=self._mount,
            min_decryption_version=version + 1,
        )


def _binding(context: bytes) -> bytes:
    return struct.pack(">H", len(context)) + context

"""An in-memory Vault Transit engine with the call signatures and response shapes of
``hvac.Client().secrets.transit`` (hvac 2.x).

It really encrypts (AES-256-GCM, one random key per version, ``vault:vN:<base64(nonce|ct|tag)>``),
refuses versions below ``min_decryption_version`` and hides them from ``read_key`` the way Vault
archives them, and fails the way Vault does: HTTP 400 answers become ``hvac.exceptions.InvalidRequest``
with Vault's own messages, an unknown key on ``read_key`` becomes ``InvalidPath`` (404).
Options this project never sends (batches, derivation contexts, convergent nonces) are refused
rather than silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hvac import exceptions

DEFAULT_MOUNT_POINT = "transit"
_NONCE = 12


class NotModelled(Exception):
    """The fake refuses an option it does not model, rather than silently ignoring it."""


@dataclass(frozen=True, slots=True)
class NoContent:
    """What hvac's JSONAdapter hands back for Vault's 204 answers (a bare response)."""

    status_code: int = 204


@dataclass
class _Key:
    versions: dict[int, tuple[bytes, int]] = field(default_factory=dict)  # version -> (key, unix time)
    min_decryption_version: int = 1
    min_encryption_version: int = 0

    @property
    def latest_version(self) -> int:
        return max(self.versions)

    def add_version(self) -> int:
        version = len(self.versions) + 1
        self.versions[version] = (AESGCM.generate_key(bit_length=256), int(time.time()))
        return version


def _refuse_unsupported(**options: Any) -> None:
    given = sorted(name for name, value in options.items() if value is not None)
    if given:
        raise NotModelled(f"FakeTransit does not model: {', '.join(given)}")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


class FakeTransit:
    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], _Key] = {}
        self._lock = threading.Lock()  # the provider calls in from worker threads
        self.calls: list[str] = []

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _bad(method: str, path: str, message: str) -> exceptions.InvalidRequest:
        return exceptions.InvalidRequest(errors=[message], method=method, url=f"/v1/{path}")

    def _existing(self, name: str, mount_point: str, path: str) -> _Key:
        key = self._keys.get((mount_point, name))
        if key is None:
            raise self._bad("POST", f"{mount_point}/{path}/{name}", "encryption key not found")
        return key

    @staticmethod
    def _response(data: dict[str, Any]) -> dict[str, Any]:
        return {
            "request_id": str(uuid.uuid4()),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": data,
            "wrap_info": None,
            "warnings": None,
            "auth": None,
        }

    def _seal(self, key: _Key, plaintext: bytes, version: int, aad: bytes | None) -> str:
        material, _ = key.versions[version]
        nonce = secrets.token_bytes(_NONCE)
        sealed = AESGCM(material).encrypt(nonce, plaintext, aad)
        return f"vault:v{version}:" + base64.b64encode(nonce + sealed).decode("ascii")

    def _open(self, key: _Key, ciphertext: str, aad: bytes | None, path: str) -> bytes:
        prefix, _, rest = ciphertext.partition(":")
        digits, sep, encoded = rest.partition(":")
        if prefix != "vault" or not sep or not digits.startswith("v"):
            raise self._bad("POST", path, "invalid ciphertext: no prefix")
        try:
            version = int(digits[1:])
        except ValueError:
            raise self._bad("POST", path, "invalid ciphertext: version number could not be decoded") from None
        if version > key.latest_version:
            raise self._bad("POST", path, "invalid ciphertext: version is too new")
        if version < key.min_decryption_version or version not in key.versions:
            raise self._bad("POST", path, "ciphertext or signature version is disallowed by policy (too old)")
        try:
            blob = _b64decode(encoded)
        except (binascii.Error, ValueError):
            raise self._bad("POST", path, "invalid ciphertext: could not decode") from None
        if len(blob) < _NONCE:
            raise self._bad("POST", path, "invalid ciphertext: unable to decrypt")
        material, _ = key.versions[version]
        try:
            return AESGCM(material).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except InvalidTag:
            raise self._bad("POST", path, "cipher: message authentication failed") from None

    def _aad(self, associated_data: str | None, path: str) -> bytes | None:
        if associated_data is None:
            return None
        try:
            return _b64decode(associated_data)
        except (binascii.Error, ValueError):
            raise self._bad("POST", path, "failed to base64-decode associated_data") from None

    # -- the hvac surface --------------------------------------------------------------

    def encrypt_data(
        self,
        name: str,
        plaintext: str | None = None,
        context: str | None = None,
        key_version: int | None = None,
        nonce: str | None = None,
        batch_input: list[dict[str, Any]] | None = None,
        type: str | None = None,
        convergent_encryption: str | None = None,
        mount_point: str = DEFAULT_MOUNT_POINT,
        associated_data: str | None = None,
    ) -> dict[str, Any]:
        _refuse_unsupported(context=context, nonce=nonce, batch_input=batch_input, convergent=convergent_encryption)
        if plaintext is None:
            raise ValueError("plaintext must be specified unless batch_input is set")  # hvac's own check
        path = f"{mount_point}/encrypt/{name}"
        with self._lock:
            self.calls.append("encrypt_data")
            key = self._keys.get((mount_point, name))
            if key is None:  # Vault upserts the key on encrypt when the token may create it
                if type not in (None, "aes256-gcm96"):
                    raise NotModelled(f"FakeTransit only models aes256-gcm96 keys, not {type}")
                key = self._keys[(mount_point, name)] = _Key()
                key.add_version()
            try:
                raw = _b64decode(plaintext)
            except (binascii.Error, ValueError):
                raise self._bad("POST", path, "failed to base64-decode plaintext") from None
            version = key.latest_version if key_version in (None, 0) else int(key_version)
            if version > key.latest_version or version < max(key.min_encryption_version, 1):
                raise self._bad("POST", path, "requested version for encryption is not in range")
            ciphertext = self._seal(key, raw, version, self._aad(associated_data, path))
            return self._response({"ciphertext": ciphertext, "key_version": version})

    def decrypt_data(
        self,
        name: str,
        ciphertext: str | None = None,
        context: str | None = None,
        nonce: str | None = None,
        batch_input: list[dict[str, Any]] | None = None,
        mount_point: str = DEFAULT_MOUNT_POINT,
        associated_data: str | None = None,
    ) -> dict[str, Any]:
        _refuse_unsupported(context=context, nonce=nonce, batch_input=batch_input)
        if ciphertext is None:
            raise ValueError("ciphertext must be specified unless batch_input is set")
        path = f"{mount_point}/decrypt/{name}"
        with self._lock:
            self.calls.append("decrypt_data")
            key = self._existing(name, mount_point, "decrypt")
            plain = self._open(key, ciphertext, self._aad(associated_data, path), path)
            return self._response({"plaintext": base64.b64encode(plain).decode("ascii")})

    def rewrap_data(
        self,
        name: str,
        ciphertext: str,
        context: str | None = None,
        key_version: int | None = None,
        nonce: str | None = None,
        batch_input: list[dict[str, Any]] | None = None,
        mount_point: str = DEFAULT_MOUNT_POINT,
    ) -> dict[str, Any]:
        _refuse_unsupported(context=context, key_version=key_version, nonce=nonce, batch_input=batch_input)
        path = f"{mount_point}/rewrap/{name}"
        with self._lock:
            self.calls.append("rewrap_data")
            key = self._existing(name, mount_point, "rewrap")
            plain = self._open(key, ciphertext, None, path)
            version = key.latest_version
            return self._response({"ciphertext": self._seal(key, plain, version, None), "key_version": version})

    def rotate_key(self, name: str, mount_point: str = DEFAULT_MOUNT_POINT) -> NoContent:
        with self._lock:
            self.calls.append("rotate_key")
            self._existing(name, mount_point, "keys").add_version()
            return NoContent()

    def read_key(self, name: str, mount_point: str = DEFAULT_MOUNT_POINT) -> dict[str, Any]:
        with self._lock:
            self.calls.append("read_key")
            key = self._keys.get((mount_point, name))
            if key is None:
                raise exceptions.InvalidPath(method="GET", url=f"/v1/{mount_point}/keys/{name}")
            # Versions below min_decryption_version are archived: Vault no longer lists them.
            listed = {str(v): created for v, (_, created) in key.versions.items() if v >= key.min_decryption_version}
            return self._response(
                {
                    "name": name,
                    "type": "aes256-gcm96",
                    "keys": listed,
                    "latest_version": key.latest_version,
                    "min_available_version": 0,
                    "min_decryption_version": key.min_decryption_version,
                    "min_encryption_version": key.min_encryption_version,
                    "deletion_allowed": False,
                    "derived": False,
                    "exportable": False,
                    "allow_plaintext_backup": False,
                    "supports_encryption": True,
                    "supports_decryption": True,
                    "supports_derivation": True,
                    "supports_signing": False,
                    "imported": False,
                    "auto_rotate_period": 0,
                }
            )

    def update_key_configuration(
        self,
        name: str,
        min_decryption_version: int | None = None,
        min_encryption_version: int | None = None,
        deletion_allowed: bool | None = None,
        exportable: bool | None = None,
        allow_plaintext_backup: bool | None = None,
        mount_point: str = DEFAULT_MOUNT_POINT,
        auto_rotate_period: str | None = None,
    ) -> NoContent:
        _refuse_unsupported(
            deletion_allowed=deletion_allowed,
            exportable=exportable,
            allow_plaintext_backup=allow_plaintext_backup,
            auto_rotate_period=auto_rotate_period,
        )
        path = f"{mount_point}/keys/{name}/config"
        with self._lock:
            self.calls.append("update_key_configuration")
            key = self._existing(name, mount_point, "keys")
            if min_decryption_version is not None:
                wanted = max(int(min_decryption_version), 1)  # Vault forces 0 up to 1
                if wanted > key.latest_version:
                    raise self._bad(
                        "POST",
                        path,
                        f"cannot set min decryption version of {wanted}, latest key version is {key.latest_version}",
                    )
                # Lowering it again is allowed: archived versions come back (Vault never trims here).
                key.min_decryption_version = wanted
            if min_encryption_version is not None:
                key.min_encryption_version = int(min_encryption_version)
            return NoContent()

"""Field sealing (AES-256-GCM with AAD) and blind indexes.

Ciphertext layout (version 2, written; version 1, unpadded, still opens)::

    0x02 | DEK id (16 bytes) | nonce (12 bytes) | AES-GCM(padded plaintext) + GCM tag

The header is part of the AAD together with ``(table, subject id, record id, field)``, so a
ciphertext moved to another row, subject or column, or sealed under another key, fails to open;
and a version-2 ciphertext relabelled version 1 (to pass its padding off as data) fails too.

Version 2 pads the plaintext to a size bucket before sealing (:func:`bucket_size`), so a ciphertext's
length tells someone holding only the database the bucket, not the exact length of an e-mail
address, phone number or profile. Padding is ISO/IEC 7816-4: a 0x80 byte, then zero bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, field

import email_validator
import idna
import phonenumbers
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import (
    DNS_LABEL_LENGTH_LIMIT,
    DOT_ATOM_TEXT,
    DOT_ATOM_TEXT_HOSTNAME,
    EMAIL_MAX_LENGTH,
)

CIPHERTEXT_FORMAT = 2
_UNPADDED_FORMAT = 1
_FORMATS = frozenset({_UNPADDED_FORMAT, CIPHERTEXT_FORMAT})
# Plaintext size buckets (bytes, the padding marker included): powers of two from 32 to 4096, then
# multiples of 4096. A phone number or short e-mail address fills 32, a profile a few hundred bytes.
PAD_MIN = 32
PAD_STEP = 4096
_HEADER_LEN = 1 + 16
_NONCE_LEN = 12
_MIN_LEN = _HEADER_LEN + _NONCE_LEN + 16
_SEP = b"\x1f"


class DecryptionFailed(Exception):
    """A ciphertext is malformed, was tampered with, or is bound to another place or key."""


def bucket_size(length: int) -> int:
    """The padded size of a plaintext of ``length`` bytes (room for the 0x80 marker included)."""
    needed = length + 1
    if needed <= PAD_STEP:
        return max(PAD_MIN, 1 << (needed - 1).bit_length())
    return -(-needed // PAD_STEP) * PAD_STEP


def _pad(plaintext: bytes) -> bytes:
    return plaintext + b"\x80" + bytes(bucket_size(len(plaintext)) - len(plaintext) - 1)


def _unpad(padded: bytes) -> bytes:
    marker = padded.rfind(0x80)
    if marker < 0 or padded.count(0, marker + 1) != len(padded) - marker - 1:
        raise DecryptionFailed("ciphertext padding is malformed")
    return padded[:marker]


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a ciphertext belongs; becomes the AEAD associated data."""

    table: str
    subject_id: uuid.UUID
    record_id: uuid.UUID | None
    field: str

    def aad(self) -> bytes:
        record = self.record_id.bytes if self.record_id else b""
        return _SEP.join((self.table.encode(), self.subject_id.bytes, record, self.field.encode()))


@dataclass(slots=True)
class DataKey:
    """A plaintext per-subject data key (DEK) held in memory for one unit of work."""

    key_id: uuid.UUID
    material: bytes = field(repr=False)
    _aead: AESGCM | None = field(default=None, repr=False)

    @classmethod
    def generate(cls) -> DataKey:
        return cls(uuid.uuid4(), AESGCM.generate_key(bit_length=256))

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id})"

    @property
    def aead(self) -> AESGCM:
        if self._aead is None:
            self._aead = AESGCM(self.material)
        return self._aead

    def seal(self, plaintext: bytes, binding: Binding) -> bytes:
        header = bytes([CIPHERTEXT_FORMAT]) + self.key_id.bytes
        nonce = secrets.token_bytes(_NONCE_LEN)
        return header + nonce + self.aead.encrypt(nonce, _pad(plaintext), header + binding.aad())

    def open(self, blob: bytes, binding: Binding) -> bytes:
        if len(blob) < _MIN_LEN or blob[0] not in _FORMATS:
            raise DecryptionFailed("unsupported or truncated ciphertext")
        header = blob[:_HEADER_LEN]
        if header[1:] != self.key_id.bytes:
            raise DecryptionFailed("ciphertext was sealed under another data key")
        nonce = blob[_HEADER_LEN : _HEADER_LEN + _NONCE_LEN]
        try:
            plaintext = self.aead.decrypt(nonce, blob[_HEADER_LEN + _NONCE_LEN :], header + binding.aad())
        except InvalidTag:
            raise DecryptionFailed("ciphertext failed authentication") from None
        return plaintext if header[0] == _UNPADDED_FORMAT else _unpad(plaintext)


def key_id_of(blob: bytes) -> uuid.UUID:
    """The DEK id a ciphertext names (no decryption)."""
    if len(blob) < _MIN_LEN or blob[0] not in _FORMATS:
        raise DecryptionFailed("unsupported or truncated ciphertext")
    return uuid.UUID(bytes=blob[1:_HEADER_LEN])


class InvalidIdentifier(ValueError):
    """An identifier could not be normalised; the message never contains the value."""


def normalise_email(value: str) -> str:
    """The one canonical form of an address: its blind index and what is stored and mailed.

    The domain, given in Unicode or as punycode (``xn--``) in any case, becomes its IDNA 2008
    U-label form, decoded from the A-label (so both spellings of one domain index alike); an ASCII
    domain is only lower-cased. The local part is NFC-normalised and lower-cased.
    """
    stripped = value.strip()
    plain = _plain_ascii_email(stripped)
    return plain if plain is not None else _validated_email(stripped)


def _validated_email(address: str) -> str:
    """``normalise_email`` through ``email_validator``: any address it accepts."""
    try:
        result = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        raise InvalidIdentifier("not a valid e-mail address") from None
    domain = result.ascii_domain.lower()
    if "xn--" in domain:
        try:
            domain = idna.decode(domain)
        except idna.IDNAError:
            raise InvalidIdentifier("not a valid internationalised e-mail domain") from None
    return f"{result.local_part}@{domain}".lower()


def _plain_ascii_email(address: str) -> str | None:
    """``normalise_email`` of the common address, without ``email_validator`` (~40 µs per intake);
    None for anything else, which takes the validator's path.

    Only an address whose every step through the validator is known is answered here: ASCII, one
    @-sign, a dot-atom local part and a hostname of letters, digits, hyphens and dots (the validator's
    own patterns and limits), with a dot, a last character that is a letter, no ``--`` (Punycode and
    the labels the validator refuses for it), no special-use name. For such an address the validator
    checks nothing else and returns the local part as given and the domain lower-cased. Its module
    settings are read at each call, as the validator reads them; tests/unit/test_fields.py compares
    both paths over generated and hand-picked addresses.
    """
    if not address.isascii() or len(address) > EMAIL_MAX_LENGTH or address.count("@") != 1:
        return None
    local, domain = address.split("@")
    if DOT_ATOM_TEXT.match(local) is None or DOT_ATOM_TEXT_HOSTNAME.match(domain) is None:
        return None
    domain = domain.lower()
    if "--" in domain or "." not in domain or not domain[-1].isalpha():
        return None
    if email_validator.STRICT or email_validator.TEST_ENVIRONMENT or not email_validator.GLOBALLY_DELIVERABLE:
        return None
    labels = domain.split(".")
    if any(len(label) > DNS_LABEL_LENGTH_LIMIT for label in labels):
        return None
    if any(domain == name or domain.endswith("." + name) for name in email_validator.SPECIAL_USE_DOMAIN_NAMES):
        return None
    return f"{local}@{domain}".lower()


def normalise_phone(value: str) -> str:
    try:
        number = phonenumbers.parse(value.strip(), None)
    except phonenumbers.NumberParseException:
        raise InvalidIdentifier("not a phone number in international format (+country code)") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentifier("not a valid phone number")
    formatted: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return formatted


def normalise_external_id(value: str) -> str:
    cleaned = value.strip()
    if not cleaned or len(cleaned) > 200:
        raise InvalidIdentifier("external id must be 1-200 characters")
    return cleaned


NORMALISERS = {
    "email": normalise_email,
    "phone": normalise_phone,
    "external_id": normalise_external_id,
}


class BlindIndexer:
    """Keyed HMAC-SHA256 of a normalised identifier: equality lookups without plaintext."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("blind-index key must be at least 32 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "BlindIndexer(<key hidden>)"

    def index(self, kind: str, normalised: str) -> bytes:
        message = kind.encode() + b"\x00" + normalised.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

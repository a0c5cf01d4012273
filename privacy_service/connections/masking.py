"""Masking strategies: what an erasure writes into a field of a connected database.

- ``null_rewrite`` (the default): the field becomes NULL.
- ``string_rewrite``: the field becomes ``MaskSpec.value`` (cut to the field's ``length``; for an
  ``integer``/``float``/``boolean`` field the value must read as one).
- ``hash``: HMAC-SHA256 of the current value with a secret from the keyring, as lowercase hex, cut to
  the field's ``length`` (64 characters at most). The same value always gives the same hash, so rows
  that shared a value still do, without the value. A value that already is such a hash (exactly that
  many lowercase hex digits) is taken as masked and left alone, so masking twice changes nothing;
  a field with a short ``length`` whose real values are hex strings of that length would be left
  alone too (give such a field another strategy).
- ``random_string_rewrite``: a string of lowercase letters and digits (``length`` characters, 32 by
  default). It is derived from the secret and the row's key (not from the value), so it tells
  nothing about the value and masking twice writes the same string.
- ``delete_row``: the row is deleted (handled by the query layer, not here).

String strategies need a string field (``data_type`` absent or ``string``). A NULL stays NULL under
every strategy but ``string_rewrite``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from privacy_service.errors import InvalidInput

Strategy = Literal["null_rewrite", "string_rewrite", "hash", "random_string_rewrite", "delete_row"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
HASH_LENGTH = 64
RANDOM_LENGTH = 32
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_STRING_TYPES = (None, "string")
_NUMBER = re.compile(r"[+-]?\d{1,18}")


class MaskingRefused(InvalidInput):
    """A masking that must not run (read-only field, wrong type, missing secret); names no value."""

    slug = "masking-refused"
    title = "The masking cannot be applied"


@dataclass(frozen=True, slots=True)
class MaskSpec:
    strategy: Strategy
    value: str | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise MaskingRefused(f"unknown masking strategy (one of {', '.join(STRATEGIES)})")
        if self.strategy == "string_rewrite" and self.value is None:
            raise MaskingRefused("string_rewrite needs a value")

    @property
    def needs_secret(self) -> bool:
        return self.strategy in ("hash", "random_string_rewrite")


def base_type(data_type: str | None) -> str | None:
    if data_type is None:
        return None
    return "array" if data_type.endswith("[]") else data_type


def check_spec(spec: MaskSpec, *, data_type: str | None, length: int | None, secret: bytes, where: str) -> None:
    """Refuse up front what :func:`masked_value` could not do for this field."""
    kind = base_type(data_type)
    if spec.strategy == "delete_row" or spec.strategy == "null_rewrite":
        return
    if spec.needs_secret and not secret:
        raise MaskingRefused(f"{where}: {spec.strategy} needs the masking secret")
    if spec.strategy in ("hash", "random_string_rewrite") and kind not in _STRING_TYPES:
        raise MaskingRefused(f"{where}: {spec.strategy} writes a string, the field is {data_type}")
    if spec.strategy == "string_rewrite" and kind not in _STRING_TYPES:
        _typed(spec.value or "", kind, where)


def masked_value(
    spec: MaskSpec,
    value: Any,
    *,
    data_type: str | None,
    length: int | None,
    secret: bytes,
    row_key: str = "",
) -> Any:
    """The value a field holds once masked (``row_key`` names the row for ``random_string_rewrite``)."""
    where = "field"
    check_spec(spec, data_type=data_type, length=length, secret=secret, where=where)
    match spec.strategy:
        case "null_rewrite":
            return None
        case "string_rewrite":
            kind = base_type(data_type)
            if kind in _STRING_TYPES:
                return _cut(spec.value or "", length)
            return _typed(spec.value or "", kind, where)
        case "hash":
            if value is None:
                return None
            digest = hmac.new(secret, _text(value).encode("utf-8"), hashlib.sha256).hexdigest()
            return digest[: hash_length(length)]
        case "random_string_rewrite":
            if value is None:
                return None
            return _derived_string(secret, row_key, length or RANDOM_LENGTH)
        case _:
            raise MaskingRefused(f"{spec.strategy} is not a value (the row is deleted)")


def hash_length(length: int | None) -> int:
    return min(HASH_LENGTH, length or HASH_LENGTH)


def already_masked(spec: MaskSpec, current: Any, new: Any, *, length: int | None) -> bool:
    """Whether writing ``new`` over ``current`` would change nothing a masking cares about."""
    if current == new:
        return True
    if spec.strategy == "hash" and isinstance(current, str):
        size = hash_length(length)
        return len(current) == size and all(c in "0123456789abcdef" for c in current)
    return False


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def _cut(text: str, length: int | None) -> str:
    return text[:length] if length else text


def _typed(text: str, kind: str | None, where: str) -> Any:
    if kind == "integer" and _NUMBER.fullmatch(text.strip()):
        return int(text)
    if kind == "float":
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    if kind == "boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise MaskingRefused(f"{where}: the string_rewrite value is not a {kind}")


def _derived_string(secret: bytes, row_key: str, length: int) -> str:
    out: list[str] = []
    counter = 0
    while len(out) < length:
        block = hmac.new(secret, f"random_string_rewrite\x00{row_key}\x00{counter}".encode(), hashlib.sha256).digest()
        # 252 = 7 * 36: bytes above it are skipped so every character is equally likely.
        out.extend(_ALPHABET[b % len(_ALPHABET)] for b in block if b < 252)
        counter += 1
    return "".join(out[:length])

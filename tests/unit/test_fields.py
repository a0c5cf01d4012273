"""Field sealing (AES-GCM bound to its place), identifier normalisation and blind indexes."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from privacy_service.crypto import fields
from privacy_service.crypto.fields import (
    NORMALISERS,
    Binding,
    BlindIndexer,
    DataKey,
    DecryptionFailed,
    InvalidIdentifier,
    bucket_size,
    key_id_of,
    normalise_email,
    normalise_external_id,
    normalise_phone,
)

SUBJECT = uuid.UUID("11111111-1111-4111-8111-111111111111")
OTHER_SUBJECT = uuid.UUID("22222222-2222-4222-8222-222222222222")
RECORD = uuid.UUID("33333333-3333-4333-8333-333333333333")
OTHER_RECORD = uuid.UUID("44444444-4444-4444-8444-444444444444")
HOME = Binding("records", SUBJECT, RECORD, "data")
PLAINTEXT = b'{"iban": "DE89370400440532013000", "amount": "12.50"}'
KEY = DataKey.generate()
SEALED = KEY.seal(PLAINTEXT, HOME)


# -- sealing --------------------------------------------------------------------------------


def test_seal_open_round_trip() -> None:
    assert KEY.open(SEALED, HOME) == PLAINTEXT
    assert PLAINTEXT not in SEALED
    assert key_id_of(SEALED) == KEY.key_id
    assert SEALED[0] == 2  # format version (padded)
    assert KEY.seal(PLAINTEXT, HOME) != SEALED  # fresh nonce every time
    empty = KEY.seal(b"", Binding("subjects", SUBJECT, None, "email"))
    assert KEY.open(empty, Binding("subjects", SUBJECT, None, "email")) == b""


def test_a_key_rebuilt_from_its_material_opens_what_it_sealed() -> None:
    """What KeyService does after unwrapping: a new DataKey object from the stored id and material."""
    rebuilt = DataKey(KEY.key_id, bytes(KEY.material))
    assert rebuilt.open(SEALED, HOME) == PLAINTEXT


ELSEWHERE = {
    "other subject": Binding("records", OTHER_SUBJECT, RECORD, "data"),
    "other record": Binding("records", SUBJECT, OTHER_RECORD, "data"),
    "no record": Binding("records", SUBJECT, None, "data"),
    "other field": Binding("records", SUBJECT, RECORD, "note"),
    "other table": Binding("subjects", SUBJECT, RECORD, "data"),
}


@pytest.mark.parametrize("binding", ELSEWHERE.values(), ids=ELSEWHERE.keys())
def test_ciphertext_moved_elsewhere_fails(binding: Binding) -> None:
    with pytest.raises(DecryptionFailed):
        KEY.open(SEALED, binding)


def test_subject_level_field_cannot_be_swapped_between_columns() -> None:
    email = KEY.seal(b"alice@example.com", Binding("subjects", SUBJECT, None, "email"))
    with pytest.raises(DecryptionFailed):
        KEY.open(email, Binding("subjects", SUBJECT, None, "phone"))


def test_every_flipped_bit_fails() -> None:
    for index in range(len(SEALED)):
        for bit in (0x01, 0x80):
            tampered = SEALED[:index] + bytes([SEALED[index] ^ bit]) + SEALED[index + 1 :]
            with pytest.raises(DecryptionFailed):
                KEY.open(tampered, HOME)


def test_every_truncation_fails() -> None:
    for size in range(len(SEALED)):
        with pytest.raises(DecryptionFailed):
            KEY.open(SEALED[:size], HOME)
    with pytest.raises(DecryptionFailed):
        KEY.open(SEALED + b"\x00", HOME)


@pytest.mark.parametrize("fmt", [0, 3, 0x81, 0xFF])
def test_unknown_format_byte_fails(fmt: int) -> None:
    with pytest.raises(DecryptionFailed, match="unsupported"):
        KEY.open(bytes([fmt]) + SEALED[1:], HOME)
    with pytest.raises(DecryptionFailed):
        key_id_of(bytes([fmt]) + SEALED[1:])


def test_another_data_key_cannot_open() -> None:
    with pytest.raises(DecryptionFailed):
        DataKey.generate().open(SEALED, HOME)
    # Same id, other material (a forged header): the tag still fails.
    with pytest.raises(DecryptionFailed):
        DataKey(KEY.key_id, DataKey.generate().material).open(SEALED, HOME)
    # Same material, other id: the header binds the id.
    with pytest.raises(DecryptionFailed):
        DataKey(uuid.uuid4(), KEY.material).open(SEALED, HOME)


def test_reprs_never_show_key_material() -> None:
    material_forms = [KEY.material.hex(), repr(KEY.material), base64.b64encode(KEY.material).decode()]
    for text in (repr(KEY), str(KEY), f"{KEY!r}", repr([KEY])):
        assert str(KEY.key_id) in text
        for form in material_forms:
            assert form not in text
    index_key = bytes(range(32))
    indexer = BlindIndexer(index_key)
    for text in (repr(indexer), str(indexer)):
        for form in (index_key.hex(), repr(index_key), base64.b64encode(index_key).decode()):
            assert form not in text


@given(st.binary(max_size=256))
def test_arbitrary_bytes_only_ever_raise_decryption_failed(blob: bytes) -> None:
    with pytest.raises(DecryptionFailed):
        KEY.open(blob, HOME)


@given(st.binary(max_size=200), st.sampled_from([KEY.key_id.bytes, uuid.uuid4().bytes]))
def test_well_framed_garbage_only_ever_raises_decryption_failed(body: bytes, key_id: bytes) -> None:
    """Past the header checks, into the AEAD: still only DecryptionFailed."""
    blob = b"\x01" + key_id + body
    with pytest.raises(DecryptionFailed):
        KEY.open(blob, HOME)


@given(st.binary(max_size=80))
def test_key_id_of_either_names_a_key_or_raises_decryption_failed(blob: bytes) -> None:
    try:
        found = key_id_of(blob)
    except DecryptionFailed:
        return
    assert found.bytes == blob[1:17]


# -- identifiers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" Alice@Example.COM ", "alice@example.com"),
        ("\tBOB.SMITH@EXAMPLE.ORG\n", "bob.smith@example.org"),
        ("alice@example.com", "alice@example.com"),
    ],
)
def test_normalise_email(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected
    assert normalise_email(expected) == expected  # idempotent


# The plain-ASCII path of normalise_email must answer exactly as email_validator does: the same
# address, or (by handing over to it) the same refusal. Hand-picked edges of each rule it checks:
TRICKY_EMAILS = [
    "alice@example.com",
    "Alice.Smith+tag@Sub.Example.CO.UK",
    "POSTMASTER@example.com",
    "a@b.co",
    "x@example.c0m",  # TLD ending in a digit
    "x@example.123",
    "x@localhost",
    "x@example",  # no dot
    "x@mail.test",
    "x@test",
    "x@a.local",
    "x@host.invalid",
    "x@onion",
    "x@abc.onion",
    "x@1.0.0.127.in-addr.arpa",
    "x@example.com.",
    "x@.example.com",
    "x@example..com",
    "x@-example.com",
    "x@example-.com",
    "x@ex--ample.com",
    "x@xn--bcher-kva.example",
    "x@XN--BCHER-KVA.example",
    "x@xn--zz.example",
    "x@ab--cd.example",
    ".x@example.com",
    "x.@example.com",
    "x..y@example.com",
    "x@exa_mple.com",
    '"quoted"@example.com',
    '"a b"@example.com',
    "Name <x@example.com>",
    "<x@example.com>",
    "x@[127.0.0.1]",
    "x@@example.com",
    "x@example.com@example.com",
    "!#$%&'*+-/=?^_`{|}~@example.com",
    "x@" + "a" * 63 + ".com",
    "x@" + "a" * 64 + ".com",
    "x" * 64 + "@example.com",
    "x" * 65 + "@example.com",
    "x" * 240 + "@example.com",  # 252 characters
    "x" * 242 + "@example.com",  # 254
    "x" * 243 + "@example.com",  # 255
    "x@" + ".".join(["a" * 60] * 4) + ".com",  # domain past 253
    "x@exämple.com",
    "ünicode@example.com",
    "x@\uff45xample.com",  # full-width e
    "x\uff20example.com",  # full-width @-sign
    "x@example.com\x00",
    "x@exa mple.com",
    "",
    "@",
    "x@",
    "@example.com",
]


def _both_paths(address: str) -> tuple[str | None, str | InvalidIdentifier]:
    try:
        validated: str | InvalidIdentifier = fields._validated_email(address)
    except InvalidIdentifier as exc:
        validated = exc
    return fields._plain_ascii_email(address), validated


@pytest.mark.parametrize("address", TRICKY_EMAILS)
def test_plain_ascii_email_path_matches_email_validator(address: str) -> None:
    plain, validated = _both_paths(address)
    if plain is not None:
        assert plain == validated


_ATEXT = "abcxyzABCXYZ0189_!#$%&'*+-/=?^`{|}~"
_HOST = "abcxyzABCXYZ0189-"


@given(
    st.text(st.sampled_from(_ATEXT + '.@" <>[]é'), min_size=0, max_size=70),
    st.lists(st.text(st.sampled_from(_HOST + "._"), min_size=0, max_size=66), min_size=1, max_size=5),
)
def test_plain_ascii_email_path_matches_email_validator_on_generated_addresses(local: str, labels: list[str]) -> None:
    address = local + "@" + ".".join(labels)
    plain, validated = _both_paths(address)
    if plain is not None:
        assert plain == validated


_ATOM = st.text(st.sampled_from(_ATEXT), min_size=1, max_size=12)
_LABEL = st.text(st.sampled_from(_HOST), min_size=1, max_size=12)
_TLD = st.sampled_from(["com", "CO", "de", "c0", "x", "test", "local", "arpa", "onion", "xn--p1ai", "in-addr.arpa"])


@given(st.lists(_ATOM, min_size=1, max_size=4), st.lists(_LABEL, min_size=0, max_size=4), _TLD)
def test_plain_ascii_email_path_matches_email_validator_on_well_formed_addresses(
    atoms: list[str], labels: list[str], tld: str
) -> None:
    address = ".".join(atoms) + "@" + ".".join([*labels, tld])
    plain, validated = _both_paths(address)
    if plain is not None:
        assert plain == validated


def test_plain_ascii_email_path_serves_common_addresses() -> None:
    # What the fast path exists for (it would pass the tests above by never answering).
    assert fields._plain_ascii_email("Bench.Intake.7@Example.COM") == "bench.intake.7@example.com"
    assert fields._plain_ascii_email("x@mail.test") is None  # special use: the validator refuses it
    with pytest.raises(InvalidIdentifier):
        normalise_email("x@mail.test")


def test_plain_ascii_email_path_follows_the_validator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import email_validator

    monkeypatch.setattr(email_validator, "TEST_ENVIRONMENT", True)
    assert normalise_email("x@mail.test") == "x@mail.test"
    monkeypatch.setattr(
        email_validator, "SPECIAL_USE_DOMAIN_NAMES", [*email_validator.SPECIAL_USE_DOMAIN_NAMES, "corp"]
    )
    with pytest.raises(InvalidIdentifier):
        normalise_email("x@mail.corp")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+44 7911 123456", "+447911123456"),
        (" +1 (415) 555-2671 ", "+14155552671"),
        ("+86 138 0013 8000", "+8613800138000"),
        ("+447911123456", "+447911123456"),
    ],
)
def test_normalise_phone_to_e164(raw: str, expected: str) -> None:
    assert normalise_phone(raw) == expected
    assert normalise_phone(expected) == expected


def test_normalise_external_id_strips_but_keeps_case() -> None:
    assert normalise_external_id("  Cust-0001 \n") == "Cust-0001"
    assert normalise_external_id("x" * 200) == "x" * 200


INVALID = [
    (normalise_email, "secret-alice-7731"),
    (normalise_email, "secret-alice-7731@"),
    (normalise_email, "@secret-7731.example"),
    (normalise_email, "secret alice 7731@example.com"),
    (normalise_email, "secret-7731@@example.com"),
    (normalise_email, ""),
    (normalise_phone, "07911 987731"),  # no country code
    (normalise_phone, "+44 12 7731"),  # too short to be a number
    (normalise_phone, "+999 123 987731"),  # no such country code
    (normalise_phone, "secret-phone-7731"),
    (normalise_phone, ""),
    (normalise_external_id, ""),
    (normalise_external_id, "   "),
    (normalise_external_id, "secret-7731-" + "x" * 200),
]


@pytest.mark.parametrize(("normalise", "raw"), INVALID)
def test_invalid_identifier_message_never_contains_the_value(normalise: Callable[[str], str], raw: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise(raw)
    message = str(caught.value)
    assert message
    if raw.strip():
        assert raw.strip() not in message
        assert "7731" not in message
    assert isinstance(caught.value, ValueError)


def test_normalisers_cover_every_lookup_kind() -> None:
    assert NORMALISERS == {
        "email": normalise_email,
        "phone": normalise_phone,
        "external_id": normalise_external_id,
    }


# -- blind index ----------------------------------------------------------------------------

INDEX_KEY = bytes(range(32))


def test_same_normalised_value_same_index() -> None:
    indexer = BlindIndexer(INDEX_KEY)
    first = indexer.index("email", normalise_email(" Alice@Example.COM "))
    second = BlindIndexer(bytes(INDEX_KEY)).index("email", normalise_email("alice@example.com"))
    assert first == second
    assert len(first) == 32
    assert b"alice" not in first
    assert indexer.index("email", "bob@example.com") != first


def test_different_kind_different_index() -> None:
    indexer = BlindIndexer(INDEX_KEY)
    value = "+447911123456"
    assert indexer.index("phone", value) != indexer.index("external_id", value)
    assert indexer.index("email", "a") != indexer.index("external_id", "a")


def test_different_key_different_index() -> None:
    value = "alice@example.com"
    assert BlindIndexer(INDEX_KEY).index("email", value) != BlindIndexer(bytes(32)).index("email", value)


def test_blind_index_key_must_be_long() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        BlindIndexer(bytes(31))


# -- padding (ciphertext format 2) ----------------------------------------------------------


def _email(address: str) -> bytes:
    return KEY.seal(address.encode(), Binding("subjects", SUBJECT, None, "email"))


def test_emails_of_different_lengths_in_one_bucket_give_equal_length_ciphertexts() -> None:
    """Someone holding only the database learns the bucket, not the length of the address."""
    short, long = "al@example.com", "alexandra.smith@example.com"  # 14 and 27 bytes: bucket 32
    assert bucket_size(len(short)) == bucket_size(len(long)) == 32
    assert len(_email(short)) == len(_email(long))
    # Profiles of different lengths, too.
    profile = Binding("subjects", SUBJECT, None, "profile")
    assert len(KEY.seal(b'{"name":"Al"}', profile)) == len(KEY.seal(b'{"name":"Alexandra Smith"}', profile))
    # A different bucket is a different length (the bucket is all that shows).
    assert len(_email("a" * 40 + "@example.com")) > len(_email(short))


@pytest.mark.parametrize(
    ("length", "bucket"),
    [(0, 32), (31, 32), (32, 64), (63, 64), (64, 128), (4095, 4096), (4096, 8192), (10_000, 12_288)],
)
def test_bucket_sizes(length: int, bucket: int) -> None:
    assert bucket_size(length) == bucket
    assert len(KEY.seal(b"x" * length, HOME)) == 1 + 16 + 12 + bucket + 16


def _seal_v1(key: DataKey, plaintext: bytes, binding: Binding) -> bytes:
    """Format 1 as it was written before padding: header, nonce, AES-GCM of the bare plaintext."""
    header = b"\x01" + key.key_id.bytes
    nonce = bytes(range(12))
    return header + nonce + AESGCM(key.material).encrypt(nonce, plaintext, header + binding.aad())


def test_format_1_ciphertexts_still_open() -> None:
    old = _seal_v1(KEY, PLAINTEXT, HOME)
    assert KEY.open(old, HOME) == PLAINTEXT
    assert key_id_of(old) == KEY.key_id
    # Unpadded content that happens to end like padding is returned as it is.
    tricky = b"ends like padding\x80\x00\x00"
    assert KEY.open(_seal_v1(KEY, tricky, HOME), HOME) == tricky
    with pytest.raises(DecryptionFailed):
        KEY.open(old, Binding("records", OTHER_SUBJECT, RECORD, "data"))


def test_a_padded_ciphertext_relabelled_format_1_fails() -> None:
    """The version byte is authenticated: padding cannot be passed off as data."""
    with pytest.raises(DecryptionFailed):
        KEY.open(b"\x01" + SEALED[1:], HOME)


def test_malformed_padding_under_a_valid_tag_fails() -> None:
    header = b"\x02" + KEY.key_id.bytes
    nonce = bytes(12)
    for padded in (b"", b"no marker", b"data\x80\x00\x01", bytes(32)):
        blob = header + nonce + KEY.aead.encrypt(nonce, padded, header + HOME.aad())
        with pytest.raises(DecryptionFailed, match="padding"):
            KEY.open(blob, HOME)


@given(st.binary(max_size=5000))
def test_padded_round_trip(plaintext: bytes) -> None:
    sealed = KEY.seal(plaintext, HOME)
    assert KEY.open(sealed, HOME) == plaintext
    assert len(sealed) == 1 + 16 + 12 + bucket_size(len(plaintext)) + 16
    assert _seal_v1(KEY, plaintext, HOME) != sealed
    assert KEY.open(_seal_v1(KEY, plaintext, HOME), HOME) == plaintext

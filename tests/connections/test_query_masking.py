"""mask on real SQLite, PostgreSQL and MariaDB: exactly the fields asked, only the subject's rows.

Bob (whom Alice referred), Cian and the employee must come out byte-for-byte unchanged; a second
run changes nothing; read_only fields and collections, primary keys and impossible strategies are
refused before anything is written; a crash inside the transaction leaves the database as it was.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from fideslang.models import Dataset
from sqlalchemy.ext.asyncio import AsyncEngine

from privacy_service.connections.graph import IDENTITY_KINDS, build_plan
from privacy_service.connections.masking import (
    HASH_LENGTH,
    MaskingRefused,
    MaskSpec,
    already_masked,
    masked_value,
)
from privacy_service.connections.query import mask
from tests.connections import fixture_db
from tests.connections.fixture_db import A_EMAIL, A_PHONE, ODD_NOTE, ODD_TABLE

SECRET = b"k" * 32
ALICE = {"email": [A_EMAIL], "phone": [A_PHONE], "external_id": ["1"]}
ERASED = "erased@invalid.example"
TARGETS: dict[str, dict[str, MaskSpec]] = {
    # user.name and user.demographic stay: the policy keeps them under the AML legal duty.
    "customers": {"email": MaskSpec("hash"), "phone": MaskSpec("null_rewrite")},
    "logins": {"ip_address": MaskSpec("random_string_rewrite"), "user_agent": MaskSpec("null_rewrite")},
    "newsletter_subscribers": {"email": MaskSpec("delete_row")},
    "service_tickets": {"contact_email": MaskSpec("string_rewrite", ERASED), "subject": MaskSpec("null_rewrite")},
    ODD_TABLE: {ODD_NOTE: MaskSpec("null_rewrite")},
}


def columns(table: str) -> list[str]:
    return [column.name for column in fixture_db.TABLES[table].columns]


def expected_after(before: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """The fixture with exactly Alice's targeted cells changed."""
    email_hash = hmac.new(SECRET, A_EMAIL.encode(), hashlib.sha256).hexdigest()
    after: dict[str, list[tuple[Any, ...]]] = {}
    for table, rows in before.items():
        names = columns(table)
        out = []
        for row in rows:
            record = dict(zip(names, row, strict=True))
            mine = record[fixture_db.primary_key_name(fixture_db.TABLES[table])] in fixture_db.A_KEYS[table]
            if mine and table == "newsletter_subscribers":
                continue
            if mine and table == "customers":
                record.update(email=email_hash, phone=None)
            if mine and table == "logins":
                record.update(user_agent=None)
            if mine and table == "service_tickets":
                record.update(contact_email=ERASED, subject=None)
            if mine and table == ODD_TABLE:
                record[ODD_NOTE] = None
            out.append(tuple(record.values()))
        after[table] = out
    return after


async def test_erasure_masks_exactly_alices_fields_and_nothing_of_anyone_else(
    fixture_engine: AsyncEngine, wallet_ops: Dataset
) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    async with fixture_engine.connect() as conn:
        before = await fixture_db.snapshot(conn)
    async with fixture_engine.begin() as conn:
        touched = await mask(conn, wallet_ops, plan, ALICE, TARGETS, secret=SECRET)
    assert touched == {
        "customers": 1,
        "logins": 12,
        "newsletter_subscribers": 1,
        "service_tickets": 2,
        ODD_TABLE: 1,
    }
    async with fixture_engine.connect() as conn:
        after = await fixture_db.snapshot(conn)
    expected = expected_after(before)
    # Random strings: 45 characters (the field's length), one per row, none the old address.
    ip_column = columns("logins").index("ip_address")
    randoms = {row[ip_column] for row in after["logins"] if row[0] in fixture_db.A_KEYS["logins"]}
    assert len(randoms) == 12
    assert all(len(value) == 45 and value.isalnum() and value.islower() for value in randoms)
    for table in expected:
        if table == "logins":
            strip = [row[:ip_column] + row[ip_column + 1 :] for row in after[table]]
            assert strip == [row[:ip_column] + row[ip_column + 1 :] for row in expected[table]]
            # Bob's logins keep their addresses byte for byte.
            assert [r for r in after[table] if r[0] > 100] == [r for r in before[table] if r[0] > 100]
        else:
            assert after[table] == expected[table], table

    # A second run finds Alice again (by her id) and changes nothing.
    async with fixture_engine.begin() as conn:
        again = await mask(conn, wallet_ops, plan, ALICE, TARGETS, secret=SECRET)
    assert again == dict.fromkeys(touched, 0)
    async with fixture_engine.connect() as conn:
        assert await fixture_db.snapshot(conn) == after


async def test_hashing_twice_is_idempotent_and_deleting_a_leaf(
    fixture_engine: AsyncEngine, wallet_ops: Dataset
) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    targets = {"addresses": {"street": MaskSpec("hash")}, "payment_cards": {"ccn": MaskSpec("delete_row")}}
    async with fixture_engine.begin() as conn:
        first = await mask(conn, wallet_ops, plan, {"email": [A_EMAIL]}, targets, secret=SECRET)
    async with fixture_engine.connect() as conn:
        once = await fixture_db.snapshot(conn)
    async with fixture_engine.begin() as conn:
        second = await mask(conn, wallet_ops, plan, {"email": [A_EMAIL]}, targets, secret=SECRET)
    async with fixture_engine.connect() as conn:
        twice = await fixture_db.snapshot(conn)
    assert first == {"addresses": 2, "payment_cards": 1}
    assert second == {"addresses": 0, "payment_cards": 0}
    assert once == twice
    streets = {row[0]: row[2] for row in twice["addresses"]}
    assert streets[20] == "9 Bob Road"
    assert len(streets[10]) == 64  # street declares length 120: the whole digest
    assert {row[0] for row in twice["payment_cards"]} == {600}


async def test_a_crash_inside_the_transaction_leaves_everything(
    fixture_engine: AsyncEngine, wallet_ops: Dataset
) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    async with fixture_engine.connect() as conn:
        before = await fixture_db.snapshot(conn)

    class Crash(Exception):
        pass

    async def mask_then_crash() -> None:
        async with fixture_engine.begin() as conn:
            await mask(conn, wallet_ops, plan, ALICE, TARGETS, secret=SECRET)
            raise Crash

    with pytest.raises(Crash):
        await mask_then_crash()
    async with fixture_engine.connect() as conn:
        assert await fixture_db.snapshot(conn) == before


@pytest.mark.parametrize(
    ("targets", "reason"),
    [
        ({"logins": {"logged_in_at": MaskSpec("null_rewrite")}}, "logins.logged_in_at is read_only"),
        ({"invoices": {"billing_name": MaskSpec("null_rewrite")}}, "invoices.billing_name is read_only"),
        ({"invoices": {"billing_name": MaskSpec("delete_row")}}, "invoices: a row holding read_only fields"),
        ({"customers": {"id": MaskSpec("null_rewrite")}}, "customers.id is the primary key"),
        ({"addresses": {"customer_id": MaskSpec("hash")}}, "hash writes a string, the field is integer"),
        ({"addresses": {"customer_id": MaskSpec("string_rewrite", "x")}}, "value is not a integer"),
        ({"customers": {"nope": MaskSpec("null_rewrite")}}, "a field the dataset does not have"),
        ({"nope": {"x": MaskSpec("null_rewrite")}}, "a collection the dataset does not have"),
    ],
)
async def test_refused_maskings_write_nothing(
    fixture_engine: AsyncEngine, wallet_ops: Dataset, targets: Any, reason: str
) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    async with fixture_engine.connect() as conn:
        before = await fixture_db.snapshot(conn)
    mixed = {"customers": {"phone": MaskSpec("null_rewrite")}, **targets}
    with pytest.raises(MaskingRefused, match=reason):
        async with fixture_engine.begin() as conn:
            await mask(conn, wallet_ops, plan, ALICE, mixed, secret=SECRET)
    async with fixture_engine.connect() as conn:
        assert await fixture_db.snapshot(conn) == before


async def test_hash_without_the_secret_is_refused(fixture_engine: AsyncEngine, wallet_ops: Dataset) -> None:
    plan = build_plan(wallet_ops, IDENTITY_KINDS)
    async with fixture_engine.begin() as conn:
        with pytest.raises(MaskingRefused, match="needs the masking secret"):
            await mask(conn, wallet_ops, plan, ALICE, {"customers": {"email": MaskSpec("hash")}})


# -- the strategies themselves ---------------------------------------------------------------------


def test_each_strategy_respects_type_and_length() -> None:
    def value(spec: MaskSpec, current: Any, data_type: str | None = "string", length: int | None = None) -> Any:
        return masked_value(spec, current, data_type=data_type, length=length, secret=SECRET, row_key="r1")

    assert value(MaskSpec("null_rewrite"), "x", "integer") is None
    assert value(MaskSpec("string_rewrite", "MASKED"), "x", length=4) == "MASK"
    assert value(MaskSpec("string_rewrite", "0"), 42, "integer") == 0
    assert value(MaskSpec("string_rewrite", "false"), True, "boolean") is False
    digest = hmac.new(SECRET, b"alice@example.com", hashlib.sha256).hexdigest()
    assert value(MaskSpec("hash"), "alice@example.com") == digest
    assert value(MaskSpec("hash"), "alice@example.com", None, 10) == digest[:10]
    assert value(MaskSpec("hash"), None) is None
    assert len(value(MaskSpec("hash"), "x", length=500)) == HASH_LENGTH
    first = value(MaskSpec("random_string_rewrite"), "198.51.100.1", length=12)
    assert len(first) == 12
    assert first == value(MaskSpec("random_string_rewrite"), "other", length=12)  # from the row, not the value
    assert first != masked_value(
        MaskSpec("random_string_rewrite"), "x", data_type=None, length=12, secret=SECRET, row_key="r2"
    )
    assert len(value(MaskSpec("random_string_rewrite"), "x")) == 32
    with pytest.raises(MaskingRefused):
        value(MaskSpec("delete_row"), "x")
    with pytest.raises(MaskingRefused):
        MaskSpec("string_rewrite")
    with pytest.raises(MaskingRefused, match="unknown masking strategy"):
        MaskSpec("nope")  # type: ignore[arg-type]
    with pytest.raises(MaskingRefused):
        value(MaskSpec("random_string_rewrite"), 1, "float")


def test_already_masked_recognises_a_hash_of_the_fields_length() -> None:
    spec = MaskSpec("hash")
    digest = hmac.new(SECRET, b"v", hashlib.sha256).hexdigest()
    assert already_masked(spec, digest, "whatever", length=None)
    assert already_masked(spec, digest[:20], "whatever", length=20)
    assert not already_masked(spec, digest[:20], "whatever", length=None)
    assert not already_masked(spec, "alice@example.com", digest, length=None)
    assert already_masked(MaskSpec("null_rewrite"), None, None, length=None)
    assert not already_masked(MaskSpec("null_rewrite"), "x", None, length=None)


async def test_a_composite_primary_key_is_masked_and_deleted_by_the_whole_key(
    fixture_engine: AsyncEngine, wallet_ops: Dataset
) -> None:
    """A link table keyed by (customer_id, currency): rows are written by their whole key only."""
    from sqlalchemy import Column, Integer, MetaData, String, Table

    metadata = MetaData()
    limits = Table(
        "card_limits",
        metadata,
        Column("customer_id", Integer, primary_key=True, autoincrement=False),
        Column("currency", String(3), primary_key=True),
        Column("note", String(64)),
        Column("contact", String(120)),
    )
    rows = [
        {"customer_id": 1, "currency": "EUR", "note": "alice eur", "contact": A_EMAIL},
        {"customer_id": 1, "currency": "GBP", "note": "alice gbp", "contact": A_EMAIL},
        {"customer_id": 2, "currency": "EUR", "note": "bob eur", "contact": "bob@example.com"},
        {"customer_id": 2, "currency": "GBP", "note": "bob gbp", "contact": "bob@example.com"},
    ]
    key_field = {"data_categories": ["system.operations"], "fides_meta": {"primary_key": True}}
    dataset = Dataset(
        fides_key="limits",
        collections=[
            {
                "name": "card_limits",
                "fields": [
                    {**key_field, "name": "currency"},
                    {
                        **key_field,
                        "name": "customer_id",
                        "fides_meta": {"primary_key": True, "identity": "user_id", "data_type": "integer"},
                    },
                    {"name": "note", "data_categories": ["user.behavior"], "fides_meta": {"data_type": "string"}},
                    {"name": "contact", "data_categories": ["user.contact.email"]},
                ],
            }
        ],
    )
    async with fixture_engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
        await conn.execute(limits.insert(), rows)
    try:
        plan = build_plan(dataset, IDENTITY_KINDS)
        hashed = {"card_limits": {"note": MaskSpec("hash"), "contact": MaskSpec("null_rewrite")}}
        async with fixture_engine.begin() as conn:
            assert await mask(conn, dataset, plan, {"external_id": ["1"]}, hashed, secret=SECRET) == {"card_limits": 2}
        async with fixture_engine.begin() as conn:
            assert await mask(conn, dataset, plan, {"external_id": ["1"]}, hashed, secret=SECRET) == {"card_limits": 0}
        async with fixture_engine.connect() as conn:
            state = [tuple(r) for r in await conn.execute(limits.select().order_by(limits.c.customer_id, "currency"))]
        digest = hmac.new(SECRET, b"alice eur", hashlib.sha256).hexdigest()
        assert state[0] == (1, "EUR", digest, None)
        assert state[2:] == [tuple(r.values()) for r in rows[2:]]
        deleted = {"card_limits": {"note": MaskSpec("delete_row")}}
        async with fixture_engine.begin() as conn:
            assert await mask(conn, dataset, plan, {"external_id": ["1"]}, deleted) == {"card_limits": 2}
        async with fixture_engine.connect() as conn:
            left = [tuple(r) for r in await conn.execute(limits.select().order_by(limits.c.customer_id, "currency"))]
        assert left == [tuple(r.values()) for r in rows[2:]]
    finally:
        async with fixture_engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)

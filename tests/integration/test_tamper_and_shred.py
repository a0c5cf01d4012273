"""Ciphertext is bound to its place, and erasure makes every copy of a subject's data unreadable.

(a) Tampering, done with raw SQL behind the service's back: a ciphertext moved to another subject,
    column or record, a flipped bit, or a swapped/damaged wrapped key fails to open. The API
    answers 500 ``/problems/data-integrity`` and shows neither subject's data; undoing the change
    makes the row readable again, so the failure is the tampering's doing.
(b) Crypto-shredding against a backup of the data taken before erasure (SQLite: a copy of the data
    file, which by design holds no key; PostgreSQL: every row of the ``public`` schema). After
    ``DELETE /v1/subjects/{id}`` the subject's data key is gone from the key store, no remaining
    key opens the backup's ciphertexts, and the backup restored next to the live key store yields
    a data-integrity error for the erased subject while other subjects still read normally.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx import AsyncClient
from sqlalchemy import Table, create_engine, delete, func, insert, select, update
from sqlmodel import SQLModel

from privacy_service.app import create_app
from privacy_service.crypto.fields import Binding, DataKey, DecryptionFailed, key_id_of
from privacy_service.crypto.keys import WrappedKey
from privacy_service.crypto.models import DataKeyRow
from privacy_service.crypto.service import KeyShredded, wrap_context
from privacy_service.db import KEYSTORE_SCHEMA
from privacy_service.runtime import Runtime, build_runtime
from privacy_service.subjects.models import Record, Subject

SUBJECTS = SQLModel.metadata.tables[Subject.__tablename__]
RECORDS = SQLModel.metadata.tables[Record.__tablename__]
DATA_KEYS = SQLModel.metadata.tables[f"{KEYSTORE_SCHEMA}.{DataKeyRow.__tablename__}"]

A_BODY = {
    "email": "ambrose.tamperfield@example.com",
    "phone": "+44 7400 111222",
    "profile": {"name": "Ambrose Tamperfield", "national_id": "AT556677A"},
}
B_BODY = {
    "email": "beatrix.shredmore@example.com",
    "phone": "+44 7400 333444",
    "profile": {"name": "Beatrix Shredmore", "national_id": "BS889900B"},
}
SECRETS = ["ambrose", "tamperfield", "AT556677A", "beatrix", "shredmore", "BS889900B", "7400111222", "7400333444"]


def _record(note: str) -> dict[str, Any]:
    return {
        "kind": "call_note",
        "category": "system.support_ticket",
        "occurred_at": "2026-03-01T12:00:00Z",
        "data": {"note": note},
    }


@dataclass
class Pair:
    a: uuid.UUID
    b: uuid.UUID
    a_records: list[uuid.UUID]
    b_records: list[uuid.UUID]


async def _create(
    client: AsyncClient, auth: dict[str, str], body: dict[str, Any], notes: list[str]
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    response = await client.post("/v1/subjects", json=body, headers=auth)
    assert response.status_code == 201, response.text
    subject_id = uuid.UUID(response.json()["id"])
    records = []
    for note in notes:
        created = await client.post(f"/v1/subjects/{subject_id}/records", json=_record(note), headers=auth)
        assert created.status_code == 201, created.text
        records.append(uuid.UUID(created.json()["id"]))
    return subject_id, records


@pytest.fixture
async def pair(client: AsyncClient, auth: dict[str, str]) -> Pair:
    a, a_records = await _create(client, auth, A_BODY, ["Ambrose note one", "Ambrose note two"])
    b, b_records = await _create(client, auth, B_BODY, ["Beatrix note one", "Beatrix note two"])
    return Pair(a, b, a_records, b_records)


async def _get(runtime: Runtime, table: Table, row_id: uuid.UUID, column: str) -> Any:
    async with runtime.db.engine.connect() as conn:
        return (await conn.execute(select(table.c[column]).where(table.c.id == row_id))).scalar_one()


async def _set(runtime: Runtime, table: Table, row_id: uuid.UUID, column: str, value: Any) -> None:
    async with runtime.db.engine.begin() as conn:
        result = await conn.execute(update(table).where(table.c.id == row_id).values({column: value}))
        assert result.rowcount == 1


async def _key_row_id(runtime: Runtime, subject_id: uuid.UUID) -> uuid.UUID:
    async with runtime.db.engine.connect() as conn:
        key_id: uuid.UUID = (
            await conn.execute(select(DATA_KEYS.c.id).where(DATA_KEYS.c.subject_id == subject_id))
        ).scalar_one()
    return key_id


def _flip_bit(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


# Each tamper: (table, row to change, column, function computing the new value) from the pair.
Tamper = Callable[[Runtime, Pair], Awaitable[tuple[Table, uuid.UUID, str, Any]]]


async def _profile_from_a(runtime: Runtime, p: Pair) -> tuple[Table, uuid.UUID, str, Any]:
    return SUBJECTS, p.b, "profile_ct", await _get(runtime, SUBJECTS, p.a, "profile_ct")


async def _email_from_a(runtime: Runtime, p: Pair) -> tuple[Table, uuid.UUID, str, Any]:
    return SUBJECTS, p.b, "email_ct", await _get(runtime, SUBJECTS, p.a, "email_ct")


async def _email_into_phone_column(runtime: Runtime, p: Pair) -> tuple[Table, uuid.UUID, str, Any]:
    # Same subject, same data key: only the AAD's field name tells the two apart.
    return SUBJECTS, p.b, "phone_ct", await _get(runtime, SUBJECTS, p.b, "email_ct")


async def _profile_bit_flip(runtime: Runtime, p: Pair) -> tuple[Table, uuid.UUID, str, Any]:
    blob = await _get(runtime, SUBJECTS, p.b, "profile_ct")
    return SUBJECTS, p.b, "profile_ct", _flip_bit(blob, len(blob) // 2)


async def _profile_tag_bit_flip(runtime: Runtime, p: Pair) -> tuple[Table, uuid.UUID, str, Any]:
    blob = await _get(runtime, SUBJECTS, p.b, "profile_ct")
    return SUBJECTS, p.b, "profile_ct", _flip_bit(blob, len(blob) - 1)


async def _wrapped_key_from_a(runtime: Runtime, p: Pair) -> tuple[Table, uuid.UUID, str, Any]:
    a_key = await _key_row_id(runtime, p.a)
    return DATA_KEYS, await _key_row_id(runtime, p.b), "wrapped", await _get(runtime, DATA_KEYS, a_key, "wrapped")


async def _wrapped_key_bit_flip(runtime: Runtime, p: Pair) -> tuple[Table, uuid.UUID, str, Any]:
    key_row = await _key_row_id(runtime, p.b)
    blob = await _get(runtime, DATA_KEYS, key_row, "wrapped")
    return DATA_KEYS, key_row, "wrapped", _flip_bit(blob, len(blob) - 5)


SUBJECT_TAMPERS = [
    pytest.param(_profile_from_a, id="profile-copied-from-other-subject"),
    pytest.param(_email_from_a, id="email-copied-from-other-subject"),
    pytest.param(_email_into_phone_column, id="email-copied-into-phone-column"),
    pytest.param(_profile_bit_flip, id="profile-one-bit-flipped"),
    pytest.param(_profile_tag_bit_flip, id="profile-tag-bit-flipped"),
    pytest.param(_wrapped_key_from_a, id="wrapped-key-copied-from-other-subject"),
    pytest.param(_wrapped_key_bit_flip, id="wrapped-key-one-bit-flipped"),
]


def _assert_integrity_problem(response: httpx.Response) -> None:
    assert response.status_code == 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == "/problems/data-integrity"
    assert problem["status"] == 500
    lowered = response.text.lower()
    leaked = [secret for secret in SECRETS if secret.lower() in lowered]
    assert leaked == [], response.text


@pytest.mark.parametrize("tamper", SUBJECT_TAMPERS)
async def test_tampered_subject_row_fails_closed(
    tamper: Tamper, pair: Pair, client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    before = await client.get(f"/v1/subjects/{pair.b}", headers=auth)
    assert before.status_code == 200
    assert before.json()["profile"]["name"] == "Beatrix Shredmore"

    table, row_id, column, forged = await tamper(runtime, pair)
    original = await _get(runtime, table, row_id, column)
    assert forged != original
    await _set(runtime, table, row_id, column, forged)

    _assert_integrity_problem(await client.get(f"/v1/subjects/{pair.b}", headers=auth))
    patched = await client.patch(f"/v1/subjects/{pair.b}", json={"profile": {"name": "Overwritten"}}, headers=auth)
    _assert_integrity_problem(patched)
    # The other subject is untouched and still reads.
    assert (await client.get(f"/v1/subjects/{pair.a}", headers=auth)).json()["profile"]["name"] == "Ambrose Tamperfield"

    await _set(runtime, table, row_id, column, original)
    after = await client.get(f"/v1/subjects/{pair.b}", headers=auth)
    assert after.status_code == 200
    assert after.json() == before.json()


@pytest.mark.parametrize("source", ["same-subject-other-record", "other-subject-record"])
async def test_record_ciphertext_moved_to_another_record_fails(
    source: str, pair: Pair, client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    target = pair.b_records[1]
    donor = pair.b_records[0] if source == "same-subject-other-record" else pair.a_records[0]
    url = f"/v1/subjects/{pair.b}/records/{target}"
    assert (await client.get(url, headers=auth)).json()["data"] == {"note": "Beatrix note two"}

    original = await _get(runtime, RECORDS, target, "data_ct")
    await _set(runtime, RECORDS, target, "data_ct", await _get(runtime, RECORDS, donor, "data_ct"))

    _assert_integrity_problem(await client.get(url, headers=auth))
    _assert_integrity_problem(await client.get(f"/v1/subjects/{pair.b}/records", headers=auth))
    # The donor record itself is unharmed.
    donor_subject = pair.b if source == "same-subject-other-record" else pair.a
    assert (await client.get(f"/v1/subjects/{donor_subject}/records/{donor}", headers=auth)).status_code == 200

    await _set(runtime, RECORDS, target, "data_ct", original)
    assert (await client.get(url, headers=auth)).json()["data"] == {"note": "Beatrix note two"}


# -- crypto-shredding vs a backup ---------------------------------------------------------------


@dataclass
class Backup:
    """The erased subject's rows as they were in the backup."""

    subject: dict[str, Any]
    records: list[dict[str, Any]]


def _public_tables() -> list[Table]:
    return [table for table in SQLModel.metadata.sorted_tables if table.schema is None]


def _sqlite_backup_rows(path: Path, subject_id: uuid.UUID) -> Backup:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            subject = conn.execute(select(SUBJECTS).where(SUBJECTS.c.id == subject_id)).one()._asdict()
            records = [
                row._asdict() for row in conn.execute(select(RECORDS).where(RECORDS.c.subject_id == subject_id)).all()
            ]
    finally:
        engine.dispose()
    return Backup(subject, records)


def _ciphertexts(backup: Backup) -> list[tuple[bytes, Binding]]:
    subject_id = backup.subject["id"]
    sealed = [
        (backup.subject[f"{name}_ct"], Binding("subjects", subject_id, None, name))
        for name in ("email", "phone", "profile")
    ]
    sealed += [(row["data_ct"], Binding("records", subject_id, row["id"], "data")) for row in backup.records]
    assert all(isinstance(blob, bytes) for blob, _ in sealed)
    return sealed


async def _remaining_keys(runtime: Runtime) -> list[DataKey]:
    async with runtime.db.engine.connect() as conn:
        rows = (await conn.execute(select(DATA_KEYS))).all()
    keys = []
    for row in rows:
        material = await runtime.provider.unwrap(
            WrappedKey(row.kek_version, row.wrapped), wrap_context(row.subject_id, row.id, row.purpose)
        )
        keys.append(DataKey(row.id, material))
    return keys


async def test_erasure_makes_a_prior_backup_unreadable(
    pair: Pair, client: AsyncClient, auth: dict[str, str], runtime: Runtime, tmp_path: Path
) -> None:
    victim, survivor = pair.b, pair.a

    # -- the backup, taken before erasure ------------------------------------------------------
    snapshot: dict[str, list[dict[str, Any]]] = {}
    backup_file = tmp_path / "backup-of-data-file.db"
    if runtime.settings.is_sqlite:
        assert runtime.settings.sqlite_path is not None
        shutil.copy(runtime.settings.sqlite_path, backup_file)
        backup = _sqlite_backup_rows(backup_file, victim)
        engine = create_engine(f"sqlite:///{backup_file}")
        with engine.connect() as conn:
            names = {row[0] for row in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
        engine.dispose()
        assert {"subjects", "records", "operators"} <= names
        assert "data_keys" not in names  # the data file alone never holds a data key
    else:
        async with runtime.db.engine.connect() as conn:
            for table in _public_tables():
                snapshot[table.name] = [row._asdict() for row in (await conn.execute(select(table))).all()]
        assert {"subjects", "records", "operators"} <= snapshot.keys()
        assert "data_keys" not in snapshot  # the key store is a separate schema, left out of backups
        backup = Backup(
            next(row for row in snapshot["subjects"] if row["id"] == victim),
            [row for row in snapshot["records"] if row["subject_id"] == victim],
        )
    sealed = _ciphertexts(backup)
    assert len(backup.records) == 2

    # Control: before erasure the backup's ciphertexts open with the subject's live key.
    async with runtime.db.transaction() as session:
        live_key = await runtime.keys.load_key(session, victim)
    opened = [live_key.open(blob, binding) for blob, binding in sealed]
    assert b"beatrix.shredmore@example.com" in opened
    assert any(b"Beatrix note two" in plain for plain in opened)
    del live_key

    # -- erasure --------------------------------------------------------------------------------
    # Everything, the data a legal duty would keep (her name) included: this test is about shredding.
    everything = f"/v1/subjects/{victim}/erase-override"
    justification = {"basis": "other", "reference": "TEST-shredding"}
    erased = await client.post(everything, json=justification, headers=auth)
    assert erased.status_code == 200, erased.text
    assert erased.json()["keys_destroyed"] == 1
    assert erased.json()["records_deleted"] == 2
    # Nothing left to override; erasing again reports the first erasure.
    assert (await client.post(everything, json=justification, headers=auth)).status_code == 409
    again = await client.delete(f"/v1/subjects/{victim}", headers=auth)
    assert again.status_code == 200
    assert again.json()["already_erased"] is True
    assert again.json()["keys_destroyed"] == 0
    assert again.json()["erased_at"] == erased.json()["erased_at"]
    assert (await client.get(f"/v1/subjects/{victim}", headers=auth)).status_code == 410
    for identifier in ({"email": "beatrix.shredmore@example.com"}, {"phone": "+447400333444"}):
        lookup = await client.post("/v1/subjects/lookup", json=identifier, headers=auth)
        assert lookup.json()["items"] == []
    still = await client.post("/v1/subjects/lookup", json={"email": "ambrose.tamperfield@example.com"}, headers=auth)
    assert [item["id"] for item in still.json()["items"]] == [str(survivor)]

    # -- the live key store no longer holds the subject's key -------------------------------------
    async with runtime.db.engine.connect() as conn:
        left = (
            await conn.execute(select(func.count()).select_from(DATA_KEYS).where(DATA_KEYS.c.subject_id == victim))
        ).scalar_one()
    assert left == 0
    async with runtime.db.transaction() as session:
        with pytest.raises(KeyShredded):
            await runtime.keys.load_key(session, victim)

    # -- no remaining key opens the backup's ciphertexts ------------------------------------------
    remaining = await _remaining_keys(runtime)
    assert [key.key_id for key in remaining] == [await _key_row_id(runtime, survivor)]
    for key in remaining:
        for blob, binding in sealed:
            with pytest.raises(DecryptionFailed):
                key.open(blob, binding)
            # Even passing the header's key-id check, the wrong key material fails authentication.
            with pytest.raises(DecryptionFailed):
                DataKey(key_id_of(blob), key.material).open(blob, binding)

    # -- the backup restored next to the live key store ------------------------------------------
    if runtime.settings.is_sqlite:
        restored = build_runtime(
            runtime.settings.model_copy(update={"database_url": f"sqlite+aiosqlite:///{backup_file}"})
        )
        assert restored.settings.resolved_keystore_path == runtime.settings.resolved_keystore_path
        transport = httpx.ASGITransport(app=create_app(runtime=restored))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://restored") as restored_client:
                await _check_restored(restored_client, auth, victim, survivor)
        finally:
            await restored.close()
    else:
        async with runtime.db.engine.begin() as conn:
            await conn.execute(delete(SUBJECTS).where(SUBJECTS.c.id == victim))
            await conn.execute(insert(SUBJECTS), [backup.subject])
            await conn.execute(insert(RECORDS), backup.records)
        await _check_restored(client, auth, victim, survivor)


async def _check_restored(client: AsyncClient, auth: dict[str, str], victim: uuid.UUID, survivor: uuid.UUID) -> None:
    """The restored data is there (the row and its index), but the erased subject cannot be read."""
    found = await client.post("/v1/subjects/lookup", json={"email": "beatrix.shredmore@example.com"}, headers=auth)
    assert [item["id"] for item in found.json()["items"]] == [str(victim)]
    _assert_integrity_problem(await client.get(f"/v1/subjects/{victim}", headers=auth))
    _assert_integrity_problem(await client.get(f"/v1/subjects/{victim}/records", headers=auth))
    readable = await client.get(f"/v1/subjects/{survivor}", headers=auth)
    assert readable.status_code == 200
    assert readable.json()["profile"]["name"] == "Ambrose Tamperfield"

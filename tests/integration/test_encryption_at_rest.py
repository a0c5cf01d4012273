"""The database holds no plaintext of a stored e-mail, phone, name, external id or record body.

SQLite: the raw bytes of the data file and of the key-store file (and any journal beside them).
PostgreSQL: every row of every table in the ``public`` and ``keystore`` schemas, both as the
server's text rendering of the row and with each column's raw value (bytea as bytes).
A control shows the same scan does find values that are stored in clear.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from httpx import AsyncClient
from sqlalchemy import text

from privacy_service.runtime import Runtime
from tests.conftest import make_operator_key

ALICE = {
    "email": " Quentin.Marchbanks-Zephyr@Example.COM ",
    "phone": "+44 7400 123456",
    "external_id": "cust-zephyr-880011",
    "language": "en",
    "profile": {
        "name": "Quentin Zephyrine Marchbanks",
        "date_of_birth": "1987-03-14",
        "national_id": "QZ881122X",
        "address": "17 Wisteria Lane, Little Whinging",
    },
}
WEI = {
    "email": "zhang.weiming.8831@example.cn",
    "phone": "+86 138 0013 8831",
    "language": "zh",
    "profile": {"name": "张伟明泽", "city": "杭州市西湖区"},
}
RECORD_DATA = {
    "note": "Customer Zephyrine reported her card ending 4417 stolen at Paddington",
    "iban": "GB33BUKB20201555555555",
}
RENAMED = "Quentina Zephyrine Marchbanks-Oldcastle"

# Every spelling that could reach the disk: as submitted, normalised, and the distinctive parts.
NEEDLES = [
    "Quentin.Marchbanks-Zephyr@Example.COM",
    "quentin.marchbanks-zephyr@example.com",
    "marchbanks-zephyr",
    "+44 7400 123456",
    "+447400123456",
    "7400123456",
    "cust-zephyr-880011",
    "Quentin Zephyrine Marchbanks",
    "Zephyrine",
    "QZ881122X",
    "Wisteria Lane",
    "1987-03-14",
    "zhang.weiming.8831",
    "+8613800138831",
    "13800138831",
    "张伟明泽",
    "杭州市西湖区",
    "Paddington",
    "GB33BUKB20201555555555",
    RENAMED,
    "Oldcastle",
]
CONTROL_NAME = "control-operator-Xanthippe-0042"


async def _postgres_dump(runtime: Runtime) -> bytes:
    """Every row of public.* and keystore.*: the row as text, then each column's raw value."""
    chunks: list[bytes] = []
    async with runtime.db.engine.connect() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT schemaname, tablename FROM pg_tables "
                    "WHERE schemaname IN ('public', 'keystore') ORDER BY 1, 2"
                )
            )
        ).all()
        assert {(s, t) for s, t in tables} >= {("public", "subjects"), ("public", "records"), ("keystore", "data_keys")}
        for schema, table in tables:
            name = f'"{schema}"."{table}"'
            for (row_text,) in (await conn.execute(text(f"SELECT t::text FROM {name} t"))).all():  # noqa: S608
                chunks.append(row_text.encode())
            for row in (await conn.execute(text(f"SELECT * FROM {name}"))).all():  # noqa: S608
                for value in row:
                    chunks.append(value if isinstance(value, bytes) else str(value).encode())
    return b"\n".join(chunks)


def _sqlite_files(runtime: Runtime) -> list[Path]:
    data = runtime.settings.sqlite_path
    keystore = runtime.settings.resolved_keystore_path
    assert data is not None
    assert data != keystore
    files = [data, keystore]
    for base in (data, keystore):
        for suffix in ("-wal", "-journal", "-shm"):
            extra = base.with_name(base.name + suffix)
            if extra.exists():
                files.append(extra)
    return files


async def _stored_bytes(runtime: Runtime) -> dict[str, bytes]:
    """What an attacker holding the database (not the keyring) can read, by place."""
    if runtime.settings.is_sqlite:
        return {str(path): path.read_bytes() for path in _sqlite_files(runtime)}
    return {"postgres": await _postgres_dump(runtime)}


def _found(stored: dict[str, bytes], needles: list[str]) -> list[tuple[str, str]]:
    hits = []
    for place, blob in stored.items():
        folded = blob.lower()
        for needle in needles:
            if needle.encode().lower() in folded:
                hits.append((place, needle))
    return hits


async def test_database_holds_no_plaintext_pii(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    alice = (await client.post("/v1/subjects", json=ALICE, headers=auth)).json()["id"]
    wei = (await client.post("/v1/subjects", json=WEI, headers=auth)).json()["id"]
    for subject_id in (alice, wei):
        created = await client.post(
            f"/v1/subjects/{subject_id}/records",
            json={
                "kind": "support_ticket",
                "category": "system.support_ticket",
                "occurred_at": "2026-02-03T09:30:00+01:00",
                "data": RECORD_DATA,
            },
            headers=auth,
        )
        assert created.status_code == 201, created.text
    patched = await client.patch(f"/v1/subjects/{alice}", json={"profile": {"name": RENAMED}}, headers=auth)
    assert patched.status_code == 200, patched.text
    # Lookups go through the blind index only, but exercise the paths that touch identifiers.
    found = await client.post("/v1/subjects/lookup", json={"phone": "+447400123456"}, headers=auth)
    assert [item["id"] for item in found.json()["items"]] == [alice]

    # The values really are stored: the API gives them back, decrypted.
    body = (await client.get(f"/v1/subjects/{alice}", headers=auth)).json()
    assert body["email"] == "quentin.marchbanks-zephyr@example.com"
    assert body["phone"] == "+447400123456"
    assert body["external_id"] == "cust-zephyr-880011"
    assert body["profile"]["name"] == RENAMED
    assert body["profile"]["national_id"] == "QZ881122X"
    assert (await client.get(f"/v1/subjects/{wei}", headers=auth)).json()["profile"]["name"] == "张伟明泽"
    records = (await client.get(f"/v1/subjects/{wei}/records", headers=auth)).json()["items"]
    assert records[0]["data"] == RECORD_DATA

    # Control, written last so the scan provably sees the latest committed writes: an operator
    # name is stored in clear (text column), its key's SHA-256 as raw bytes (binary column), and
    # each subject's id sits next to its wrapped data key in the key store.
    control_key = await make_operator_key(runtime, name=CONTROL_NAME)
    stored = await _stored_bytes(runtime)
    everything = b"".join(stored.values())
    assert CONTROL_NAME.encode() in everything
    assert hashlib.sha256(control_key.encode()).digest() in everything
    keystore_place = str(runtime.settings.resolved_keystore_path) if runtime.settings.is_sqlite else "postgres"
    for subject_id in (alice, wei):
        as_uuid = uuid.UUID(subject_id)
        assert as_uuid.hex.encode() in stored[keystore_place] or str(as_uuid).encode() in stored[keystore_place]
    # ... and the matcher that must find nothing below does match it, in any letter case.
    assert _found(stored, [CONTROL_NAME.upper()])

    assert _found(stored, NEEDLES) == []

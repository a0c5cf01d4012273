"""An attacker holding only the database reads ciphertext sizes: they must not give exact lengths.

Subjects are created through the API as an operator would; the attacker then reads the stored rows
directly (no key) and compares the sizes of the sealed e-mail, phone and profile columns.
"""

from __future__ import annotations

import uuid

from httpx import AsyncClient
from sqlalchemy import text

from privacy_service.runtime import Runtime

# Different lengths (e-mail 14 vs 30 bytes, phone 11 vs 13 digits, profile 13 vs 25 bytes of JSON),
# each pair inside one size bucket.
SHORT = {"email": "al@example.com", "phone": "+1 415 555 2671", "profile": {"name": "Al"}}
LONG = {
    "email": "alexandra.smithers@example.com",
    "phone": "+44 7911 123456",
    "profile": {"name": "Alexandra Smith"},
}


async def _sizes(runtime: Runtime, subject_id: str) -> dict[str, int]:
    async with runtime.db.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT email_ct, phone_ct, profile_ct FROM subjects WHERE id = :id"),
                {"id": uuid.UUID(subject_id) if not runtime.settings.is_sqlite else uuid.UUID(subject_id).hex},
            )
        ).one()
    return {"email": len(row[0]), "phone": len(row[1]), "profile": len(row[2])}


async def test_the_database_shows_size_buckets_not_lengths(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    ids = []
    for body in (SHORT, LONG):
        response = await client.post("/v1/subjects", json=body, headers=auth)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    short, long = [await _sizes(runtime, subject_id) for subject_id in ids]
    assert short == long
    # And both still read back exactly (the padding is removed on open).
    for subject_id, body in zip(ids, (SHORT, LONG), strict=True):
        read = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
        assert read["email"] == body["email"]
        assert read["profile"] == body["profile"]

"""KEK rotation while the API is serving, and resumption of an interrupted re-wrap.

Rotation adds a KEK version; ``rewrap_all`` then re-wraps every data key under it in small
committed batches while requests keep creating, reading and changing subjects. No request may
fail, every subject must still decrypt to what was last written, and once the re-wrap has caught
up no key is left on the old version: the old KEK can be retired and everything still reads.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from httpx import AsyncClient
from sqlmodel import col, select

from privacy_service.crypto.jobs import rewrap_all
from privacy_service.crypto.models import DataKeyRow
from privacy_service.crypto.service import key_counts_by_kek
from privacy_service.runtime import Runtime

SEED = 24
WORKERS = 4
MIN_ROUNDS = 3
BATCH = 3


def _subject(tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request body and what reading it back must show."""
    email = f"rotation-{tag}@example.com"
    name = f"Rotation Subject {tag}"
    return {"email": email, "profile": {"name": name}}, {"email": email, "name": name}


@dataclass
class Traffic:
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    completed: int = 0
    started_during_rewrap: int = 0
    rewrapping: bool = False

    def start(self) -> None:
        if self.rewrapping:
            self.started_during_rewrap += 1

    def note(self, what: str, response: httpx.Response, want: int) -> bool:
        self.completed += 1
        if response.status_code != want:
            self.failures.append(f"{what}: {response.status_code} {response.text[:200]}")
            return False
        return True

    def check(self, what: str, body: dict[str, Any], subject_id: str) -> None:
        want = self.expected[subject_id]
        got = {"email": body.get("email"), "name": body.get("profile", {}).get("name")}
        if got != want:
            self.failures.append(f"{what}: read {got}, expected {want}")


async def _create(client: AsyncClient, auth: dict[str, str], traffic: Traffic, tag: str) -> str | None:
    body, want = _subject(tag)
    traffic.start()
    response = await client.post("/v1/subjects", json=body, headers=auth)
    if not traffic.note(f"create {tag}", response, 201):
        return None
    subject_id: str = response.json()["id"]
    traffic.expected[subject_id] = want
    return subject_id


async def _read(client: AsyncClient, auth: dict[str, str], traffic: Traffic, subject_id: str) -> None:
    traffic.start()
    response = await client.get(f"/v1/subjects/{subject_id}", headers=auth)
    if traffic.note(f"read {subject_id}", response, 200):
        traffic.check(f"read {subject_id}", response.json(), subject_id)


async def _worker(
    client: AsyncClient, auth: dict[str, str], traffic: Traffic, seeded: list[str], done: asyncio.Event, n: int
) -> None:
    round_ = 0
    while not done.is_set() or round_ < MIN_ROUNDS:
        subject_id = await _create(client, auth, traffic, f"w{n}-r{round_}")
        if subject_id is not None:
            await _read(client, auth, traffic, subject_id)
            renamed = f"Renamed w{n} r{round_}"
            traffic.start()
            patched = await client.patch(
                f"/v1/subjects/{subject_id}", json={"profile": {"name": renamed}}, headers=auth
            )
            if traffic.note(f"patch {subject_id}", patched, 200):
                traffic.expected[subject_id]["name"] = renamed
                traffic.check(f"patch {subject_id}", patched.json(), subject_id)
        # Subjects created before the rotation are the ones being re-wrapped right now.
        await _read(client, auth, traffic, seeded[(n * 7 + round_) % len(seeded)])
        round_ += 1


@dataclass(frozen=True)
class KeyState:
    kek_version: int
    wrapped: bytes
    rewrapped_at: datetime | None


async def _key_rows(runtime: Runtime) -> dict[uuid.UUID, KeyState]:
    async with runtime.db.transaction() as session:
        rows = (await session.exec(select(DataKeyRow).order_by(col(DataKeyRow.id)))).all()
    return {row.id: KeyState(row.kek_version, row.wrapped, row.rewrapped_at) for row in rows}


async def _counts(runtime: Runtime) -> dict[int, int]:
    async with runtime.db.transaction() as session:
        return await key_counts_by_kek(session)


async def _assert_all_decrypt(client: AsyncClient, auth: dict[str, str], expected: dict[str, dict[str, Any]]) -> None:
    for subject_id, want in expected.items():
        response = await client.get(f"/v1/subjects/{subject_id}", headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["email"] == want["email"]
        assert response.json()["profile"]["name"] == want["name"]


async def test_rotation_while_serving(client: AsyncClient, auth: dict[str, str], runtime: Runtime) -> None:
    provider = runtime.provider
    old_version = await provider.current_version()
    traffic = Traffic()
    seeded = [await _create(client, auth, traffic, f"seed{i}") for i in range(SEED)]
    assert traffic.failures == []
    seeded_ids = [s for s in seeded if s is not None]
    assert await _counts(runtime) == {old_version: SEED}
    seeded_keys = set(await _key_rows(runtime))

    done = asyncio.Event()
    progress: list[int] = []  # requests completed when each re-wrap batch committed
    outcome: dict[str, Any] = {}

    async def rotate() -> None:
        try:
            while traffic.completed < WORKERS:  # rotate under load, not before it starts
                await asyncio.sleep(0.001)
            outcome["version"] = await provider.rotate()
            traffic.rewrapping = True
            outcome["result"] = await rewrap_all(
                runtime.db,
                runtime.provider,
                runtime.clock,
                batch_size=BATCH,
                on_batch=lambda _n: progress.append(traffic.completed),
            )
        finally:
            traffic.rewrapping = False
            done.set()

    await asyncio.wait_for(
        asyncio.gather(rotate(), *(_worker(client, auth, traffic, seeded_ids, done, n) for n in range(WORKERS))),
        timeout=60,
    )

    new_version = outcome["version"]
    result = outcome["result"]
    assert new_version == old_version + 1
    assert traffic.failures == []
    assert result.target_version == new_version
    assert result.rewrapped >= SEED
    assert result.batches >= SEED // BATCH
    # Requests really were in flight during the re-wrap (and all succeeded, above). On PostgreSQL
    # they also complete between its batches; SQLite serialises writers, so there they may wait.
    assert traffic.started_during_rewrap > 0
    if not runtime.settings.is_sqlite:
        assert progress[-1] > progress[0]
    assert len(traffic.expected) >= SEED + WORKERS * MIN_ROUNDS

    # Keys created (with the old KEK) in transactions that committed after the re-wrap passed them
    # are picked up by a final run; then nothing is left on the old version.
    await rewrap_all(runtime.db, runtime.provider, runtime.clock, batch_size=BATCH)
    counts = await _counts(runtime)
    assert old_version not in counts
    assert counts == {new_version: len(traffic.expected)}
    rows = await _key_rows(runtime)
    assert seeded_keys <= set(rows)
    assert all(rows[key].rewrapped_at is not None for key in seeded_keys)

    # Retiring the old KEK proves no data still depends on it.
    await provider.retire(old_version)
    assert [info.version for info in await provider.versions()] == [new_version]
    await _assert_all_decrypt(client, auth, traffic.expected)


class Interrupted(Exception):
    """Stands in for a crash of the re-wrap job between batches."""


def _stop_after_first_batch(_n: int) -> None:
    raise Interrupted


async def test_interrupted_rewrap_resumes_and_rewraps_each_key_once(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    traffic = Traffic()
    for i in range(10):
        await _create(client, auth, traffic, f"resume{i}")
    assert traffic.failures == []
    provider = runtime.provider
    old_version = await provider.current_version()
    original = await _key_rows(runtime)
    new_version = await provider.rotate()

    with pytest.raises(Interrupted):
        await rewrap_all(runtime.db, provider, runtime.clock, batch_size=4, on_batch=_stop_after_first_batch)

    # The first batch committed; the rest is untouched; reads work with the versions mixed.
    assert await _counts(runtime) == {old_version: 6, new_version: 4}
    after_crash = await _key_rows(runtime)
    first_batch = {key for key, row in after_crash.items() if row.kek_version == new_version}
    assert first_batch == set(sorted(original)[:4])  # the batch order is by key id
    for key, row in after_crash.items():
        if key in first_batch:
            assert row.rewrapped_at is not None
            assert row.wrapped != original[key].wrapped
        else:
            assert row.rewrapped_at is None
            assert row.wrapped == original[key].wrapped
    await _assert_all_decrypt(client, auth, traffic.expected)

    resumed = await rewrap_all(runtime.db, provider, runtime.clock, batch_size=4)
    assert (resumed.target_version, resumed.rewrapped, resumed.batches) == (new_version, 6, 2)
    final = await _key_rows(runtime)
    assert await _counts(runtime) == {new_version: 10}
    for key, row in final.items():
        assert row.kek_version == new_version
        assert row.rewrapped_at is not None
        if key in first_batch:  # not re-wrapped a second time by the resumed run
            assert row.wrapped == after_crash[key].wrapped
            assert row.rewrapped_at == after_crash[key].rewrapped_at
        else:
            assert row.wrapped != original[key].wrapped

    again = await rewrap_all(runtime.db, provider, runtime.clock, batch_size=4)
    assert (again.rewrapped, again.batches) == (0, 0)
    assert await _key_rows(runtime) == final

    await provider.retire(old_version)
    await _assert_all_decrypt(client, auth, traffic.expected)

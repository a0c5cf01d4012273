"""Helpers shared by the data-subject request tests: subjects, codes read from real mail, row snapshots."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from httpx import AsyncClient, Response
from sqlalchemy import text

from privacy_service.config import Settings
from privacy_service.notify.jobs import deliver_pending
from privacy_service.runtime import Runtime
from tests.conftest import MailSink, _empty_postgres

# Generous limits: these tests submit many requests from one client address and one identity.
OPEN_LIMITS = {
    "intake": "100000/min burst 100000",
    "intake_identity": "100000/min burst 100000",
    "verify": "100000/min burst 100000",
    "resend": "100000/min burst 100000",
    "download": "100000/min burst 100000",
}
TRANSACTION = "user.financial.transaction"
BEHAVIOUR = "user.behavior"
_FOLD = re.compile(r"[\s_\-\\/.@+]")


async def fresh_settings(make_settings: Any, backend: str, **overrides: Any) -> Settings:
    """Like the ``settings`` fixture, with overrides (the rate limits above unless given)."""
    result: Settings = make_settings(**{"rate_limits": OPEN_LIMITS, **overrides})
    if backend == "postgres":
        await _empty_postgres(result.database_url)
    return result


def fold(value: str) -> str:
    """A marker in any spelling: separators dropped, case folded (JSON escapes included)."""
    return _FOLD.sub("", value.lower())


def assert_no_leak(response: Response, *secrets: str) -> None:
    """None of ``secrets`` appears in the body or any header, in any case or separator spelling."""
    haystack = fold(response.text + " " + " ".join(f"{k}: {v}" for k, v in response.headers.items()))
    for secret in secrets:
        assert fold(secret) not in haystack, f"{secret!r} leaked into the response"


def assert_problem(response: Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}", body
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


async def deliver(runtime: Runtime) -> None:
    await deliver_pending(runtime.db, runtime.keys, runtime.mailer, runtime.clock)


def code_from(mail: MailSink, address: str) -> str:
    messages = mail.to(address)
    assert messages, f"no mail reached {address}"
    match = re.search(r"\b(\d{6})\b", messages[-1].get_content())
    assert match, messages[-1].get_content()
    return match.group(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_subject(
    client: AsyncClient,
    auth: Mapping[str, str],
    *,
    email: str | None = None,
    phone: str | None = None,
    profile: Mapping[str, Any] | None = None,
    records: Mapping[str, int] | None = None,
    closed_at: str | None = None,
) -> str:
    body: dict[str, Any] = {"profile": dict(profile or {})}
    if email is not None:
        body["email"] = email
    if phone is not None:
        body["phone"] = phone
    created = await client.post("/v1/subjects", json=body, headers=dict(auth))
    assert created.status_code == 201, created.text
    subject_id: str = created.json()["id"]
    for category, count in (records or {}).items():
        for i in range(count):
            added = await client.post(
                f"/v1/subjects/{subject_id}/records",
                json={
                    "kind": "transaction" if category == TRANSACTION else "note",
                    "category": category,
                    "occurred_at": "2026-01-05T09:00:00Z",
                    "data": {"reference": f"{category}-{i}", "amount": i},
                },
                headers=dict(auth),
            )
            assert added.status_code == 201, added.text
    if closed_at is not None:
        event = await client.post(
            f"/v1/subjects/{subject_id}/events", json={"type": "account_closed", "at": closed_at}, headers=dict(auth)
        )
        assert event.status_code == 202, event.text
    return subject_id


async def submit(client: AsyncClient, identity: Mapping[str, str], type_: str, **extra: Any) -> str:
    response = await client.post("/v1/requests", json={"type": type_, "identity": dict(identity), **extra})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "awaiting_verification"
    request_id: str = response.json()["id"]
    return request_id


async def submit_and_verify(
    client: AsyncClient,
    runtime: Runtime,
    mail: MailSink,
    email: str,
    type_: str,
    *,
    identity: Mapping[str, str] | None = None,
    **extra: Any,
) -> tuple[str, dict[str, Any]]:
    """Submit, read the code from the mail that reached ``email`` over SMTP, verify."""
    request_id = await submit(client, identity or {"email": email}, type_, **extra)
    await deliver(runtime)
    verified = await client.post(f"/v1/requests/{request_id}/verify", json={"code": code_from(mail, email)})
    assert verified.status_code == 200, verified.text
    body: dict[str, Any] = verified.json()
    return request_id, body


async def rows(runtime: Runtime, table: str, order: str = "id") -> list[dict[str, Any]]:
    async with runtime.db.engine.connect() as conn:
        result = await conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))  # noqa: S608 - fixed names
        return [dict(row._mapping) for row in result]


async def snapshot(runtime: Runtime) -> dict[str, list[dict[str, Any]]]:
    """Everything a request can touch: the requests, their transitions, queued mail, keys, vault rows."""
    return {
        "dsr_requests": await rows(runtime, "dsr_requests"),
        "dsr_transitions": await rows(runtime, "dsr_transitions"),
        "outbox_messages": await rows(runtime, "outbox_messages"),
        "data_keys": await rows(runtime, "keystore.data_keys"),
        "subjects": await rows(runtime, "subjects"),
        "records": await rows(runtime, "records"),
    }


def assert_unchanged(
    before: Mapping[str, list[dict[str, Any]]],
    after: Mapping[str, list[dict[str, Any]]],
    allowed: frozenset[str] = frozenset(),
) -> None:
    """Equal, except for the ``dsr_requests`` columns in ``allowed`` (a recorded failed attempt)."""
    for table in before:
        if table == "dsr_requests" and allowed:
            strip = [{k: v for k, v in row.items() if k not in allowed} for row in before[table]]
            assert strip == [{k: v for k, v in row.items() if k not in allowed} for row in after[table]], table
        else:
            assert before[table] == after[table], f"{table} changed"


def utc(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)

"""Helpers for the breach tests: incident bodies, subjects in bulk, outbox delivery until empty."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from httpx import AsyncClient

from privacy_service.audit.service import Actor
from privacy_service.config import Settings
from privacy_service.notify.jobs import deliver_pending
from privacy_service.notify.mailer import Mailer
from privacy_service.runtime import Runtime, build_runtime
from privacy_service.subjects.schemas import SubjectCreate
from privacy_service.subjects.service import SubjectService

BREACH_TEAM = "breach-team@wallet.example"


def incident(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Support mailbox forwarded to an outside address",
        "description": "A mailbox rule forwarded support tickets to an external address for two days.",
        "nature": ["confidentiality"],
        "categories": ["user.name", "user.contact.email"],
        "affected": {"estimated_count": 40},
        "malicious": True,
        "exfiltration_known": True,
        "mitigation": "The rule was removed and the mailbox password reset.",
        "consequences": "Phishing e-mails that quote real support conversations.",
        "advice": "Ignore messages asking for your password; we never ask for it.",
    }
    body.update(overrides)
    return body


async def create(client: AsyncClient, auth: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = await client.post("/v1/breaches", json=incident(**overrides), headers=auth)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def assess(client: AsyncClient, auth: dict[str, str], breach_id: str, **body: Any) -> dict[str, Any]:
    body.setdefault("ease_of_identification", "maximum")
    response = await client.post(f"/v1/breaches/{breach_id}/assessment", json=body, headers=auth)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def make_subjects(
    runtime: Runtime, count: int, *, domain: str = "example.com", language: str = "en"
) -> list[uuid.UUID]:
    """Real encrypted subjects, created through the vault's own service (one transaction per 100)."""
    ids: list[uuid.UUID] = []
    for start in range(0, count, 100):
        async with runtime.db.transaction() as session:
            service = SubjectService(session, runtime.keys, runtime.policy, runtime.clock, Actor.system("test"))
            for n in range(start, min(count, start + 100)):
                body = SubjectCreate(
                    email=f"person{n}@{domain}",
                    language=language,
                    profile={"name": f"Person {n}"},  # type: ignore[arg-type]
                )
                ids.append(await service.create(body))
    return ids


async def deliver_all(runtime: Runtime, mailer: Mailer | None = None, clock: Any = None) -> int:
    sent = 0
    while True:
        result = await deliver_pending(
            runtime.db, runtime.keys, mailer or runtime.mailer, clock or runtime.clock, batch=100
        )
        sent += result.sent
        if not (result.sent or result.retried or result.dead):
            return sent


@asynccontextmanager
async def runtime_for(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = build_runtime(settings)
    try:
        yield runtime
    finally:
        await runtime.close()

"""The subject's status read (GET /v1/requests/{id} with the request's token): the answers of the token
check (404, 403, 410) and the view are what they were when the row was read twice, and the read is one
query (issue 19: the row and its history in one statement, the token checked on that row).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from httpx import AsyncClient
from sqlalchemy import event, update
from sqlmodel import col

from privacy_service.audit.service import Actor
from privacy_service.config import Settings
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.dsr.service import DsrService
from privacy_service.runtime import Runtime
from tests.api.dsr_support import assert_problem, bearer, fresh_settings, submit_and_verify
from tests.conftest import MailSink


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend)


async def test_the_subjects_status_read_is_one_query_and_shows_the_history(
    client: AsyncClient, runtime: Runtime, mail: MailSink
) -> None:
    request_id, verified = await submit_and_verify(client, runtime, mail, "status.one@example.com", "access")
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH", "INSERT", "UPDATE", "DELETE")):
            statements.append(statement)

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", record)
    try:
        response = await client.get(f"/v1/requests/{request_id}", headers=bearer(verified["token"]))
    finally:
        event.remove(runtime.db.engine.sync_engine, "before_cursor_execute", record)
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["id"] == request_id
    assert [step["status"] for step in view["history"]][:3] == ["received", "awaiting_verification", "verified"]
    assert view["status"] == verified["status"] or view["status"] in ("processing", "completed")
    assert "systems" not in view or view["systems"] is None  # sent to no downstream system
    assert len(statements) == 1, statements


async def test_the_token_check_answers_as_before(client: AsyncClient, runtime: Runtime, mail: MailSink) -> None:
    own_id, own = await submit_and_verify(client, runtime, mail, "status.own@example.com", "access")
    other_id, other = await submit_and_verify(client, runtime, mail, "status.other@example.com", "access")
    # A request id nobody filed: 404, whatever the token.
    assert_problem(await client.get(f"/v1/requests/{uuid.uuid4()}", headers=bearer(own["token"])), 404, "not-found")
    # Another request's token: 403, and nothing of the request shown.
    refused = await client.get(f"/v1/requests/{own_id}", headers=bearer(other["token"]))
    assert_problem(refused, 403, "forbidden")
    assert "history" not in refused.json()
    # The request's own token once expired: 410.
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            update(PrivacyRequest)
            .where(col(PrivacyRequest.id) == uuid.UUID(own_id))
            .values(token_expires_at=runtime.clock.now() - timedelta(seconds=1))
        )
    assert_problem(await client.get(f"/v1/requests/{own_id}", headers=bearer(own["token"])), 410, "gone")
    # The other request still reads with its own token.
    assert (await client.get(f"/v1/requests/{other_id}", headers=bearer(other["token"]))).status_code == 200


async def test_the_subjects_view_is_the_one_the_service_shapes(
    client: AsyncClient, runtime: Runtime, mail: MailSink, auth: dict[str, str]
) -> None:
    """The read without a session (PostgreSQL, the request's own token, nothing more to read) and the
    session path (a decision to open; SQLite) answer what ``DsrService.view`` answers for the subject."""
    plain_id, plain = await submit_and_verify(client, runtime, mail, "status.plain@example.com", "access")
    denied_id, denied = await submit_and_verify(client, runtime, mail, "status.denied@example.com", "erase")
    reason = "The same request was answered last week."
    assert (await client.post(f"/v1/requests/{denied_id}/deny", json={"reason": reason}, headers=auth)).is_success
    for request_id, token in ((plain_id, plain["token"]), (denied_id, denied["token"])):
        response = await client.get(f"/v1/requests/{request_id}", headers=bearer(token))
        assert response.status_code == 200, response.text
        async with runtime.db.transaction() as session:
            service = DsrService.for_runtime(runtime, session, Actor("subject", "anonymous"))
            expected = msgspec.json.decode(msgspec.json.encode(await service.view(uuid.UUID(request_id))))
        assert response.json() == expected
    assert response.json()["decision"] == reason

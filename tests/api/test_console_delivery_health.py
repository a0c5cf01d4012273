# ruff: noqa: F811 - the shared fixtures (tests.console_support) are imported by name and taken as parameters
"""The delivery figures of the systems pages and the dashboard at scale (issue 17 review): the live states
(waiting, retrying, gave up) are counted whatever their age; delivered ones and their "failed" answers over
the last 7 days only, through ``(status, delivered_at)``, so a view no longer counts every delivery ever
made; the pages say so. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import inspect
from sqlmodel import select

from privacy_service.config import Settings
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.runtime import Runtime
from privacy_service.systems.models import Delivery
from privacy_service.web.console.dashboard import delivery_panel
from privacy_service.web.console.systems_health import DeliveryHealth, delivery_health
from tests.conftest import make_operator_key, sql_statements
from tests.console_support import (  # noqa: F401 - fixtures, used by name
    app,
    auth,
    browser,
    client,
    console_settings,
    runtime,
    setup,
    signed_in,
)
from tests.integration.systems_support import register

NOWHERE = "http://127.0.0.1:9/unused"  # registered only: nothing is sent in these tests


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await console_settings(make_settings, backend, systems_allow_private_networks=True)


def _delivery(request_id: uuid.UUID, system_id: uuid.UUID, status: str, created: datetime, **extra: object) -> Delivery:
    return Delivery(
        id=uuid.uuid4(),
        request_id=request_id,
        system_id=system_id,
        required=True,
        status=status,
        next_attempt_at=created,
        created_at=created,
        answer_due_at=created + timedelta(days=30),
        **extra,
    )


async def _history(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> tuple[uuid.UUID, datetime, datetime]:
    """One system's deliveries of every kind, old and recent: the system's id, the last delivered time and
    the oldest queued one's."""
    system = uuid.UUID((await register(client, auth, NOWHERE))["system"]["id"])
    intake = await client.post(
        "/v1/requests", json={"type": "access", "identity": {"email": "health@example.com"}, "regime": "gdpr"}
    )
    assert intake.status_code == 202, intake.text
    now = runtime.clock.now()
    recent = now - timedelta(days=1)
    async with runtime.db.transaction() as session:
        request_id = (await session.exec(select(PrivacyRequest.id))).one()
        long_ago = now - timedelta(days=40)
        session.add_all(
            [
                # Delivered long ago, answered failed: history, outside the window.
                _delivery(
                    request_id, system, "delivered", long_ago, delivered_at=now - timedelta(days=10), answer="failed"
                ),
                _delivery(request_id, system, "delivered", long_ago, delivered_at=now - timedelta(days=8)),
                # Delivered yesterday, answered failed: counted.
                _delivery(
                    request_id, system, "delivered", now - timedelta(days=2), delivered_at=recent, answer="failed"
                ),
                # Live, however old: gave up a month ago, retrying since 20 days.
                _delivery(request_id, system, "dead", now - timedelta(days=30), attempts=8),
                _delivery(request_id, system, "pending", now - timedelta(days=20), attempts=2),
                _delivery(request_id, system, "cancelled", long_ago),
            ]
        )
    return system, recent, now - timedelta(days=20)


async def test_live_states_are_counted_whole_and_deliveries_over_the_last_week(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    system, recent, oldest = await _history(client, auth, runtime)
    now = runtime.clock.now()
    async with runtime.db.transaction() as session:
        with sql_statements(runtime) as sent:
            health = await delivery_health(session, None, now)
            one = await delivery_health(session, system, now)
            panel = await delivery_panel(session, now)
    expected = DeliveryHealth(
        queued=1,
        retrying=1,
        delivered=1,
        dead=1,
        failed_answers=1,
        oldest_queued_at=oldest,
        last_delivered_at=recent,
    )
    assert health == {system: expected}
    assert one == {system: expected}
    assert panel.webhooks == {"pending": 1, "sending": 0, "delivered_recent": 1, "dead": 1}
    # No statement reads the deliveries without a condition on their status (the indexed column).
    reads = [s for s in sent if "FROM system_deliveries" in s]
    assert reads
    assert all("system_deliveries.status IN" in s or "system_deliveries.status =" in s for s in reads), reads
    assert all("delivered_at >=" in s for s in reads if "status =" in s and "IN" not in s.split("WHERE", 1)[1])


async def test_the_recent_deliveries_have_their_index(runtime: Runtime) -> None:
    async with runtime.db.engine.connect() as conn:
        indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("system_deliveries"))
    found = {index["name"]: index["column_names"] for index in indexes}
    assert found["ix_system_deliveries_status_delivered"] == ["status", "delivered_at"]
    assert found["ix_system_deliveries_status_next"] == ["status", "next_attempt_at"]


async def test_the_pages_say_the_delivered_figures_cover_the_last_week(
    client: httpx.AsyncClient, auth: dict[str, str], app: Litestar, runtime: Runtime
) -> None:
    system, _, _ = await _history(client, auth, runtime)
    async with browser(app) as operator:
        await signed_in(operator, await make_operator_key(runtime, frozenset({"systems:manage"})))
        page = (await operator.get(f"/console/systems/{system}")).text
        assert "Delivered in the last 7 days" in page
        assert re.search(r'data-figure="delivered">1<', page)
        assert re.search(r'data-figure="failed">1<', page)
        assert re.search(r'data-figure="dead">1<', page)
        assert "A system&#39;s delivery log lists every delivery." in page
        dashboard = (await operator.get("/console")).text
        assert re.search(r"Delivered in the last 7 days</th><td>1</td>", dashboard)
        assert "最近 7 天已投递" in (await operator.get("/console?lang=zh")).text

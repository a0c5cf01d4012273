# ruff: noqa: F811 - the shared fixtures (tests.console_support) are imported by name and taken as parameters
"""The console's systems pages (issue 17, item 8): systems with their delivery health, a system's
delivery log, retrying a dead delivery through the API's service call (audited alike), and the abuse
cases: no scope, no CSRF, a delivery that is not dead, bad filters; never a signing key or a URL."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import text
from sqlmodel import select

from privacy_service.config import Settings
from privacy_service.connections.tasks import ConnectionTask
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.runtime import Runtime
from tests.api.dsr_support import submit_and_verify
from tests.conftest import MailSink, make_operator_key
from tests.console_support import (  # noqa: F401 - fixtures, used by name
    app,
    browser,
    console_settings,
    csrf_token,
    runtime,
    setup,
    signed_in,
)
from tests.integration.systems_support import CUSTOMER_EMAIL, OffsetClock, deliver, make_customer, register

SYSTEMS = frozenset({"systems:manage"})
NOWHERE = "http://127.0.0.1:9/unused"  # nothing listens: every attempt fails


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    # The receiver is on 127.0.0.1 (a development set-up, as in tests/integration/test_systems_delivery.py).
    return await console_settings(make_settings, backend, systems_allow_private_networks=True)


async def _rows(runtime: Runtime, sql: str) -> list[dict[str, Any]]:
    async with runtime.db.engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(text(sql))]


async def _deliveries(runtime: Runtime) -> list[dict[str, Any]]:
    rows = await _rows(runtime, "SELECT id, status, attempts, system_id FROM system_deliveries ORDER BY created_at")
    for row in rows:  # SQLite returns a UUID as 32 hex digits
        row["id"], row["system_id"] = str(uuid.UUID(str(row["id"]))), str(uuid.UUID(str(row["system_id"])))
    return rows


async def _retries_audited(runtime: Runtime) -> list[dict[str, Any]]:
    return await _rows(
        runtime, "SELECT actor_type, actor_id, detail FROM audit_events WHERE action = 'systems.delivery.retried'"
    )


async def _a_dead_delivery(app: Litestar, runtime: Runtime, mail: MailSink) -> tuple[dict[str, Any], str]:
    """A registered system whose one delivery gave up (its receiver never answers); the API's key."""
    key = await make_operator_key(runtime)
    auth = {"Authorization": f"Bearer {key}"}
    async with browser(app) as api:
        system = await register(api, auth, NOWHERE, name="billing")
        await register(api, auth, "https://crm.example.com/hooks", name="crm", types=("erase",), required=False)
        await make_customer(api, auth)
        await submit_and_verify(api, runtime, mail, CUSTOMER_EMAIL, "access")
    result = await deliver(runtime, max_attempts=1)
    assert result.dead == 1
    [row] = await _deliveries(runtime)
    assert row["status"] == "dead"
    return system, key


async def test_systems_with_their_health_in_english_and_chinese(
    app: Litestar, runtime: Runtime, mail: MailSink
) -> None:
    system, _ = await _a_dead_delivery(app, runtime, mail)
    async with runtime.db.transaction() as session:  # a connected database's task waiting for an operator
        request_id = (await session.exec(select(PrivacyRequest.id))).first()
        assert request_id is not None
        now = runtime.clock.now()
        session.add(
            ConnectionTask(
                id=uuid.uuid4(),
                request_id=request_id,
                connection_id=uuid.uuid4(),
                connection_name="orders-db",
                dataset="orders",
                kind="erase",
                status="needs_operator",
                attempts=5,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, SYSTEMS))
        dashboard = await client.get("/console")
        assert 'href="/console/systems"' in dashboard.text
        page = await client.get("/console/systems")
        assert page.status_code == 200
        assert "<h1>Systems</h1>" in page.text
        billing = page.text.split(">billing</a>", 1)[1].split("</li>", 1)[0]
        assert "1 dead" in billing
        assert f'href="/console/systems/{system["system"]["id"]}?status=dead"' in billing
        assert re.search(r'data-figure="dead">1<', billing)
        assert re.search(r'data-figure="queued">0<', billing)
        assert re.search(r'data-figure="delivered">0<', billing)
        crm = page.text.split(">crm</a>", 1)[1].split("</li>", 1)[0]
        assert re.search(r'data-figure="dead">0<', crm)
        assert "Never" in crm
        tasks = page.text.split('id="connection-tasks"', 1)[1]
        assert re.search(r'<th scope="row">orders-db</th>.*?<td data-label="Needs an operator">1</td>', tasks, re.S)
        # Never a key, never an address.
        assert system["signing_key"] not in page.text
        assert "pss_" not in page.text
        chinese = await client.get("/console/systems?lang=zh")
        assert '<html lang="zh">' in chinese.text
        assert "<h1>下游系统</h1>" in chinese.text
        assert "1 个已放弃" in chinese.text
        assert "需要操作员处理" in chinese.text


async def test_retry_a_dead_delivery_from_its_log_as_the_api_does(
    app: Litestar, runtime: Runtime, mail: MailSink
) -> None:
    system, _ = await _a_dead_delivery(app, runtime, mail)
    system_id = system["system"]["id"]
    [dead] = await _deliveries(runtime)
    async with browser(app) as client:
        operator_key = await make_operator_key(runtime, SYSTEMS, name="console-retrier")
        await signed_in(client, operator_key)
        log = await client.get(f"/console/systems/{system_id}")
        assert log.status_code == 200
        assert "<h1>billing</h1>" in log.text
        assert dead["id"] in log.text
        assert f'action="/console/systems/deliveries/{dead["id"]}/retry"' in log.text
        assert system["signing_key"] not in log.text
        assert "network error" in log.text or "refused" in log.text  # the attempt's class, never its detail
        assert "Dead" in log.text
        zh = await client.get(f"/console/systems/{system_id}?lang=zh")
        assert "投递日志" in zh.text
        assert "重试" in zh.text
        token = await csrf_token(client, f"/console/systems/{system_id}")
        retried = await client.post(f"/console/systems/deliveries/{dead['id']}/retry", data={"_csrf_token": token})
        assert retried.status_code == 303
        assert retried.headers["location"].startswith(f"/console/systems/{system_id}?retried=")
        after = await client.get(retried.headers["location"].split("#")[0])
        assert 'id="retried"' in after.text
        assert f'action="/console/systems/deliveries/{dead["id"]}/retry"' not in after.text
        # What the API's retry changes: pending, a fresh budget; audited with the operator as actor.
        [row] = await _deliveries(runtime)
        assert (row["status"], row["attempts"]) == ("pending", 0)
        [event] = await _retries_audited(runtime)
        assert event["actor_type"] == "operator"
        # Twice is refused as the API refuses it (409), nothing changed.
        again = await client.post(f"/console/systems/deliveries/{dead['id']}/retry", data={"_csrf_token": token})
        assert again.status_code == 409
        assert "无法重试此投递" in again.text  # the language chosen above is remembered
        assert len(await _retries_audited(runtime)) == 1
        assert (await _deliveries(runtime))[0]["status"] == "pending"
        # An error page for a post: its language links open the area's page, never a GET on the POST-only URL.
        assert "/retry?lang=" not in again.text
        assert 'href="/console/systems?lang=en"' in again.text
        unknown = await client.post(f"/console/systems/deliveries/{uuid.uuid4()}/retry", data={"_csrf_token": token})
        assert unknown.status_code == 404
        assert "/retry?lang=" not in unknown.text
        assert 'href="/console/systems?lang=en"' in unknown.text


async def test_the_delivery_log_pages_by_keyset_and_filters_by_status(
    app: Litestar, runtime: Runtime, mail: MailSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privacy_service.web.console import systems as systems_console

    monkeypatch.setattr(systems_console, "PAGE_SIZE", 1)
    system, key = await _a_dead_delivery(app, runtime, mail)
    system_id = system["system"]["id"]
    async with browser(app) as api:  # a second request: a second delivery, still queued
        await submit_and_verify(api, runtime, mail, CUSTOMER_EMAIL, "portability")
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, SYSTEMS))
        first = await client.get(f"/console/systems/{system_id}")
        assert first.text.count('<tr id="delivery-') == 1
        following = re.search(r'href="([^"]*after=[^"]*)" rel="next"', first.text)
        assert following
        second = await client.get(following.group(1).replace("&amp;", "&"))
        assert second.status_code == 200
        assert second.text.count('<tr id="delivery-') == 1
        assert 'rel="next"' not in second.text
        ids = re.findall(r'<tr id="delivery-([0-9a-f-]+)"', first.text + second.text)
        assert ids == [row["id"] for row in await _deliveries(runtime)]
        only_dead = await client.get(f"/console/systems/{system_id}?status=dead")
        assert re.findall(r'<tr id="delivery-([0-9a-f-]+)"', only_dead.text) == [ids[0]]
        assert '<option value="dead" selected>' in only_dead.text
    assert key


async def test_without_systems_manage_no_link_403_and_a_retry_changes_nothing(
    app: Litestar, runtime: Runtime, mail: MailSink
) -> None:
    system, _ = await _a_dead_delivery(app, runtime, mail)
    [dead] = await _deliveries(runtime)
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, frozenset({"audit:read", "requests:manage"})))
        assert 'href="/console/systems"' not in (await client.get("/console")).text
        assert (await client.get("/console/systems")).status_code == 403
        assert (await client.get(f"/console/systems/{system['system']['id']}")).status_code == 403
        token = await csrf_token(client, "/console")
        refused = await client.post(f"/console/systems/deliveries/{dead['id']}/retry", data={"_csrf_token": token})
        assert refused.status_code == 403
        assert "Not allowed" in refused.text
    assert (await _deliveries(runtime))[0]["status"] == "dead"
    assert await _retries_audited(runtime) == []


async def test_retry_without_csrf_or_session_is_refused_and_changes_nothing(
    app: Litestar, runtime: Runtime, mail: MailSink
) -> None:
    await _a_dead_delivery(app, runtime, mail)
    [dead] = await _deliveries(runtime)
    path = f"/console/systems/deliveries/{dead['id']}/retry"
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, SYSTEMS))
        await client.get("/console/systems")
        assert (await client.post(path, data={})).status_code == 403
        forged = await client.post(path, data={"_csrf_token": "forged"})
        assert forged.status_code == 403
        assert "The form expired" in forged.text
    async with browser(app) as stranger:
        token = await csrf_token(stranger)
        assert (await stranger.post(path, data={"_csrf_token": token})).status_code == 401
        assert (await stranger.get("/console/systems")).headers["location"] == "/console/sign-in"
    assert (await _deliveries(runtime))[0]["status"] == "dead"
    assert await _retries_audited(runtime) == []


async def test_bad_log_filters_and_unknown_systems_are_4xx_pages_that_echo_nothing(
    app: Litestar, runtime: Runtime, mail: MailSink
) -> None:
    system, _ = await _a_dead_delivery(app, runtime, mail)
    system_id = system["system"]["id"]
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, SYSTEMS))
        for query in ("status=<script>alert(1)</script>", "after=secret@example.com_x", "after=2026-01-01_nope"):
            page = await client.get(f"/console/systems/{system_id}?{query}")
            assert page.status_code == 422, query
            assert "<script>alert" not in page.text
            assert "secret@example.com" not in page.text
            assert "nope" not in page.text
        assert (await client.get(f"/console/systems/{uuid.uuid4()}")).status_code == 404
        assert (await client.get("/console/systems/not-a-uuid")).status_code == 404
    assert (await _deliveries(runtime))[0]["status"] == "dead"


async def test_health_counts_retrying_and_oldest_queued(
    setup: tuple[Runtime, Litestar, OffsetClock], mail: MailSink
) -> None:
    runtime, app, clock = setup
    system, _ = await _a_dead_delivery(app, runtime, mail)
    async with browser(app) as api:
        await submit_and_verify(api, runtime, mail, CUSTOMER_EMAIL, "portability")
    clock.travel(timedelta(minutes=1))
    await deliver(runtime, clock=clock, max_attempts=5)  # the new one fails once and waits to retry
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, SYSTEMS))
        page = await client.get(f"/console/systems/{system['system']['id']}")
        health = page.text.split('id="system-health"', 1)[1].split("</dl>", 1)[0]
        assert re.search(r'data-figure="queued">1<', health)
        assert re.search(r'data-figure="retrying">1<', health)
        assert re.search(r'data-figure="dead">1<', health)
        assert "Nothing queued" not in page.text


ALL_AREAS = frozenset({"requests:manage", "subjects:read", "subjects:write", "breaches:manage", "systems:manage"})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/console/requests/nope"),
        ("POST", "/console/requests/nope/approve"),
        ("GET", "/console/subjects/nope"),
        ("GET", "/console/subjects/nope/holds/new"),
        ("GET", f"/console/subjects/{uuid.UUID(int=1)}/holds/nope/release"),
        ("POST", "/console/subjects/nope/erase"),
        ("GET", "/console/breaches/nope"),
        ("POST", "/console/breaches/nope/confirm"),
        ("GET", "/console/systems/nope"),
        ("POST", "/console/systems/deliveries/nope/retry"),
    ],
)
async def test_a_malformed_id_is_the_consoles_404_page_in_every_area(
    app: Litestar, runtime: Runtime, method: str, path: str
) -> None:
    """Every area parses its path's ids in one place (rendering.path_id): not a JSON problem from a path
    that never matched, but the console's own 404 page, with language links to a page that exists."""
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, ALL_AREAS))
        token = await csrf_token(client, "/console")
        data = {"_csrf_token": token} if method == "POST" else None
        answer = await client.request(method, path, data=data)
        assert answer.status_code == 404, answer.text[:300]
        assert answer.headers["content-type"].startswith("text/html")
        assert '<html lang="en">' in answer.text
        assert "Page not found" in answer.text
        assert "nope" not in answer.text.split("<main", 1)[1]  # the id is not echoed (a GET's links keep its URL)
        if method == "POST":
            assert f"{path}?lang=" not in answer.text


async def test_the_delivered_figures_are_counted_to_the_apps_clock(
    setup: tuple[Runtime, Litestar, OffsetClock], runtime: Runtime, app: Litestar
) -> None:
    """The last-7-days figures end at the app's clock (as the service's), not the wall clock: a delivery a day
    old is counted, and no longer once the clock is 30 days on."""
    from privacy_service.systems.models import Delivery

    key = await make_operator_key(runtime)
    async with browser(app) as api:
        auth = {"Authorization": f"Bearer {key}"}
        system = uuid.UUID((await register(api, auth, NOWHERE, name="billing"))["system"]["id"])
        intake = await api.post(
            "/v1/requests", json={"type": "access", "identity": {"email": "clock@example.com"}, "regime": "gdpr"}
        )
        assert intake.status_code == 202, intake.text
    now = runtime.clock.now()
    async with runtime.db.transaction() as session:
        request_id = (await session.exec(select(PrivacyRequest.id))).one()
        session.add(
            Delivery(
                id=uuid.uuid4(),
                request_id=request_id,
                system_id=system,
                required=True,
                status="delivered",
                next_attempt_at=now - timedelta(days=2),
                created_at=now - timedelta(days=2),
                answer_due_at=now + timedelta(days=28),
                delivered_at=now - timedelta(days=1),
            )
        )
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, SYSTEMS))
        assert re.search(r'data-figure="delivered">1<', (await client.get(f"/console/systems/{system}")).text)
        setup[2].travel(timedelta(days=30))
        await signed_in(client, await make_operator_key(runtime, SYSTEMS))  # the first session has expired
        later = (await client.get(f"/console/systems/{system}")).text
        assert re.search(r'data-figure="delivered">0<', later), re.findall(r'data-figure="delivered">[^<]*<', later)

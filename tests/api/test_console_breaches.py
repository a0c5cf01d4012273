# ruff: noqa: F811 - the shared fixtures (tests.console_support) are imported by name and taken as parameters
"""The console's breaches area (issue 17 item 5): the register, an incident's workspace and every action,
each the API's own service call as the signed-in operator (audited as them); and the abuse cases: a
session without ``breaches:manage`` sees no link and is refused (403) on every action with nothing
changed, every form refused without its CSRF token, bad input a 422 page, an illegal step a 409 page,
nothing kept of either, and the Art. 33 document only with a session. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlmodel import col, select

from privacy_service.audit.models import AuditEvent
from privacy_service.audit.service import Actor
from privacy_service.breaches.routes import breach_rules
from privacy_service.breaches.service import BreachService
from privacy_service.runtime import Runtime
from tests.breach_support import create as create_breach
from tests.breach_support import make_subjects
from tests.conftest import make_operator_key
from tests.console_support import (  # noqa: F401 - fixtures, used by name
    app,
    browser,
    csrf_token,
    runtime,
    settings,
    setup,
    signed_in,
)
from tests.integration.systems_support import OffsetClock

BASE = "/console/breaches"
ALL_SCOPES_BUT_BREACHES = frozenset(
    {"requests:manage", "subjects:read", "audit:read", "systems:manage", "retention:run"}
)


@pytest.fixture
async def key(runtime: Runtime) -> str:
    return await make_operator_key(runtime)


@pytest.fixture
async def api(app: Litestar, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(app) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


@pytest.fixture
async def officer(app: Litestar, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A console session with breaches:manage only."""
    async with browser(app) as client:
        await signed_in(client, await make_operator_key(runtime, frozenset({"breaches:manage"})))
        yield client


async def _view(api: httpx.AsyncClient, breach_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/breaches/{breach_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def _post(client: httpx.AsyncClient, path: str, data: dict[str, Any], page: str = BASE) -> httpx.Response:
    token = await csrf_token(client, page)
    return await client.post(path, data={**data, "_csrf_token": token})


_VERSION_FIELD = re.compile(r'name="version" value="(\d+)"')
_PRESENT_FIELD = re.compile(r'name="_present" value="([a-z_]+)"')


async def _edit(client: httpx.AsyncClient, page: str, data: dict[str, Any]) -> httpx.Response:
    """Post the facts form as a browser sends it: with the version and groups the workspace rendered."""
    html = (await client.get(page)).text
    found = _VERSION_FIELD.search(html)
    assert found, "no version on the facts form"
    hidden = {"version": found.group(1), "_present": _PRESENT_FIELD.findall(html)}
    return await _post(client, f"{page}/facts", {**hidden, **data}, page)


async def _events(runtime: Runtime, action: str) -> list[AuditEvent]:
    async with runtime.db.transaction() as session:
        return list((await session.exec(select(AuditEvent).where(col(AuditEvent.action) == action))).all())


RECORD = {
    "title": "Support exports on a lost laptop",
    "description": "A laptop holding support exports was left on a train.",
    "nature": "confidentiality",
    "categories": "user.contact.email",
    "estimated_count": "40",
    "malicious": "1",
    "tr__zh__description": "一台存有客服导出文件的笔记本电脑遗失在火车上。",
}


async def test_the_register_and_a_workspace_render_in_english_and_chinese(
    officer: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    breach = await create_breach(api, {}, title="Mailbox forwarded outside")
    page = await officer.get(BASE)
    assert page.status_code == 200
    assert "Mailbox forwarded outside" in page.text
    assert re.search(r"7[12]\.\d h left", page.text), "the 72 h clock"
    assert 'href="/console/breaches/register.csv"' in page.text
    assert 'name="_csrf_token"' in page.text
    chinese = await officer.get(f"{BASE}?lang=zh")
    assert '<html lang="zh">' in chinese.text
    assert "记录事件" in chinese.text
    assert re.search(r"剩余 7[12]\.\d 小时", chinese.text)
    work = await officer.get(f"{BASE}/{breach['id']}")
    assert work.status_code == 200
    assert "72 小时时限" in work.text  # the language was remembered
    assert "ENISA" in work.text
    english = await officer.get(f"{BASE}/{breach['id']}?lang=en")
    assert "The 72-hour clock (Art. 33)" in english.text
    assert 'name="ease_of_identification"' in english.text
    assert 'name="dpc__user.contact.email"' in english.text
    # the register export is the API's CSV
    csv_console = await officer.get(f"{BASE}/register.csv")
    csv_api = await api.get("/v1/breaches/register.csv")
    assert csv_console.status_code == 200
    assert csv_console.headers["content-type"].startswith("text/csv")
    assert csv_console.text == csv_api.text
    assert (await officer.get(f"{BASE}/00000000-0000-0000-0000-000000000000")).status_code == 404


async def test_a_breach_from_record_to_the_art_33_document_and_closure(
    officer: httpx.AsyncClient, api: httpx.AsyncClient, runtime: Runtime
) -> None:
    recorded = await _post(officer, BASE, RECORD)
    assert recorded.status_code == 303, recorded.text
    breach_id = recorded.headers["location"].rsplit("/", 1)[1]
    page = f"{BASE}/{breach_id}"
    view = await _view(api, breach_id)
    assert view["status"] == "open"
    assert view["affected"]["count"] == 40
    assert view["malicious"] is True
    assert view["translations"] == {"zh": {"description": RECORD["tr__zh__description"]}}

    edited = await _edit(officer, page, {**RECORD, "estimated_count": "55", "mitigation": "Remote wipe."})
    assert edited.status_code == 303, edited.text
    view = await _view(api, breach_id)
    assert view["version"] == 2
    assert view["affected"]["count"] == 55
    assert view["mitigation"] == "Remote wipe."
    versions = (await api.get(f"/v1/breaches/{breach_id}/versions")).json()
    assert set(versions[-1]["changed"]) == {"affected", "mitigation"}  # only what changed

    assessed = await _post(
        officer,
        f"{page}/assessment",
        {
            "ease_of_identification": "maximum",
            "dpc_shown__user.contact.email": "1",
            "override_notify_subjects": "yes",
            "justification_notify_subjects": "We tell every customer about a lost laptop.",
        },
        page,
    )
    assert assessed.status_code == 303, assessed.text
    view = await _view(api, breach_id)
    assert view["status"] == "assessed"
    assert view["decisions"]["notify_subjects"]["overridden"] is True
    assert view["assessment"]["inputs"]["dpc_factors"] == {"user.contact.email": []}

    notified = await _post(officer, f"{page}/authority-notification", {"recipient": "breach@authority.example"}, page)
    if view["decisions"]["notify_authority"]["value"]:
        assert notified.status_code == 303, notified.text
        view = await _view(api, breach_id)
        assert view["status"] == "notifying"
        assert len(view["authority_notifications"]) == 1
        for language, marker in (("en", '<html lang="en">'), ("zh", '<html lang="zh">')):
            document = await officer.get(f"{page}/authority-notifications/1?lang={language}")
            assert document.status_code == 200
            assert marker in document.text
            chinese_text = "一台存有客服导出文件的笔记本电脑遗失在火车上。"
            assert (chinese_text in document.text) is (language == "zh")
            assert "/static/breach-document.css" in document.text
            csp = document.headers["content-security-policy"]
            assert "'unsafe-inline'" not in csp
            assert "'sha256-" in csp
            served = await api.get(f"/v1/breaches/{breach_id}/authority-notifications/1?format=html&lang={language}")
            assert served.text.replace("</head>", "") in document.text.replace(
                '<link rel="stylesheet" href="/static/breach-document.css">\n</head>', ""
            )
    else:
        assert notified.status_code == 409

    # an estimate names nobody to write to: the service refuses (409), shown on the workspace, nothing queued
    subjects = await _post(officer, f"{page}/subject-notifications", {}, page)
    assert subjects.status_code == 409, subjects.text
    assert "the affected people are only estimated" in subjects.text
    assert (await _view(api, breach_id))["subject_notifications"] is None

    # everything was done as the signed-in operator: the audit log names them
    for action in ("breach.create", "breach.update", "breach.assess"):
        events = await _events(runtime, action)
        assert events, action
        assert all(event.actor_type == "operator" for event in events), action


async def test_illegal_steps_are_a_409_page_and_change_nothing(
    officer: httpx.AsyncClient, api: httpx.AsyncClient, runtime: Runtime
) -> None:
    breach = await create_breach(api, {})
    page = f"{BASE}/{breach['id']}"
    before = await _view(api, breach["id"])
    twice = await _post(officer, f"{page}/confirm", {}, page)  # an operator's record is already confirmed
    assert twice.status_code == 409
    assert "confirm is not possible while the incident is open" in twice.text
    closed = await _post(officer, f"{page}/close", {"note": "done"}, page)  # open duties
    assert closed.status_code == 409
    assert await _view(api, breach["id"]) == before

    # a draft from monitoring: confirmed once, the second time refused
    async with runtime.db.transaction() as session:
        service = BreachService(
            session=session,
            keys=runtime.keys,
            policy=runtime.policy,
            rules=breach_rules_of(runtime),
            clock=runtime.clock,
            actor=Actor.system("monitoring"),
            request_id=None,
            is_sqlite=runtime.settings.is_sqlite,
        )
        draft = await service.open_draft(
            signal="test:spike", title="Unusual exports", description="Many exports.", categories=[], subject_ids=[]
        )
    page = f"{BASE}/{draft.id}"
    assert "Review the suspicion" in (await officer.get(page)).text
    assert (await _post(officer, f"{page}/confirm", {"note": "real"}, page)).status_code == 303
    assert (await _view(api, str(draft.id)))["status"] == "open"
    again = await _post(officer, f"{page}/confirm", {"note": "again"}, page)
    assert again.status_code == 409
    assert (
        len([v for v in (await api.get(f"/v1/breaches/{draft.id}/versions")).json() if v["action"] == "confirm"]) == 1
    )


def breach_rules_of(runtime: Runtime) -> Any:
    class State:
        policy = runtime.policy

    State.runtime = runtime  # type: ignore[attr-defined]
    return breach_rules(State)


async def test_bad_input_is_a_422_page_with_nothing_changed_and_nothing_echoed(
    officer: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    breach = await create_breach(api, {})
    page = f"{BASE}/{breach['id']}"
    before = await _view(api, breach["id"])
    cases = [
        {"ease_of_identification": "extreme"},  # not a level (the schema refuses)
        {"ease_of_identification": "maximum", "integrity": "unrecoverable"},  # nature lacks integrity (service)
        {"ease_of_identification": "maximum", "consequences": "not_a_consequence"},
        {"ease_of_identification": "maximum", "dpc_shown__user.name": "1", "dpc__user.name": "no_such_factor"},
        {"ease_of_identification": "maximum", "override_notify_authority": "no", "justification_notify_authority": "x"},
    ]
    for data in cases:
        response = await _post(officer, f"{page}/assessment", data, page)
        assert response.status_code == 422, (data, response.text[:300])
        assert 'class="error-summary"' in response.text
        assert "Traceback" not in response.text
    assert await _view(api, breach["id"]) == before
    await officer.get(f"{page}?lang=zh")  # the field is named in the page's language
    chinese = await _post(officer, f"{page}/assessment", {"ease_of_identification": "extreme"}, page)
    assert chinese.status_code == 422
    assert "识别难易度：此值不被接受" in chinese.text  # noqa: RUF001 - the Chinese colon
    await officer.get(f"{page}?lang=en")
    secret = "person.secret@example.com"
    refused = await _post(officer, BASE, {**RECORD, "title": "", "description": secret, "estimated_count": "lots"})
    assert refused.status_code == 422
    assert refused.text.count(secret) == 1  # only in the refilled field, never in an error
    assert len((await api.get("/v1/breaches")).json()["items"]) == 1


async def test_without_breaches_manage_no_link_no_action_and_403_with_nothing_changed(
    app: Litestar, api: httpx.AsyncClient, runtime: Runtime
) -> None:
    breach = await create_breach(api, {})
    before = await _view(api, breach["id"])
    page = f"{BASE}/{breach['id']}"
    async with browser(app) as narrow:
        await signed_in(narrow, await make_operator_key(runtime, ALL_SCOPES_BUT_BREACHES))
        dashboard = (await narrow.get("/console")).text
        assert f'href="{BASE}"' not in dashboard
        token = await csrf_token(narrow, "/console")
        for path in (BASE, page, f"{page}/authority-notifications/1", f"{page}/recipients", f"{BASE}/register.csv"):
            assert (await narrow.get(path)).status_code == 403, path
        for action in (
            "",
            "/facts",
            "/confirm",
            "/dismiss",
            "/assessment",
            "/authority-notification",
            "/subject-notifications",
            "/public-communication",
            "/close",
        ):
            path = f"{page}{action}" if action else BASE
            data = {**RECORD, "reason": "no", "ease_of_identification": "maximum", "_csrf_token": token}
            response = await narrow.post(path, data=data)
            assert response.status_code == 403, path
    assert await _view(api, breach["id"]) == before
    assert len((await api.get("/v1/breaches")).json()["items"]) == 1


async def test_every_breach_form_is_refused_without_its_csrf_token(
    officer: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    breach = await create_breach(api, {})
    before = await _view(api, breach["id"])
    page = f"{BASE}/{breach['id']}"
    for action in (
        "",
        "/facts",
        "/confirm",
        "/dismiss",
        "/assessment",
        "/authority-notification",
        "/subject-notifications",
        "/public-communication",
        "/close",
    ):
        path = f"{page}{action}" if action else BASE
        for token in (None, "forged"):
            data = {**RECORD, "reason": "not a breach", "ease_of_identification": "maximum"}
            if token:
                data["_csrf_token"] = token
            response = await officer.post(path, data=data)
            assert response.status_code == 403, (path, token)
    assert await _view(api, breach["id"]) == before
    assert len((await api.get("/v1/breaches")).json()["items"]) == 1


async def test_the_art_33_document_needs_a_session(app: Litestar, api: httpx.AsyncClient, key: str) -> None:
    breach = await create_breach(api, {})
    path = f"{BASE}/{breach['id']}/authority-notifications/1"
    async with browser(app) as stranger:
        for headers in ({}, {"Authorization": f"Bearer {key}"}):
            response = await stranger.get(path, headers=headers)
            assert response.status_code == 303
            assert response.headers["location"] == "/console/sign-in"


async def test_notifying_identified_people_shows_the_delivery_counts(
    officer: httpx.AsyncClient, api: httpx.AsyncClient, runtime: Runtime
) -> None:
    subject_ids = await make_subjects(runtime, 3)
    breach = await create_breach(api, {}, affected={"subject_ids": [str(s) for s in subject_ids]})
    page = f"{BASE}/{breach['id']}"
    decided = {
        "ease_of_identification": "maximum",
        "override_notify_subjects": "yes",
        "justification_notify_subjects": "Three customers: we tell each of them.",
    }
    assessed = await _post(officer, f"{page}/assessment", decided, page)
    assert assessed.status_code == 303, assessed.text
    assert (await _view(api, breach["id"]))["decisions"]["notify_subjects"]["value"] is True
    started = await _post(officer, f"{page}/subject-notifications", {}, page)
    assert started.status_code == 303, started.text
    api_counts = (await api.get(f"/v1/breaches/{breach['id']}/subject-notifications")).json()["counts"]
    assert api_counts["total"] == 3
    workspace = (await officer.get(page)).text
    assert re.search(r'id="count-total">3<', workspace)
    assert re.search(rf'id="count-sent">{api_counts["sent"]}<', workspace)
    assert "subject-notifications" not in workspace.split('id="subjects-heading"', 1)[1].split("</section>", 1)[0]
    assert f'href="{page}/recipients"' in workspace
    listed = await officer.get(f"{page}/recipients")
    assert listed.status_code == 200
    assert all(str(subject_id) in listed.text for subject_id in subject_ids)
    assert "@example.com" not in listed.text  # subject ids, never addresses
    again = await _post(officer, f"{page}/subject-notifications", {}, page)  # no button any more; the service refuses
    assert again.status_code == 409
    events = await _events(runtime, "breach.subject_notifications")
    assert len(events) == 1
    assert events[0].actor_type == "operator"


async def test_the_register_pages_by_keyset_newest_first_and_filters_by_status(
    officer: httpx.AsyncClient, api: httpx.AsyncClient, setup: tuple[Runtime, Litestar, OffsetClock]
) -> None:
    clock = setup[2]
    for n in range(27):
        await create_breach(api, {}, title=f"Incident number {n:02d}")
        clock.travel(timedelta(seconds=1))
    first = (await officer.get(BASE)).text
    shown = re.findall(r"Incident number (\d\d)", first)
    assert shown == [f"{n:02d}" for n in range(26, 1, -1)]  # 25, newest first
    found = re.search(r'<a href="(/console/breaches\?after=[^"]+)" rel="next">', first)
    assert found
    second = (await officer.get(found.group(1).replace("&amp;", "&"))).text
    assert re.findall(r"Incident number (\d\d)", second) == ["01", "00"]
    assert 'rel="next"' not in second
    assert "Incident number" not in (await officer.get(f"{BASE}?status=closed")).text
    assert len(re.findall(r"Incident number", (await officer.get(f"{BASE}?status=open")).text)) == 25
    assert (await officer.get(f"{BASE}?after=not-a-cursor")).status_code == 422


async def test_close_once_the_duties_are_done(officer: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    breach = await create_breach(api, {})
    page = f"{BASE}/{breach['id']}"
    reason = "Reviewed with the DPO: the mailbox held no customer data in the end."
    decided = {"ease_of_identification": "negligible"}
    for name in ("notify_authority", "notify_subjects", "public_communication"):
        decided |= {f"override_{name}": "no", f"justification_{name}": reason}
    assert (await _post(officer, f"{page}/assessment", decided, page)).status_code == 303
    view = await _view(api, breach["id"])
    # the test policy has a California clock: that notice is owed unless the closing says why not
    assert view["open_duties"] == ["california_notice"], view["open_duties"]
    workspace = (await officer.get(page)).text
    assert 'name="california_not_required"' in workspace
    # the decisions say no notification: no form to notify, a word on how to decide otherwise
    assert 'id="authority-not-required"' in workspace
    assert 'id="subjects-not-required"' in workspace
    assert f'action="{page}/authority-notification"' not in workspace
    assert f'action="{page}/subject-notifications"' not in workspace
    refused = await _post(officer, f"{page}/close", {"note": "No notification owed."}, page)
    assert refused.status_code == 409
    assert (await _view(api, breach["id"]))["status"] == "assessed"
    california = "No California resident is a customer of this service."
    data = {"note": "No notification owed; see the assessment.", "california_not_required": california}
    closed = await _post(officer, f"{page}/close", data, page)
    assert closed.status_code == 303, closed.text
    view = await _view(api, breach["id"])
    assert view["status"] == "closed"
    assert view["closing_note"].startswith("No notification owed; see the assessment.")
    assert california in view["closing_note"]
    workspace = (await officer.get(page)).text
    assert 'action="' + page + '/close"' not in workspace
    assert 'action="' + page + '/assessment"' not in workspace  # nothing more to do on a closed incident
    again = await _post(officer, f"{page}/close", {"note": "again"}, page)
    assert again.status_code == 409
    assert (await _view(api, breach["id"]))["closing_note"] == view["closing_note"]


@pytest.mark.parametrize(
    "cursor",
    [
        "9999-12-31T23:59:59_00000000-0000-0000-0000-000000000000",  # no zone: not compared with aware times
        "9999-12-31T23:59:59-12:00_00000000-0000-0000-0000-000000000000",  # no UTC equivalent (overflow)
    ],
)
async def test_a_bad_register_cursor_is_a_422_on_the_console_and_the_api(
    officer: httpx.AsyncClient, api: httpx.AsyncClient, cursor: str
) -> None:
    await create_breach(api, {}, title="Incident on the register")
    page = await officer.get(BASE, params={"after": cursor})
    assert page.status_code == 422
    assert page.headers["content-type"].startswith("text/html")
    problem = await api.get("/v1/breaches", params={"after": cursor})
    assert problem.status_code == 422
    assert problem.headers["content-type"].startswith("application/problem+json")


async def test_a_stale_facts_form_is_a_409_and_a_partial_one_clears_nothing(
    officer: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    recorded = await _post(officer, BASE, RECORD)
    breach_id = recorded.headers["location"].rsplit("/", 1)[1]
    page = f"{BASE}/{breach_id}"
    opened = (await officer.get(page)).text  # operator 1 opens the edit form at version 1
    stale_version = _VERSION_FIELD.search(opened)
    assert stale_version
    assert stale_version.group(1) == "1"
    # Operator 2 (the API) adds a mitigation meanwhile: version 2.
    changed = await api.patch(f"/v1/breaches/{breach_id}", json={"mitigation": "Remote wipe."})
    assert changed.status_code == 200, changed.text
    before = await _view(api, breach_id)
    stale = await _post(
        officer,
        f"{page}/facts",
        {**RECORD, "version": "1", "_present": _PRESENT_FIELD.findall(opened), "title": "Renamed"},
        page,
    )
    assert stale.status_code == 409
    assert "Remote wipe." in stale.text  # the workspace shows the facts as they now are
    assert await _view(api, breach_id) == before
    missing = await _post(officer, f"{page}/facts", {"title": "Renamed"}, page)  # no version at all
    assert missing.status_code == 409
    assert await _view(api, breach_id) == before

    # A partial post (only the title, with the current version): the title changes, nothing is cleared.
    partial = await _post(officer, f"{page}/facts", {"version": str(before["version"]), "title": "Renamed"}, page)
    assert partial.status_code == 303, partial.text
    after = await _view(api, breach_id)
    assert after["title"] == "Renamed"
    assert after["version"] == before["version"] + 1
    for name in ("description", "nature", "categories", "mitigation", "malicious", "affected", "translations"):
        assert after[name] == before[name], name

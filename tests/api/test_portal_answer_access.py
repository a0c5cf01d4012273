"""Issue 20 item 1: a confirmed request opened in another browser (the completion mail on a phone).

The page says what to do, a new code goes to the request's verified identity (never to an address
the visitor types), and the code gives that browser read-only access to the request and its
download. The abuse cases come first: a stranger holding the request id only, a code for one
request tried on another, a used code replayed, an expired code, a flood of code mails, no personal
data on any page a stranger sees, and the comparisons in constant time.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import time_machine
from litestar import Litestar
from sqlmodel import col, delete, func, select

from privacy_service.config import DEFAULT_RATE_LIMITS, Settings
from privacy_service.dsr import answer_access
from privacy_service.dsr.models import AnswerAccess, PrivacyRequest
from privacy_service.runtime import Runtime
from tests.api.dsr_support import OPEN_LIMITS, assert_problem, deliver, fresh_settings, make_subject, rows
from tests.conftest import MailSink
from tests.portal_support import csrf_token, parse

EMAIL = "olive.opener@example.com"
NAME = "Olive Openshaw"
STRANGER_EMAIL = "mallory.stranger@example.com"
PHONE = "+447911123456"
NEW_PHONE = "+353861234567"
CODE = re.compile(r"\b(\d{6})\b")
OPENING_SUBJECT = "Your code to open your request"
HTML = "text/html; charset=utf-8"


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend, dsr_resend_cooldown_seconds=0)


def browser(app: Litestar) -> httpx.AsyncClient:
    """A browser of its own: its own cookie jar, nothing shared with the other clients."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def first(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(app) as client:
        yield client


@pytest.fixture
async def second(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(app) as client:
        yield client


async def form_post(client: httpx.AsyncClient, page_path: str, action: str, **fields: str) -> httpx.Response:
    page = await client.get(page_path)
    return await client.post(action, data={"_csrf_token": csrf_token(page), **fields})


async def completed_request(client: httpx.AsyncClient, runtime: Runtime, mail: MailSink, kind: str = "access") -> str:
    """Filed and confirmed in ``client``'s browser; the id of the answered request."""
    filed = await form_post(
        client, "/privacy/request", "/privacy/request", type=kind, identity_kind="email", email=EMAIL
    )
    assert filed.status_code == 303, filed.text
    verify_path = filed.headers["location"]
    await deliver(runtime)
    verified = await form_post(client, verify_path, verify_path, code=newest_code(mail, EMAIL))
    assert verified.status_code == 303, verified.text
    return verify_path.split("/")[3]


def newest_code(mail: MailSink, address: str, subject: str | None = None) -> str:
    messages = [m for m in mail.to(address) if subject is None or str(m["Subject"]) == subject]
    assert messages, f"no mail to {address}"
    found = CODE.search(messages[-1].get_content())
    assert found
    return found.group(1)


def opening_mails(mail: MailSink, address: str) -> list[Any]:
    return [m for m in mail.to(address) if str(m["Subject"]) == OPENING_SUBJECT]


async def ask_code(client: httpx.AsyncClient, request_id: str, **extra: str) -> httpx.Response:
    path = f"/privacy/requests/{request_id}"
    return await form_post(client, path, f"{path}/access-code", **extra)


async def enter_code(client: httpx.AsyncClient, request_id: str, code: str) -> httpx.Response:
    path = f"/privacy/requests/{request_id}"
    return await form_post(client, path, f"{path}/open", code=code)


def assert_nothing_of_the_customer(response: httpx.Response) -> None:
    for value in (EMAIL, NAME, "olive.opener", "Completed", "Download"):
        assert value not in response.text, value


async def history(client: httpx.AsyncClient, auth: dict[str, str], request_id: str) -> tuple[str, int]:
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    return view["status"], len(view["history"])


# -- abuse ----------------------------------------------------------------------------------------


async def test_a_stranger_with_the_request_id_only_gets_nothing_and_cannot_choose_the_address(
    first: httpx.AsyncClient,
    second: httpx.AsyncClient,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    mail: MailSink,
) -> None:
    await make_subject(client, auth, email=EMAIL, profile={"name": NAME})
    request_id = await completed_request(first, runtime, mail)
    page = await second.get(f"/privacy/requests/{request_id}")
    assert page.status_code == 200
    assert_nothing_of_the_customer(page)
    # A typed address (or any other field) is ignored: the code goes to the request's own identity.
    sent = await ask_code(second, request_id, email=STRANGER_EMAIL, to=STRANGER_EMAIL)
    assert sent.status_code == 303
    await deliver(runtime)
    assert mail.to(STRANGER_EMAIL) == []
    assert len(opening_mails(mail, EMAIL)) == 1
    for path in (f"/privacy/requests/{request_id}?sent=1", f"/privacy/requests/{request_id}/verify"):
        assert_nothing_of_the_customer(await second.get(path))
    assert (await second.get(f"/privacy/requests/{request_id}/export")).status_code == 403
    # Guessing: five wrong codes void the code; the right one then opens nothing.
    code = newest_code(mail, EMAIL, OPENING_SUBJECT)
    wrong = "000000" if code != "000000" else "111111"
    for left in (4, 3, 2, 1):
        answer = await enter_code(second, request_id, wrong)
        assert answer.status_code == 422
        assert f"Attempts left: {left}" in answer.text
        assert_nothing_of_the_customer(answer)
    assert "not valid any more" in (await enter_code(second, request_id, wrong)).text
    voided = await enter_code(second, request_id, code)
    assert voided.status_code == 422
    assert "privacy_request" not in voided.cookies
    assert (await second.get(f"/privacy/requests/{request_id}/export")).status_code == 403


async def test_a_code_for_one_request_does_not_open_another(
    first: httpx.AsyncClient,
    second: httpx.AsyncClient,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    mail: MailSink,
) -> None:
    await make_subject(client, auth, email=EMAIL, profile={"name": NAME})
    request_a = await completed_request(first, runtime, mail)
    request_b = await completed_request(first, runtime, mail)
    assert (await ask_code(second, request_b)).status_code == 303
    await deliver(runtime)
    code_b = newest_code(mail, EMAIL, OPENING_SUBJECT)
    assert (await ask_code(second, request_a)).status_code == 303
    await deliver(runtime)
    code_a = newest_code(mail, EMAIL, OPENING_SUBJECT)
    if code_a != code_b:  # the same six digits by chance would prove nothing
        refused = await enter_code(second, request_b, code_a)
        assert refused.status_code == 422
        assert (await second.get(f"/privacy/requests/{request_b}/export")).status_code == 403
    opened = await enter_code(second, request_a, code_a)
    assert opened.status_code == 303
    # The cookie is for request A's pages only.
    assert (await second.get(f"/privacy/requests/{request_a}/export")).status_code == 200
    assert (await second.get(f"/privacy/requests/{request_b}/export")).status_code == 403


async def test_a_used_code_cannot_be_replayed_and_an_expired_one_opens_nothing(
    first: httpx.AsyncClient,
    second: httpx.AsyncClient,
    client: httpx.AsyncClient,
    app: Litestar,
    auth: dict[str, str],
    runtime: Runtime,
    mail: MailSink,
) -> None:
    await make_subject(client, auth, email=EMAIL, profile={"name": NAME})
    request_id = await completed_request(first, runtime, mail)
    await ask_code(second, request_id)
    await deliver(runtime)
    code = newest_code(mail, EMAIL, OPENING_SUBJECT)
    assert (await enter_code(second, request_id, code)).status_code == 303
    async with browser(app) as third:
        replayed = await enter_code(third, request_id, code)
        assert replayed.status_code == 422
        assert "not valid any more" in replayed.text
        assert (await third.get(f"/privacy/requests/{request_id}/export")).status_code == 403

        await ask_code(third, request_id)
        await deliver(runtime)
        late = newest_code(mail, EMAIL, OPENING_SUBJECT)
        minutes = runtime.settings.dsr_code_ttl_minutes
        with time_machine.travel(datetime.now(UTC) + timedelta(minutes=minutes, seconds=5), tick=True):
            expired = await enter_code(third, request_id, late)
            assert expired.status_code == 422
            assert "The code has expired" in expired.text
            assert (await third.get(f"/privacy/requests/{request_id}/export")).status_code == 403


async def test_a_flood_of_code_mails_is_refused(
    first: httpx.AsyncClient,
    second: httpx.AsyncClient,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    mail: MailSink,
) -> None:
    await make_subject(client, auth, email=EMAIL, profile={"name": NAME})
    request_id = await completed_request(first, runtime, mail)
    share = runtime.settings.dsr_codes_per_identity_and_address_per_day
    answers = [(await ask_code(second, request_id)).status_code for _ in range(share + 3)]
    # The request's own code was entered, so it gave its mail back; this network's share then runs out.
    assert answers[:share] == [303] * share
    assert set(answers[share:]) == {429}
    refused = await ask_code(second, request_id)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert "We cannot send more codes now" in refused.text
    assert_nothing_of_the_customer(refused)
    await deliver(runtime)
    assert len(opening_mails(mail, EMAIL)) == share


async def test_a_code_asked_for_again_at_once_waits_out_the_cooldown(
    make_settings: Any, auth: dict[str, str], mail: MailSink
) -> None:
    from privacy_service.app import create_app
    from privacy_service.runtime import build_runtime

    runtime = build_runtime(make_settings(rate_limits={**DEFAULT_RATE_LIMITS, **OPEN_LIMITS}))
    try:
        app = create_app(runtime=runtime)
        async with browser(app) as first, browser(app) as second:
            from tests.conftest import make_operator_key

            key = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
            await make_subject(first, key, email=EMAIL, profile={"name": NAME})
            request_id = await completed_request(first, runtime, mail)
            assert (await ask_code(second, request_id)).status_code == 303
            again = await ask_code(second, request_id)
            assert again.status_code == 429
            assert "We sent a code moments ago" in again.text
    finally:
        await runtime.close()


async def test_a_request_gets_only_so_many_opening_codes_a_day(
    make_settings: Any, backend: str, mail: MailSink
) -> None:
    from privacy_service.app import create_app
    from privacy_service.runtime import build_runtime

    # The identity's quotas are wide open here: the request's own cap is what refuses.
    settings = await fresh_settings(
        make_settings,
        backend,
        dsr_resend_cooldown_seconds=0,
        dsr_resend_max_per_request=1,
        dsr_codes_per_identity_per_day=100,
        dsr_codes_per_identity_and_address_per_day=100,
    )
    runtime = build_runtime(settings)
    try:
        app = create_app(runtime=runtime)
        async with browser(app) as first, browser(app) as second:
            from tests.conftest import make_operator_key

            key = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
            await make_subject(first, key, email=EMAIL, profile={"name": NAME})
            request_id = await completed_request(first, runtime, mail)
            # The first code and dsr_resend_max_per_request more, in any 24 hours.
            for _ in range(2):
                sent = await second.post(f"/v1/requests/{request_id}/access-code")
                assert sent.status_code == 202, sent.text
            refused = await second.post(f"/v1/requests/{request_id}/access-code")
            assert_problem(refused, 429, "too-many-codes")
            assert 0 < int(refused.headers["retry-after"]) <= 24 * 3600
            assert EMAIL not in refused.text
            page = await ask_code(second, request_id)
            assert page.status_code == 429
            assert "We cannot send more codes now" in page.text
            await deliver(runtime)
            assert len(opening_mails(mail, EMAIL)) == 2
            with time_machine.travel(datetime.now(UTC) + timedelta(hours=24, minutes=1), tick=True):
                assert (await second.post(f"/v1/requests/{request_id}/access-code")).status_code == 202
    finally:
        await runtime.close()


async def test_codes_and_tokens_are_compared_in_constant_time(
    first: httpx.AsyncClient,
    second: httpx.AsyncClient,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    mail: MailSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await make_subject(client, auth, email=EMAIL, profile={"name": NAME})
    request_id = await completed_request(first, runtime, mail)
    compared: list[tuple[bytes, bytes]] = []
    real = answer_access.constant_time_equals

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(answer_access, "constant_time_equals", spy)
    await ask_code(second, request_id)
    await deliver(runtime)
    assert (await enter_code(second, request_id, newest_code(mail, EMAIL, OPENING_SUBJECT))).status_code == 303
    assert compared, "the code was not compared with constant_time_equals"
    compared.clear()
    assert (await second.get(f"/privacy/requests/{request_id}/export")).status_code == 200
    assert len(compared) >= 2  # the request's own token, then the browser's


async def test_a_request_closed_before_it_was_confirmed_has_nothing_to_open(
    second: httpx.AsyncClient, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    filed = await client.post("/v1/requests", json={"type": "access", "identity": {"email": EMAIL}})
    request_id = filed.json()["id"]
    assert (await client.post(f"/v1/requests/{request_id}/cancel", json={}, headers=auth)).status_code == 200
    page = await second.get(f"/privacy/requests/{request_id}")
    assert "closed before it was confirmed" in page.text
    path = f"/privacy/requests/{request_id}"
    refused = await form_post(second, "/privacy/request", f"{path}/access-code")  # a form of another page
    assert refused.status_code == 409
    assert "closed before it was confirmed" in refused.text


async def test_an_unknown_request_looks_like_one_waiting_for_its_code(second: httpx.AsyncClient) -> None:
    unknown = "0b4d6a8e-0000-4000-8000-000000000000"
    page = await second.get(f"/privacy/requests/{unknown}")
    assert page.status_code == 200
    assert 'action="/privacy/requests/0b4d6a8e-0000-4000-8000-000000000000/verify"' in page.text
    assert (await ask_code(second, unknown)).status_code == 404
    bad = await form_post(second, f"/privacy/requests/{unknown}", f"/privacy/requests/{unknown}/open", code="12ab")
    assert bad.status_code == 422
    assert bad.headers["content-type"] == HTML


async def test_a_phone_requests_code_goes_to_its_own_customer_not_the_numbers_new_holder(
    first: httpx.AsyncClient,
    second: httpx.AsyncClient,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    mail: MailSink,
) -> None:
    # Customer A confirms a request made with their phone number, then changes number; customer B
    # registers the old number. The code to open A's request (A's data) goes to A, never to B.
    customer_a = await make_subject(client, auth, email=EMAIL, phone=PHONE, profile={"name": NAME})
    filed = await form_post(
        first, "/privacy/request", "/privacy/request", type="access", identity_kind="phone", phone=PHONE
    )
    assert filed.status_code == 303, filed.text
    verify_path = filed.headers["location"]
    await deliver(runtime)
    verified = await form_post(first, verify_path, verify_path, code=newest_code(mail, EMAIL))
    assert verified.status_code == 303, verified.text
    request_id = verify_path.split("/")[3]
    moved = await client.patch(f"/v1/subjects/{customer_a}", json={"phone": NEW_PHONE}, headers=auth)
    assert moved.status_code == 200, moved.text
    await make_subject(client, auth, email=STRANGER_EMAIL, phone=PHONE, profile={"name": "Mallory"})

    assert (await ask_code(second, request_id)).status_code == 303
    await deliver(runtime)
    assert mail.to(STRANGER_EMAIL) == []
    assert len(opening_mails(mail, EMAIL)) == 1
    # B has no code: a guess opens nothing, and nothing of A's shows.
    guessed = await enter_code(second, request_id, "000000")
    assert guessed.status_code == 422
    assert_nothing_of_the_customer(guessed)
    assert (await second.get(f"/privacy/requests/{request_id}/export")).status_code == 403
    assert_nothing_of_the_customer(await second.get(f"/privacy/requests/{request_id}"))
    # A's own code opens it, over the API too.
    code = newest_code(mail, EMAIL, OPENING_SUBJECT)
    assert (await enter_code(second, request_id, code)).status_code == 303
    export = await second.get(f"/privacy/requests/{request_id}/export")
    assert export.json()["subject"]["email"] == EMAIL


async def test_a_cookie_for_an_unknown_request_gets_the_code_page_as_a_known_one_would(
    second: httpx.AsyncClient,
) -> None:
    unknown = "0b4d6a8e-0000-4000-8000-000000000001"
    second.cookies.set("privacy_request", "psr_" + "x" * 43, path=f"/privacy/requests/{unknown}")
    page = await second.get(f"/privacy/requests/{unknown}")
    assert page.status_code == 200
    assert f'action="/privacy/requests/{unknown}/verify"' in page.text


# -- the customer's way ---------------------------------------------------------------------------


async def test_the_completion_mail_opened_in_another_browser_leads_to_the_answer_and_changes_nothing(
    first: httpx.AsyncClient,
    second: httpx.AsyncClient,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    mail: MailSink,
) -> None:
    await make_subject(client, auth, email=EMAIL, profile={"name": NAME})
    request_id = await completed_request(first, runtime, mail)
    before = await history(client, auth, request_id)
    await deliver(runtime)
    completed = [m for m in mail.to(EMAIL) if "complete" in str(m["Subject"])]
    assert completed, "no completion mail"
    link = re.search(r"http://\S+/privacy/requests/[0-9a-f-]{36}", completed[-1].get_content())
    assert link
    path = link.group(0).removeprefix(runtime.settings.base_url)
    assert path == f"/privacy/requests/{request_id}"

    page = await second.get(path)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    html = parse(page.text)
    assert html.find("h1")[0].text == "Open your request"
    assert "we send it to the e-mail address this request was confirmed with" in page.text
    assert html.find("form", action=f"{path}/access-code?lang=en")
    sent = await ask_code(second, request_id)
    assert sent.headers["location"] == f"{path}?sent=1"
    waiting = await second.get(sent.headers["location"])
    assert "we have sent a 6-digit code there" in waiting.text
    assert parse(waiting.text).find("form", action=f"{path}/open?lang=en")
    await deliver(runtime)
    [message] = opening_mails(mail, EMAIL)
    assert not re.search(r"\d", str(message["Subject"]))  # the code is never in the Subject
    opened = await enter_code(second, request_id, newest_code(mail, EMAIL, OPENING_SUBJECT))
    assert opened.status_code == 303
    assert opened.headers["location"] == path
    cookie = opened.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert f"Path={path}" in cookie

    answer = await second.get(path)
    assert "Completed" in answer.text
    export = await second.get(f"{path}/export")
    assert export.status_code == 200
    assert export.json()["subject"]["email"] == EMAIL
    # The first browser keeps its access; the request itself did not change.
    assert (await first.get(f"{path}/export")).status_code == 200
    assert await history(client, auth, request_id) == before


async def test_the_browsers_access_ends_after_its_hours(
    first: httpx.AsyncClient,
    second: httpx.AsyncClient,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    mail: MailSink,
) -> None:
    await make_subject(client, auth, email=EMAIL, profile={"name": NAME})
    request_id = await completed_request(first, runtime, mail)
    await ask_code(second, request_id)
    await deliver(runtime)
    assert (await enter_code(second, request_id, newest_code(mail, EMAIL, OPENING_SUBJECT))).status_code == 303
    hours = runtime.settings.dsr_answer_access_hours
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=hours, minutes=1), tick=True):
        assert (await second.get(f"/privacy/requests/{request_id}/export")).status_code == 403
        page = await second.get(f"/privacy/requests/{request_id}")
        assert "Open your request" in page.text


async def test_a_purged_request_takes_its_browser_access_with_it(
    first: httpx.AsyncClient,
    second: httpx.AsyncClient,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    mail: MailSink,
) -> None:
    await make_subject(client, auth, email=EMAIL, profile={"name": NAME})
    request_id = await completed_request(first, runtime, mail)
    await ask_code(second, request_id)
    await deliver(runtime)
    assert (await enter_code(second, request_id, newest_code(mail, EMAIL, OPENING_SUBJECT))).status_code == 303
    count = select(func.count()).select_from(AnswerAccess)
    async with runtime.db.transaction() as session:
        assert (await session.exec(count)).one() == 1
        # The retention purge deletes a request row like this (retention.housekeeping); the rows go with it.
        await session.exec(delete(PrivacyRequest).where(col(PrivacyRequest.id) == uuid.UUID(request_id)))
    async with runtime.db.transaction() as session:
        assert (await session.exec(count)).one() == 0


# -- the same over the JSON API (the wallet app on another phone) --------------------------------


async def test_the_api_opens_a_confirmed_request_with_a_mailed_code_read_only(
    client: httpx.AsyncClient, app: Litestar, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    await make_subject(client, auth, email=EMAIL, profile={"name": NAME})
    filed = await client.post("/v1/requests", json={"type": "access", "identity": {"email": EMAIL}})
    request_id = filed.json()["id"]
    await deliver(runtime)
    verified = await client.post(f"/v1/requests/{request_id}/verify", json={"code": newest_code(mail, EMAIL)})
    assert verified.status_code == 200
    before = await history(client, auth, request_id)
    async with browser(app) as phone:
        not_yet = await phone.post(f"/v1/requests/{request_id}/open", json={"code": "123456"})
        assert not_yet.status_code == 422
        assert not_yet.json()["type"] == "/problems/no-code-waiting"
        sent = await phone.post(f"/v1/requests/{request_id}/access-code", json={"email": STRANGER_EMAIL})
        assert sent.status_code == 202
        assert sent.json() == {"status": "sent"}
        await deliver(runtime)
        assert mail.to(STRANGER_EMAIL) == []
        code = newest_code(mail, EMAIL, OPENING_SUBJECT)
        opened = await phone.post(f"/v1/requests/{request_id}/open", json={"code": code})
        assert opened.status_code == 200, opened.text
        token = opened.json()["token"]
        assert token.startswith("psr_")
        for answer in (not_yet, sent, opened):
            assert EMAIL not in answer.text
            assert NAME not in answer.text
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await phone.get(f"/v1/requests/{request_id}", headers=bearer)).json()["status"] == "completed"
        export = await phone.get(f"/v1/requests/{request_id}/export", headers=bearer)
        assert export.json()["subject"]["email"] == EMAIL
        replayed = await phone.post(f"/v1/requests/{request_id}/open", json={"code": code})
        assert replayed.status_code == 422
        # A token opens reading only: the operator actions still want an operator key.
        assert (await phone.post(f"/v1/requests/{request_id}/cancel", json={}, headers=bearer)).status_code == 401
    assert await history(client, auth, request_id) == before


async def test_the_api_refuses_a_code_for_a_request_never_confirmed(client: httpx.AsyncClient) -> None:
    filed = await client.post("/v1/requests", json={"type": "access", "identity": {"email": EMAIL}})
    refused = await client.post(f"/v1/requests/{filed.json()['id']}/access-code")
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert EMAIL not in refused.text
    unknown = await client.post(f"/v1/requests/{uuid.uuid4()}/access-code")
    assert unknown.status_code == 404


async def test_a_new_code_replaces_the_previous_one(
    first: httpx.AsyncClient,
    second: httpx.AsyncClient,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    mail: MailSink,
) -> None:
    await make_subject(client, auth, email=EMAIL, profile={"name": NAME})
    request_id = await completed_request(first, runtime, mail)
    await ask_code(second, request_id)
    await deliver(runtime)
    old = newest_code(mail, EMAIL, OPENING_SUBJECT)
    await ask_code(second, request_id)
    await deliver(runtime)
    new = newest_code(mail, EMAIL, OPENING_SUBJECT)
    if old != new:  # the same six digits by chance would prove nothing
        assert (await enter_code(second, request_id, old)).status_code == 422
    assert (await enter_code(second, request_id, new)).status_code == 303


async def test_sending_and_opening_are_audited_without_personal_data(
    first: httpx.AsyncClient,
    second: httpx.AsyncClient,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    mail: MailSink,
) -> None:
    await make_subject(client, auth, email=EMAIL, profile={"name": NAME})
    request_id = await completed_request(first, runtime, mail)
    await ask_code(second, request_id)
    await deliver(runtime)
    assert (await enter_code(second, request_id, newest_code(mail, EMAIL, OPENING_SUBJECT))).status_code == 303
    events = [e for e in await rows(runtime, "audit_events") if e["action"].startswith("dsr.answer")]
    assert [e["action"] for e in events] == ["dsr.answer_code.sent", "dsr.answer.opened"]
    for event in events:
        assert event["actor_type"] == "subject"
        assert event["actor_id"] == request_id
        assert EMAIL not in str(event)
        assert NAME not in str(event)

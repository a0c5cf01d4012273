"""Issue 20 item 6: a customer who files several requests in one sitting is never told to wait,
while the limits that stop a flood, and a stranger's share of the customer's inbox, still hold.

The sitting used to stop at the fourth request: each code mail counted against the share of the
day's mails one source network may send to an identity (3), whoever entered the codes. A code
entered correctly now gives its network's share that mail back (``ratelimit.code_quota``); the
identity's daily total, the hard bound on the inbox, is never given back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar

from privacy_service.app import create_app
from privacy_service.config import DEFAULT_RATE_LIMITS, Settings
from privacy_service.runtime import Runtime, build_runtime
from tests.api.dsr_support import OPEN_LIMITS, assert_problem, deliver, fresh_settings, make_subject
from tests.conftest import MailSink
from tests.portal_support import csrf_token
from tests.security.test_dsr_code_mail import client_at, code_for, code_mails

OWNER = "sam.sitting@example.com"
HOME = "198.51.100.23"
STRANGER = "203.0.113.77"
SITTING = [
    {"type": "access"},
    {"type": "rectify", "profile.name": "Samuel Sitting"},
    {"type": "erase"},
    {"type": "portability"},
]


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    # The shipped limits, per address and per identity alike: what a customer meets in production.
    return await fresh_settings(make_settings, backend, rate_limits=dict(DEFAULT_RATE_LIMITS))


async def file_on_the_portal(client: httpx.AsyncClient, fields: dict[str, str]) -> httpx.Response:
    form = await client.get("/privacy/request")
    assert form.status_code == 200, form.text
    data = {"_csrf_token": csrf_token(form), "identity_kind": "email", "email": OWNER, **fields}
    return await client.post("/privacy/request", data=data)


async def confirm_on_the_portal(client: httpx.AsyncClient, runtime: Runtime, mail: MailSink, verify_path: str) -> None:
    request_id = verify_path.split("/")[3]
    await deliver(runtime)
    page = await client.get(verify_path)
    code = code_for(mail, OWNER, request_id)
    confirmed = await client.post(verify_path, data={"_csrf_token": csrf_token(page), "code": code})
    assert confirmed.status_code == 303, confirmed.text
    status = await client.get(confirmed.headers["location"])
    assert status.status_code == 200, status.text


async def test_access_correction_deletion_and_a_fourth_in_one_sitting_all_go_through(
    app: Litestar, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    async with client_at(app, HOME) as owner:
        await make_subject(owner, auth, email=OWNER, profile={"name": "Sam Sitting"})
        for fields in SITTING:
            filed = await file_on_the_portal(owner, fields)
            assert filed.status_code == 303, filed.text
            await confirm_on_the_portal(owner, runtime, mail, filed.headers["location"])
    assert len(code_mails(mail, OWNER)) == len(SITTING)


async def test_a_flood_from_one_network_still_gets_429_and_no_more_than_its_share_of_codes(
    app: Litestar, runtime: Runtime, mail: MailSink
) -> None:
    answers = []
    async with client_at(app, STRANGER) as stranger:
        for _ in range(15):
            answers.append((await file_on_the_portal(stranger, {"type": "erase"})).status_code)
    assert 429 in answers  # the per-address intake limit (burst 10)
    assert answers[:3] == [303, 303, 303]
    await deliver(runtime)
    # Codes nobody entered still count against the network's share of the owner's inbox.
    assert len(code_mails(mail, OWNER)) == runtime.settings.dsr_codes_per_identity_and_address_per_day


async def test_a_strangers_unconfirmed_codes_do_not_eat_the_owners_sitting(
    app: Litestar, runtime: Runtime, mail: MailSink
) -> None:
    async with client_at(app, STRANGER) as stranger:
        for _ in range(3):
            assert (await file_on_the_portal(stranger, {"type": "erase"})).status_code == 303
    async with client_at(app, HOME) as owner:
        for fields in SITTING[:2]:
            filed = await file_on_the_portal(owner, fields)
            assert filed.status_code == 303, filed.text
            await confirm_on_the_portal(owner, runtime, mail, filed.headers["location"])


@pytest.fixture
async def open_per_address(make_settings: Any, backend: str) -> AsyncIterator[Runtime]:
    runtime = build_runtime(await fresh_settings(make_settings, backend, rate_limits=OPEN_LIMITS))
    yield runtime
    await runtime.close()


async def test_confirmed_codes_never_raise_the_daily_bound_on_the_inbox(
    open_per_address: Runtime, mail: MailSink
) -> None:
    runtime = open_per_address
    cap = runtime.settings.dsr_codes_per_identity_per_day
    async with client_at(create_app(runtime=runtime), HOME) as owner:
        for _ in range(cap):
            filed = await owner.post("/v1/requests", json={"type": "access", "identity": {"email": OWNER}})
            request_id = filed.json()["id"]
            await deliver(runtime)
            verified = await owner.post(
                f"/v1/requests/{request_id}/verify", json={"code": code_for(mail, OWNER, request_id)}
            )
            assert verified.status_code == 200, verified.text
        late = await owner.post("/v1/requests", json={"type": "access", "identity": {"email": OWNER}})
        assert late.status_code == 202
        resent = await owner.post(f"/v1/requests/{late.json()['id']}/resend")
    assert_problem(resent, 429, "too-many-codes")
    await deliver(runtime)
    assert len(code_mails(mail, OWNER)) == cap

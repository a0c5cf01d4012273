"""Issue 16 items 12 and 19, as an attacker tries them, over the real SMTP sink.

12: a stranger filing requests and resends for a customer's address can neither lock the customer out
of filing and verifying their own request, nor put more than the daily cap of code mails in their
inbox; resends are capped per request. A stranger's share counts per source network (IPv4 /24, IPv6
/64), and part of the day's mails is held for networks that have had none, so callers in several
networks cannot use up the owner's day either (see ratelimit.code_quota for how many it takes).
19: the code is in the mail body, never in its Subject (which lock screens and notification previews
show).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from litestar import Litestar

from privacy_service.config import DEFAULT_RATE_LIMITS, Settings
from privacy_service.runtime import Runtime
from tests.api.dsr_support import OPEN_LIMITS, assert_problem, deliver, fresh_settings, make_subject
from tests.conftest import MailSink

VICTIM = "vera.victim@example.com"
OWNER_ADDRESS = "198.51.100.7"
STRANGER_ADDRESSES = [f"198.18.{n}.7" for n in range(1, 13)]  # each in its own /24
CODE = re.compile(r"\b(\d{6})\b")
# The per-address limits are opened wide (the attacker's best case); the identity's own limits are the defaults.
LIMITS = dict(DEFAULT_RATE_LIMITS) | {name: OPEN_LIMITS[name] for name in ("intake", "verify", "resend", "download")}


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend, rate_limits=LIMITS, dsr_resend_cooldown_seconds=0)


@asynccontextmanager
async def client_at(app: Litestar, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client calling from ``address`` (the ASGI scope's client, as a direct connection has it)."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def code_mails(mail: MailSink, address: str) -> list[Any]:
    return [m for m in mail.to(address) if "verification code" in str(m["Subject"]).lower()]


def code_for(mail: MailSink, address: str, request_id: str) -> str:
    """The newest code mailed to ``address`` for this request (its id is in the mail's link)."""
    bodies = [m.get_content() for m in code_mails(mail, address) if request_id in m.get_content()]
    assert bodies, f"no code for {request_id} reached {address}"
    found = CODE.search(bodies[-1])
    assert found
    return found.group(1)


async def flood(app: Litestar, addresses: list[str], requests_each: int, resends_each: int) -> list[str]:
    """Strangers file requests for the victim's address and ask for codes again; every intake is accepted."""
    filed = []
    for address in addresses:
        async with client_at(app, address) as stranger:
            for _ in range(requests_each):
                response = await stranger.post("/v1/requests", json={"type": "erase", "identity": {"email": VICTIM}})
                assert response.status_code == 202, response.text  # never a lock-out of the identity
                request_id = response.json()["id"]
                filed.append(request_id)
                for _ in range(resends_each):
                    resent = await stranger.post(f"/v1/requests/{request_id}/resend")
                    assert resent.status_code in (202, 429), resent.text
                    if resent.status_code == 429:
                        assert_problem(resent, 429, "too-many-codes")
    return filed


async def test_a_stranger_cannot_lock_the_owner_out(
    app: Litestar, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    async with client_at(app, OWNER_ADDRESS) as owner:
        await make_subject(owner, auth, email=VICTIM, profile={"name": "Vera Victim"})
    await flood(app, STRANGER_ADDRESSES[:1], requests_each=20, resends_each=3)
    await deliver(runtime)
    assert len(code_mails(mail, VICTIM)) == runtime.settings.dsr_codes_per_identity_and_address_per_day

    async with client_at(app, OWNER_ADDRESS) as owner:
        response = await owner.post("/v1/requests", json={"type": "access", "identity": {"email": VICTIM}})
        assert response.status_code == 202, response.text
        request_id = response.json()["id"]
        await deliver(runtime)
        verified = await owner.post(
            f"/v1/requests/{request_id}/verify", json={"code": code_for(mail, VICTIM, request_id)}
        )
    assert verified.status_code == 200, verified.text
    assert (verified.json()["id"], verified.json()["status"]) == (request_id, "completed")


async def test_strangers_in_four_networks_cannot_lock_the_owner_out(
    app: Litestar, runtime: Runtime, mail: MailSink
) -> None:
    """Four networks used to be enough (3 + 3 + 3 + 1 of the 10 a day); the owner in a fifth gets a code."""
    await flood(app, STRANGER_ADDRESSES[:4], requests_each=5, resends_each=3)
    await deliver(runtime)
    strangers = len(code_mails(mail, VICTIM))
    assert strangers < runtime.settings.dsr_codes_per_identity_per_day
    async with client_at(app, OWNER_ADDRESS) as owner:
        response = await owner.post("/v1/requests", json={"type": "access", "identity": {"email": VICTIM}})
        assert response.status_code == 202, response.text
        request_id = response.json()["id"]
        await deliver(runtime)
        assert len(code_mails(mail, VICTIM)) == strangers + 1
        verified = await owner.post(
            f"/v1/requests/{request_id}/verify", json={"code": code_for(mail, VICTIM, request_id)}
        )
    assert verified.status_code == 200, verified.text


@pytest.mark.parametrize("network", ["203.0.113.{n}", "2001:db8:5:6::{n:x}"])
async def test_addresses_of_one_network_share_its_share(
    app: Litestar, runtime: Runtime, mail: MailSink, network: str
) -> None:
    """Six addresses in one IPv4 /24, or in one IPv6 /64: one network's share, not six."""
    await flood(app, [network.format(n=n) for n in range(1, 7)], requests_each=2, resends_each=1)
    await deliver(runtime)
    assert len(code_mails(mail, VICTIM)) == runtime.settings.dsr_codes_per_identity_and_address_per_day


async def test_the_inbox_gets_at_most_the_daily_cap_of_codes(app: Litestar, runtime: Runtime, mail: MailSink) -> None:
    await flood(app, STRANGER_ADDRESSES, requests_each=4, resends_each=2)
    await deliver(runtime)
    cap = runtime.settings.dsr_codes_per_identity_per_day
    assert len(code_mails(mail, VICTIM)) == cap  # the reserve included: a hard daily maximum
    # Over the cap a request is still accepted, with the same answer; it mails nothing, from a new network too.
    async with client_at(app, "192.0.2.99") as late:
        response = await late.post("/v1/requests", json={"type": "access", "identity": {"email": VICTIM}})
        assert response.status_code == 202
        assert response.json()["status"] == "awaiting_verification"
        resent = await late.post(f"/v1/requests/{response.json()['id']}/resend")
    assert_problem(resent, 429, "too-many-codes")
    assert int(resent.headers["retry-after"]) > 0
    await deliver(runtime)
    assert len(code_mails(mail, VICTIM)) == cap


@pytest.fixture
async def generous(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(
        make_settings,
        backend,
        rate_limits=LIMITS,
        dsr_resend_cooldown_seconds=0,
        dsr_codes_per_identity_per_day=100,
        dsr_codes_per_identity_and_address_per_day=100,
    )


async def test_resends_are_capped_per_request(generous: Settings, mail: MailSink) -> None:
    from privacy_service.app import create_app
    from privacy_service.runtime import build_runtime

    runtime = build_runtime(generous)
    try:
        async with client_at(create_app(runtime=runtime), OWNER_ADDRESS) as client:
            response = await client.post("/v1/requests", json={"type": "access", "identity": {"email": VICTIM}})
            request_id = response.json()["id"]
            allowed = generous.dsr_resend_max_per_request
            for _ in range(allowed):
                assert (await client.post(f"/v1/requests/{request_id}/resend")).status_code == 202
            refused = await client.post(f"/v1/requests/{request_id}/resend")
            assert_problem(refused, 429, "too-many-codes")
            await deliver(runtime)
            assert len(code_mails(mail, VICTIM)) == 1 + allowed
            # The last code sent still verifies the request.
            verified = await client.post(
                f"/v1/requests/{request_id}/verify", json={"code": code_for(mail, VICTIM, request_id)}
            )
            assert verified.status_code == 200, verified.text
    finally:
        await runtime.close()


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_the_code_is_in_the_body_and_never_in_the_subject(
    client: httpx.AsyncClient, runtime: Runtime, mail: MailSink, language: str
) -> None:
    response = await client.post(
        "/v1/requests", json={"type": "access", "identity": {"email": VICTIM}, "language": language}
    )
    assert response.status_code == 202
    await deliver(runtime)
    [message] = mail.to(VICTIM)
    subject, body = str(message["Subject"]), message.get_content()
    assert subject.strip()
    assert not re.search(r"\d", subject), subject
    found = CODE.search(body)
    assert found, body
    # The code in the body is the request's real code.
    verified = await client.post(f"/v1/requests/{response.json()['id']}/verify", json={"code": found.group(1)})
    assert verified.status_code == 200, verified.text

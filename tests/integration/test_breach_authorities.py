"""EDPB Guidelines 9/2022 on personal data breach notification (v2.0), para. 73: a controller not established
in the EU has no one-stop-shop, even with a representative in a Member State, and notifies every supervisory
authority concerned (where affected people reside). With a main establishment in the EU, the lead authority
alone is notified (GDPR Art. 56).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from privacy_service.app import create_app
from privacy_service.breaches.authorities import competent_authorities
from privacy_service.breaches.policy import load_breach_policy
from privacy_service.errors import InvalidInput
from privacy_service.policy.loader import load_policy
from privacy_service.runtime import Runtime
from tests.breach_support import assess, create, runtime_for
from tests.conftest import _empty_postgres, make_operator_key
from tests.policy_files import POLICIES

DOCUMENT = load_policy(POLICIES)
RULES = load_breach_policy(POLICIES, DOCUMENT)


def test_with_a_main_establishment_in_the_eu_the_lead_authority_alone_is_notified() -> None:
    competent = competent_authorities(RULES, DOCUMENT, eu_main_establishment=True, countries=["DE", "FR", "IE"])
    assert competent.one_stop_shop
    assert competent.keys() == ["ie_dpc"]
    assert "one-stop-shop" in competent.reasons[0]


def test_without_an_eu_establishment_every_authority_concerned_is_notified() -> None:
    competent = competent_authorities(
        RULES, DOCUMENT, eu_main_establishment=False, countries=["DE", "FR", "IE", "US", "DE", "NO"]
    )
    assert not competent.one_stop_shop
    # Ireland's authority is the policy's own key; the others come from breach.yaml's EEA table.
    assert competent.keys() == ["sa.de", "sa.fr", "ie_dpc", "sa.no"]
    assert competent.outside_eea == ("US",)
    assert [a.country for a in competent.authorities] == ["DE", "FR", "IE", "NO"]
    assert "9/2022" in competent.reasons[0]
    assert "outside the EEA (US)" in competent.reasons[1]


def test_without_an_eu_establishment_the_countries_must_be_known() -> None:
    with pytest.raises(InvalidInput, match="affected_countries"):
        competent_authorities(RULES, DOCUMENT, eu_main_establishment=False, countries=[])


@pytest.fixture
async def api(make_settings: Any, backend: str) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    settings = make_settings()
    if backend == "postgres":
        await _empty_postgres(settings.database_url)
    async with runtime_for(settings) as runtime:
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, runtime


async def test_a_non_eu_controller_notifies_each_authority_concerned_once(
    api: tuple[httpx.AsyncClient, Runtime],
) -> None:
    client, runtime = api
    auth = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
    breach = await create(client, auth, affected_countries=["FR", "DE", "US"])
    assert breach["affected_countries"] == ["FR", "DE", "US"]
    assessed = await assess(client, auth, breach["id"], eu_main_establishment=False)
    authorities = assessed["assessment"]["authorities"]
    assert authorities["one_stop_shop"] is False
    assert [item["key"] for item in authorities["authorities"]] == ["sa.fr", "sa.de"]
    assert authorities["outside_eea"] == ["US"]
    assert any("9/2022" in reason for reason in assessed["decisions"]["notify_authority"]["reasons"])
    assert "authority_notification" in assessed["open_duties"]

    # Without a named authority, the next one still waiting gets the initial notice.
    first = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification", json={"recipient": "CNIL teleservice"}, headers=auth
    )
    assert first.status_code == 201, first.text
    assert first.json()["kind"] == "initial"
    assert first.json()["content"]["notice"]["authority"] == {
        "key": "sa.fr",
        "name": "Commission nationale de l'informatique et des libertés",
        "country": "FR",
    }
    view = (await client.get(f"/v1/breaches/{breach['id']}", headers=auth)).json()
    assert "authority_notification" in view["open_duties"], "Germany's authority is still to be notified"
    assert view["clock"]["state"] == "met"

    again = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification",
        json={"recipient": "CNIL", "authority": "sa.fr", "kind": "initial"},
        headers=auth,
    )
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/already-notified"
    unknown = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification",
        json={"recipient": "somebody", "authority": "sa.us"},
        headers=auth,
    )
    assert unknown.status_code == 422
    assert unknown.headers["content-type"] == "application/problem+json"

    second = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification", json={"recipient": "BfDI form"}, headers=auth
    )
    assert second.status_code == 201, second.text
    assert second.json()["kind"] == "initial"
    assert second.json()["content"]["notice"]["authority"]["key"] == "sa.de"
    # A follow-up goes to an authority already notified.
    follow_up = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification",
        json={"recipient": "BfDI case officer", "authority": "sa.de"},
        headers=auth,
    )
    assert follow_up.json()["kind"] == "follow_up"
    view = (await client.get(f"/v1/breaches/{breach['id']}", headers=auth)).json()
    assert "authority_notification" not in view["open_duties"]

    document = await client.get(second.json()["documents"]["en"]["markdown"], headers=auth)
    assert "Supervisory authorities concerned" in document.text
    assert "every authority concerned is notified (EDPB Guidelines 9/2022)" in document.text
    assert "Countries of the data subjects: FR, DE, US" in document.text
    zh = await client.get(second.json()["documents"]["zh"]["html"], headers=auth)
    assert "相关监管机构" in zh.text


async def test_an_eu_controller_notifies_its_lead_authority(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, runtime = api
    auth = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
    breach = await create(client, auth, affected_countries=["FR", "DE"])
    assessed = await assess(client, auth, breach["id"])
    assert assessed["assessment"]["authorities"]["one_stop_shop"] is True
    assert [item["key"] for item in assessed["assessment"]["authorities"]["authorities"]] == ["ie_dpc"]
    notice = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification", json={"recipient": "DPC form"}, headers=auth
    )
    assert notice.json()["content"]["notice"]["authority"]["key"] == "ie_dpc"
    view = (await client.get(f"/v1/breaches/{breach['id']}", headers=auth)).json()
    assert "authority_notification" not in view["open_duties"]

    # A non-EU assessment needs the affected people's countries.
    other = await create(client, auth)
    no_countries = await client.post(
        f"/v1/breaches/{other['id']}/assessment",
        json={"ease_of_identification": "maximum", "eu_main_establishment": False},
        headers=auth,
    )
    assert no_countries.status_code == 422
    assert "affected_countries" in no_countries.json()["detail"]

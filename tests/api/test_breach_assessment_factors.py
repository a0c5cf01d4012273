"""The assessment's factors over HTTP: recipient, likely consequences, taxonomy data types, countries.

Bad values are refused with problem+json (400 for a malformed body, 422 for a value the policy does not
know or facts that contradict it), never a 500, and a refusal changes nothing. The factors show in the
incident, the register export and the Art. 33 document (en, zh).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from httpx import AsyncClient

from privacy_service.runtime import Runtime
from tests.api.test_breaches_api import breach_count
from tests.breach_support import assess, create, incident


async def test_bad_factors_are_refused_and_change_nothing(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    before = await breach_count(runtime)
    bad_incidents: list[tuple[dict[str, Any], int, str]] = [
        (incident(data_types=["health", "shoe_size"]), 422, "data_types[1]"),
        (incident(data_types=["Health!"]), 400, ""),
        (incident(categories=[], data_types=[]), 422, "at least one of categories or data_types"),
        (incident(affected_countries=["de"]), 400, ""),
        (incident(affected_countries=["DEU"]), 400, ""),
        (incident(data_types=["health"] * 51), 400, ""),
    ]
    for body, status, words in bad_incidents:
        response = await client.post("/v1/breaches", json=body, headers=auth)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert words in str(response.json())
    assert await breach_count(runtime) == before

    breach = await create(client, auth, data_types=["billing"])
    integrity_only = await create(client, auth, nature=["integrity"], exfiltration_known=False)
    snapshot = await breach_count(runtime)
    base = {"ease_of_identification": "maximum"}
    bad_assessments: list[tuple[str, dict[str, Any], int, str]] = [
        (breach["id"], {**base, "recipient": {"trust": "friendly", "data": "retained"}}, 400, ""),
        (breach["id"], {**base, "recipient": {"trust": "trusted"}}, 400, ""),
        (breach["id"], {**base, "recipient": {"trust": "trusted", "data": "kept", "x": 1}}, 400, ""),
        (breach["id"], {**base, "consequences": ["bad_luck"]}, 422, "consequences[0]"),
        (breach["id"], {**base, "consequences": ["Not a name"]}, 400, ""),
        (breach["id"], {**base, "consequences": ["identity_theft"] * 21}, 400, ""),
        (breach["id"], {**base, "eu_main_establishment": "no"}, 400, ""),
        # An untrusted recipient who keeps the data cannot be scored as a mere exposure.
        (
            breach["id"],
            {**base, "recipient": {"trust": "untrusted", "data": "retained"}, "confidentiality": "known_recipients"},
            422,
            "at least unknown_recipients",
        ),
        (
            breach["id"],
            {**base, "contained": True, "recipient": {"trust": "untrusted", "data": "returned_or_deleted"}},
            422,
            "contradicts",
        ),
        (breach["id"], {**base, "dpc_factors": {"billing": ["fraud_enabling", "profiling"]}}, 422, "profiling"),
        (breach["id"], {**base, "dpc_factors": {"health": ["some_assumptions"]}}, 422, "not a category or data type"),
        (breach["id"], {**base, "eu_main_establishment": False}, 422, "affected_countries"),
        (integrity_only["id"], {**base, "recipient": {"trust": "unknown", "data": "retained"}}, 422, "confidentiality"),
    ]
    for breach_id, body, status, words in bad_assessments:
        response = await client.post(f"/v1/breaches/{breach_id}/assessment", json=body, headers=auth)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert words in str(response.json()), response.text
    assert await breach_count(runtime) == snapshot
    view = (await client.get(f"/v1/breaches/{breach['id']}", headers=auth)).json()
    assert view["assessment"] is None
    assert view["version"] == 1

    # A value the policy does not know is answered with the ones it does, and is not repeated.
    unknown = await client.post(
        f"/v1/breaches/{breach['id']}/assessment", json={**base, "consequences": ["bad_luck_again"]}, headers=auth
    )
    assert "identity_theft" in unknown.json()["allowed"]
    assert "bad_luck_again" not in unknown.text
    shoe = await client.post("/v1/breaches", json=incident(data_types=["shoe_size_xl"]), headers=auth)
    assert "health" in shoe.json()["allowed"]
    assert "shoe_size_xl" not in shoe.text


async def test_an_untrusted_recipient_keeping_data_is_never_low(client: AsyncClient, auth: dict[str, str]) -> None:
    # A member of the public received one customer's name and e-mail by mistake and will not delete it.
    breach = await create(
        client,
        auth,
        malicious=False,
        exfiltration_known=False,
        affected={"estimated_count": 1},
        consequences="The recipient may contact the customer.",
    )
    asked = await assess(client, auth, breach["id"], recipient={"trust": "untrusted", "data": "returned_or_deleted"})
    assert asked["band"] == "low"
    assert asked["decisions"]["notify_authority"]["value"] is False
    kept = await assess(client, auth, breach["id"], recipient={"trust": "untrusted", "data": "retained"})
    assert kept["assessment"]["inputs"]["confidentiality"] == "unknown_recipients"
    assert kept["assessment"]["severity"]["band"] == "low"  # 1 x 1 + 0.5: the score alone
    assert kept["band"] == "medium"  # the recipient floor
    assert kept["decisions"]["notify_authority"]["value"] is True
    assert any("keeps readable data" in reason for reason in kept["decisions"]["notify_authority"]["reasons"])


async def test_phishing_on_contact_and_billing_data_reaches_the_people(
    client: AsyncClient, auth: dict[str, str]
) -> None:
    breach = await create(
        client,
        auth,
        categories=["user.name", "user.contact.email"],
        data_types=["billing"],
        malicious=False,
        exfiltration_known=False,
    )
    recipient = {"trust": "untrusted", "data": "unknown"}
    plain = await assess(client, auth, breach["id"], recipient=recipient)
    assert plain["band"] == "medium"  # billing data with little insight: DPC 2, + 0.25
    assert plain["decisions"]["notify_subjects"]["value"] is False
    phishing = await assess(client, auth, breach["id"], recipient=recipient, consequences=["phishing_impersonation"])
    severity = phishing["assessment"]["severity"]
    assert (severity["data_dpc"], severity["dpc"], severity["dpc_category"]) == (
        2,
        3,
        "consequence:phishing_impersonation",
    )
    assert phishing["band"] == "high"
    assert phishing["decisions"]["notify_subjects"]["value"] is True
    assert any("phishing" in reason for reason in phishing["decisions"]["notify_subjects"]["reasons"])


async def test_factors_show_in_the_register_and_the_art_33_document(client: AsyncClient, auth: dict[str, str]) -> None:
    breach = await create(
        client,
        auth,
        categories=["user.name"],
        data_types=["health", "insurance"],
        affected_countries=["IE"],
    )
    assert [item["key"] for item in breach["data_types"]] == ["health", "insurance"]
    assert breach["data_types"][0]["name"] == "Health data"
    assessed = await assess(
        client,
        auth,
        breach["id"],
        recipient={"trust": "unknown", "data": "retained"},
        consequences=["discrimination", "identity_theft"],
    )
    # Health data is sensitive: DPC 4 from the data itself.
    assert assessed["assessment"]["severity"]["data_dpc"] == 4
    health = next(part for part in assessed["assessment"]["severity"]["categories"] if part["category"] == "health")
    assert (health["source"], health["type"], health["score"]) == ("data_type", "sensitive", 4)

    export = await client.get("/v1/breaches/register.csv", headers=auth)
    assert export.status_code == 200, export.text
    rows = list(csv.DictReader(io.StringIO(export.text)))
    row = next(item for item in rows if item["id"] == breach["id"])
    assert row["data_types"] == "health; insurance"
    assert row["recipient"] == "unknown, retained"
    assert row["likely_consequences"] == "discrimination; identity_theft"
    assert row["authorities_concerned"] == "ie_dpc"
    assert row["affected_countries"] == "IE"

    notice = await client.post(
        f"/v1/breaches/{breach['id']}/authority-notification", json={"recipient": "DPC form"}, headers=auth
    )
    assert notice.status_code == 201, notice.text
    content = notice.json()["content"]
    assert content["assessment_factors"]["recipient"] == {"trust": "unknown", "data": "retained"}
    assert [item["key"] for item in content["assessment_factors"]["consequences"]] == [
        "discrimination",
        "identity_theft",
    ]
    links = notice.json()["documents"]
    markdown = (await client.get(links["en"]["markdown"], headers=auth)).text
    assert "Likely consequences assessed: Discrimination, Identity theft" in markdown
    assert "Recipient of the data: unknown recipient; the data: kept by the recipient" in markdown
    assert "Health data" in markdown
    html_zh = (await client.get(links["zh"]["html"], headers=auth)).text
    assert "歧视" in html_zh
    assert "身份盗用" in html_zh
    assert "健康信息" in html_zh
    assert "仍由接收方持有" in html_zh


async def test_data_types_and_countries_are_facts_with_versions(client: AsyncClient, auth: dict[str, str]) -> None:
    breach = await create(client, auth)
    await assess(client, auth, breach["id"])
    url = f"/v1/breaches/{breach['id']}"
    changed = await client.patch(url, json={"data_types": ["health"], "affected_countries": ["NL"]}, headers=auth)
    assert changed.status_code == 200, changed.text
    view = changed.json()
    assert [item["key"] for item in view["data_types"]] == ["health"]
    assert view["affected_countries"] == ["NL"]
    assert view["assessment_stale"] is True
    assert "reassessment" in view["open_duties"]
    nothing = await client.patch(url, json={"categories": [], "data_types": []}, headers=auth)
    assert nothing.status_code == 422
    assert nothing.headers["content-type"] == "application/problem+json"
    versions = (await client.get(f"{url}/versions", headers=auth)).json()
    assert versions[-1]["changed"] == ["data_types", "affected_countries"]
    assert versions[-1]["snapshot"]["data_types"] == ["health"]
    reassessed = await assess(client, auth, breach["id"])
    assert reassessed["assessment"]["severity"]["dpc"] == 4

"""The published policy: JSON and JSON-LD, language negotiation, caching validators, versions.

Rendering-only tests run on SQLite alone; everything that publishes runs on both databases.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from privacy_service.app import create_app
from privacy_service.audit.service import Actor
from privacy_service.config import Settings
from privacy_service.errors import Conflict
from privacy_service.policy.document import SECTION_IDS
from privacy_service.policy.duration import Duration
from privacy_service.policy.pages import negotiate_language
from privacy_service.policy.service import publish
from privacy_service.runtime import Runtime, build_runtime
from tests.policy_files import copy_policies, edit_yaml

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])
ACTOR = Actor.system("test")


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """A runtime and client for ``settings`` (e.g. another policy directory)."""
    runtime = build_runtime(settings)
    transport = httpx.ASGITransport(app=create_app(runtime=runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield runtime, client
    finally:
        await runtime.close()


async def publish_current(runtime: Runtime) -> None:
    async with runtime.db.transaction() as session:
        await publish(session, runtime.policy, now=runtime.clock.now(), base_url=runtime.settings.base_url, actor=ACTOR)


def category(body: dict[str, Any], key: str) -> dict[str, Any]:
    return next(item for item in body["data_categories"] if item["key"] == key)


# -- the current policy ---------------------------------------------------------------------


@sqlite_only
async def test_current_policy_as_json(client: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await client.get("/v1/policy")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-language"] == "en"
    assert "Accept-Language" in response.headers["vary"]
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["etag"].startswith('"')  # strong, not W/
    effective = datetime.combine(runtime.policy.effective_date, datetime.min.time(), tzinfo=UTC)
    assert runtime.policy.modified_at is not None
    expected = min(max(effective, runtime.policy.modified_at.replace(microsecond=0)), datetime.now(UTC))
    assert parsedate_to_datetime(response.headers["last-modified"]) == expected
    body = response.json()
    assert body["version"] == runtime.policy.version
    assert body["language"] == "en"
    assert [section["id"] for section in body["sections"]] == list(SECTION_IDS)
    assert {item["key"] for item in body["data_categories"]} == set(runtime.policy.data_categories)
    transactions = category(body, "user.financial.transaction")
    assert transactions["retention"]["legal_duty"]["basis"].startswith("EU AMLD4")
    assert transactions["retention"]["erasable_on_request"] is False
    assert {regime["id"] for regime in body["regimes"]} >= {"gdpr", "ccpa", "pipl"}
    gdpr = next(regime for regime in body["regimes"] if regime["id"] == "gdpr")
    assert gdpr["deadline"] == {"period": "P1M", "text": "1 month"}


@sqlite_only
@pytest.mark.parametrize(
    ("headers", "query", "language"),
    [
        ({"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}, "", "zh"),
        ({"Accept-Language": "en-GB,en;q=0.9"}, "", "en"),
        ({"Accept-Language": "fr-FR,de;q=0.8"}, "", "en"),  # unsupported -> default
        ({"Accept-Language": "fr, zh;q=0.5"}, "", "zh"),  # the best supported one
        ({"Accept-Language": "zh;q=0, en"}, "", "en"),  # q=0 means "not this"
        ({"Accept-Language": "en;q=0.2, zh-Hant-TW;q=0.7"}, "", "zh"),
        ({"Accept-Language": "*"}, "", "en"),
        ({"Accept-Language": "en"}, "?lang=zh", "zh"),  # ?lang= wins
        ({}, "?lang=ja", "en"),  # unsupported -> default
        ({}, "?lang=ZH-cn", "zh"),
    ],
)
async def test_language_negotiation(
    client: httpx.AsyncClient, headers: dict[str, str], query: str, language: str
) -> None:
    response = await client.get(f"/v1/policy{query}", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-language"] == language
    assert response.json()["language"] == language


@sqlite_only
async def test_unsupported_language_says_which_one_it_got(client: httpx.AsyncClient) -> None:
    english = await client.get("/v1/policy")
    fallback = await client.get("/v1/policy", headers={"Accept-Language": "de-DE"})
    assert fallback.headers["content-language"] == "en"
    assert fallback.content == english.content
    chinese = await client.get("/v1/policy?lang=zh")
    assert chinese.json()["title"] == "隐私政策"
    assert category(chinese.json(), "user.behavior")["retention"]["summary"] == "所记录的事件发生之日后13个月"


def test_negotiate_language_ignores_malformed_q_values() -> None:
    assert negotiate_language(None, "zh;q=abc, en;q=0.5", ("en", "zh")) == "en"
    assert negotiate_language(None, ",,;", ("en", "zh")) == "en"
    assert negotiate_language("", None, ("en", "zh")) == "en"


@sqlite_only
async def test_conditional_get(client: httpx.AsyncClient) -> None:
    first = await client.get("/v1/policy?lang=zh")
    etag = first.headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await client.get("/v1/policy?lang=zh", headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "public, max-age=300"
        assert again.headers["content-language"] == "zh"
    changed = await client.get("/v1/policy?lang=zh", headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200
    assert changed.content == first.content
    # The validators are per language and per format.
    english = await client.get("/v1/policy", headers={"If-None-Match": etag})
    assert english.status_code == 200
    assert english.headers["etag"] != etag
    jsonld = await client.get("/v1/policy?format=jsonld&lang=zh")
    assert jsonld.headers["etag"] not in {etag, english.headers["etag"]}


@sqlite_only
async def test_if_modified_since(client: httpx.AsyncClient) -> None:
    first = await client.get("/v1/policy")
    modified = parsedate_to_datetime(first.headers["last-modified"])
    later = await client.get("/v1/policy", headers={"If-Modified-Since": format_datetime(modified, usegmt=True)})
    assert later.status_code == 304
    earlier = datetime(2000, 1, 1, tzinfo=UTC)
    old = await client.get("/v1/policy", headers={"If-Modified-Since": format_datetime(earlier, usegmt=True)})
    assert old.status_code == 200
    garbage = await client.get("/v1/policy", headers={"If-Modified-Since": "yesterday"})
    assert garbage.status_code == 200


@sqlite_only
async def test_bad_format_is_a_problem_without_echo(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/policy?format=<script>")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "<script>" not in response.text


@sqlite_only
async def test_jsonld_is_dpv_aligned(client: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await client.get("/v1/policy?format=jsonld")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/ld+json"
    document = response.json()
    assert document["@context"]["dpv"] == "https://w3id.org/dpv#"
    assert document["@type"] == "dpv:PrivacyNotice"
    assert document["dct:hasVersion"] == runtime.policy.version
    assert document["dpv:hasDataController"]["@type"] == "dpv:DataController"
    processes = document["dpv:hasProcess"]
    expected = sum(len(spec.purposes) for spec in runtime.policy.data_categories.values())
    assert len(processes) == expected
    for process in processes:
        assert process["@type"] == "dpv:Process"
        assert process["dpv:hasPersonalData"]["@type"][0] == "dpv:PersonalData"
        assert process["dpv:hasPurpose"]["@type"].startswith("dpv:")
        assert process["dpv:hasLegalBasis"][1].startswith("eu-gdpr:A6-1-")
        storage = process["dpv:hasStorageCondition"][0]
        assert storage["@type"] == "dpv:StorageDuration"
        duration = storage["dpv:hasDuration"]["rdf:value"]
        assert duration["@type"] == "xsd:duration"
        Duration.parse(duration["@value"])
    aml = [p for p in processes if p["@id"].endswith("#process-user.financial.transaction.aml_compliance")]
    assert len(aml) == 1
    assert aml[0]["dpv:hasLegalBasis"] == ["dpv:LegalObligation", "eu-gdpr:A6-1-c"]
    assert [c["dpv:hasDuration"]["rdf:value"]["@value"] for c in aml[0]["dpv:hasStorageCondition"]] == ["P2Y", "P5Y"]


@sqlite_only
async def test_gpc_declaration_follows_the_policy(
    client: httpx.AsyncClient, runtime: Runtime, make_settings: Any, tmp_path: Path
) -> None:
    response = await client.get("/.well-known/gpc.json")
    assert response.status_code == 200
    assert response.json() == {"gpc": True, "lastUpdate": runtime.policy.effective_date.isoformat()}
    folder = copy_policies(tmp_path / "no-gpc")
    edit_yaml(folder / "policy.yaml", lambda d: d["tracking"].update(honours_gpc=False))
    async with serve(make_settings(policy_dir=folder)) as (_, other):
        assert (await other.get("/.well-known/gpc.json")).status_code == 404


# -- one source of truth ----------------------------------------------------------------------


async def test_one_retention_period_changes_notice_json_html_and_rule(
    client: httpx.AsyncClient, runtime: Runtime, make_settings: Any, tmp_path: Path
) -> None:
    """Changing one period in policy.yaml (and nothing else) changes every reader of it."""
    shipped = category((await client.get("/v1/policy")).json(), "user.behavior")["retention"]
    assert shipped["period"] == "P13M"
    assert runtime.policy.retention_rule("user.behavior").period == Duration(months=13)

    folder = copy_policies(tmp_path / "edited")
    edit_yaml(folder / "policy.yaml", lambda d: d["data_categories"]["user.behavior"]["retention"].update(period="P7M"))
    async with serve(make_settings(policy_dir=folder)) as (edited, other):
        # The rule the retention engine (purge) reads.
        rule = edited.policy.retention_rules()["user.behavior"]
        assert rule.period == Duration(months=7)
        occurred = datetime(2026, 1, 31, 12, tzinfo=UTC)
        assert rule.expires_at({"occurred_at": occurred}) == datetime(2026, 8, 31, 12, tzinfo=UTC)
        # The published JSON, in both languages.
        english = category((await other.get("/v1/policy")).json(), "user.behavior")["retention"]
        assert english["period"] == "P7M"
        assert english["summary"] == "7 months after the event it records takes place"
        chinese = category((await other.get("/v1/policy?lang=zh")).json(), "user.behavior")["retention"]
        assert chinese["summary"] == "所记录的事件发生之日后7个月"
        # The HTML page.
        html = (await other.get("/privacy")).text
        row = re.search(r'<th scope="row">App activity</th>\s*<td[^>]*>([^<]*)</td>', html)
        assert row is not None
        assert row.group(1) == "7 months after the event it records takes place"
        # JSON-LD.
        jsonld = (await other.get("/v1/policy?format=jsonld")).json()
        behaviour = [p for p in jsonld["dpv:hasProcess"] if p["@id"].split("#process-")[1].startswith("user.behavior.")]
        assert {p["dpv:hasStorageCondition"][0]["dpv:hasDuration"]["rdf:value"]["@value"] for p in behaviour} == {"P7M"}
        # And what `policy publish` records.
        edited_version = edited.policy.version
        await publish_current(edited)
        published = (await other.get(f"/v1/policy/versions/{edited_version}")).json()
        assert category(published, "user.behavior")["retention"]["period"] == "P7M"


# -- published versions ----------------------------------------------------------------------


async def test_versions_are_immutable(
    client: httpx.AsyncClient, runtime: Runtime, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # The shipped version, whatever it is, and the next one this test publishes after it.
    current, effective = runtime.policy.version, runtime.policy.effective_date
    bumped, bumped_effective = f"{current}.1", effective + timedelta(days=5)
    assert (await client.get("/v1/policy/versions")).json() == {"current": current, "items": []}
    original_en = (await client.get("/v1/policy")).content
    original_zh = (await client.get("/v1/policy?lang=zh")).content
    await publish_current(runtime)

    published = await client.get(f"/v1/policy/versions/{current}")
    assert published.status_code == 200
    assert published.content == original_en  # served exactly as the current policy was
    assert published.headers["cache-control"] == "public, max-age=86400, immutable"
    assert (await client.get(f"/v1/policy/versions/{current}?lang=zh")).content == original_zh
    negotiated = await client.get(f"/v1/policy/versions/{current}", headers={"Accept-Language": "zh-CN"})
    assert negotiated.content == original_zh
    assert negotiated.headers["content-language"] == "zh"
    not_modified = await client.get(
        f"/v1/policy/versions/{current}", headers={"If-None-Match": published.headers["etag"]}
    )
    assert not_modified.status_code == 304

    # Edit the files after publishing: a new version with a changed period and a changed sentence.
    folder = copy_policies(tmp_path / "next")

    def change(data: dict[str, Any]) -> None:
        data["version"] = bumped
        data["effective_date"] = bumped_effective.isoformat()
        data["data_categories"]["system.support_ticket"]["retention"]["period"] = "P2Y"

    edit_yaml(folder / "policy.yaml", change)
    edit_yaml(
        folder / "notice.en.yaml",
        lambda d: d["sections"]["cookies"].update(body=d["sections"]["cookies"]["body"] + " Nothing else."),
    )
    async with serve(make_settings(policy_dir=folder)) as (second, other):
        await publish_current(second)
        listing = (await other.get("/v1/policy/versions")).json()
        assert listing["current"] == bumped
        assert [item["version"] for item in listing["items"]] == [bumped, current]
        assert [item["effective_date"] for item in listing["items"]] == [
            bumped_effective.isoformat(),
            effective.isoformat(),
        ]
        assert listing["items"][1]["content_hash"] == runtime.policy.content_hash
        assert listing["items"][0]["content_hash"] == second.policy.content_hash
        assert all(item["languages"] == ["en", "zh"] for item in listing["items"])

        # The old version is unchanged, byte for byte; the new one has the edit.
        old = await other.get(f"/v1/policy/versions/{current}")
        assert old.content == original_en
        assert category(old.json(), "system.support_ticket")["retention"]["period"] == "P3Y"
        new = (await other.get(f"/v1/policy/versions/{bumped}")).json()
        assert category(new, "system.support_ticket")["retention"]["period"] == "P2Y"
        assert new["sections"][SECTION_IDS.index("cookies")]["body"].endswith("Nothing else.")
        assert (await other.get("/v1/policy")).json() == new


async def test_publish_refuses_duplicates_and_unbumped_edits(
    runtime: Runtime, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    await publish_current(runtime)
    with pytest.raises(Conflict, match="already published with this content"):
        await publish_current(runtime)

    folder = copy_policies(tmp_path / "edit")
    edit_yaml(folder / "policy.yaml", lambda d: d["data_categories"]["user.device"]["retention"].update(period="P1Y"))
    edited = build_runtime(make_settings(policy_dir=folder))
    try:
        with pytest.raises(Conflict, match="bump `version`"):
            await publish_current(edited)
    finally:
        await edited.close()

    bumped_only = copy_policies(tmp_path / "bump")
    edit_yaml(bumped_only / "policy.yaml", lambda d: d.update(version=f"{runtime.policy.version}.9"))
    same = build_runtime(make_settings(policy_dir=bumped_only))
    try:
        unchanged_since = f"nothing changed since policy version {re.escape(runtime.policy.version)};"
        with pytest.raises(Conflict, match=unchanged_since):
            await publish_current(same)
    finally:
        await same.close()


async def test_unknown_version_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/policy/versions/1999.x-secret")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == "/problems/not-found"
    assert "1999.x-secret" not in problem["detail"]


@sqlite_only
async def test_snapshot_is_stored_with_its_hash(runtime: Runtime) -> None:
    await publish_current(runtime)
    async with runtime.db.engine.connect() as conn:
        row = (await conn.exec_driver_sql("SELECT version, content_hash, document FROM policy_versions")).one()
    document = row[2] if isinstance(row[2], dict) else json.loads(row[2])
    assert row[0] == runtime.policy.version
    assert row[1] == runtime.policy.content_hash
    assert set(document["rendered"]["json"]) == {"en", "zh"}
    assert document["source"]["policy"]["version"] == runtime.policy.version


@sqlite_only
async def test_documented_in_openapi(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    for path in ("/v1/policy", "/v1/policy/versions", "/v1/policy/versions/{version}", "/privacy"):
        assert "get" in paths[path], path
    parameters = {p["name"] for p in paths["/v1/policy"]["get"]["parameters"]}
    assert parameters >= {"lang", "format"}
    assert "304" in paths["/v1/policy"]["get"]["responses"]

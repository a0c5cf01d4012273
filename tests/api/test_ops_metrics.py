"""GET /metrics, the figures an on-call engineer alerts on (issue 20 item 13), and the files in deploy/
that use them: every metric an alert rule or a dashboard panel names is one a real scrape exports.

Breach clocks (hours left, per incident id and clock), the nearest request deadline, the last
successful purge and the last verification of the audit chain. No label carries personal data or an
incident's title.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from httpx import AsyncClient
from sqlalchemy import text
from sqlmodel import select

from privacy_service.audit.jobs import verify_and_record
from privacy_service.audit.service import Actor
from privacy_service.breaches.models import Breach
from privacy_service.config import Settings
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.retention.jobs import RunOptions, run_purge
from privacy_service.runtime import Runtime
from tests.api.dsr_support import fresh_settings, make_subject, submit_and_verify
from tests.breach_support import create
from tests.conftest import MailSink

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "privacy-service.json"
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?P<labels>\{.*\})? (?P<value>-?[0-9.e+]+)$")
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')
CUSTOMER = "ops-metrics@example.com"
# Not exported by the service: Prometheus's own series for a scrape target.
PROMETHEUS_SERIES = frozenset({"up"})
Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    # Every scrape computes the figures afresh (the default snapshot lives 30 seconds).
    return await fresh_settings(make_settings, backend, metrics_cache_seconds=0)


def parse(exposition: str) -> Samples:
    """{metric name: [(labels, value)]} of a text exposition; ``# TYPE`` families with no sample too."""
    found: Samples = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            found.setdefault(name, [])
            if kind == "histogram":
                for suffix in ("_bucket", "_sum", "_count"):
                    found.setdefault(name + suffix, [])
            continue
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, line
        labels = dict(LABEL.findall(match["labels"] or ""))
        found.setdefault(match["name"], []).append((labels, float(match["value"])))
    return found


async def scrape(
    client: AsyncClient, auth: dict[str, str]
) -> tuple[str, dict[str, list[tuple[dict[str, str], float]]]]:
    response = await client.get("/metrics", headers=auth)
    assert response.status_code == 200, response.text
    return response.text, parse(response.text)


def one(found: Samples, name: str) -> float:
    samples = found[name]
    assert len(samples) == 1, samples
    return samples[0][1]


async def activity(client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink) -> dict[str, Any]:
    """A running breach clock, an open verified request, a completed purge, a passed audit check."""
    breach = await create(client, auth)
    await make_subject(client, auth, email=CUSTOMER, profile={"name": "Ops Metrics"})
    # An erasure waits for an operator's review: open, verified, with a legal due date.
    await submit_and_verify(client, runtime, mail, CUSTOMER, "erase")
    purge = await run_purge(runtime, RunOptions(actor=Actor.system("test")))
    assert purge.status == "completed", purge.message
    verdict = await verify_and_record(runtime, actor="cli")
    assert verdict.ok
    return breach


async def test_clocks_purge_and_audit_times_are_exported(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    _, before = await scrape(client, auth)
    # Nothing to report yet: absent, never a made-up zero that an alert would read as "long ago".
    for name in (
        "privacy_breach_clock_hours_left",
        "privacy_request_deadline_hours_left",
        "privacy_retention_last_success_timestamp_seconds",
        "privacy_audit_chain_last_verified_timestamp_seconds",
        "privacy_audit_chain_verification_ok",
    ):
        assert before[name] == [], name

    breach = await activity(client, auth, runtime, mail)
    exposition, found = await scrape(client, auth)
    now = runtime.clock.now()

    clocks = {labels["clock"]: (labels, value) for labels, value in found["privacy_breach_clock_hours_left"]}
    assert set(clocks) == {"authority", "california"}  # a breach of confidentiality: both run
    for labels, _ in clocks.values():
        assert labels == {"incident": breach["id"], "clock": labels["clock"]}
    deadline = datetime.fromisoformat(breach["clock"]["authority_deadline"])
    assert clocks["authority"][1] == pytest.approx((deadline - now) / timedelta(hours=1), abs=0.05)
    assert 71 < clocks["authority"][1] <= 72
    california = datetime.fromisoformat(breach["california_clock"]["deadline"])
    assert clocks["california"][1] == pytest.approx((california - now) / timedelta(hours=1), abs=0.05)
    assert 29 * 24 < clocks["california"][1] <= 30 * 24

    due = await _due_at(runtime)
    assert one(found, "privacy_request_deadline_hours_left") == pytest.approx(
        (due - now) / timedelta(hours=1), abs=0.05
    )
    assert one(found, "privacy_retention_last_success_timestamp_seconds") == pytest.approx(now.timestamp(), abs=120)
    assert one(found, "privacy_audit_chain_last_verified_timestamp_seconds") == pytest.approx(now.timestamp(), abs=120)
    assert one(found, "privacy_audit_chain_verification_ok") == 1
    for secret in (CUSTOMER, breach["title"]):
        assert secret not in exposition


async def test_a_notified_breach_stops_its_clock_and_a_broken_chain_reads_zero(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    kept = await create(client, auth)
    notified = await create(client, auth, title="Another incident")
    async with runtime.db.transaction() as session:
        row = await session.get(Breach, uuid.UUID(notified["id"]))
        assert row is not None
        row.authority_notified_at = row.aware_at
    assert (await verify_and_record(runtime, actor="cli")).ok
    async with runtime.db.engine.begin() as connection:
        # Someone with database access rewrites a sealed entry.
        await connection.execute(text("UPDATE audit_events SET action = 'rewritten' WHERE seq = 1"))
    assert not (await verify_and_record(runtime, actor="cli")).ok
    _, found = await scrape(client, auth)
    authority = [labels for labels, _ in found["privacy_breach_clock_hours_left"] if labels["clock"] == "authority"]
    assert [labels["incident"] for labels in authority] == [kept["id"]]
    # An incident whose people were not told yet keeps its California clock.
    california = [labels for labels, _ in found["privacy_breach_clock_hours_left"] if labels["clock"] == "california"]
    assert sorted(labels["incident"] for labels in california) == sorted([kept["id"], notified["id"]])
    assert one(found, "privacy_audit_chain_verification_ok") == 0
    # The last *successful* check is still reported: "broken" and "not checked lately" are two alerts.
    assert len(found["privacy_audit_chain_last_verified_timestamp_seconds"]) == 1


async def _due_at(runtime: Runtime) -> datetime:
    async with runtime.db.transaction() as session:
        waiting = select(PrivacyRequest.due_at).where(PrivacyRequest.status == "awaiting_review")
        return (await session.exec(waiting)).one()


# -- deploy/: the alert rules and the dashboard name only what the service exports ----------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_WORD = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "inf", "nan"})


def metric_names(expression: str) -> set[str]:
    """The series names a PromQL expression selects: words that are not functions, keywords, label
    matchers ({...}), ranges ([...]), grouping label lists or durations."""
    rest = _STRINGS.sub(" ", expression)
    rest = re.sub(r"\{[^}]*\}", " ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = _GROUPING.sub(" ", rest)
    rest = re.sub(r"\boffset\s+\w+", " ", rest)
    names = set()
    for match in _WORD.finditer(rest):
        word = match.group()
        following = rest[match.end() :].lstrip()
        if following.startswith("(") or word.lower() in _KEYWORDS:
            continue
        if match.start() > 0 and rest[match.start() - 1].isdigit():
            continue  # a duration's unit, e.g. 5m
        names.add(word)
    return names


def test_metric_names_reads_promql() -> None:
    assert metric_names("time() - x_seconds > 2 * 86400") == {"x_seconds"}
    assert metric_names('sum by (le, system) (rate(a_bucket{s="x y"}[5m])) or b offset 1d') == {"a_bucket", "b"}
    assert metric_names('absent(m) and on() up{job="j"} == 1') == {"m", "up"}


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_every_alert_rule_is_complete() -> None:
    rules = alert_rules()
    assert len(rules) >= 10
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names repeat"
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"(\d+[smhd])+", rule["for"]), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


async def test_the_rules_and_the_dashboard_use_only_exported_metrics(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    await activity(client, auth, runtime, mail)
    _, found = await scrape(client, auth)
    exported = set(found)
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        used[f"alert {rule['alert']}"] = metric_names(rule["expr"])
    for index, expression in enumerate(dashboard_expressions()):
        used[f"panel target {index}: {expression}"] = metric_names(expression)
    for where, names in used.items():
        assert names, f"{where} selects no metric"
        unknown = names - exported - PROMETHEUS_SERIES
        assert not unknown, f"{where} uses {sorted(unknown)}, which GET /metrics does not export"
    # The figures this issue asked for are each alerted on and shown.
    wanted = {
        "privacy_breach_clock_hours_left",
        "privacy_request_deadline_hours_left",
        "privacy_retention_last_success_timestamp_seconds",
        "privacy_audit_chain_last_verified_timestamp_seconds",
        "privacy_audit_chain_verification_ok",
    }
    rules_use = set().union(*(names for where, names in used.items() if where.startswith("alert ")))
    panels_use = set().union(*(names for where, names in used.items() if where.startswith("panel ")))
    assert wanted <= rules_use
    assert wanted <= panels_use

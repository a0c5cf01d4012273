"""ENISA 2013 scoring, the decision rules, and the checks on policies/breach.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from privacy_service.breaches.policy import BreachPolicy, BreachPolicyError, check_breach_policy, load_breach_policy
from privacy_service.breaches.severity import DecisionFacts, ScoreInput, decide, score
from privacy_service.policy.loader import load_policy
from tests.policy_files import POLICIES, copy_policies, edit_yaml

DOCUMENT = load_policy(POLICIES)


@pytest.fixture(scope="module")
def rules() -> BreachPolicy:
    return load_breach_policy(POLICIES, DOCUMENT)


def inputs(**overrides: Any) -> ScoreInput:
    base: dict[str, Any] = {
        "categories": ["user.name"],
        "factors": {},
        "ease": "maximum",
        "confidentiality": "none",
        "integrity": "none",
        "availability": "none",
        "malicious": False,
        "unintelligible": False,
    }
    base.update(overrides)
    return ScoreInput(**base)


def facts(**overrides: Any) -> DecisionFacts:
    base: dict[str, Any] = {
        "affected_subjects": 10,
        "confidentiality": "known_recipients",
        "availability": "none",
        "malicious": False,
        "unintelligible": False,
        "contained": False,
        "mitigated": False,
        "disproportionate_effort": False,
    }
    base.update(overrides)
    return DecisionFacts(**base)


@pytest.mark.parametrize(
    ("overrides", "se", "band"),
    [
        ({}, 1.0, "low"),  # simple data, fully identifiable, nothing else: 1 x 1 + 0
        ({"confidentiality": "unknown_recipients", "malicious": True}, 2.0, "medium"),
        ({"categories": ["user.financial.transaction"], "ease": "limited"}, 1.5, "low"),
        ({"categories": ["user.financial.transaction"], "confidentiality": "known_recipients"}, 3.25, "high"),
        (
            {"categories": ["user.name", "user.financial.transaction"], "availability": "full", "malicious": True},
            4.0,
            "very_high",
        ),
        ({"categories": ["user.government_id"], "ease": "significant"}, 1.5, "low"),  # simple +1 profiling = 2
        ({"categories": ["user.device"]}, 1.0, "low"),  # behavioural -1 little insight = 1
        ({"categories": ["user.device"], "factors": {"user.device": []}}, 2.0, "medium"),  # defaults replaced
        (
            {
                "categories": ["user.financial.account_number"],
                "factors": {"user.financial.account_number": ["fraud_enabling"]},
            },
            4.0,
            "very_high",
        ),
    ],
)
def test_enisa_formula(rules: BreachPolicy, overrides: dict[str, Any], se: float, band: str) -> None:
    severity = score(rules, inputs(**overrides))
    assert (severity.se, severity.band) == (se, band)


def test_dpc_is_clamped_and_the_highest_category_counts(rules: BreachPolicy) -> None:
    severity = score(
        rules,
        inputs(categories=["user.name", "user.financial.transaction"], factors={"user.name": ["vulnerable_safety"]}),
    )
    assert severity.dpc == 4
    assert severity.dpc_category == "user.name"
    parts = {part.category: part.score for part in severity.categories}
    assert parts == {"user.name": 4, "user.financial.transaction": 3}


def test_unintelligible_data_scores_as_unreadable(rules: BreachPolicy) -> None:
    severity = score(
        rules,
        inputs(
            categories=["user.financial.transaction"],
            confidentiality="unknown_recipients",
            malicious=True,
            unintelligible=True,
        ),
    )
    assert (severity.raw_se, severity.raw_band) == (4.0, "very_high")
    assert (severity.se, severity.band, severity.ease) == (1.25, "low", "negligible")


def test_band_mapping_and_documented_factors(rules: BreachPolicy) -> None:
    low, medium, high = (
        score(rules, inputs(**o))
        for o in (
            {},
            {"ease": "maximum", "categories": ["user.demographic"]},
            {"categories": ["user.financial.transaction"]},
        )
    )
    assert (low.band, medium.band, high.band) == ("low", "medium", "high")

    decided = decide(rules, low, facts())
    assert (decided.record.value, decided.notify_authority.value, decided.notify_subjects.value) == (True, False, False)
    assert decide(rules, medium, facts()).notify_authority.value is True
    assert decide(rules, high, facts()).notify_subjects.value is True

    # Large scale raises medium to high, but never lifts a low band.
    assert decide(rules, medium, facts(affected_subjects=10_000)).notify_subjects.value is True
    assert decide(rules, medium, facts(affected_subjects=9_999)).notify_subjects.value is False
    assert decide(rules, low, facts(affected_subjects=1_000_000)).notify_authority.value is False
    # Lost availability, or readable data with a malicious actor, is never "unlikely to result in a risk".
    assert decide(rules, low, facts(availability="temporary")).notify_authority.value is True
    assert decide(rules, low, facts(availability="recoverable")).notify_authority.value is False
    assert decide(rules, low, facts(malicious=True)).notify_authority.value is True
    assert decide(rules, low, facts(malicious=True, unintelligible=True)).notify_authority.value is False
    # A trusted recipient who deleted the data.
    contained = decide(rules, high, facts(contained=True))
    assert contained.notify_authority.value is False
    assert contained.notify_subjects.value is False
    # Art. 34(3)(b) and (c).
    mitigated = decide(rules, high, facts(mitigated=True))
    assert mitigated.notify_authority.value
    assert not mitigated.notify_subjects.value
    public = decide(rules, high, facts(disproportionate_effort=True))
    assert public.public_communication.value
    assert not public.notify_subjects.value
    for decision in (decided.record, decided.notify_authority, decided.notify_subjects):
        assert decision.reasons
        assert all(reason.endswith(".") or reason.endswith(")") for reason in decision.reasons)


def test_the_shipped_breach_policy_is_valid() -> None:
    policy, problems = check_breach_policy(POLICIES, DOCUMENT)
    assert problems == []
    assert policy is not None
    assert policy.reminders == [("PT24H", timedelta(hours=24)), ("PT6H", timedelta(hours=6))]
    assert policy.authority_deadline.total_seconds() == 72 * 3600


def test_every_problem_is_reported_with_its_path(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)

    def break_it(data: dict[str, Any]) -> None:
        data["enisa"]["data_categories"].pop("user.device")
        data["enisa"]["data_categories"]["user.shoe_size"] = {"type": "simple"}
        data["enisa"]["data_categories"]["user.name"]["factors"] = ["fraud_enabling"]
        data["enisa"]["factors"]["profiling"]["adjust"] = -1
        data["clock"]["reminders"] = ["PT80H", "P1M"]
        data["decisions"]["bands"]["high"] = "register"
        data["lead_authority"] = "nowhere"

    edit_yaml(folder / "breach.yaml", break_it)
    _, problems = check_breach_policy(folder, DOCUMENT)
    said = {(problem.path, problem.message.split(":")[0]) for problem in problems}
    file = str(folder / "breach.yaml")
    assert all(problem.file == file for problem in problems)
    assert {path for path, _ in said} == {
        "enisa.data_categories.user.device",
        "enisa.data_categories.user.shoe_size",
        "enisa.data_categories.user.name.factors",
        "enisa.factors.profiling.adjust",
        "clock.reminders[0]",
        "clock.reminders[1]",
        "decisions.bands",
        "lead_authority",
    }
    with pytest.raises(BreachPolicyError) as caught:
        load_breach_policy(folder, DOCUMENT)
    assert "run `privacy-service policy check`" in str(caught.value)

    (folder / "breach.yaml").unlink()
    _, problems = check_breach_policy(folder, DOCUMENT)
    assert [problem.message.split(":")[0] for problem in problems] == ["file not found"]


def test_policy_check_command_validates_breach_yaml(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    edit_yaml(folder / "breach.yaml", lambda data: data["enisa"]["data_categories"].pop("user.behavior"))
    env = {name: value for name, value in os.environ.items() if not name.startswith("PRIVACY_")}
    env.update(PRIVACY_POLICY_DIR=str(folder), COLUMNS="200")
    result = subprocess.run(
        [sys.executable, "-m", "privacy_service", "policy", "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert f"{folder / 'breach.yaml'}: enisa.data_categories.user.behavior: a data category" in result.stderr

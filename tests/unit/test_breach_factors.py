"""The assessment factors as pure rules: taxonomy data types, consequences, the recipient floor, and their
checks in policies/breach.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from privacy_service.breaches.policy import BreachPolicy, check_breach_policy, load_breach_policy
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
        "confidentiality": "known_recipients",
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
        "confidentiality": "unknown_recipients",
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
    ("data_types", "factors", "dpc"),
    [
        (["health"], {}, 4),  # sensitive: ENISA base 4
        (["health"], {"health": ["no_substantial_insight"]}, 1),  # e.g. a dietary preference
        (["job_application"], {}, 2),  # simple + profiling
        (["insurance"], {}, 2),  # financial - little insight
        (["payment_card"], {}, 4),  # financial + fraud enabling
        (["credentials", "location"], {}, 2),  # the highest counts
    ],
)
def test_taxonomy_data_types_carry_their_enisa_context(
    rules: BreachPolicy, data_types: list[str], factors: dict[str, list[str]], dpc: int
) -> None:
    severity = score(rules, inputs(categories=[], data_types=data_types, factors=factors))
    assert severity.dpc == dpc
    assert {part.source for part in severity.categories} == {"data_type"}


def test_a_consequence_raises_the_context_never_lowers_it(rules: BreachPolicy) -> None:
    raised = score(rules, inputs(consequences=["fraud_financial_loss"]))
    assert (raised.data_dpc, raised.dpc, raised.dpc_category) == (1, 4, "consequence:fraud_financial_loss")
    assert raised.se == 4.25
    kept = score(rules, inputs(categories=[], data_types=["health"], consequences=["reputational_damage"]))
    assert (kept.data_dpc, kept.dpc, kept.dpc_category) == (4, 4, "health")
    assert kept.as_dict()["consequences"] == [{"name": "reputational_damage", "dpc_floor": 2}]


def test_the_recipient_floor(rules: BreachPolicy) -> None:
    low = score(rules, inputs(confidentiality="unknown_recipients"))
    assert low.band == "low"
    for trust in ("untrusted", "unknown"):
        kept = decide(rules, low, facts(recipient_trust=trust, recipient_data="retained"))
        assert kept.band == "medium"
        assert kept.notify_authority.value is True
        assert kept.notify_subjects.value is False
    for trust, data in (("trusted", "retained"), ("untrusted", "unknown"), ("untrusted", "returned_or_deleted")):
        assert decide(rules, low, facts(recipient_trust=trust, recipient_data=data)).band == "low"
    # Unreadable data: whoever keeps it cannot read it (EDPB 01/2021, cases 6 and 10).
    hashed = score(rules, inputs(confidentiality="unknown_recipients", unintelligible=True))
    unreadable = decide(rules, hashed, facts(recipient_trust="unknown", recipient_data="retained", unintelligible=True))
    assert unreadable.band == "low"
    assert unreadable.notify_authority.value is False
    # A higher band is never lowered by the floor.
    high = score(rules, inputs(categories=["user.financial.transaction"]))
    assert decide(rules, high, facts(recipient_trust="untrusted", recipient_data="retained")).band == "high"


def test_the_shipped_factors_are_complete(rules: BreachPolicy) -> None:
    for trust in ("trusted", "untrusted", "unknown"):
        for data in ("returned_or_deleted", "retained", "unknown"):
            assert rules.recipient_level(trust, data) in ("exposed", "known_recipients", "unknown_recipients")  # type: ignore[arg-type]
    assert rules.recipient_level("untrusted", "retained") == "unknown_recipients"
    assert rules.recipient_level("trusted", "returned_or_deleted") == "exposed"
    assert {"identity_theft", "phishing_impersonation", "fraud_financial_loss", "account_takeover"} <= set(
        rules.consequences
    )
    assert rules.enisa.taxonomy["health"].type == "sensitive"
    assert rules.data_type_name("health", "zh") == "健康信息"


def test_problems_in_the_factors_are_reported_with_their_path(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)

    def break_it(data: dict[str, Any]) -> None:
        data["enisa"]["taxonomy"]["health"]["factors"] = ["profiling"]
        data["enisa"]["recipients"]["untrusted"].pop("retained")
        data["enisa"]["recipients"]["trusted"]["retained"] = "none"
        data["establishment"]["supervisory_authorities"]["FR"] = {"authority": "ie_dpc"}
        data["establishment"]["supervisory_authorities"]["DE"] = {"name": "BfDI"}
        data["establishment"]["supervisory_authorities"]["IE"] = {"authority": "ie_dpc", "name": "DPC"}

    edit_yaml(folder / "breach.yaml", break_it)
    _, problems = check_breach_policy(folder, DOCUMENT)
    paths = {problem.path for problem in problems}
    assert paths == {
        "enisa.taxonomy.health.factors",
        "enisa.recipients.untrusted",
        "enisa.recipients.trusted.retained",
        "establishment.supervisory_authorities.FR",
        "establishment.supervisory_authorities.DE",
        "establishment.supervisory_authorities.IE",
    }, problems

    def bad_values(data: dict[str, Any]) -> None:
        data["consequences"]["identity_theft"]["dpc_floor"] = 5
        data["decisions"]["recipient_floor"]["trust"] = ["stranger"]
        # A taxonomy key has no dots: it can never be mistaken for a policy category.
        data["enisa"]["taxonomy"]["user.name"] = {"type": "simple", "en": "Name", "zh": "姓名"}

    folder2 = copy_policies(tmp_path / "again")
    edit_yaml(folder2 / "breach.yaml", bad_values)
    _, problems = check_breach_policy(folder2, DOCUMENT)
    assert {problem.path for problem in problems} == {
        "consequences.identity_theft.dpc_floor",
        "decisions.recipient_floor.trust.0",
        "enisa.taxonomy.user.name.[key]",
    }

"""Which supervisory authorities an incident is notified to (GDPR Art. 33(1), 55, 56; EDPB Guidelines 9/2022).

A controller with its main establishment in the EU notifies its lead supervisory authority: the
one-stop-shop of Art. 56 (``lead_authority`` in policies/breach.yaml). A controller not established in the
EU has no one-stop-shop, even with a representative in a Member State (Art. 27): "the mere presence of a
representative in a Member State does not trigger the one-stop-shop system", so it notifies the
supervisory authority of every Member State where affected people reside (EDPB Guidelines 9/2022 on
personal data breach notification, v2.0, para. 73). Pure: no database, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from privacy_service.breaches.policy import AuthorityRef, BreachPolicy
from privacy_service.errors import InvalidInput
from privacy_service.policy.document import PolicyDocument


@dataclass(frozen=True, slots=True)
class Competent:
    one_stop_shop: bool
    authorities: tuple[AuthorityRef, ...]
    # Countries of affected people outside the EEA table: no EEA authority to notify for them (their own
    # law may still require a notice; see the other regimes of the policy).
    outside_eea: tuple[str, ...] = ()
    reasons: list[str] = field(default_factory=list)

    def keys(self) -> list[str]:
        return [authority.key for authority in self.authorities]

    def as_dict(self) -> dict[str, Any]:
        return {
            "one_stop_shop": self.one_stop_shop,
            "authorities": [
                {"key": a.key, "name": a.name, "country": a.country, "url": a.url} for a in self.authorities
            ],
            "outside_eea": list(self.outside_eea),
            "reasons": list(self.reasons),
        }


def competent_authorities(
    rules: BreachPolicy, document: PolicyDocument, *, eu_main_establishment: bool, countries: Sequence[str]
) -> Competent:
    if eu_main_establishment:
        lead = rules.authority(document, rules.lead_authority)
        assert lead is not None  # noqa: S101 - checked when breach.yaml is loaded
        return Competent(
            True,
            (lead,),
            reasons=[
                f"The controller has its main establishment in the EU: its lead supervisory authority ({lead.name}) "
                "is notified (one-stop-shop, GDPR Art. 56)."
            ],
        )
    if not countries:
        raise InvalidInput(
            "a controller not established in the EU notifies the supervisory authority of every Member State where "
            "affected people reside (EDPB Guidelines 9/2022): give the incident's affected_countries first"
        )
    found: list[AuthorityRef] = []
    outside: list[str] = []
    for country in dict.fromkeys(countries):
        authority = rules.authority_for_country(document, country)
        if authority is None:
            outside.append(country)
        elif authority.key not in [known.key for known in found]:
            found.append(authority)
    reasons = [
        "The controller is not established in the EU: a representative there does not bring the one-stop-shop, so "
        "the supervisory authority of every Member State where affected people reside is notified (EDPB "
        f"Guidelines 9/2022, para. 73): {', '.join(f'{a.name} ({a.country})' for a in found) or 'none'}."
    ]
    if outside:
        reasons.append(
            f"Affected people also reside outside the EEA ({', '.join(outside)}): no EEA authority for them; "
            "check the notice duties of those countries' laws."
        )
    return Competent(False, tuple(found), tuple(outside), reasons)


def required_authorities(assessment: dict[str, Any] | None) -> tuple[bool, list[str]]:
    """(one-stop-shop?, the keys of the authorities the assessment says to notify), from a stored assessment.

    Assessments made before the authorities were recorded name none: the lead authority, as then.
    """
    recorded = (assessment or {}).get("authorities")
    if not recorded:
        return True, []
    return bool(recorded.get("one_stop_shop", True)), [item["key"] for item in recorded.get("authorities", [])]

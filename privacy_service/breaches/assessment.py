"""Assessing an incident: the ENISA severity score and the notification decisions it leads to."""

from __future__ import annotations

import uuid
from typing import cast

from privacy_service.breaches import schemas
from privacy_service.breaches.context import BreachBase
from privacy_service.breaches.flows import Status, check_action
from privacy_service.breaches.models import Breach
from privacy_service.breaches.policy import AvailabilityLevel, ConfidentialityLevel, IntegrityLevel
from privacy_service.breaches.severity import DecisionFacts, Decisions, ScoreInput, decide, score
from privacy_service.errors import InvalidInput


class Assessment(BreachBase):
    __slots__ = ()

    def _levels(
        self, breach: Breach, body: schemas.AssessmentBody
    ) -> tuple[ConfidentialityLevel, IntegrityLevel, AvailabilityLevel]:
        nature = set(breach.nature)
        defaults = {
            "confidentiality": (
                "none"
                if "confidentiality" not in nature
                else "unknown_recipients"
                if breach.exfiltration_known
                else "exposed"
            ),
            "integrity": "none"
            if "integrity" not in nature
            else "recoverable"
            if breach.backup_exists
            else "unrecoverable",
            "availability": "none"
            if "availability" not in nature
            else "recoverable"
            if breach.backup_exists
            else "full",
        }
        levels: dict[str, str] = {}
        for element, default in defaults.items():
            given: str | None = getattr(body, element)
            if given is not None and given != "none" and element not in nature:
                raise InvalidInput(
                    f"{element} is scored {given} but the incident's nature does not include {element}; "
                    "update the facts first"
                )
            levels[element] = given if given is not None else default
        return (
            cast(ConfidentialityLevel, levels["confidentiality"]),
            cast(IntegrityLevel, levels["integrity"]),
            cast(AvailabilityLevel, levels["availability"]),
        )

    def _factors(self, breach: Breach, body: schemas.AssessmentBody) -> dict[str, list[str]]:
        for category, names in body.dpc_factors.items():
            if category not in breach.categories:
                raise InvalidInput(f"dpc_factors: {category} is not a category of this incident")
            for name in names:
                if not self.rules.factor_allowed(category, name):
                    spec = self.rules.enisa.data_categories[category]
                    allowed = sorted(n for n, f in self.rules.enisa.factors.items() if f.applies_to == spec.type)
                    raise InvalidInput(
                        f"dpc_factors: {name!r} is not an ENISA factor for {spec.type} data ({category}); "
                        f"allowed: {', '.join(allowed)}"
                    )
        return {category: list(dict.fromkeys(names)) for category, names in body.dpc_factors.items()}

    async def assess(self, breach_id: uuid.UUID, body: schemas.AssessmentBody) -> Breach:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "assess")
        if not breach.categories:
            raise InvalidInput("the incident has no data categories: add them (PATCH) before assessing")
        confidentiality, integrity, availability = self._levels(breach, body)
        factors = self._factors(breach, body)
        malicious = breach.malicious if body.malicious is None else body.malicious
        if body.contained and (malicious or confidentiality != "known_recipients"):
            raise InvalidInput(
                "contained applies only when known, trusted recipients received the data by mistake "
                "(confidentiality: known_recipients, not malicious)"
            )
        unintelligible = breach.encrypted and not breach.key_compromised
        severity = score(
            self.rules,
            ScoreInput(
                categories=breach.categories,
                factors=factors,
                ease=body.ease_of_identification,
                confidentiality=confidentiality,
                integrity=integrity,
                availability=availability,
                malicious=malicious,
                unintelligible=unintelligible,
            ),
        )
        decisions = decide(
            self.rules,
            severity,
            DecisionFacts(
                affected_subjects=breach.affected_count,
                confidentiality=confidentiality,
                availability=availability,
                malicious=malicious,
                unintelligible=unintelligible,
                contained=body.contained,
                mitigated=body.mitigated,
                disproportionate_effort=body.disproportionate_effort,
            ),
        )
        overridden = self._apply_overrides(decisions, body.overrides)
        now = self.clock.now()
        breach.assessment = {
            "assessed_at": now.isoformat(),
            "by": {"type": self.actor.type, "id": self.actor.id},
            "facts_version": breach.facts_version,
            "policy_version": self.rules.version,
            "inputs": {
                "ease_of_identification": body.ease_of_identification,
                "confidentiality": confidentiality,
                "integrity": integrity,
                "availability": availability,
                "malicious": malicious,
                "unintelligible": unintelligible,
                "dpc_factors": factors,
                "contained": body.contained,
                "mitigated": body.mitigated,
                "disproportionate_effort": body.disproportionate_effort,
                "affected_subjects": breach.affected_count,
            },
            "severity": severity.as_dict(),
            "decisions": decisions.as_dict(),
            "note": body.note,
        }
        breach.assessed_version = breach.facts_version
        breach.severity, breach.band = severity.se, decisions.band
        breach.notify_authority = decisions.notify_authority.value
        breach.notify_subjects = decisions.notify_subjects.value
        breach.public_communication = decisions.public_communication.value
        if breach.status == Status.OPEN:
            self._transition(breach, Status.ASSESSED)
        self._version(
            breach,
            "assess",
            ["assessment"],
            band=decisions.band,
            se=severity.se,
            notify_authority=breach.notify_authority,
            notify_subjects=breach.notify_subjects,
            overridden=overridden,
        )
        return breach

    @staticmethod
    def _apply_overrides(decisions: Decisions, overrides: schemas.Overrides | None) -> list[str]:
        if overrides is None:
            return []
        done = []
        for name, decision in decisions.items():
            override: schemas.Override | None = getattr(overrides, name, None)
            if override is None:
                continue
            decision.computed = decision.value
            decision.value = override.value
            decision.justification = override.justification
            decision.reasons.append(
                f"Overridden by an operator ({'yes' if override.value else 'no'}): {override.justification}"
            )
            done.append(name)
        return done

"""Assessing an incident: the ENISA severity score and the notification decisions it leads to.

The inputs are resolved here before scoring: the recipient sets the lowest confidentiality level the
assessment may use (breach.yaml ``enisa.recipients``), a trusted recipient who returned or deleted the data
(not malicious) makes the breach "contained", consequences must be the policy's, and the authorities
concerned follow from the controller's establishment and the affected people's countries (EDPB 9/2022).
"""

from __future__ import annotations

import uuid
from typing import cast

from privacy_service.breaches import schemas
from privacy_service.breaches.authorities import competent_authorities
from privacy_service.breaches.context import BreachBase
from privacy_service.breaches.flows import Status, check_action
from privacy_service.breaches.models import Breach
from privacy_service.breaches.policy import (
    CONFIDENTIALITY_LEVELS,
    AvailabilityLevel,
    ConfidentialityLevel,
    IntegrityLevel,
)
from privacy_service.breaches.severity import DecisionFacts, Decisions, ScoreInput, decide, score
from privacy_service.errors import InvalidInput


class Assessment(BreachBase):
    __slots__ = ()

    def _recipient(self, breach: Breach, body: schemas.AssessmentBody) -> schemas.Recipient | None:
        recipient = body.recipient
        if recipient is None and body.contained:
            # The older flag says the same as a trusted recipient who returned or deleted the data.
            recipient = schemas.Recipient(trust="trusted", data="returned_or_deleted")
        if recipient is not None and "confidentiality" not in breach.nature:
            raise InvalidInput(
                "recipient: the data reached someone, but the incident's nature does not include confidentiality; "
                "update the facts first"
            )
        if (
            body.contained
            and body.recipient is not None
            and (body.recipient.trust, body.recipient.data) != ("trusted", "returned_or_deleted")
        ):
            raise InvalidInput(
                "contained means a trusted recipient who returned or deleted the data, which contradicts the "
                f"recipient given ({body.recipient.trust}, {body.recipient.data})"
            )
        return recipient

    def _levels(
        self, breach: Breach, body: schemas.AssessmentBody, recipient: schemas.Recipient | None
    ) -> tuple[ConfidentialityLevel, IntegrityLevel, AvailabilityLevel]:
        nature = set(breach.nature)
        implied = self.rules.recipient_level(recipient.trust, recipient.data) if recipient is not None else None
        defaults = {
            "confidentiality": (
                "none"
                if "confidentiality" not in nature
                else implied
                if implied is not None
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
        if implied is not None and recipient is not None:
            chosen = levels["confidentiality"]
            if CONFIDENTIALITY_LEVELS.index(chosen) < CONFIDENTIALITY_LEVELS.index(implied):
                raise InvalidInput(
                    f"confidentiality {chosen} is lower than an {recipient.trust} recipient ({recipient.data}) "
                    f"implies: at least {implied} (policies/breach.yaml enisa.recipients; ENISA 2013, 3.3)"
                )
        return (
            cast(ConfidentialityLevel, levels["confidentiality"]),
            cast(IntegrityLevel, levels["integrity"]),
            cast(AvailabilityLevel, levels["availability"]),
        )

    def _factors(self, breach: Breach, body: schemas.AssessmentBody) -> dict[str, list[str]]:
        for category, names in body.dpc_factors.items():
            if category not in breach.categories and category not in breach.data_types:
                raise InvalidInput(f"dpc_factors: {category} is not a category or data type of this incident")
            for name in names:
                if not self.rules.factor_allowed(category, name):
                    spec = self.rules.data_spec(category)
                    assert spec is not None  # noqa: S101 - checked by _data
                    allowed = sorted(n for n, f in self.rules.enisa.factors.items() if f.applies_to == spec.type)
                    raise InvalidInput(
                        f"dpc_factors: {name!r} is not an ENISA factor for {spec.type} data ({category}); "
                        f"allowed: {', '.join(allowed)}"
                    )
        return {category: list(dict.fromkeys(names)) for category, names in body.dpc_factors.items()}

    def _data(self, breach: Breach) -> None:
        if not breach.categories and not breach.data_types:
            raise InvalidInput("the incident names no data: add categories or data_types (PATCH) before assessing")
        gone = [key for key in breach.data_types if key not in self.rules.enisa.taxonomy]
        gone += [key for key in breach.categories if key not in self.rules.enisa.data_categories]
        if gone:
            raise InvalidInput(
                "the breach policy no longer scores these data types: " + ", ".join(gone)[:300] + "; update the facts"
            )

    def _consequences(self, body: schemas.AssessmentBody) -> list[str]:
        known = self.rules.consequences
        unknown = [index for index, name in enumerate(body.consequences) if name not in known]
        if unknown:
            raise InvalidInput(
                f"{len(unknown)} consequences are not consequences of the breach policy; see 'allowed'",
                extra={
                    "errors": [
                        {"field": f"consequences[{index}]", "message": "not a consequence of the breach policy"}
                        for index in unknown[:20]
                    ],
                    "allowed": sorted(known),
                },
            )
        return list(dict.fromkeys(body.consequences))

    async def assess(self, breach_id: uuid.UUID, body: schemas.AssessmentBody) -> Breach:
        breach = await self._get(breach_id, for_update=True)
        check_action(breach.status, "assess")
        self._data(breach)
        recipient = self._recipient(breach, body)
        confidentiality, integrity, availability = self._levels(breach, body, recipient)
        factors = self._factors(breach, body)
        consequences = self._consequences(body)
        malicious = breach.malicious if body.malicious is None else body.malicious
        if body.contained and (malicious or confidentiality not in ("exposed", "known_recipients")):
            raise InvalidInput(
                "contained applies only when known, trusted recipients received the data by mistake "
                "(confidentiality: exposed or known_recipients, not malicious)"
            )
        contained = (
            recipient is not None
            and (recipient.trust, recipient.data) == ("trusted", "returned_or_deleted")
            and not malicious
        )
        eu_main = self.rules.eu_main_establishment if body.eu_main_establishment is None else body.eu_main_establishment
        competent = competent_authorities(
            self.rules, self.policy, eu_main_establishment=eu_main, countries=breach.affected_countries
        )
        unintelligible = breach.encrypted and not breach.key_compromised
        severity = score(
            self.rules,
            ScoreInput(
                categories=breach.categories,
                data_types=breach.data_types,
                consequences=consequences,
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
                contained=contained,
                mitigated=body.mitigated,
                disproportionate_effort=body.disproportionate_effort,
                recipient_trust=recipient.trust if recipient is not None else None,
                recipient_data=recipient.data if recipient is not None else None,
            ),
        )
        if decisions.notify_authority.value:
            decisions.notify_authority.reasons.extend(competent.reasons)
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
                "recipient": {"trust": recipient.trust, "data": recipient.data} if recipient is not None else None,
                "consequences": consequences,
                "data_types": list(breach.data_types),
                "eu_main_establishment": eu_main,
                "affected_countries": list(breach.affected_countries),
                "contained": contained,
                "mitigated": body.mitigated,
                "disproportionate_effort": body.disproportionate_effort,
                "affected_subjects": breach.affected_count,
            },
            "severity": severity.as_dict(),
            "decisions": decisions.as_dict(),
            "authorities": competent.as_dict(),
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

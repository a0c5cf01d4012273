"""Severity (ENISA 2013) and the decisions it leads to, each with its reasons in plain words.

``score`` computes SE = DPC x EI + CB from the tables of ``breach.yaml``; ``decide`` maps the band to the
duties of the policy and then applies the documented factors ENISA leaves outside the formula:

* unintelligible data (encrypted or hashed, key not compromised) is scored with negligible
  identifiability and no loss of confidentiality, and exempts from telling people (GDPR Art. 34(3)(a));
* large scale: ENISA scores the harm to one person; from ``large_scale_subjects`` people a medium or
  high band is raised one level;
* loss of availability beyond "recovered without difficulty" is not "unlikely to result in a risk":
  the authority is told (EDPB Guidelines 01/2021, case 2);
* readable data in the hands of someone acting maliciously: nobody can vouch for what they will do
  with it, so the authority is told (EDPB 01/2021, case 8);
* data that reached only recipients bound by confidentiality who returned or deleted it is unlikely
  to result in a risk (WP250 rev.01, the "trusted recipient"; EDPB 01/2021, case 9);
* an untrusted or unknown recipient who keeps readable data: the band is at least the policy's
  ``recipient_floor`` (EDPB 01/2021, cases 8, 11, 12, 17, 18). The recipient also sets the confidentiality
  level the score starts from (``enisa.recipients``; ENISA 2013, 3.3: the loss of confidentiality scales
  with how many, and which, parties may process the data), which the assessment resolves;
* likely consequences (identity theft, phishing, fraud, account takeover, discrimination, ...; GDPR
  recitals 75 and 85) raise the data processing context to the score ENISA 2013 gives data that enables
  that harm (``consequences.*.dpc_floor``), so contact data that enables phishing scores like the
  financial data ENISA says enables fraud;
* Art. 34(3)(b) later measures and (c) disproportionate effort (a public communication instead).

Every function here is pure: no database, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from privacy_service.breaches.policy import (
    BANDS,
    DUTY_ORDER,
    AvailabilityLevel,
    Band,
    BreachPolicy,
    ConfidentialityLevel,
    EaseLevel,
    IntegrityLevel,
    RecipientData,
    RecipientTrust,
)

BAND_WORDS: Mapping[str, str] = {"low": "low", "medium": "medium", "high": "high", "very_high": "very high"}
DUTY_WORDS: Mapping[str, str] = {
    "register": "record it in the register only",
    "authority": "notify the supervisory authority",
    "subjects": "notify the supervisory authority and the data subjects",
}
DISCLOSED = ("known_recipients", "unknown_recipients")


@dataclass(frozen=True, slots=True)
class ScoreInput:
    categories: Sequence[str]
    # Replaces the policy's default factors of a category for this incident.
    factors: Mapping[str, Sequence[str]]
    ease: EaseLevel
    confidentiality: ConfidentialityLevel
    integrity: IntegrityLevel
    availability: AvailabilityLevel
    malicious: bool
    unintelligible: bool
    # Data types of the breach taxonomy (breach.yaml ``enisa.taxonomy``), beside the policy's categories.
    data_types: Sequence[str] = ()
    # Consequences the assessor judges likely (breach.yaml ``consequences``).
    consequences: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class CategoryPart:
    category: str
    type: str
    source: str  # "category" (policy.yaml) or "data_type" (the breach taxonomy)
    base: int
    factors: tuple[tuple[str, int], ...]
    score: int


@dataclass(frozen=True, slots=True)
class Severity:
    dpc: int
    dpc_category: str
    categories: tuple[CategoryPart, ...]
    # The DPC of the data alone, and the likely consequences with the DPC each implies.
    data_dpc: int
    consequences: tuple[tuple[str, int], ...]
    ease: str
    ei: float
    circumstances: Mapping[str, float]
    cb: float
    se: float
    band: Band
    # Without the unintelligibility adjustment (equal to se/band when the data was readable).
    raw_se: float
    raw_band: Band

    def formula(self) -> str:
        return f"{self.se:.2f} = DPC {self.dpc} x EI {self.ei:.2f} + CB {self.cb:.2f}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": "ENISA 2013 (SE = DPC x EI + CB)",
            "dpc": self.dpc,
            "dpc_category": self.dpc_category,
            "data_dpc": self.data_dpc,
            "consequences": [{"name": name, "dpc_floor": floor} for name, floor in self.consequences],
            "categories": [
                {
                    "category": part.category,
                    "source": part.source,
                    "type": part.type,
                    "base": part.base,
                    "factors": [{"name": name, "adjust": adjust} for name, adjust in part.factors],
                    "score": part.score,
                }
                for part in self.categories
            ],
            "ease_of_identification": self.ease,
            "ei": self.ei,
            "circumstances": dict(self.circumstances),
            "cb": self.cb,
            "se": self.se,
            "band": self.band,
            "raw_se": self.raw_se,
            "raw_band": self.raw_band,
        }


def band_of(policy: BreachPolicy, se: float) -> Band:
    bounds = policy.enisa.bands
    if se >= bounds.very_high:
        return "very_high"
    if se >= bounds.high:
        return "high"
    if se >= bounds.medium:
        return "medium"
    return "low"


def _dpc(policy: BreachPolicy, inp: ScoreInput) -> tuple[int, str, tuple[CategoryPart, ...]]:
    enisa = policy.enisa
    parts = []
    keys = [(key, "category") for key in inp.categories] + [(key, "data_type") for key in inp.data_types]
    for key, source in keys:
        spec = policy.data_spec(key)
        if spec is None:
            raise KeyError(key)
        base = enisa.data_types[spec.type]
        names = inp.factors.get(key, spec.factors)
        applied = tuple((name, enisa.factors[name].adjust) for name in names)
        parts.append(
            CategoryPart(
                category=key,
                type=spec.type,
                source=source,
                base=base,
                factors=applied,
                score=max(1, min(4, base + sum(adjust for _, adjust in applied))),
            )
        )
    # Several data types: the highest counts (ENISA 2013, 3.1).
    top = max(parts, key=lambda part: part.score)
    return top.score, top.category, tuple(parts)


def _consequences(policy: BreachPolicy, names: Sequence[str]) -> tuple[tuple[str, int], ...]:
    return tuple((name, policy.consequences[name].dpc_floor) for name in dict.fromkeys(names))


def score(policy: BreachPolicy, inp: ScoreInput) -> Severity:
    enisa = policy.enisa
    data_dpc, dpc_category, parts = _dpc(policy, inp)
    consequences = _consequences(policy, inp.consequences)
    dpc = data_dpc
    for name, floor in consequences:
        # A likely harm: the data is as critical in this context as data ENISA scores for that harm.
        if floor > dpc:
            dpc, dpc_category = floor, f"consequence:{name}"
    table = enisa.circumstances

    def circumstances(confidentiality: ConfidentialityLevel) -> dict[str, float]:
        return {
            "confidentiality": table.confidentiality[confidentiality],
            "integrity": table.integrity[inp.integrity],
            "availability": table.availability[inp.availability],
            "malicious_intent": table.malicious_intent if inp.malicious else 0.0,
        }

    raw_cb_parts = circumstances(inp.confidentiality)
    raw_ei = enisa.ease_of_identification[inp.ease]
    raw_se = round(dpc * raw_ei + sum(raw_cb_parts.values()), 4)
    ease, ei, cb_parts = inp.ease, raw_ei, raw_cb_parts
    if inp.unintelligible:
        # Whoever holds data they cannot read can neither identify anyone nor process it unlawfully.
        ease, ei = "negligible", enisa.ease_of_identification["negligible"]
        cb_parts = circumstances("exposed" if inp.confidentiality != "none" else "none")
    cb = round(sum(cb_parts.values()), 4)
    se = round(dpc * ei + cb, 4)
    return Severity(
        dpc=dpc,
        dpc_category=dpc_category,
        categories=parts,
        data_dpc=data_dpc,
        consequences=consequences,
        ease=ease,
        ei=ei,
        circumstances=cb_parts,
        cb=cb,
        se=se,
        band=band_of(policy, se),
        raw_se=raw_se,
        raw_band=band_of(policy, raw_se),
    )


# -- decisions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionFacts:
    affected_subjects: int
    confidentiality: ConfidentialityLevel
    availability: AvailabilityLevel
    malicious: bool
    unintelligible: bool
    contained: bool
    mitigated: bool
    disproportionate_effort: bool
    recipient_trust: RecipientTrust | None = None
    recipient_data: RecipientData | None = None


@dataclass(slots=True)
class Decision:
    value: bool
    reasons: list[str] = field(default_factory=list)
    computed: bool | None = None  # what the rules said, when an operator overrode it
    justification: str | None = None

    @property
    def overridden(self) -> bool:
        return self.computed is not None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "reasons": list(self.reasons), "overridden": self.overridden}
        if self.overridden:
            out["computed"] = self.computed
            out["justification"] = self.justification
        return out


@dataclass(slots=True)
class Decisions:
    band: Band
    record: Decision
    notify_authority: Decision
    notify_subjects: Decision
    public_communication: Decision

    def items(self) -> list[tuple[str, Decision]]:
        return [
            ("record", self.record),
            ("notify_authority", self.notify_authority),
            ("notify_subjects", self.notify_subjects),
            ("public_communication", self.public_communication),
        ]

    def as_dict(self) -> dict[str, Any]:
        return {"band": self.band, **{name: decision.as_dict() for name, decision in self.items()}}


def _raise_band(band: Band) -> Band:
    return BANDS[min(len(BANDS) - 1, BANDS.index(band) + 1)]


def decide(policy: BreachPolicy, severity: Severity, facts: DecisionFacts) -> Decisions:
    band = severity.band
    reasons_band = [
        f"ENISA severity {severity.formula()}: {BAND_WORDS[band]}"
        f" (the policy for {BAND_WORDS[band]}: {DUTY_WORDS[policy.duty_for(band)]})."
    ]
    if facts.unintelligible:
        reasons_band.append(
            "The data was encrypted or hashed and the key was not compromised: whoever holds it cannot read it, "
            f"so it is scored with negligible identifiability and no loss of confidentiality "
            f"(readable, it would have scored {severity.raw_se:.2f}, {BAND_WORDS[severity.raw_band]})."
        )
    if facts.affected_subjects >= policy.large_scale_subjects and band in ("medium", "high"):
        raised = _raise_band(band)
        reasons_band.append(
            f"{facts.affected_subjects:,} people are affected (at least {policy.large_scale_subjects:,}): "
            f"ENISA scores the harm to one person, and at this scale the policy raises the band from "
            f"{BAND_WORDS[band]} to {BAND_WORDS[raised]}."
        )
        band = raised
    if severity.consequences:
        named = ", ".join(policy.consequences[name].en.lower() for name, _ in severity.consequences)
        reasons_band.append(
            f"Likely consequences: {named}. The data processing context is scored {severity.dpc} "
            f"(the data alone: {severity.data_dpc}), the score ENISA 2013 gives data that enables such harm."
        )
    floor = policy.recipient_floor
    if (
        floor is not None
        and facts.recipient_trust in floor.trust
        and facts.recipient_data in floor.data
        and not facts.unintelligible
        and BANDS.index(band) < BANDS.index(floor.band)
    ):
        reasons_band.append(
            f"An {facts.recipient_trust} recipient keeps readable data ({facts.recipient_data}): nobody can vouch "
            f"for what it will do with it, so the band is at least {BAND_WORDS[floor.band]} "
            f"(raised from {BAND_WORDS[band]}; EDPB 01/2021, cases 8, 11, 12, 17, 18)."
        )
        band = floor.band
    duty = DUTY_ORDER[policy.duty_for(band)]

    record = Decision(
        True,
        ["Every breach is documented in the register with its facts, effects and remedial action (GDPR Art. 33(5))."],
    )
    authority = Decision(duty >= DUTY_ORDER["authority"], list(reasons_band))
    subjects = Decision(duty >= DUTY_ORDER["subjects"], list(reasons_band))
    public = Decision(False, ["No public communication is needed while the people concerned can be told directly."])
    if not authority.value:
        authority.reasons.append(
            "On this assessment the breach is unlikely to result in a risk to people's rights and freedoms, so the "
            "supervisory authority is not notified (GDPR Art. 33(1)); the reasoning stays in the register."
        )
    if not subjects.value:
        subjects.reasons.append(
            "The breach is not likely to result in a high risk to people's rights and freedoms, so they are not "
            "told individually (GDPR Art. 34(1))."
        )

    if facts.availability in ("temporary", "full") and not authority.value:
        authority.value = True
        authority.reasons.append(
            "The data could not be recovered without difficulty (availability: "
            f"{facts.availability}): losing access to it can affect people, so the breach is not 'unlikely to "
            "result in a risk' and the authority is notified."
        )
    if facts.malicious and facts.confidentiality in DISCLOSED and not facts.unintelligible and not authority.value:
        authority.value = True
        authority.reasons.append(
            "Someone acting maliciously obtained readable data and nobody can vouch for what they will do with it: "
            "the risk cannot be called unlikely, so the authority is notified."
        )
    if facts.contained and facts.availability not in ("temporary", "full"):
        for decision in (authority, subjects):
            if decision.value:
                decision.value = False
            decision.reasons.append(
                "The data reached only recipients bound by confidentiality who returned or deleted it (confirmed): "
                "the breach is unlikely to result in a risk, so no notification is needed."
            )

    if subjects.value and facts.unintelligible:
        subjects.value = False
        subjects.reasons.append(
            "The data is unintelligible to anyone not holding the key, which was not compromised: people need not "
            "be told individually (GDPR Art. 34(3)(a))."
        )
    elif facts.unintelligible and DUTY_ORDER[policy.duty_for(severity.raw_band)] >= DUTY_ORDER["subjects"]:
        subjects.reasons.append(
            "Had the data been readable the people would have had to be told; encryption with a key that was not "
            "compromised exempts (GDPR Art. 34(3)(a))."
        )
    if subjects.value and facts.mitigated:
        subjects.value = False
        subjects.reasons.append(
            "Measures taken since the breach ensure the high risk is no longer likely to materialise: people need "
            "not be told individually (GDPR Art. 34(3)(b))."
        )
    if subjects.value and facts.disproportionate_effort:
        subjects.value = False
        subjects.reasons.append(
            "Telling each person would involve disproportionate effort: a public communication informs them "
            "instead (GDPR Art. 34(3)(c))."
        )
        public.value = True
        public.reasons = [
            "People must be told but cannot be reached individually without disproportionate effort: a public "
            "communication (or similar measure) informs them in an equally effective manner (GDPR Art. 34(3)(c))."
        ]
    return Decisions(band, record, authority, subjects, public)

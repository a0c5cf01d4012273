"""EDPB Guidelines 01/2021 on Examples regarding Personal Data Breach Notification (v2.0, 14 Dec 2021).

Every one of the guidelines' 18 cases is one row below: the *facts* the case states, written as this
service's inputs (the incident's facts, then the assessment an assessor would make from them), and the
EDPB's conclusion for it (the case's "Actions necessary based on the identified risks": notification
to the supervisory authority? communication to the data subjects?). Internal documentation is always
required (para. 15) and checked for every case. The inputs use the assessment's own vocabulary:

* ``data_types`` from the breach taxonomy of policies/breach.yaml for data the wallet never held (a
  hospital's health records, a recruiter's CVs, password hashes, insurance letters), beside the
  policy's ``categories``; health is sensitive data (ENISA base 4), not a factor on other data;
* ``recipient``: who received the data and what became of it (trusted / untrusted / unknown;
  returned_or_deleted / retained / unknown);
* ``consequences``: the harms the EDPB reasons with (identity theft, fraud, ...), where it names them.

``edpb`` is the EDPB's reasoning for the decision in one line, with the guidelines' section, marked
either ``quoted:`` (the guidelines' own words, between double quotes, checked against the adopted text
v2.0) or ``paraphrase:`` (our summary of the case's risk assessment and "Mitigation and obligations"
sections, with no quotation marks, so nobody cites it as the EDPB's words). Only case 01 (para. 25) is
quoted: it is the only case whose text could be retrieved and checked here. The others stay marked
paraphrases until someone checks them against the PDF (edpb.europa.eu,
edpb_guidelines_012021_pdbnotification_adopted_en.pdf) and quotes a sentence of each; an earlier quotation
for case 08 could not be checked against the text and is a paraphrase again.
Where the ENISA score's band alone would lead to a different decision than the EDPB's, ``why`` says
which rule of the model decides as the EDPB does, and ``marker`` is words of that rule's reason, which
the decision must carry. A case without ``why`` must be decided by the score's band alone.

Where a case gives no number of people, the number used is stated as an assumption; any number below
the policy's large-scale threshold (10,000) gives the same decisions.

EDPB Guidelines 9/2022 (controllers not established in the EU) are tested in test_breach_authorities.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from privacy_service.app import create_app
from privacy_service.breaches.policy import load_breach_policy
from privacy_service.runtime import Runtime
from tests.breach_support import assess, create, runtime_for
from tests.conftest import _empty_postgres, make_operator_key

NAME, ADDRESS, EMAIL, PHONE = "user.name", "user.contact.address", "user.contact.email", "user.contact.phone_number"
BIRTH = "user.date_of_birth"


@dataclass(frozen=True)
class Case:
    id: str
    facts: dict[str, Any]
    assessment: dict[str, Any]
    authority: bool
    subjects: bool
    edpb: str
    why: str | None = None
    marker: str | None = None  # words of the deciding rule's reason (with ``why``)
    marker_in: str = "notify_authority"


CASES: list[Case] = [
    Case(
        # A small manufacturer's systems were encrypted by ransomware; the data was encrypted at rest
        # (state of the art, key not compromised); logs of every outbound flow show no exfiltration; a backup
        # restored it within hours; clients and employees, a few dozen people.
        "edpb-01-ransomware-proper-backup-no-exfiltration",
        {
            "nature": ["availability", "confidentiality"],
            "categories": [NAME, ADDRESS],
            "affected": {"estimated_count": 36},
            "encrypted": True,
            "key_compromised": False,
            "backup_exists": True,
            "exfiltration_known": False,
            "malicious": True,
        },
        {"availability": "recoverable"},
        authority=False,
        subjects=False,
        edpb='§2.1.2 para. 25, quoted: "the controller determined that the breach was unlikely to result in a risk '
        "to the rights and freedoms of natural persons, hence no communication to the data subjects is necessary, "
        'nor does the breach require a notification to the SA"',
    ),
    Case(
        # Ransomware on an agricultural company's computer; logs prove no exfiltration; employees' and clients'
        # data (a few dozen people, no special categories); no electronic backup: rebuilt from paper over five
        # working days, with minor delays to customers' orders.
        "edpb-02-ransomware-without-proper-backup",
        {
            "nature": ["availability", "confidentiality"],
            "categories": [NAME, ADDRESS],
            "affected": {"estimated_count": 36},
            "backup_exists": False,
            "exfiltration_known": False,
            "malicious": True,
        },
        {"availability": "temporary", "confidentiality": "exposed"},
        authority=True,
        subjects=False,
        edpb="§2.2.2, paraphrase: the lack of a backup made the data unavailable for days: the breach is notified to "
        "the SA; with only minor delays and no special categories it is not a high risk, so the data subjects "
        "need not be told",
        why="Simple data with no exfiltration scores low, but data that could not be recovered without difficulty "
        "is not 'unlikely to result in a risk': the availability rule notifies the authority.",
        marker="could not be recovered without difficulty",
    ),
    Case(
        # Ransomware encrypted a hospital's information system; no exfiltration found; restored from backup
        # after two days, during which patients' treatment was delayed and operations cancelled. (Number of
        # patients not given: assumed 1,000.)
        "edpb-03-ransomware-backup-no-exfiltration-hospital",
        {
            "nature": ["availability", "confidentiality"],
            "categories": [NAME],
            "data_types": ["health"],
            "affected": {"estimated_count": 1000},
            "backup_exists": True,
            "exfiltration_known": False,
            "malicious": True,
        },
        {"availability": "temporary", "confidentiality": "exposed", "consequences": ["physical_harm"]},
        authority=True,
        subjects=True,
        edpb="§2.3.2, paraphrase: the unavailability of patients' health data delayed their treatment: a high risk "
        "to their health, so the SA is notified and the patients are told",
    ),
    Case(
        # Ransomware on a public transport company's server; the attacker also exfiltrated the data: identity
        # cards and financial data including full card details; no backup. (Number of customers not given:
        # assumed 5,000.)
        "edpb-04-ransomware-without-backup-with-exfiltration",
        {
            "nature": ["availability", "confidentiality"],
            "categories": [NAME],
            "data_types": ["identity_document", "payment_card"],
            "affected": {"estimated_count": 5000},
            "backup_exists": False,
            "exfiltration_known": True,
            "malicious": True,
        },
        {
            "recipient": {"trust": "unknown", "data": "retained"},
            "consequences": ["identity_theft", "fraud_financial_loss"],
        },
        authority=True,
        subjects=True,
        edpb="§2.4.2, paraphrase: identity and full card data in an attacker's hands can be used for identity theft "
        "and fraud: a high risk, so the SA is notified and the data subjects are told",
    ),
    Case(
        # Malicious code on a recruitment website captured the job application forms sent over a month (213
        # applicants: name, contact details, CV); the toolkit can erase traces of exfiltration.
        "edpb-05-exfiltration-of-job-application-data",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, EMAIL, PHONE, ADDRESS],
            "data_types": ["job_application"],
            "affected": {"estimated_count": 213},
            "exfiltration_known": True,
            "malicious": True,
        },
        {"recipient": {"trust": "unknown", "data": "retained"}},
        authority=True,
        subjects=True,
        edpb="§3.1.2, paraphrase: applicants' data was exfiltrated with malicious intent and may be misused: a high "
        "risk, so the SA is notified and the applicants are told",
    ),
    Case(
        # SQL injection on a cooking website: 1,200 users' passwords, hashed with a state-of-the-art algorithm
        # whose salt was not compromised; user names are arbitrary pseudonyms.
        "edpb-06-exfiltration-of-hashed-passwords",
        {
            "nature": ["confidentiality"],
            "categories": ["user.unique_id"],
            "data_types": ["credentials"],
            "affected": {"estimated_count": 1200},
            "encrypted": True,
            "key_compromised": False,
            "exfiltration_known": True,
            "malicious": True,
        },
        {"ease_of_identification": "negligible", "recipient": {"trust": "unknown", "data": "retained"}},
        authority=False,
        subjects=False,
        edpb="§3.2.2, paraphrase: strongly hashed, salted passwords of pseudonymous users cannot be read or linked "
        "to people: unlikely to result in a risk, so neither the SA nor the data subjects are notified",
    ),
    Case(
        # Credential stuffing on a bank's website: name, sex, date and place of birth, fiscal code and user ids
        # of about 100,000 people leaked; about 2,000 accounts with a trivial password were logged into.
        "edpb-07-credential-stuffing-on-a-banking-website",
        {
            "nature": ["confidentiality"],
            "categories": [
                NAME,
                BIRTH,
                "user.demographic",
                "user.government_id",
                "user.unique_id",
                "user.financial.account_number",
                "user.financial.transaction",
            ],
            "data_types": ["credentials"],
            "affected": {"estimated_count": 100_000},
            "exfiltration_known": True,
            "malicious": True,
        },
        {
            "recipient": {"trust": "unknown", "data": "retained"},
            "consequences": ["identity_theft", "account_takeover", "fraud_financial_loss"],
        },
        authority=True,
        subjects=True,
        edpb="§3.3.2, paraphrase: identity and banking data, with accounts taken over, can lead to identity theft "
        "and financial loss: a high risk, so the SA is notified and the data subjects are told",
    ),
    Case(
        # During his notice period an employee copied the company's customer contact data and, months later,
        # used it to approach them for his own business; no special categories. (Number not given: assumed 500.)
        "edpb-08-exfiltration-of-business-data-by-an-employee",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, EMAIL, PHONE, ADDRESS],
            "affected": {"estimated_count": 500},
            "exfiltration_known": True,
            "malicious": True,
        },
        {"recipient": {"trust": "untrusted", "data": "retained"}},
        authority=True,
        subjects=False,
        edpb="§4.1.1-4.1.2, paraphrase: the controller has no assurance about what the former employee, who kept the "
        "data, intends to do with it, so the risk is not unlikely: the SA is notified; contact data used for "
        "his own marketing is not a high risk, so the customers need not be told",
    ),
    Case(
        # An insurance agent, bound by professional secrecy and sole recipient, could see two dozen other
        # customers' contact and policy data (insurance type, amount) in a spreadsheet; he reported it at once,
        # the file was corrected and he confirmed the deletion in writing.
        "edpb-09-accidental-transmission-to-a-trusted-third-party",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, ADDRESS, EMAIL],
            "data_types": ["insurance"],
            "affected": {"estimated_count": 24},
            "malicious": False,
            "exfiltration_known": False,
        },
        {"recipient": {"trust": "trusted", "data": "returned_or_deleted"}},
        authority=False,
        subjects=False,
        edpb="§4.2.2, paraphrase: the only recipient is bound by professional secrecy and confirmed the deletion: "
        "unlikely to result in a risk, so neither the SA nor the data subjects are notified",
        why="Insurance data scores medium, but a trusted recipient who returned or deleted the data (confirmed, no "
        "malice) contains the breach: the model notifies nobody.",
        marker="returned or deleted it (confirmed)",
    ),
    Case(
        # Two tablets stolen from a children's day-care centre: names, dates of birth and education data;
        # encrypted, switched off, protected by a strong password; backup available; wiped remotely. (Number
        # of children not given: assumed 60.)
        "edpb-10-stolen-material-storing-encrypted-personal-data",
        {
            "nature": ["confidentiality", "availability"],
            "categories": [NAME, BIRTH],
            "affected": {"estimated_count": 60},
            "encrypted": True,
            "key_compromised": False,
            "backup_exists": True,
            "malicious": True,
        },
        {"recipient": {"trust": "unknown", "data": "retained"}},
        authority=False,
        subjects=False,
        edpb="§5.1.2, paraphrase: the devices were encrypted with a strong password, the data is backed up and was "
        "wiped remotely: unlikely to result in a risk, so neither the SA nor the data subjects are notified",
    ),
    Case(
        # An employee's notebook was stolen: names, sex, addresses and dates of birth of more than 100,000
        # customers, no password on the disk; daily backups exist.
        "edpb-11-stolen-material-storing-non-encrypted-personal-data",
        {
            "nature": ["confidentiality", "availability"],
            "categories": [NAME, "user.demographic", ADDRESS, BIRTH],
            "affected": {"estimated_count": 100_000},
            "backup_exists": True,
            "malicious": True,
        },
        {"recipient": {"trust": "unknown", "data": "retained"}},
        authority=True,
        subjects=True,
        edpb="§5.2.2, paraphrase: unencrypted data of more than 100,000 customers is in a thief's hands: a high "
        "risk, so the SA is notified and the customers are told",
    ),
    Case(
        # A rehabilitation centre's paper logbook with patients' identity and health data was stolen; it was not
        # locked away and there is no copy. (Number of patients not given: assumed 50.)
        "edpb-12-stolen-paper-files-with-sensitive-data",
        {
            "nature": ["confidentiality", "availability"],
            "categories": [NAME],
            "data_types": ["health"],
            "affected": {"estimated_count": 50},
            "backup_exists": False,
            "malicious": True,
        },
        {"recipient": {"trust": "unknown", "data": "retained"}},
        authority=True,
        subjects=True,
        edpb="§5.3.2, paraphrase: patients' health data (special categories) was stolen and lost for good: a high "
        "risk, so the SA is notified and the patients are told",
    ),
    Case(
        # Two shoe orders were packed with each other's packing bills: two customers saw each other's name,
        # address and order; the controller recalled the orders and sent them to the right recipients.
        "edpb-13-postal-mail-mistake",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, ADDRESS],
            "affected": {"estimated_count": 2},
            "malicious": False,
            "exfiltration_known": False,
        },
        {"recipient": {"trust": "untrusted", "data": "returned_or_deleted"}},
        authority=False,
        subjects=False,
        edpb="§6.1.2, paraphrase: two customers saw each other's name, address and shoe order, which were recalled: "
        "unlikely to result in a risk, so neither the SA nor the data subjects are notified",
    ),
    Case(
        # A public employment office e-mailed all registered jobseekers a file with every jobseeker's name,
        # e-mail address, postal address and social security number: more than 60,000 people; the recipients
        # were asked to delete it.
        "edpb-14-highly-confidential-personal-data-sent-by-mail-by-mistake",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, EMAIL, ADDRESS, "user.government_id"],
            "affected": {"estimated_count": 60_000},
            "malicious": False,
            "exfiltration_known": False,
        },
        {"recipient": {"trust": "untrusted", "data": "unknown"}, "consequences": ["identity_theft"]},
        authority=True,
        subjects=True,
        edpb="§6.2.2, paraphrase: social security numbers of more than 60,000 people went to thousands of recipients "
        "and can be used for identity theft: a high risk, so the SA is notified and the data subjects are told",
    ),
    Case(
        # A course's participant list (15 names, e-mail addresses, food preferences; two lactose intolerant)
        # went to 15 former participants instead of the hotel; noticed at once, the recipients were asked to
        # delete it.
        "edpb-15-personal-data-sent-by-mail-by-mistake",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, EMAIL],
            "data_types": ["health"],
            "affected": {"estimated_count": 15},
            "malicious": False,
            "exfiltration_known": False,
        },
        {
            "recipient": {"trust": "untrusted", "data": "unknown"},
            "dpc_factors": {"health": ["no_substantial_insight"]},
        },
        authority=False,
        subjects=False,
        edpb="§6.3.2, paraphrase: a few names, e-mail addresses and a lactose intolerance reached a small group "
        "asked to delete them: unlikely to result in a risk, so neither the SA nor the data subjects are "
        "notified",
    ),
    Case(
        # An enveloping machine put two car-insurance letters into one envelope: one policyholder saw another's
        # name, address, date of birth, vehicle registration, premiums and approximate mileage; the recipient
        # was asked to return the letter.
        "edpb-16-postal-mail-mistake",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, ADDRESS, BIRTH],
            "data_types": ["insurance"],
            "affected": {"estimated_count": 1},
            "malicious": False,
            "exfiltration_known": False,
        },
        {"recipient": {"trust": "untrusted", "data": "unknown"}},
        authority=True,
        subjects=False,
        edpb="§6.4.2, paraphrase: another policyholder saw one person's insurance and vehicle data: the SA is "
        "notified; with no special categories or fraud-enabling data it is not a high risk, so the data subject "
        "need not be told",
    ),
    Case(
        # A caller posing as a telecom customer (knowing his fiscal number and address) had the billing e-mail
        # changed; a month of bills went to the impostor until the customer complained.
        "edpb-17-identity-theft",
        {
            "nature": ["confidentiality", "integrity"],
            "categories": [NAME, ADDRESS, EMAIL],
            "data_types": ["billing"],
            "affected": {"estimated_count": 1},
            "malicious": True,
            "backup_exists": True,
        },
        {
            "recipient": {"trust": "untrusted", "data": "retained"},
            "integrity": "recoverable",
            "consequences": ["identity_theft", "phishing_impersonation"],
        },
        authority=True,
        subjects=True,
        edpb="§7.1.1, paraphrase: an impostor obtained the customer's billing data and can use it for further "
        "identity fraud: a high risk, so the SA is notified and the customer is told",
    ),
    Case(
        # For three months mailbox rules forwarded a retailer's e-mails about invoices, payments and bank details
        # to an outside address; a supplier's bank details were altered and fake invoices sent. (Number of
        # people not given: assumed 200.)
        "edpb-18-email-exfiltration",
        {
            "nature": ["confidentiality", "integrity"],
            "categories": [NAME, EMAIL],
            "data_types": ["bank_account", "billing", "communications"],
            "affected": {"estimated_count": 200},
            "exfiltration_known": True,
            "malicious": True,
            "backup_exists": True,
        },
        {
            "recipient": {"trust": "unknown", "data": "retained"},
            "integrity": "recoverable",
            "consequences": ["fraud_financial_loss", "phishing_impersonation"],
        },
        authority=True,
        subjects=True,
        edpb="§7.2.1, paraphrase: bank details and invoices in an attacker's hands, already used for fake invoices, "
        "lead to financial loss: a high risk, so the SA is notified and the data subjects are told",
    ),
]


def test_the_table_has_every_case_of_the_guidelines_once() -> None:
    assert [int(case.id.split("-")[1]) for case in CASES] == list(range(1, 19))
    assert all(case.edpb.startswith("§") for case in CASES)


def test_each_reasoning_line_says_whether_it_is_the_edpbs_words() -> None:
    """A quotation is marked and between double quotes; a paraphrase is marked and quotes nothing."""
    quoted = {case.id.split("-")[1] for case in CASES if ", quoted: " in case.edpb}
    assert quoted == {"01"}, "a newly quoted case: check the sentence against the guidelines' PDF, then list it here"
    for case in CASES:
        section, _, text = case.edpb.partition(", ")
        assert section.startswith("§"), case.id
        if case.id.split("-")[1] in quoted:
            assert text.startswith('quoted: "'), case.id
            assert text.count('"') == 2, case.id
        else:
            assert text.startswith("paraphrase: "), case.id
            assert '"' not in text, f"{case.id}: a paraphrase must not look like a quotation"
    # No workaround categories: every category is the shipped policy's, every data type the taxonomy's.
    for case in CASES:
        assert all(key.startswith(("user.", "system.")) for key in case.facts.get("categories", []))


@pytest.fixture
async def edpb_client(make_settings: Any, backend: str) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    settings = make_settings()
    if backend == "postgres":
        await _empty_postgres(settings.database_url)
    async with runtime_for(settings) as runtime:
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, runtime


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_decisions_match_the_guidelines(edpb_client: tuple[httpx.AsyncClient, Runtime], case: Case) -> None:
    client, runtime = edpb_client
    auth = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
    breach = await create(client, auth, title=case.id, description=f"{case.id} (EDPB Guidelines 01/2021)", **case.facts)
    result = await assess(client, auth, breach["id"], **case.assessment)
    decisions = result["decisions"]
    got = (decisions["record"]["value"], decisions["notify_authority"]["value"], decisions["notify_subjects"]["value"])
    assert got == (True, case.authority, case.subjects), f"{case.id}: {result['assessment']['severity']} {decisions}"
    for name in ("record", "notify_authority", "notify_subjects"):
        assert decisions[name]["reasons"], f"{case.id}: {name} has no reasons"
        assert not decisions[name]["overridden"]

    # The score's band alone (ENISA, with unreadable data scored as such) and what the policy maps it to.
    rules = load_breach_policy(runtime.settings.policy_dir, runtime.policy)
    band = result["assessment"]["severity"]["band"]
    duty = rules.duty_for(band)
    by_band = (duty in ("authority", "subjects"), duty == "subjects")
    if case.why is None:
        assert by_band == (case.authority, case.subjects), f"{case.id}: the band ({band}) decides differently"
    else:
        assert by_band != (case.authority, case.subjects), f"{case.id}: says why, but the band decides the same"
        assert case.marker is not None
        assert any(case.marker in reason for reason in decisions[case.marker_in]["reasons"]), decisions

    inputs = result["assessment"]["inputs"]
    assert inputs["recipient"] == case.assessment.get("recipient")
    assert inputs["consequences"] == case.assessment.get("consequences", [])
    assert inputs["data_types"] == case.facts.get("data_types", [])
    # Every incident is in the register, notified or not (Art. 33(5)).
    register = (await client.get("/v1/breaches", headers=auth)).json()
    assert [item["id"] for item in register["items"]] == [breach["id"]]

"""EDPB Guidelines 01/2021 on Examples regarding Personal Data Breach Notification (v2.0, 14 Dec 2021).

Each case below is written from the *facts* the guidelines give, mapped onto this service's inputs
(data categories, the incident's facts, the ENISA assessment inputs an assessor would choose from those
facts), and checked against the guidelines' conclusion for that case: internal documentation (always),
notification to the supervisory authority, communication to the data subjects. The expected values are
the guidelines' "Actions necessary based on the identified risks" tables, not this code's output.

Where the guidelines give no number of people, the number used is stated as an assumption; any number
below the policy's large-scale threshold (10,000) gives the same decisions.

The EDPB's controllers hold data the wallet does not (a hospital's health records, a recruiter's CVs, a
website's password hashes), so these tests run with the shipped policy plus three categories:
``user.health`` (ENISA: sensitive), ``user.job_application`` (simple, +1 profiling: a CV allows
assumptions about education, career and status) and ``user.credentials`` (simple).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from privacy_service.app import create_app
from privacy_service.runtime import Runtime
from tests.breach_support import assess, create, edpb_policies, runtime_for
from tests.conftest import _empty_postgres, make_operator_key

NAME, ADDRESS, EMAIL, PHONE = "user.name", "user.contact.address", "user.contact.email", "user.contact.phone_number"

# (case id, incident facts, assessment inputs, (record, notify authority, notify subjects))
CASES: list[tuple[str, dict[str, Any], dict[str, Any], tuple[bool, bool, bool]]] = [
    (
        # Ransomware encrypted a small manufacturer's systems; the data was encrypted at rest with a
        # state-of-the-art algorithm and the key was not compromised; logs of every outbound flow show no
        # exfiltration; a backup restored it within hours; clients' and employees' data, a few dozen people.
        "edpb-case-01-ransomware-proper-backup-no-exfiltration",
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
        (True, False, False),
    ),
    (
        # Ransomware on an agricultural company's computer; logs prove no exfiltration; employees' and
        # clients' data (a few dozen people, no special categories); no electronic backup: restored from
        # paper over five working days, with minor delays to customers' orders.
        "edpb-case-02-ransomware-without-proper-backup",
        {
            "nature": ["availability", "confidentiality"],
            "categories": [NAME, ADDRESS],
            "affected": {"estimated_count": 36},
            "backup_exists": False,
            "exfiltration_known": False,
            "malicious": True,
        },
        {"availability": "temporary", "confidentiality": "exposed"},
        (True, True, False),
    ),
    (
        # Ransomware encrypted a hospital's information system; no exfiltration found; restored from
        # backup after two days, during which patients' treatment was delayed. (Number of patients not
        # given: assumed 1,000.)
        "edpb-case-03-ransomware-backup-no-exfiltration-hospital",
        {
            "nature": ["availability", "confidentiality"],
            "categories": [NAME, "user.health"],
            "affected": {"estimated_count": 1000},
            "backup_exists": True,
            "exfiltration_known": False,
            "malicious": True,
        },
        {"availability": "temporary", "confidentiality": "exposed"},
        (True, True, True),
    ),
    (
        # Ransomware on a public transport company's server; the attacker also exfiltrated the data:
        # identity-card and financial data including full card details; no backup. (Number of customers not
        # given: assumed 5,000.)
        "edpb-case-04-ransomware-without-backup-with-exfiltration",
        {
            "nature": ["availability", "confidentiality"],
            "categories": [NAME, "user.government_id", "user.financial.account_number"],
            "affected": {"estimated_count": 5000},
            "backup_exists": False,
            "exfiltration_known": True,
            "malicious": True,
        },
        {"dpc_factors": {"user.financial.account_number": ["fraud_enabling"]}},
        (True, True, True),
    ),
    (
        # Malicious code on a recruitment agency's website captured job application forms (213) for a
        # month; the toolkit can erase traces of exfiltration; no special categories.
        "edpb-case-05-exfiltration-of-job-application-data",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, EMAIL, PHONE, ADDRESS, "user.job_application"],
            "affected": {"estimated_count": 213},
            "exfiltration_known": True,
            "malicious": True,
        },
        {},
        (True, True, True),
    ),
    (
        # SQL injection on a cooking website; 1,200 users' passwords, hashed with a strong algorithm whose
        # salt was not compromised; usernames are arbitrary pseudonyms (e-mail addresses discouraged).
        "edpb-case-06-exfiltration-of-hashed-passwords",
        {
            "nature": ["confidentiality"],
            "categories": ["user.unique_id", "user.credentials"],
            "affected": {"estimated_count": 1200},
            "encrypted": True,
            "key_compromised": False,
            "exfiltration_known": True,
            "malicious": True,
        },
        {"ease_of_identification": "negligible"},
        (True, False, False),
    ),
    (
        # Credential stuffing on a bank's website: name, gender, date and place of birth, fiscal code and
        # user ids of about 100,000 people leaked; about 2,000 accounts with a trivial password logged into.
        "edpb-case-07-credential-stuffing-on-a-banking-website",
        {
            "nature": ["confidentiality"],
            "categories": [
                NAME,
                "user.date_of_birth",
                "user.demographic",
                "user.government_id",
                "user.unique_id",
                "user.financial.account_number",
                "user.financial.transaction",
            ],
            "affected": {"estimated_count": 100_000},
            "exfiltration_known": True,
            "malicious": True,
        },
        {},
        (True, True, True),
    ),
    (
        # During his notice period an employee copied the company's customer contact data and, months
        # later, used it to approach them for his own business; no special categories, low volume.
        # (Number not given: assumed 500.)
        "edpb-case-08-exfiltration-of-business-data-by-an-employee",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, EMAIL, PHONE, ADDRESS],
            "affected": {"estimated_count": 500},
            "exfiltration_known": True,
            "malicious": True,
        },
        {"confidentiality": "known_recipients"},
        (True, True, False),
    ),
    (
        # An insurance agent, bound by professional secrecy and sole recipient, could see two dozen other
        # customers' contact and policy data (insurance type, amount) in a spreadsheet; he reported it at
        # once, the file was corrected and he confirmed the deletion in writing.
        "edpb-case-09-accidental-transmission-to-a-trusted-third-party",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, ADDRESS, EMAIL, "user.financial.transaction"],
            "affected": {"estimated_count": 24},
            "malicious": False,
            "exfiltration_known": False,
        },
        {
            "confidentiality": "known_recipients",
            "dpc_factors": {"user.financial.transaction": ["little_financial_insight"]},
            "contained": True,
        },
        (True, False, False),
    ),
    (
        # Two tablets stolen from a children's day-care centre: names, dates of birth and education data;
        # encrypted, switched off, protected by a strong password; backup available; wiped remotely.
        # (Number of children not given: assumed 60.)
        "edpb-case-10-stolen-material-storing-encrypted-personal-data",
        {
            "nature": ["confidentiality", "availability"],
            "categories": [NAME, "user.date_of_birth"],
            "affected": {"estimated_count": 60},
            "encrypted": True,
            "key_compromised": False,
            "backup_exists": True,
            "malicious": True,
        },
        {"confidentiality": "unknown_recipients"},
        (True, False, False),
    ),
    (
        # An employee's notebook was stolen: names, sex, addresses and dates of birth of more than 100,000
        # customers, no password on the disk; daily backups exist.
        "edpb-case-11-stolen-material-storing-non-encrypted-personal-data",
        {
            "nature": ["confidentiality", "availability"],
            "categories": [NAME, "user.demographic", ADDRESS, "user.date_of_birth"],
            "affected": {"estimated_count": 100_000},
            "backup_exists": True,
            "malicious": True,
        },
        {"confidentiality": "unknown_recipients"},
        (True, True, True),
    ),
    (
        # A rehabilitation centre's paper logbook with patients' identity and health data was stolen; it was
        # not locked away and there is no copy. (Number of patients not given: assumed 50.)
        "edpb-case-12-stolen-paper-files-with-sensitive-data",
        {
            "nature": ["confidentiality", "availability"],
            "categories": [NAME, "user.health"],
            "affected": {"estimated_count": 50},
            "backup_exists": False,
            "malicious": True,
        },
        {"confidentiality": "unknown_recipients"},
        (True, True, True),
    ),
    (
        # Two shoe orders were packed with each other's packing bills: two customers saw each other's name,
        # address and order; the parcels were recalled and re-sent.
        "edpb-case-13-postal-mail-mistake",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, ADDRESS],
            "affected": {"estimated_count": 2},
            "malicious": False,
            "exfiltration_known": False,
        },
        {"confidentiality": "known_recipients"},
        (True, False, False),
    ),
    (
        # A public employment office e-mailed all registered jobseekers a file with every jobseeker's name,
        # e-mail address, postal address and social security number: more than 60,000 people.
        "edpb-case-14-highly-confidential-personal-data-sent-by-mail-by-mistake",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, EMAIL, ADDRESS, "user.government_id"],
            "affected": {"estimated_count": 60_000},
            "malicious": False,
            "exfiltration_known": False,
        },
        {"confidentiality": "known_recipients"},
        (True, True, True),
    ),
    (
        # A course's participant list (15 names, e-mail addresses, food preferences; two lactose intolerant)
        # went to 15 former participants instead of the hotel; noticed at once, recipients asked to delete.
        "edpb-case-15-personal-data-sent-by-mail-by-mistake",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, EMAIL, "user.health"],
            "affected": {"estimated_count": 15},
            "malicious": False,
            "exfiltration_known": False,
        },
        {"confidentiality": "known_recipients", "dpc_factors": {"user.health": ["no_substantial_insight"]}},
        (True, False, False),
    ),
    (
        # An enveloping machine put two car-insurance letters into one envelope: one policyholder saw
        # another's name, address, date of birth, vehicle registration, premiums and approximate mileage.
        "edpb-case-16-postal-mail-mistake",
        {
            "nature": ["confidentiality"],
            "categories": [NAME, ADDRESS, "user.date_of_birth", "user.financial.transaction", "user.behavior"],
            "affected": {"estimated_count": 1},
            "malicious": False,
            "exfiltration_known": False,
        },
        {
            "confidentiality": "known_recipients",
            "dpc_factors": {
                "user.financial.transaction": ["little_financial_insight"],
                "user.behavior": ["little_insight"],
            },
        },
        (True, True, False),
    ),
    (
        # A caller posing as a telecom customer (knowing his fiscal number and address) had the billing
        # e-mail changed; a month of bills went to the impostor until the customer complained.
        "edpb-case-17-identity-theft",
        {
            "nature": ["confidentiality", "integrity"],
            "categories": [NAME, ADDRESS, EMAIL, "user.financial.transaction"],
            "affected": {"estimated_count": 1},
            "malicious": True,
            "backup_exists": True,
        },
        {"confidentiality": "known_recipients", "integrity": "recoverable"},
        (True, True, True),
    ),
    (
        # For three months mailbox rules forwarded a retailer's e-mails about invoices, payments and bank
        # details to an outside address; a supplier's bank details were altered and fake invoices sent.
        # (Number of people not given: assumed 200.)
        "edpb-case-18-email-exfiltration",
        {
            "nature": ["confidentiality", "integrity"],
            "categories": [NAME, EMAIL, "user.financial.account_number", "user.financial.transaction"],
            "affected": {"estimated_count": 200},
            "exfiltration_known": True,
            "malicious": True,
            "backup_exists": True,
        },
        {"integrity": "recoverable", "dpc_factors": {"user.financial.account_number": ["fraud_enabling"]}},
        (True, True, True),
    ),
]


@pytest.fixture
async def edpb_client(
    make_settings: Any, backend: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    settings = make_settings(policy_dir=edpb_policies(tmp_path))
    if backend == "postgres":
        await _empty_postgres(settings.database_url)
    async with runtime_for(settings) as runtime:
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, runtime


@pytest.mark.parametrize(("case", "facts", "inputs", "expected"), CASES, ids=[case[0] for case in CASES])
async def test_decisions_match_the_guidelines(
    edpb_client: tuple[httpx.AsyncClient, Runtime],
    case: str,
    facts: dict[str, Any],
    inputs: dict[str, Any],
    expected: tuple[bool, bool, bool],
) -> None:
    client, runtime = edpb_client
    auth = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
    breach = await create(client, auth, title=case, description=f"{case} (EDPB Guidelines 01/2021)", **facts)
    result = await assess(client, auth, breach["id"], **inputs)
    decisions = result["decisions"]
    got = (
        decisions["record"]["value"],
        decisions["notify_authority"]["value"],
        decisions["notify_subjects"]["value"],
    )
    assert got == expected, f"{case}: {result['assessment']['severity']} {decisions}"
    for name in ("record", "notify_authority", "notify_subjects"):
        assert decisions[name]["reasons"], f"{case}: {name} has no reasons"
        assert not decisions[name]["overridden"]
    # Every incident is in the register, notified or not (Art. 33(5)).
    register = (await client.get("/v1/breaches", headers=auth)).json()
    assert [item["id"] for item in register["items"]] == [breach["id"]]

"""Issue 16 item 2, as an attacker holding one e-mailed code tries it: a correction of an identifier or
of identity/financial data waits for an operator (``awaiting_review``) and changes nothing until
approved; the operator sees the requested diff; the policy frees named low-risk fields from review.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient

from privacy_service.config import Settings
from privacy_service.policy.loader import check_policy
from privacy_service.runtime import Runtime
from tests.api.dsr_support import (
    assert_no_leak,
    assert_problem,
    assert_unchanged,
    bearer,
    fresh_settings,
    make_subject,
    rows,
    snapshot,
    submit_and_verify,
)
from tests.conftest import make_operator_key
from tests.policy_files import copy_policies, edit_yaml

EMAIL = "carol.customer@example.com"
PHONE = "+447911123456"
IBAN = "DE89370400440532013000"
PROFILE = {"name": "Carol Customer", "iban": IBAN, "national_id": "ZX998877"}


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend)


async def subject_updates(runtime: Runtime) -> list[Any]:
    return [e for e in await rows(runtime, "audit_events") if e["action"] == "subject.update"]


async def subject_reads(runtime: Runtime) -> list[Any]:
    return [e for e in await rows(runtime, "audit_events") if e["action"] == "subject.read"]


@pytest.mark.parametrize(
    ("changes", "field", "before", "after"),
    [
        ({"email": "mallory@example.net"}, "email", EMAIL, "mallory@example.net"),
        ({"phone": "+14155552671"}, "phone", PHONE, "+14155552671"),
        ({"profile": {"name": "Mallory Owner"}}, "profile.name", "Carol Customer", "Mallory Owner"),
        ({"profile": {"iban": "GB33BUKB20201555555555"}}, "profile.iban", IBAN, "GB33BUKB20201555555555"),
        # One low-risk field does not carry a risky one through.
        (
            {"profile": {"secondary_email": "c@example.org", "national_id": "AA000000"}},
            "profile.national_id",
            "ZX998877",
            "AA000000",
        ),
    ],
    ids=["email", "phone", "name", "iban", "mixed"],
)
async def test_a_code_alone_never_corrects_identifiers_or_identity_data(
    client: AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    mail: Any,
    changes: dict[str, Any],
    field: str,
    before: str,
    after: str,
) -> None:
    subject_id = await make_subject(client, auth, email=EMAIL, phone=PHONE, profile=PROFILE)
    original = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
    request_id, verified = await submit_and_verify(client, runtime, mail, EMAIL, "rectify", changes=changes)
    assert verified["status"] == "awaiting_review"  # although rectify is auto-approved by default
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json() == original
    assert await subject_updates(runtime) == []

    # The operator reviewing it sees the requested diff, with the value on file it would replace.
    view = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert view["changes"][field] == {"from": before, "to": after}
    assert view["history"][-1]["note"]
    # The subject's own status read names no values (a leaked link shows nothing).
    own = await client.get(f"/v1/requests/{request_id}", headers=bearer(verified["token"]))
    assert own.json()["changes"] is None
    assert after not in own.text
    assert before not in own.text

    approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=auth)
    assert approved.json()["status"] == "completed", approved.text
    corrected = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
    key = field.removeprefix("profile.")
    assert (corrected["profile"][key] if field.startswith("profile.") else corrected[key]) == after


async def test_the_diff_shows_values_on_file_only_to_a_key_that_reads_subjects(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: Any
) -> None:
    subject_id = await make_subject(client, auth, email=EMAIL, profile=PROFILE)
    request_id, _ = await submit_and_verify(
        client, runtime, mail, EMAIL, "rectify", changes={"profile": {"name": "New Name", "iban": None}}
    )
    manager = bearer(await make_operator_key(runtime, frozenset({"requests:manage"})))
    reads_before = await subject_reads(runtime)
    view = await client.get(f"/v1/requests/{request_id}", headers=manager)
    # requests:manage alone: which fields would change, no value (neither the new one nor the old one).
    assert view.json()["changes"] == {"profile.iban": {}, "profile.name": {}}
    assert_no_leak(view, "Carol", IBAN, "New Name")
    assert await subject_reads(runtime) == reads_before
    full = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert full["changes"] == {
        "profile.iban": {"from": IBAN, "to": None},
        "profile.name": {"from": "Carol Customer", "to": "New Name"},
    }
    # Both the requested values and the values on file were read, each audited as a read of the subject.
    new_reads = (await subject_reads(runtime))[len(reads_before) :]
    assert len(new_reads) == 2
    assert {uuid.UUID(str(e["subject_id"])) for e in new_reads} == {uuid.UUID(subject_id)}


async def test_a_field_the_policy_frees_from_review_is_corrected_on_the_code(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: Any
) -> None:
    assert "secondary_email" in runtime.policy.rectify_without_review
    subject_id = await make_subject(client, auth, email=EMAIL, profile=PROFILE)
    _, verified = await submit_and_verify(
        client, runtime, mail, EMAIL, "rectify", changes={"profile": {"secondary_email": "carol@example.org"}}
    )
    assert verified["status"] == "completed"
    subject = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
    assert subject["profile"] == {**PROFILE, "secondary_email": "carol@example.org"}
    details = [json.dumps(u["detail"], default=str) for u in await subject_updates(runtime)]
    assert len(details) == 1
    assert "profile.secondary_email" in details[0]


@pytest.mark.parametrize(
    ("listed", "message"),
    [
        (["email"], "is an identifier"),
        (["favourite_colour"], "is not in profile_fields"),
        (["occupation", "occupation"], "listed twice"),
    ],
)
def test_policy_check_refuses_freeing_identifiers_or_unknown_fields(
    tmp_path: Path, listed: list[str], message: str
) -> None:
    folder = copy_policies(tmp_path)
    edit_yaml(folder / "policy.yaml", lambda data: data.update(rectify_without_review=listed))
    document, problems = check_policy(folder)
    assert document is None
    assert any(message in str(problem) and "rectify_without_review" in str(problem) for problem in problems), problems


# -- the same review for a correction filed pre-verified through OpenDSR -------------------------

MALLORY = "mallory.takeover@example.net"


def opendsr_rectification(changes: dict[str, Any]) -> dict[str, Any]:
    return {
        "regulation": "gdpr",
        "subject_request_id": str(uuid.uuid4()),
        "subject_request_type": "rectification",
        "submitted_time": datetime.now(UTC).isoformat(),
        "subject_identities": [{"identity_type": "email", "identity_value": EMAIL, "identity_format": "raw"}],
        "extensions": {"privacy-service": {"changes": changes}},
    }


async def test_requests_manage_alone_cannot_take_over_an_account_through_opendsr(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: Any
) -> None:
    """The chain: rectify the victim's e-mail to the attacker's address through OpenDSR (pre-verified,
    and rectify is auto-approved), file an access request as that address, verify with the code it
    receives, download the victim's export. Each step fails with requests:manage alone."""
    subject_id = await make_subject(client, auth, email=EMAIL, phone=PHONE, profile=PROFILE)
    original = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
    manager = bearer(await make_operator_key(runtime, frozenset({"requests:manage"})))

    # 1. The correction is filed, and waits for review: nothing reaches the vault.
    body = opendsr_rectification({"email": MALLORY})
    filed = await client.post("/opendsr/requests", json=body, headers=manager)
    assert filed.status_code == 201, filed.text
    request_id = body["subject_request_id"]
    status = (await client.get(f"/opendsr/requests/{request_id}", headers=manager)).json()
    assert status["request_status"] == "pending"
    assert status["extensions"]["privacy-service"]["native_status"] == "awaiting_review"
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json() == original
    assert await subject_updates(runtime) == []
    # Reading it back shows which field would change, not the address it would change to.
    view = await client.get(f"/v1/requests/{request_id}", headers=manager)
    assert view.json()["changes"] == {"email": {}}
    assert_no_leak(view, MALLORY, EMAIL)

    # 2. The same key cannot approve it (approving writes to the vault: subjects:write).
    before = await snapshot(runtime)
    refused = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=manager)
    assert_problem(refused, 403, "forbidden")
    assert "subjects:write" in refused.json()["detail"]
    assert_no_leak(refused, EMAIL, MALLORY)
    assert_unchanged(before, await snapshot(runtime))

    # 3. The attacker's address is no customer's: an access request as it finds nothing to download.
    access_id, verified = await submit_and_verify(client, runtime, mail, MALLORY, "access")
    answer = await client.get(f"/v1/requests/{access_id}", headers=bearer(verified["token"]))
    assert answer.json()["result"] == {"data_found": False}
    assert answer.json()["export_url"] is None
    export = await client.get(f"/v1/requests/{access_id}/export", headers=bearer(verified["token"]))
    assert export.status_code >= 400
    assert_no_leak(export, EMAIL, PHONE, IBAN, "Carol Customer")
    assert (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json() == original


async def test_an_operator_cannot_approve_the_correction_it_filed(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    subject_id = await make_subject(client, auth, email=EMAIL, profile=PROFILE)
    original = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
    filer = bearer(await make_operator_key(runtime, frozenset({"requests:manage", "subjects:write"})))
    body = opendsr_rectification({"profile": {"iban": "GB33BUKB20201555555555"}})
    assert (await client.post("/opendsr/requests", json=body, headers=filer)).status_code == 201
    request_id = body["subject_request_id"]

    before = await snapshot(runtime)
    own = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=filer)
    assert_problem(own, 403, "forbidden")
    assert "another operator" in own.json()["detail"]
    assert_unchanged(before, await snapshot(runtime))

    # A second operator with both scopes reviews and approves it: the intended flow still works.
    reviewer = bearer(await make_operator_key(runtime, frozenset({"requests:manage", "subjects:write"})))
    approved = await client.post(f"/v1/requests/{request_id}/approve", json={}, headers=reviewer)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "completed"
    corrected = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
    assert corrected["profile"] == {**PROFILE, "iban": "GB33BUKB20201555555555"}
    assert corrected["email"] == original["email"]


async def test_an_opendsr_correction_of_a_field_freed_from_review_is_applied_at_once(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    subject_id = await make_subject(client, auth, email=EMAIL, profile=PROFILE)
    manager = bearer(await make_operator_key(runtime, frozenset({"requests:manage"})))
    body = opendsr_rectification({"profile": {"secondary_email": "carol@example.org"}})
    assert (await client.post("/opendsr/requests", json=body, headers=manager)).status_code == 201
    status = (await client.get(f"/opendsr/requests/{body['subject_request_id']}", headers=manager)).json()
    assert status["request_status"] == "completed"
    subject = (await client.get(f"/v1/subjects/{subject_id}", headers=auth)).json()
    assert subject["profile"] == {**PROFILE, "secondary_email": "carol@example.org"}

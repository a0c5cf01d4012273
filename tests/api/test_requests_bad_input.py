"""Bad input to the data-subject request API: a clear problem+json 4xx, no echo, nothing changed.

The cases are grouped by the state they need (no request yet, a request awaiting verification,
completed requests with tokens, an erasure awaiting review, ...), prepared from an identity carrying
a marker. Every call is bracketed by snapshots of the request, transition, outbox, key and vault
rows: only a counted failed code attempt may change a row, and no spelling of the marker (nor the
token) may come back in the body or a header. A group reports all of its failing cases.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from httpx import AsyncClient

from privacy_service.config import Settings
from privacy_service.runtime import Runtime
from tests.api.dsr_support import (
    assert_no_leak,
    assert_problem,
    assert_unchanged,
    bearer,
    code_from,
    deliver,
    fresh_settings,
    make_subject,
    rows,
    snapshot,
    submit,
    submit_and_verify,
)
from tests.conftest import MailSink, make_operator_key

MARKER = "zz-dsr-marker"
V = "validation-error"
I = "invalid-input"  # noqa: E741 - a short tag keeps the table readable
ILLEGAL = "illegal-transition"
CODE_TTL = timedelta(minutes=15)
EXPORT_TTL = timedelta(days=7)


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend)


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str  # {id}: the case's request, {other}: another identity's request, {missing}: a random UUID
    status: int
    slug: str
    body: Any = None  # "{email}" / "{code}" inside are replaced by the case's identity / code
    who: str = "none"  # none | token | operator | reader | garbage
    travel: timedelta | None = None  # the call happens this much later
    allowed: frozenset[str] = frozenset()  # dsr_requests columns the call may change
    expect: dict[str, Any] = field(default_factory=dict)  # further problem members
    header: str | None = None  # a header the answer must carry


@dataclass
class Prepared:
    email: str
    request_id: str = ""
    other_id: str = ""
    code: str = ""
    token: str = ""


ATTEMPT = frozenset({"code_attempts"})
ACCESS = {"type": "access", "identity": {"email": "{email}"}}


def rectify(changes: Any) -> dict[str, Any]:
    return {"type": "rectify", "identity": {"email": "{email}"}, "changes": changes}


GROUPS: dict[str, list[Case]] = {
    # Intake: nothing exists before or after.
    "intake": [
        Case("unknown-type", "POST", "/v1/requests", 400, V, {"type": "delete", "identity": {"email": "{email}"}}),
        Case("missing-identity", "POST", "/v1/requests", 400, V, {"type": "access"}),
        Case("empty-identity", "POST", "/v1/requests", 422, I, {"type": "access", "identity": {}}),
        Case(
            "email-and-phone",
            "POST",
            "/v1/requests",
            422,
            I,
            {"type": "access", "identity": {"email": "{email}", "phone": "+447911123456"}},
        ),
        Case("invalid-email", "POST", "/v1/requests", 422, I, {"type": "access", "identity": {"email": MARKER}}),
        Case(
            "invalid-phone", "POST", "/v1/requests", 422, I, {"type": "access", "identity": {"phone": f"+44{MARKER}"}}
        ),
        Case("unknown-regime", "POST", "/v1/requests", 400, V, {**ACCESS, "regime": "lgpd"}),
        Case("unknown-language", "POST", "/v1/requests", 400, V, {**ACCESS, "language": "fr"}),
        Case("unknown-member", "POST", "/v1/requests", 400, V, {**ACCESS, "name": MARKER}),
        Case("rectify-without-changes", "POST", "/v1/requests", 422, I, {**ACCESS, "type": "rectify"}),
        Case("access-with-changes", "POST", "/v1/requests", 422, I, {**ACCESS, "changes": {"email": "{email}"}}),
        Case("rectify-empty-changes", "POST", "/v1/requests", 422, I, rectify({})),
        Case(
            "rectify-unknown-profile-field",
            "POST",
            "/v1/requests",
            422,
            I,
            rectify({"profile": {"favourite_colour": MARKER}}),
        ),
        Case("rectify-invalid-new-email", "POST", "/v1/requests", 422, I, rectify({"email": f"{MARKER}.example"})),
        Case("verify-unknown-id", "POST", "/v1/requests/{missing}/verify", 404, "not-found", {"code": "123456"}),
        Case("status-unknown-id", "GET", "/v1/requests/{missing}", 404, "not-found", who="operator"),
        Case("list-naive-due-before", "GET", "/v1/requests?due_before=2026-03-01T00:00:00", 422, I, who="operator"),
        Case("list-bad-cursor", "GET", f"/v1/requests?after={MARKER}", 422, I, who="operator"),
        Case("list-unknown-status", "GET", "/v1/requests?status=lost", 400, V, who="operator"),
        Case("list-without-key", "GET", "/v1/requests", 401, "unauthenticated"),
        Case("list-without-scope", "GET", "/v1/requests", 403, "forbidden", who="reader"),
    ],
    # One access request awaiting verification (its code was read from the mail).
    "awaiting": [
        Case(
            "wrong-code",
            "POST",
            "/v1/requests/{id}/verify",
            422,
            "invalid-code",
            {"code": "{wrong}"},
            allowed=ATTEMPT,
            expect={"attempts_left": 4},
        ),
        Case(
            "expired-code",
            "POST",
            "/v1/requests/{id}/verify",
            422,
            "code-expired",
            {"code": "{code}"},
            travel=CODE_TTL + timedelta(minutes=1),
            allowed=ATTEMPT,
            expect={"attempts_left": 4},
        ),
        Case("malformed-code", "POST", "/v1/requests/{id}/verify", 400, V, {"code": "12345"}),
        Case("code-as-number", "POST", "/v1/requests/{id}/verify", 400, V, {"code": 123456}),
        Case(
            "resend-during-cooldown",
            "POST",
            "/v1/requests/{id}/resend",
            409,
            "conflict",
            {},
            header="retry-after",
        ),
        Case("status-without-token", "GET", "/v1/requests/{id}", 401, "unauthenticated"),
        Case("status-forged-token", "GET", "/v1/requests/{id}", 403, "forbidden", who="garbage"),
        Case("approve-unverified", "POST", "/v1/requests/{id}/approve", 409, ILLEGAL, {}, who="operator"),
        Case("deny-unverified", "POST", "/v1/requests/{id}/deny", 409, ILLEGAL, {"reason": "x"}, who="operator"),
    ],
    # An access request of the identity (a subject exists) and one of another identity, both completed.
    "completed": [
        Case("reused-code", "POST", "/v1/requests/{id}/verify", 409, ILLEGAL, {"code": "{code}"}),
        Case("resend-after-verification", "POST", "/v1/requests/{id}/resend", 409, "conflict", {}),
        Case("token-of-another-request", "GET", "/v1/requests/{other}", 403, "forbidden", who="token"),
        Case("export-of-another-request", "GET", "/v1/requests/{other}/export", 403, "forbidden", who="token"),
        Case("export-without-token", "GET", "/v1/requests/{id}/export", 401, "unauthenticated"),
        Case("status-without-scope", "GET", "/v1/requests/{id}", 403, "forbidden", who="reader"),
        Case(
            "download-after-expiry",
            "GET",
            "/v1/requests/{id}/export",
            410,
            "gone",
            who="token",
            travel=EXPORT_TTL + timedelta(days=1),
        ),
        Case(
            "operator-download-after-expiry",
            "GET",
            "/v1/requests/{id}/export",
            410,
            "gone",
            who="operator",
            travel=EXPORT_TTL + timedelta(days=1),
        ),
        Case("export-unknown-format", "GET", "/v1/requests/{id}/export?format=xml", 400, V, who="token"),
        Case("approve-completed", "POST", "/v1/requests/{id}/approve", 409, ILLEGAL, {}, who="operator"),
        Case("cancel-completed", "POST", "/v1/requests/{id}/cancel", 409, ILLEGAL, {}, who="operator"),
        Case("extend-completed", "POST", "/v1/requests/{id}/extend", 409, "conflict", {"reason": "x"}, who="operator"),
    ],
    # An erasure request of a known subject, verified, awaiting an operator (GDPR).
    "review": [
        Case("deny-without-reason", "POST", "/v1/requests/{id}/deny", 400, V, {}, who="operator"),
        Case("deny-empty-reason", "POST", "/v1/requests/{id}/deny", 400, V, {"reason": ""}, who="operator"),
        Case("extend-without-reason", "POST", "/v1/requests/{id}/extend", 400, V, {"days": 10}, who="operator"),
        Case(
            "extend-past-two-months",
            "POST",
            "/v1/requests/{id}/extend",
            422,
            I,
            {"reason": "complex", "days": 92},
            who="operator",
        ),
        Case(
            "extend-after-deadline",
            "POST",
            "/v1/requests/{id}/extend",
            409,
            "conflict",
            {"reason": "complex"},
            who="operator",
            travel=timedelta(days=40),
        ),
        Case("approve-with-body", "POST", "/v1/requests/{id}/approve", 400, V, {"note": MARKER}, who="operator"),
        Case("approve-with-subject-token", "POST", "/v1/requests/{id}/approve", 401, "unauthenticated", {}, "token"),
        Case("approve-without-scope", "POST", "/v1/requests/{id}/approve", 403, "forbidden", {}, who="reader"),
        Case("export-of-erasure", "GET", "/v1/requests/{id}/export", 409, "conflict", who="token"),
    ],
    "approved": [
        Case("double-approve", "POST", "/v1/requests/{id}/approve", 409, ILLEGAL, {}, who="operator"),
        Case("deny-after-erasure", "POST", "/v1/requests/{id}/deny", 409, ILLEGAL, {"reason": "x"}, who="operator"),
    ],
    "extended": [
        Case("extend-twice", "POST", "/v1/requests/{id}/extend", 409, "conflict", {"reason": "again"}, who="operator"),
    ],
    "pipl-review": [
        Case("extend-under-pipl", "POST", "/v1/requests/{id}/extend", 422, I, {"reason": "complex"}, who="operator"),
    ],
}


@dataclass
class World:
    client: AsyncClient
    runtime: Runtime
    mail: MailSink
    auth: dict[str, str]
    reader: dict[str, str]
    counter: int = 0

    def identity(self) -> str:
        self.counter += 1
        return f"{MARKER}.{self.counter}@example.com"

    async def review(self, regime: str = "gdpr") -> Prepared:
        prepared = Prepared(self.identity())
        await make_subject(self.client, self.auth, email=prepared.email, profile={"name": f"Zz {MARKER}"})
        prepared.request_id, verified = await submit_and_verify(
            self.client, self.runtime, self.mail, prepared.email, "erase", regime=regime
        )
        assert verified["status"] == "awaiting_review"
        prepared.token = verified["token"]
        return prepared


async def prepare_intake(world: World) -> Prepared:
    return Prepared(world.identity())


async def prepare_awaiting(world: World) -> Prepared:
    prepared = Prepared(world.identity())
    prepared.request_id = await submit(world.client, {"email": prepared.email}, "access")
    await deliver(world.runtime)
    prepared.code = code_from(world.mail, prepared.email)
    return prepared


async def prepare_completed(world: World) -> Prepared:
    prepared = Prepared(world.identity())
    await make_subject(world.client, world.auth, email=prepared.email, profile={"name": f"Zz {MARKER}"})
    prepared.request_id = await submit(world.client, {"email": prepared.email}, "access")
    await deliver(world.runtime)
    prepared.code = code_from(world.mail, prepared.email)
    verified = await world.client.post(f"/v1/requests/{prepared.request_id}/verify", json={"code": prepared.code})
    assert verified.json()["status"] == "completed", verified.text
    prepared.token = verified.json()["token"]
    prepared.other_id, _ = await submit_and_verify(world.client, world.runtime, world.mail, world.identity(), "access")
    return prepared


async def prepare_approved(world: World) -> Prepared:
    prepared = await world.review()
    approved = await world.client.post(f"/v1/requests/{prepared.request_id}/approve", json={}, headers=world.auth)
    assert approved.status_code == 200, approved.text
    return prepared


async def prepare_extended(world: World) -> Prepared:
    prepared = await world.review()
    extended = await world.client.post(
        f"/v1/requests/{prepared.request_id}/extend", json={"reason": "complex"}, headers=world.auth
    )
    assert extended.status_code == 200, extended.text
    return prepared


async def prepare_pipl(world: World) -> Prepared:
    return await world.review("pipl")


PREPARE: dict[str, Callable[[World], Awaitable[Prepared]]] = {
    "intake": prepare_intake,
    "awaiting": prepare_awaiting,
    "completed": prepare_completed,
    "review": World.review,
    "approved": prepare_approved,
    "extended": prepare_extended,
    "pipl-review": prepare_pipl,
}


def fill(value: Any, prepared: Prepared) -> Any:
    if isinstance(value, dict):
        return {key: fill(item, prepared) for key, item in value.items()}
    if isinstance(value, str):
        wrong = f"{(int(prepared.code or '0') + 1) % 1_000_000:06d}"
        return value.replace("{email}", prepared.email).replace("{code}", prepared.code).replace("{wrong}", wrong)
    return value


def credentials(world: World, prepared: Prepared, who: str) -> dict[str, str]:
    return {
        "none": {},
        "token": bearer(prepared.token),
        "operator": world.auth,
        "reader": world.reader,
        "garbage": bearer("psr_" + "A" * 43),
    }[who]


async def run_case(world: World, case: Case, prepared: Prepared) -> None:
    path = case.path.format(id=prepared.request_id, other=prepared.other_id, missing=uuid.uuid4())
    kwargs: dict[str, Any] = {"headers": credentials(world, prepared, case.who)}
    if case.body is not None:
        kwargs["json"] = fill(case.body, prepared)
    before = await snapshot(world.runtime)
    later = time_machine.travel(datetime.now(UTC) + case.travel, tick=True) if case.travel else nullcontext()
    with later:
        response = await world.client.request(case.method, path, **kwargs)
    body = assert_problem(response, case.status, case.slug)
    for name, value in case.expect.items():
        assert body.get(name) == value, body
    if case.header is not None:
        assert response.headers.get(case.header), response.headers
    assert_no_leak(response, MARKER, prepared.email, *([prepared.token] if prepared.token else []))
    assert_unchanged(before, await snapshot(world.runtime), case.allowed)
    if case.allowed:
        (changed,) = [
            r
            for r in await rows(world.runtime, "dsr_requests")
            if uuid.UUID(str(r["id"])) == uuid.UUID(prepared.request_id)
        ]
        assert changed["code_attempts"] == 1


assert len({case.id for cases in GROUPS.values() for case in cases}) == sum(map(len, GROUPS.values())), "ids repeat"


@pytest.mark.parametrize("group", list(GROUPS))
async def test_bad_input_is_a_clear_4xx_that_changes_nothing(
    group: str, client: AsyncClient, runtime: Runtime, mail: MailSink, auth: dict[str, str]
) -> None:
    reader = bearer(await make_operator_key(runtime, frozenset({"subjects:read"})))
    world = World(client, runtime, mail, auth, reader)
    failures: list[str] = []
    shared: Prepared | None = None
    for case in GROUPS[group]:
        # Cases that must change nothing share the group's requests (each call is compared on its
        # own); a case that counts a failed attempt gets requests of its own.
        if case.allowed:
            prepared = await PREPARE[group](world)
        else:
            shared = prepared = shared or await PREPARE[group](world)
        try:
            await run_case(world, case, prepared)
        except AssertionError as exc:
            failures.append(f"{case.id}: {exc}")
    assert not failures, "\n".join(failures)


async def test_five_wrong_codes_fail_the_request_for_good(
    client: AsyncClient, runtime: Runtime, mail: MailSink, auth: dict[str, str]
) -> None:
    email = f"{MARKER}@example.com"
    request_id = await submit(client, {"email": email}, "access")
    await deliver(runtime)
    code = code_from(mail, email)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for attempts_left in (4, 3, 2, 1, 0):
        response = await client.post(f"/v1/requests/{request_id}/verify", json={"code": wrong})
        assert assert_problem(response, 422, "invalid-code")["attempts_left"] == attempts_left
    status = (await client.get(f"/v1/requests/{request_id}", headers=auth)).json()
    assert status["status"] == "verification_failed"
    assert status["history"][-1] == {
        "status": "verification_failed",
        "at": status["history"][-1]["at"],
        "actor_type": "system",
        "note": "too many wrong codes",
    }
    # The sixth attempt cannot succeed, not even with the right code, and changes nothing.
    before = await snapshot(runtime)
    for attempt in (code, wrong):
        sixth = await client.post(f"/v1/requests/{request_id}/verify", json={"code": attempt})
        assert assert_problem(sixth, 409, ILLEGAL)["current_status"] == "verification_failed"
        assert_no_leak(sixth, MARKER)
    resend = await client.post(f"/v1/requests/{request_id}/resend", json={})
    assert_problem(resend, 409, "conflict")
    assert_unchanged(before, await snapshot(runtime))

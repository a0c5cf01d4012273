"""Bad input to the vault API: always a problem+json 4xx, never a 500, never an echo, never a write.

Every case submits a distinctive PII-looking marker (in the body, the query string or the
credentials) and checks that no form of it comes back in the body or any header, and that the
database is exactly as it was before the request.

The cases share one migrated database and app per backend (built from the same session fixtures
as ``settings``/``runtime``): a fresh database per case costs more than the case itself, and
each case compares the database before and after its own request, so sharing hides nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from litestar import Litestar
from sqlalchemy import text

from privacy_service.app import create_app
from privacy_service.config import Settings
from privacy_service.operators.service import revoke_operator
from privacy_service.runtime import Runtime, build_runtime
from tests.conftest import BACKENDS, ROOT, _empty_postgres, make_operator_key, table_counts

MARKER = "zz-secret-marker"
EMAIL = f"{MARKER}@example.com"
DUPLICATE = f"{MARKER}-taken@example.com"  # held by an existing subject
NAME = f"Zz Secret-Marker {MARKER}"
# Any spelling of the marker: hyphens/underscores/spaces dropped, case folded, JSON escapes undone.
_FOLD = re.compile(r"[\s_\-\\/.]")
NEEDLE = _FOLD.sub("", MARKER.lower())
MIB = 1_048_576

ORDINARY_SUBJECT = {"email": "ordinary.person@example.org", "profile": {"name": "Ordinary Person"}}
RECORD = {
    "kind": "transaction",
    "category": "user.financial.transaction",
    "occurred_at": "2026-01-31T10:00:00Z",
    "data": {"reference": f"TX-{MARKER}"},
}


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # "{id}" is an existing subject, "{missing}" a random UUID
    status: int
    slug: str
    body: Any = None  # sent as JSON unless ``raw`` is given
    raw: bytes | None = None
    content_type: str = "application/json"
    params: dict[str, str] = field(default_factory=dict)
    who: str = "writer"  # writer | reader | none | garbage | revoked

    @property
    def expected_header(self) -> str | None:
        return {401: "www-authenticate", 405: "allow"}.get(self.status)


def case(id_: str, *args: Any, **kwargs: Any) -> Any:
    return pytest.param(Case(*args, **kwargs), id=id_)


V = "validation-error"
I = "invalid-input"  # noqa: E741 - a short tag keeps the table readable
BAD_JSON = "bad-request"

CASES = [
    # -- malformed bodies ------------------------------------------------------------------
    case("create-malformed-json", "POST", "/v1/subjects", 400, BAD_JSON, raw=f'{{"email": "{EMAIL}",,}}'.encode()),
    case(
        "create-truncated-json",
        "POST",
        "/v1/subjects",
        400,
        BAD_JSON,
        raw=f'{{"email": "{EMAIL}", "profile": {{"name": "{NAME}"'.encode(),
    ),
    case("create-json-array", "POST", "/v1/subjects", 400, V, body=[{"email": EMAIL}]),
    case("create-json-string", "POST", "/v1/subjects", 400, V, body=EMAIL),
    case("patch-malformed-json", "PATCH", "/v1/subjects/{id}", 400, BAD_JSON, raw=f'{{"email": "{EMAIL}"'.encode()),
    case("patch-json-array", "PATCH", "/v1/subjects/{id}", 400, V, body=[EMAIL]),
    case(
        "record-truncated-json",
        "POST",
        "/v1/subjects/{id}/records",
        400,
        BAD_JSON,
        raw=json.dumps(RECORD)[:-9].encode(),
    ),
    case("event-malformed-json", "POST", "/v1/subjects/{id}/events", 400, BAD_JSON, raw=f"{{type: {MARKER}}}".encode()),
    case("lookup-json-array", "POST", "/v1/subjects/lookup", 400, V, body=[{"email": EMAIL}]),
    # -- wrong types and unknown fields ----------------------------------------------------
    case("create-email-not-string", "POST", "/v1/subjects", 400, V, body={"email": 42, "profile": {"name": NAME}}),
    case("create-profile-not-object", "POST", "/v1/subjects", 400, V, body={"email": EMAIL, "profile": NAME}),
    case("create-language-unknown", "POST", "/v1/subjects", 400, V, body={"email": EMAIL, "language": MARKER}),
    case("create-empty-email", "POST", "/v1/subjects", 400, V, body={"email": "", "profile": {"name": NAME}}),
    case(
        "create-unknown-top-level-field",
        "POST",
        "/v1/subjects",
        400,
        V,
        body={"email": EMAIL, "nickname": NAME},
    ),
    case(
        "create-unknown-profile-field",
        "POST",
        "/v1/subjects",
        422,
        I,
        body={"email": EMAIL, "profile": {"name": NAME, "favourite_colour": MARKER}},
    ),
    case("patch-wrong-type", "PATCH", "/v1/subjects/{id}", 400, V, body={"phone": 447911123456, "email": EMAIL}),
    case("patch-unknown-field", "PATCH", "/v1/subjects/{id}", 400, V, body={"status": "erased", "email": EMAIL}),
    case(
        "patch-unknown-profile-field",
        "PATCH",
        "/v1/subjects/{id}",
        422,
        I,
        body={"profile": {"shoe_size": MARKER}},
    ),
    case("record-data-not-object", "POST", "/v1/subjects/{id}/records", 400, V, body={**RECORD, "data": NAME}),
    case(
        "record-occurred-at-list",
        "POST",
        "/v1/subjects/{id}/records",
        400,
        V,
        body={**RECORD, "occurred_at": [2026, 1, 31]},
    ),
    case(
        "record-missing-kind",
        "POST",
        "/v1/subjects/{id}/records",
        400,
        V,
        body={k: v for k, v in RECORD.items() if k != "kind"},
    ),
    case("record-unknown-field", "POST", "/v1/subjects/{id}/records", 400, V, body={**RECORD, "owner": EMAIL}),
    case("event-unknown-type", "POST", "/v1/subjects/{id}/events", 400, V, body={"type": MARKER}),
    case(
        "event-unknown-field", "POST", "/v1/subjects/{id}/events", 400, V, body={"type": "last_activity", "note": NAME}
    ),
    case("lookup-wrong-type", "POST", "/v1/subjects/lookup", 400, V, body={"email": [EMAIL]}),
    case("lookup-unknown-field", "POST", "/v1/subjects/lookup", 400, V, body={"name": NAME}),
    # -- values the service rejects ----------------------------------------------------------
    case("create-invalid-email", "POST", "/v1/subjects", 422, I, body={"email": f"{MARKER}-at-example.com"}),
    case("create-invalid-phone", "POST", "/v1/subjects", 422, I, body={"phone": f"+00 {MARKER}", "email": EMAIL}),
    case(
        "create-phone-not-international", "POST", "/v1/subjects", 422, I, body={"phone": "07911 123456", "email": EMAIL}
    ),
    case("patch-invalid-email", "PATCH", "/v1/subjects/{id}", 422, I, body={"email": f"{MARKER}@@example"}),
    case("patch-invalid-phone", "PATCH", "/v1/subjects/{id}", 422, I, body={"phone": f"+44 {MARKER}"}),
    case(
        "record-naive-datetime",
        "POST",
        "/v1/subjects/{id}/records",
        422,
        I,
        body={**RECORD, "occurred_at": "2026-01-31T10:00:00"},
    ),
    case(
        "record-unknown-category",
        "POST",
        "/v1/subjects/{id}/records",
        422,
        I,
        body={**RECORD, "category": "user.zz_secret_marker"},
    ),
    case(
        "record-category-bad-pattern",
        "POST",
        "/v1/subjects/{id}/records",
        400,
        V,
        body={**RECORD, "category": f"User {MARKER}"},
    ),
    case(
        "record-bad-kind-pattern",
        "POST",
        "/v1/subjects/{id}/records",
        400,
        V,
        body={**RECORD, "kind": f"Kind {MARKER}"},
    ),
    case("record-kind-too-long", "POST", "/v1/subjects/{id}/records", 400, V, body={**RECORD, "kind": "zz" * 30}),
    case(
        "event-naive-datetime",
        "POST",
        "/v1/subjects/{id}/events",
        422,
        I,
        body={"type": "account_closed", "at": "2026-02-01T00:00:00"},
    ),
    case(
        "event-bad-datetime", "POST", "/v1/subjects/{id}/events", 400, V, body={"type": "account_closed", "at": MARKER}
    ),
    case("lookup-empty", "POST", "/v1/subjects/lookup", 422, I, body={}),
    case(
        "lookup-two-identifiers", "POST", "/v1/subjects/lookup", 422, I, body={"email": EMAIL, "phone": "+447911123456"}
    ),
    case("lookup-invalid-email", "POST", "/v1/subjects/lookup", 422, I, body={"email": f"{MARKER}.example.com"}),
    case("find-no-identifier", "GET", "/v1/subjects", 422, I),
    case("find-two-identifiers", "GET", "/v1/subjects", 422, I, params={"email": EMAIL, "external_id": MARKER}),
    case("find-invalid-email", "GET", "/v1/subjects", 422, I, params={"email": f"{MARKER}-no-at-sign"}),
    case("find-invalid-phone", "GET", "/v1/subjects", 422, I, params={"phone": f"+1-{MARKER}"}),
    case("find-email-too-long", "GET", "/v1/subjects", 400, V, params={"email": MARKER * 30 + "@example.com"}),
    # -- transport: size, media type, routing ------------------------------------------------
    case(
        "create-oversize-body",
        "POST",
        "/v1/subjects",
        413,
        "payload-too-large",
        body={"email": EMAIL, "profile": {"name": NAME + "x" * MIB}},
    ),
    case(
        "record-oversize-body",
        "POST",
        "/v1/subjects/{id}/records",
        413,
        "payload-too-large",
        body={**RECORD, "data": {"note": MARKER * (MIB // len(MARKER) + 1)}},
    ),
    case(
        "create-text-plain",
        "POST",
        "/v1/subjects",
        415,
        "unsupported-media-type",
        body={"email": EMAIL},
        content_type="text/plain",
    ),
    case(
        "patch-form-encoded",
        "PATCH",
        "/v1/subjects/{id}",
        415,
        "unsupported-media-type",
        raw=f"email={EMAIL}".encode(),
        content_type="application/x-www-form-urlencoded",
    ),
    case(
        "lookup-text-plain",
        "POST",
        "/v1/subjects/lookup",
        415,
        "unsupported-media-type",
        body={"email": EMAIL},
        content_type="text/plain",
    ),
    case("read-unknown-subject", "GET", "/v1/subjects/{missing}", 404, "not-found"),
    case("patch-unknown-subject", "PATCH", "/v1/subjects/{missing}", 404, "not-found", body={"email": EMAIL}),
    case("record-unknown-subject", "POST", "/v1/subjects/{missing}/records", 404, "not-found", body=RECORD),
    case(
        "event-unknown-subject",
        "POST",
        "/v1/subjects/{missing}/events",
        404,
        "not-found",
        body={"type": "last_activity"},
    ),
    case("erase-unknown-subject", "DELETE", "/v1/subjects/{missing}", 404, "not-found"),
    case("read-non-uuid-id", "GET", "/v1/subjects/not-a-uuid", 404, "not-found"),
    case("patch-non-uuid-id", "PATCH", "/v1/subjects/12345", 404, "not-found", body={"email": EMAIL}),
    case("record-non-uuid-id", "POST", "/v1/subjects/not-a-uuid/records", 404, "not-found", body=RECORD),
    case("unknown-route", "POST", "/v1/people", 404, "not-found", body={"email": EMAIL}),
    case("unknown-nested-route", "GET", "/v1/subjects/{id}/secrets", 404, "not-found", params={"email": EMAIL}),
    case("wrong-method-put", "PUT", "/v1/subjects/{id}", 405, "method-not-allowed", body={"email": EMAIL}),
    case("wrong-method-delete-collection", "DELETE", "/v1/subjects", 405, "method-not-allowed"),
    case("wrong-method-get-lookup", "GET", "/v1/subjects/lookup", 405, "method-not-allowed", params={"email": EMAIL}),
    # -- authentication and authorisation ------------------------------------------------------
    case("create-no-key", "POST", "/v1/subjects", 401, "unauthenticated", body={"email": EMAIL}, who="none"),
    case("find-no-key", "GET", "/v1/subjects", 401, "unauthenticated", params={"email": EMAIL}, who="none"),
    case("create-garbage-key", "POST", "/v1/subjects", 401, "unauthenticated", body={"email": EMAIL}, who="garbage"),
    case("read-garbage-key", "GET", "/v1/subjects/{id}", 401, "unauthenticated", who="garbage"),
    case("create-revoked-key", "POST", "/v1/subjects", 401, "unauthenticated", body={"email": EMAIL}, who="revoked"),
    case(
        "lookup-revoked-key",
        "POST",
        "/v1/subjects/lookup",
        401,
        "unauthenticated",
        body={"email": EMAIL},
        who="revoked",
    ),
    case("create-read-scope-only", "POST", "/v1/subjects", 403, "forbidden", body={"email": EMAIL}, who="reader"),
    case("patch-read-scope-only", "PATCH", "/v1/subjects/{id}", 403, "forbidden", body={"email": EMAIL}, who="reader"),
    case("erase-read-scope-only", "DELETE", "/v1/subjects/{id}", 403, "forbidden", who="reader"),
    # -- conflicts ------------------------------------------------------------------------------
    case("create-duplicate-email", "POST", "/v1/subjects", 409, "conflict", body={"email": DUPLICATE}),
    case(
        "create-duplicate-email-other-spelling",
        "POST",
        "/v1/subjects",
        409,
        "conflict",
        body={"email": f"  {DUPLICATE.upper()} ", "profile": {"name": NAME}},
    ),
    case("patch-to-duplicate-email", "PATCH", "/v1/subjects/{id}", 409, "conflict", body={"email": DUPLICATE}),
]


@dataclass
class Served:
    runtime: Runtime
    app: Litestar
    client: AsyncClient
    writer: str
    subject_id: str


@pytest.fixture(scope="module", params=BACKENDS)
async def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    """One migrated, empty database of the backend, its app, a writer key and an ordinary subject."""
    folder = tmp_path_factory.mktemp(f"bad-input-{request.param}")
    options: dict[str, Any] = {"keyring_path": folder / "keyring.json", "policy_dir": ROOT / "policies"}
    if request.param == "sqlite":
        data, keys = request.getfixturevalue("sqlite_template")
        shutil.copy(data, folder / "privacy.db")
        shutil.copy(keys, folder / "privacy-keys.db")
        options.update(
            database_url=f"sqlite+aiosqlite:///{folder / 'privacy.db'}", keystore_path=folder / "privacy-keys.db"
        )
    else:
        options.update(database_url=request.getfixturevalue("postgres_database"))
        await _empty_postgres(options["database_url"])
    runtime = build_runtime(Settings(log_level="WARNING", **options))
    app = create_app(runtime=runtime)
    writer = await make_operator_key(runtime)
    headers = {"Authorization": f"Bearer {writer}"}
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as client:
            created = await client.post("/v1/subjects", json=ORDINARY_SUBJECT, headers=headers)
            assert created.status_code == 201, created.text
            holder = await client.post("/v1/subjects", json={"email": DUPLICATE}, headers=headers)
            assert holder.status_code == 201, holder.text
            yield Served(runtime, app, client, writer, created.json()["id"])
    finally:
        await runtime.close()


async def _headers(who: str, served: Served) -> dict[str, str]:
    runtime, client = served.runtime, served.client
    if who == "writer":
        return {"Authorization": f"Bearer {served.writer}"}
    if who == "reader":
        key = await make_operator_key(runtime, frozenset({"subjects:read"}))
        return {"Authorization": f"Bearer {key}"}
    if who == "garbage":
        return {"Authorization": f"Bearer psk_{MARKER}_{EMAIL}"}
    if who == "revoked":
        name = f"revoked-{uuid.uuid4().hex[:8]}"
        key = await make_operator_key(runtime, name=name)
        headers = {"Authorization": f"Bearer {key}"}
        # The key works first, so the 401 below is caused by the revocation and nothing else.
        works = await client.post("/v1/subjects/lookup", json={"email": "x@example.org"}, headers=headers)
        assert works.status_code == 200
        async with runtime.db.transaction() as session:
            await revoke_operator(session, name=name, now=runtime.clock.now())
        served.app.state.authenticator.forget_all()  # as if AUTH_CACHE_SECONDS had passed
        return headers
    assert who == "none"
    return {}


async def _snapshot(runtime: Runtime) -> tuple[dict[str, int], list[Any], int]:
    """Row counts, every subject row as stored, and the audit trail's length."""
    counts = await table_counts(runtime)
    async with runtime.db.engine.connect() as conn:
        subjects = [tuple(row) for row in (await conn.execute(text("SELECT * FROM subjects ORDER BY id"))).all()]
        # A rejected operator key is itself recorded (breach monitoring counts bursts of them).
        audit = int(
            (
                await conn.execute(text("SELECT count(*) FROM audit_events WHERE action <> 'operator.auth_failed'"))
            ).scalar_one()
        )
    return counts, subjects, audit


def _folded(value: str) -> str:
    return _FOLD.sub("", value.lower())


@pytest.mark.parametrize("bad", CASES)
async def test_bad_input_is_a_problem_that_changes_nothing(bad: Case, served: Served) -> None:
    headers = await _headers(bad.who, served)
    path = bad.path.format(id=served.subject_id, missing=uuid.uuid4())
    content = bad.raw
    if content is None and bad.body is not None:
        content = json.dumps(bad.body).encode()
    if content is not None:
        headers["Content-Type"] = bad.content_type
    before = await _snapshot(served.runtime)

    response = await served.client.request(
        bad.method, path, content=content, params=bad.params or None, headers=headers
    )

    assert response.status_code < 500, response.text
    assert response.status_code == bad.status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == f"/problems/{bad.slug}"
    assert problem["status"] == bad.status
    assert isinstance(problem["title"], str)
    assert problem["title"]
    assert isinstance(problem["detail"], str)
    assert problem["detail"]
    assert NEEDLE not in _folded(response.text), response.text
    for name, value in response.headers.items():
        assert NEEDLE not in _folded(value), (name, value)
    assert "traceback" not in response.text.lower()
    if bad.expected_header is not None:
        assert response.headers.get(bad.expected_header)
    assert await _snapshot(served.runtime) == before


async def test_marker_detection_is_not_vacuous(served: Served) -> None:
    """The echo check above does see the marker when the API legitimately returns it."""
    auth = {"Authorization": f"Bearer {served.writer}"}
    body = {"email": f"{MARKER}-control@example.com", "profile": {"name": NAME}}
    created = await served.client.post("/v1/subjects", json=body, headers=auth)
    read = await served.client.get(f"/v1/subjects/{created.json()['id']}", headers=auth)
    assert NEEDLE in _folded(read.text)
    assert NEEDLE in _folded(json.dumps(RECORD))
    assert NEEDLE in _folded("ZZ_SECRET_MARKER")
    assert NEEDLE in _folded("zz secret marker")

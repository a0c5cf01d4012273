"""Schemathesis against the app's own OpenAPI document: every operation, with an operator key holding
every scope and with no credentials at all, on SQLite and PostgreSQL.

Each operation gets a bounded, deterministic number of generated requests (valid and invalid data).
Every answer must be: not a 5xx; a documented status with a body matching its schema; for a 4xx, a
problem+json document that repeats none of the submitted values (no PII echoed in error bodies).

The app runs in process on its own event loop (an anyio portal thread); the test drives it with
httpx and lets schemathesis validate each response.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode, checks

from privacy_service.app import create_app
from privacy_service.config import DEFAULT_RATE_LIMITS, Settings
from privacy_service.errors import HTTP_SLUGS, PROBLEM_JSON, DomainError
from privacy_service.runtime import Runtime, build_runtime
from tests.conftest import BACKENDS, ROOT, _empty_postgres, make_operator_key

EXAMPLES_PER_MODE = 12  # per operation, per generation mode (valid / invalid), per credential
MIN_ECHO_LENGTH = 8
BASE_URL = "http://testserver"
# The fuzzer sends thousands of requests from one address; rate limits have their own tests.
NO_LIMITS = dict.fromkeys(DEFAULT_RATE_LIMITS, "1000000/min burst 1000000")
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
# Not negative_data_rejection: Litestar leniently reads a number as an epoch date-time in a query
# parameter the schema calls a string (since=620 is 1970-01-01T00:10:20Z). Harmless, and outside
# what this test guards (no 5xx, answers as documented, nothing echoed); invalid input still gets
# these checks.

# Members of a problem that are constant or echo the path (which holds opaque ids only).
_NOT_ECHOES = {"type", "title", "instance", "request_id"}


@dataclass
class Target:
    portal: BlockingPortal
    client: httpx.AsyncClient
    runtime: Runtime
    operator_key: str
    schema: Any

    def send(self, case: schemathesis.Case, headers: dict[str, str]) -> httpx.Response:
        kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
        request: dict[str, Any] = {
            "method": kwargs["method"],
            "url": kwargs["url"],
            "headers": kwargs.get("headers") or {},
            "params": kwargs.get("params") or None,
        }
        if "json" in kwargs:
            request["json"] = kwargs["json"]
        elif kwargs.get("data") is not None:
            data = kwargs["data"]
            request["content" if isinstance(data, bytes | str) else "data"] = data
        if kwargs.get("files"):
            request["files"] = kwargs["files"]
        return self.portal.call(functools.partial(self.client.request, **request))


@pytest.fixture(scope="module", params=BACKENDS)
def target(
    request: pytest.FixtureRequest, smtp_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("fuzz")
    _, smtp_port = smtp_server
    base: dict[str, Any] = {
        "smtp_port": smtp_port,
        "keyring_path": folder / "keyring.json",
        "policy_dir": ROOT / "policies",
        "log_level": "WARNING",
        "rate_limits": NO_LIMITS,
    }
    if request.param == "sqlite":
        data, keys = request.getfixturevalue("sqlite_template")
        shutil.copy(data, folder / "privacy.db")
        shutil.copy(keys, folder / "privacy-keys.db")
        base.update(
            database_url=f"sqlite+aiosqlite:///{folder / 'privacy.db'}", keystore_path=folder / "privacy-keys.db"
        )
    else:
        base.update(database_url=request.getfixturevalue("postgres_database"))
    settings_ = Settings(**base)
    with start_blocking_portal() as portal:
        if request.param == "postgres":
            portal.call(_empty_postgres, settings_.database_url)
        runtime = build_runtime(settings_)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(runtime=runtime)), base_url=BASE_URL)
        try:
            key = portal.call(make_operator_key, runtime)
            document = portal.call(client.get, "/schema/openapi.json")
            assert document.status_code == 200
            schema = schemathesis.openapi.from_dict(document.json())
            yield Target(portal, client, runtime, key, schema)
        finally:
            portal.call(client.aclose)
            portal.call(runtime.close)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _domain_slugs(cls: type[DomainError]) -> set[str]:
    found = {cls.slug}
    for sub in cls.__subclasses__():
        found |= _domain_slugs(sub)
    return found


# Words the service says on its own (problem slugs such as "unauthenticated"): a fuzzer that happens
# to send one has not had it echoed back.
SERVICE_VOCABULARY = frozenset(_domain_slugs(DomainError) | {slug for slug, _ in HTTP_SLUGS.values()})


def check_problem(case: schemathesis.Case, response: httpx.Response) -> None:
    """A 4xx is problem+json and repeats no submitted value long enough to be personal data."""
    if not 400 <= response.status_code < 500:
        return
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.text[:300]
    problem = response.json()
    assert problem["status"] == response.status_code
    assert {"type", "title", "detail"} <= problem.keys()
    submitted = [*_strings(case.body), *_strings(case.query or {})]
    path = response.request.url.path
    needles = {
        value
        for value in submitted
        if len(value) >= MIN_ECHO_LENGTH and value not in path and value not in SERVICE_VOCABULARY
    }
    said = [text for key, value in problem.items() if key not in _NOT_ECHOES for text in _strings(value)]
    echoed = sorted(needle for needle in needles if any(needle in text for text in said))
    assert not echoed, f"{response.status_code} body repeats submitted values {echoed!r}: {problem!r}"


def _fuzz(target: Target, operation: Any, mode: GenerationMode, headers: dict[str, str]) -> None:
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = target.send(case, headers)
        case.validate_response(response, checks=CHECKS, headers=headers)
        check_problem(case, response)

    run()


@pytest.mark.parametrize("credential", ["operator", "none"])
def test_every_operation_answers_within_its_schema(target: Target, credential: str) -> None:
    headers = {"Authorization": f"Bearer {target.operator_key}"} if credential == "operator" else {}
    operations = [result.ok() for result in target.schema.get_all_operations()]
    document = target.schema.raw_schema
    documented = sum(
        1
        for methods in document["paths"].values()
        for method in methods
        if method in {"get", "post", "patch", "delete", "put"}
    )
    assert len(operations) == documented >= 25
    failures: dict[str, str] = {}
    for operation in operations:
        takes_input = any(
            len(part) for part in (operation.path_parameters, operation.query, operation.headers, operation.body)
        )
        # Invalid data needs something to be invalid: an operation without inputs has no negative cases.
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_input else (GenerationMode.POSITIVE,)
        for mode in modes:
            try:
                _fuzz(target, operation, mode, headers)
            except (Exception, BaseExceptionGroup) as exc:  # collected so one run reports every failing operation
                failures[f"{operation.label} [{mode.value}]"] = str(exc)[:3000]
    assert not failures, "\n\n".join(f"== {label}\n{text}" for label, text in failures.items())

"""No account enumeration at intake: a known and an unknown identity get the same answer, in the
same shape, with the same headers, and (for e-mail identities) the server does exactly the same
database work. Timings are printed for information only: wall-clock assertions are flaky on a shared
machine, so timing belongs in `make bench`; equal work is the deterministic property behind it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import event

from privacy_service.config import Settings
from privacy_service.notify.jobs import deliver_pending
from privacy_service.runtime import Runtime
from tests.api.dsr_support import fresh_settings, make_subject
from tests.conftest import MailSink

SAMPLES = 20
WARMUP = 5
VARYING_HEADERS = {"content-length", "date", "x-request-id"}


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend)


def shape(response: Response) -> tuple[int, tuple[str, ...], str, tuple[str, ...]]:
    body = response.json()
    return (
        response.status_code,
        tuple(sorted(body)),
        body["status"],
        tuple(sorted(name for name in response.headers if name not in VARYING_HEADERS)),
    )


def numbered(template: str) -> Callable[[int], str]:
    return template.format


# Known (a subject holds it) and unknown identities, the n-th of each.
IDENTITIES: dict[str, tuple[Callable[[int], str], Callable[[int], str]]] = {
    "email": (numbered("known.{}@example.com"), numbered("unknown.{}@example.com")),
    "phone": (numbered("+4479111{:05d}"), numbered("+4479112{:05d}")),
}


async def timed_intakes(
    client: AsyncClient, runtime: Runtime, kind: str, count: int
) -> tuple[dict[str, list[float]], dict[str, set[tuple[str, ...]]]]:
    """Interleaved intakes, known then unknown and the other way round, so drift hits both.

    Also returns, per label, the distinct sequences of SQL statements (normalised) one intake ran.
    """
    known_value, unknown_value = IDENTITIES[kind]
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    work: dict[str, set[tuple[str, ...]]] = {"known": set(), "unknown": set()}
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()))

    def record_on_driver(statement: str, _values: Any) -> None:  # intake's one statement (Database._run_on_driver)
        record(None, None, statement)

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", record)
    runtime.db.driver_listeners.append(record_on_driver)
    shapes: dict[str, set[tuple[Any, ...]]] = {"known": set(), "unknown": set()}
    for i in range(count):
        order = [("known", known_value(i)), ("unknown", unknown_value(i))]
        for label, value in order if i % 2 == 0 else order[::-1]:
            statements.clear()
            start = time.perf_counter()
            response = await client.post("/v1/requests", json={"type": "erase", "identity": {kind: value}})
            elapsed = time.perf_counter() - start
            work[label].add(tuple(statements))
            assert response.status_code == 202, response.text
            shapes[label].add(shape(response))
            if i >= WARMUP:
                timings[label].append(elapsed)
    event.remove(runtime.db.engine.sync_engine, "before_cursor_execute", record)
    runtime.db.driver_listeners.remove(record_on_driver)
    assert shapes["known"] == shapes["unknown"]
    assert len(shapes["known"]) == 1
    return timings, work


# Timed on PostgreSQL, the production database; SQLite's per-commit fsyncs swamp the figure
# (the code path is the same on both).
@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_known_and_unknown_identities_look_alike_at_intake(
    backend: str, client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink
) -> None:
    count = SAMPLES + WARMUP
    for i in range(count):
        await make_subject(client, auth, email=IDENTITIES["email"][0](i), phone=IDENTITIES["phone"][0](i))
    figures: list[str] = []
    for kind in IDENTITIES:
        timings, work = await timed_intakes(client, runtime, kind, count)
        known, unknown = statistics.mean(timings["known"]), statistics.mean(timings["unknown"])
        figures.append(f"{kind}: known {known * 1000:.2f} ms, unknown {unknown * 1000:.2f} ms (information)")
        # The same statements, in the same order, whether or not a subject holds the identity: a
        # phone's address on file is looked up when the mail is delivered, not at intake.
        assert work["known"] == work["unknown"], work
        assert len(work["known"]) == 1
        assert all(statements for statements in work["known"])  # something was seen to compare
    print("; ".join(figures))
    # The code goes where it must: an e-mail identity is always written to (its owner may verify
    # either way); a phone only ever reaches the address on file of the subject holding it, and
    # mail for an unknown phone is dropped unsent.
    dropped = 0
    while True:
        result = await deliver_pending(runtime.db, runtime.keys, runtime.mailer, runtime.clock)
        dropped += result.dropped
        if not (result.sent or result.dropped):
            break
    reached = sorted(m["To"] for m in mail.messages)
    known_emails = [IDENTITIES["email"][0](i) for i in range(count)]
    unknown_emails = [IDENTITIES["email"][1](i) for i in range(count)]
    assert reached == sorted(known_emails * 2 + unknown_emails)
    assert dropped == count

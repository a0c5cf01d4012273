"""Kill-and-rerun: an erasure that dies after the key was shredded, before the rows were deleted.

The erasure (an operator approving an erasure request) runs as one transaction. To show what
that buys, a child process approves the request and is SIGKILLed by a SQLAlchemy
``after_cursor_execute`` hook the moment the DELETE on ``keystore.data_keys`` has executed: the
shred happened in the transaction, the records were not yet deleted, nothing was committed.
The database must then be exactly as before (the key still there, the subject active), and a
normal rerun must end in the same state as an uninterrupted erasure of an identical subject.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from typing import Any

import msgspec
import pytest
from httpx import AsyncClient
from sqlmodel import col, select

from privacy_service.config import Settings
from privacy_service.crypto.fields import Binding
from privacy_service.crypto.service import RETENTION
from privacy_service.runtime import Runtime
from privacy_service.subjects.models import Record, Subject
from privacy_service.subjects.service import RECORDS, SUBJECTS
from tests.api.dsr_support import (
    BEHAVIOUR,
    TRANSACTION,
    fresh_settings,
    make_subject,
    rows,
    snapshot,
    submit_and_verify,
)
from tests.conftest import ROOT, MailSink

PROFILE = {"name": "Kim Killed", "date_of_birth": "1970-01-01", "national_id": "KK123456"}
CLOSED = "2026-06-30T00:00:00Z"

CHILD = """
import asyncio, os, signal, sys, uuid

from sqlalchemy import event

from privacy_service.audit.service import Actor
from privacy_service.config import load_settings
from privacy_service.dsr.service import DsrService
from privacy_service.runtime import build_runtime


async def main(request_id: str) -> None:
    runtime = build_runtime(load_settings(), create_keyring=False)

    @event.listens_for(runtime.db.engine.sync_engine, "after_cursor_execute")
    def die_after_the_shred(conn, cursor, statement, parameters, context, executemany):
        if " ".join(statement.split()).upper().startswith("DELETE FROM KEYSTORE.DATA_KEYS"):
            print("shredded, not committed", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    async with runtime.db.transaction() as session:
        service = DsrService(
            session=session, keys=runtime.keys, policy=runtime.policy, rules=runtime.deadlines,
            clock=runtime.clock, settings=runtime.settings, actor=Actor("operator", "kill-test"),
        )
        await service.approve(uuid.UUID(request_id))
    print("committed", flush=True)


asyncio.run(main(sys.argv[1]))
"""


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    return await fresh_settings(make_settings, backend)


def child_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIVACY_")}
    env.update(
        PRIVACY_DATABASE_URL=settings.database_url,
        PRIVACY_KEYRING_PATH=str(settings.keyring_path),
        PRIVACY_POLICY_DIR=str(settings.policy_dir),
        PRIVACY_SMTP_PORT=str(settings.smtp_port),
        PRIVACY_LOG_LEVEL="WARNING",
    )
    if settings.keystore_path is not None:
        env["PRIVACY_KEYSTORE_PATH"] = str(settings.keystore_path)
    return env


async def approve_and_die(settings: Settings, request_id: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        request_id,
        cwd=ROOT,
        env=child_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


async def final_state(runtime: Runtime, subject_id: str, request_id: str) -> dict[str, Any]:
    """What an erasure leaves, without ids, timestamps of the run or ciphertext bytes."""
    sid = uuid.UUID(subject_id)
    async with runtime.db.transaction() as session:
        subject = await session.get(Subject, sid)
        records = (await session.exec(select(Record).where(col(Record.subject_id) == sid))).all()
        key = await runtime.keys.load_key(session, sid, RETENTION)
    assert subject is not None
    assert subject.retained_ct is not None
    keys = [k["purpose"] for k in await rows(runtime, "keystore.data_keys") if uuid.UUID(str(k["subject_id"])) == sid]
    request = next(r for r in await rows(runtime, "dsr_requests") if uuid.UUID(str(r["id"])) == uuid.UUID(request_id))
    transitions = [
        (t["from_status"], t["to_status"])
        for t in await rows(runtime, "dsr_transitions")
        if uuid.UUID(str(t["request_id"])) == uuid.UUID(request_id)
    ]
    erasures = [
        json.loads(e["detail"]) if isinstance(e["detail"], str) else e["detail"]
        for e in await rows(runtime, "audit_events")
        if e["action"] == "subject.erase" and e["subject_id"] is not None and uuid.UUID(str(e["subject_id"])) == sid
    ]
    result = request["result"]
    return {
        "subject": (
            subject.status,
            subject.profile_fields,
            subject.retained_until,
            subject.account_closed_at,
            subject.email_bidx,
            subject.email_ct,
            subject.profile_ct,
        ),
        "retained": msgspec.json.decode(key.open(subject.retained_ct, Binding(SUBJECTS, sid, None, "retained"))),
        "records": sorted(
            (
                r.category,
                r.kind,
                r.restricted,
                r.retain_until,
                msgspec.json.decode(key.open(r.data_ct, Binding(RECORDS, sid, r.id, "data")))["reference"],
            )
            for r in records
        ),
        "keys": keys,
        "request": (request["status"], json.loads(result) if isinstance(result, str) else result),
        "transitions": transitions,
        "erasures": erasures,
    }


async def test_an_erasure_killed_after_the_shred_leaves_nothing_half_done_and_reruns_to_the_same_end(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink, settings: Settings
) -> None:
    records = {TRANSACTION: 3, BEHAVIOUR: 2}
    killed = await make_subject(
        client, auth, email="killed@example.com", profile=PROFILE, records=records, closed_at=CLOSED
    )
    control = await make_subject(
        client, auth, email="control@example.com", profile=PROFILE, records=records, closed_at=CLOSED
    )
    killed_request, _ = await submit_and_verify(client, runtime, mail, "killed@example.com", "erase")
    control_request, _ = await submit_and_verify(client, runtime, mail, "control@example.com", "erase")
    before = await snapshot(runtime)
    audit_before = len(await rows(runtime, "audit_events"))

    returncode, output = await approve_and_die(settings, killed_request)
    assert returncode == -signal.SIGKILL, output
    assert "shredded, not committed" in output
    assert "committed\n" not in output.replace("not committed", "")

    # Nothing of the interrupted erasure survived: the key is there, the subject active and readable.
    assert await snapshot(runtime) == before
    assert len(await rows(runtime, "audit_events")) == audit_before
    read = await client.get(f"/v1/subjects/{killed}", headers=auth)
    assert read.status_code == 200
    assert read.json()["profile"] == PROFILE
    assert len((await client.get(f"/v1/subjects/{killed}/records", headers=auth)).json()["items"]) == 5

    rerun = await client.post(f"/v1/requests/{killed_request}/approve", json={}, headers=auth)
    assert rerun.status_code == 200, rerun.text
    uninterrupted = await client.post(f"/v1/requests/{control_request}/approve", json={}, headers=auth)
    assert uninterrupted.status_code == 200, uninterrupted.text
    assert rerun.json()["result"] == uninterrupted.json()["result"]

    after_rerun = await final_state(runtime, killed, killed_request)
    reference = await final_state(runtime, control, control_request)
    assert after_rerun == reference
    assert after_rerun["keys"] == ["retention"]
    assert after_rerun["request"][0] == "partially_completed"
    assert [r[2] for r in after_rerun["records"]] == [True, True, True]

"""examples/receiver.py, run as a real process against the service served by uvicorn on 127.0.0.1:
webhook out, signed callback back, request completed, the receiver's data in the export."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar

from privacy_service.config import Settings
from privacy_service.runtime import Runtime
from tests.api.dsr_support import code_from, fresh_settings
from tests.conftest import ROOT, MailSink
from tests.integration.systems_support import CUSTOMER_EMAIL, make_customer, register, signed

RECEIVER = ROOT / "examples" / "receiver.py"
RECEIVER_DATA = {CUSTOMER_EMAIL: {"tickets": [{"id": "T-81", "subject": "card declined abroad"}]}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def api_port() -> int:
    return free_port()


@pytest.fixture
async def settings(make_settings: Any, backend: str, api_port: int) -> Settings:
    return await fresh_settings(
        make_settings, backend, base_url=f"http://127.0.0.1:{api_port}", systems_allow_private_networks=True
    )


@pytest.fixture
async def api(app: Litestar, runtime: Runtime, api_port: int) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a real socket, in this event loop, with its delivery loops (lifespan) running."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=api_port, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await task


class RunningReceiver:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process, self.url = process, url

    def lines(self) -> list[dict[str, Any]]:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "customers.json"
    path.write_text(json.dumps(RECEIVER_DATA))
    return path


@pytest.fixture
def receivers() -> Iterator[list[RunningReceiver]]:
    started: list[RunningReceiver] = []
    yield started
    for receiver in started:
        if receiver.process.poll() is None:
            receiver.process.kill()
            receiver.process.communicate()


async def test_the_example_receiver_answers_and_the_request_completes(
    api: httpx.AsyncClient,
    auth: dict[str, str],
    mail: MailSink,
    data_file: Path,
    receivers: list[RunningReceiver],
) -> None:
    # Registered first: the receiver is started with the key shown once.
    port = free_port()
    system = await register(api, auth, f"http://127.0.0.1:{port}/", name="helpdesk", identities=("email",))
    receivers.append(start_receiver_on(port, system["signing_key"], data_file))
    await make_customer(api, auth)
    submitted = await api.post("/v1/requests", json={"type": "access", "identity": {"email": CUSTOMER_EMAIL}})
    request_id = submitted.json()["id"]
    # The API's own outbox loop mails the code (it is running: lifespan on).
    deadline = time.monotonic() + 20
    while not mail.to(CUSTOMER_EMAIL) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    verified = await api.post(f"/v1/requests/{request_id}/verify", json={"code": code_from(mail, CUSTOMER_EMAIL)})
    assert verified.json()["status"] == "processing"
    # Nobody calls deliver here either: the API's loop sends the webhook after the commit, and the
    # receiver calls back over HTTP.
    deadline = time.monotonic() + 30
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = (await api.get(f"/v1/requests/{request_id}", headers=auth)).json()
        if status["status"] == "completed":
            break
        await asyncio.sleep(0.2)
    assert status["status"] == "completed", status
    assert status["systems"][0]["answer"] == "completed"
    export = (await api.get(f"/v1/requests/{request_id}/export", headers=auth)).json()
    assert export["systems"][0]["system"] == "helpdesk"
    assert export["systems"][0]["data"] == RECEIVER_DATA[CUSTOMER_EMAIL]
    [line] = receivers[0].lines()
    assert line["first"] is True


def start_receiver_on(port: int, key: str, data_file: Path) -> RunningReceiver:
    env = {**os.environ, "PRIVACY_SIGNING_KEY": key, "RECEIVER_DATA": str(data_file)}
    process = subprocess.Popen(  # noqa: S603 - this interpreter running the example
        [sys.executable, str(RECEIVER), str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return RunningReceiver(process, f"http://127.0.0.1:{port}/")
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("the example receiver did not start")


def test_the_example_receiver_refuses_bad_stale_and_acts_once_per_key(
    data_file: Path, receivers: list[RunningReceiver]
) -> None:
    key = "pss_example-key-for-this-test"
    receiver = start_receiver_on(free_port(), key, data_file)
    receivers.append(receiver)
    body = json.dumps(
        {
            "subject_request_id": str(uuid.uuid4()),
            "subject_request_type": "access",
            "subject_identities": [{"identity_type": "email", "identity_value": CUSTOMER_EMAIL}],
            # Nothing listens here: the answer fails quietly in the receiver's background thread.
            "status_callback_url": f"http://127.0.0.1:{free_port()}/v1/systems/callbacks/x",
        }
    ).encode()
    delivery = {"Idempotency-Key": str(uuid.uuid4())}
    with httpx.Client(timeout=10) as client:

        def post(headers: dict[str, str], content: bytes = body) -> int:
            return client.post(receiver.url, content=content, headers={**headers, **delivery}).status_code

        assert post({"Content-Type": "application/json"}) == 401  # unsigned
        assert post(signed("pss_wrong", "sk_x", body)) == 401  # another key
        assert post(signed(key, "sk_x", body, at=time.time() - 3600)) == 401  # stale: a replay
        headers = signed(key, "sk_x", body)
        assert post(headers, body.replace(b"access", b"erasure")) == 401  # tampered
        assert post(headers) == 202
        assert post(signed(key, "sk_x", body)) == 202  # delivered again (at least once)
    lines = receiver.lines()
    assert [line["first"] for line in lines] == [True, False]  # acted on once

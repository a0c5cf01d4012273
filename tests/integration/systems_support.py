"""Helpers for the downstream-system tests: real HTTP receivers on 127.0.0.1, registration, signing."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from httpx import AsyncClient

from privacy_service.runtime import Runtime
from privacy_service.systems.jobs import DeliveryResult, Transport, deliver_webhooks

CUSTOMER_EMAIL = "dana.downstream@example.com"
CUSTOMER_PHONE = "+447911123456"
CUSTOMER_ID = "CUST-000417"
PROFILE = {"name": "Dana Downstream", "date_of_birth": "1990-02-03", "city": "Leeds"}


class OffsetClock:
    """Real time moved by ``offset`` (and movable): time travel without freezing the receivers' clocks."""

    def __init__(self, offset: timedelta = timedelta()) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def travel(self, delta: timedelta) -> None:
        self.offset += delta


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    valid_signature: bool

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


# (status, delay seconds) for the n-th request (0-based).
Behaviour = Callable[[int], tuple[int, float]]


def always(status: int = 202) -> Behaviour:
    return lambda _n: (status, 0.0)


def script(*steps: tuple[int, float], then: tuple[int, float] = (202, 0.0)) -> Behaviour:
    return lambda n: steps[n] if n < len(steps) else then


@dataclass
class HookReceiver:
    """A threaded HTTP server that records every POST and checks its signature against known keys."""

    behaviour: Behaviour = field(default_factory=always)
    keys: dict[str, bytes] = field(default_factory=dict)  # key id -> signing key
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def verify(self, headers: Mapping[str, str], body: bytes) -> bool:
        key = self.keys.get(headers.get("X-Privacy-Key-Id", ""))
        timestamp = headers.get("X-Privacy-Timestamp", "")
        if key is None or not timestamp.isdigit():
            return False
        expected = "v1=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, headers.get("X-Privacy-Signature", ""))

    def unique_keys(self) -> set[str]:
        return {r.headers["Idempotency-Key"] for r in self.received}

    @contextmanager
    def running(self) -> Iterator[HookReceiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {name: value for name, value in self.headers.items()}
                with receiver._lock:
                    index = len(receiver.received)
                    receiver.received.append(Received(self.path, headers, body, receiver.verify(headers, body)))
                status, delay = receiver.behaviour(index)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


async def register(
    client: AsyncClient,
    auth: Mapping[str, str],
    url: str,
    *,
    name: str = "crm",
    types: tuple[str, ...] = ("access", "portability", "erase", "rectify"),
    categories: tuple[str, ...] = ("user.name", "user.contact.email"),
    identities: tuple[str, ...] = ("email",),
    timeout: float = 5.0,
    required: bool = True,
) -> dict[str, Any]:
    """Register a system; returns the 201 body (``system`` and the one-time ``signing_key``)."""
    response = await client.post(
        "/v1/systems",
        json={
            "name": name,
            "callback_url": url,
            "request_types": list(types),
            "categories": list(categories),
            "identities": list(identities),
            "timeout_seconds": timeout,
            "required": required,
        },
        headers=dict(auth),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def signed(key: str, key_id: str, body: bytes, *, at: float | None = None) -> dict[str, str]:
    """Callback headers, signed the way a system signs (the documented algorithm, written out here)."""
    timestamp = str(int(time.time() if at is None else at))
    signature = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Privacy-Key-Id": key_id,
        "X-Privacy-Timestamp": timestamp,
        "X-Privacy-Signature": f"v1={signature}",
    }


async def answer(client: AsyncClient, system: Mapping[str, Any], delivery_url: str, body: Mapping[str, Any]) -> Any:
    """POST a signed callback to ``delivery_url`` (a path or the full status_callback_url)."""
    raw = json.dumps(dict(body)).encode()
    path = "/" + delivery_url.split("/", 3)[3] if delivery_url.startswith("http") else delivery_url
    return await client.post(path, content=raw, headers=signed(system["signing_key"], system["system"]["key_id"], raw))


async def deliver(
    runtime: Runtime,
    *,
    clock: Any = None,
    transport: Transport | None = None,
    max_attempts: int = 8,
    concurrency: int = 4,
) -> DeliveryResult:
    return await deliver_webhooks(
        runtime.db,
        runtime.keys,
        clock or runtime.clock,
        transport=transport,
        max_attempts=max_attempts,
        retry_base=0.01,
        concurrency=concurrency,
    )


async def make_customer(client: AsyncClient, auth: Mapping[str, str], *, email: str = CUSTOMER_EMAIL) -> str:
    created = await client.post(
        "/v1/subjects",
        json={"email": email, "phone": CUSTOMER_PHONE, "external_id": CUSTOMER_ID, "profile": PROFILE},
        headers=dict(auth),
    )
    assert created.status_code == 201, created.text
    subject_id: str = created.json()["id"]
    record = await client.post(
        f"/v1/subjects/{subject_id}/records",
        json={
            "kind": "transaction",
            "category": "user.financial.transaction",
            "occurred_at": "2026-01-05T09:00:00Z",
            "data": {"reference": "TX-1", "amount": 12},
        },
        headers=dict(auth),
    )
    assert record.status_code == 201, record.text
    return subject_id

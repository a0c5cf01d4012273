"""SSRF through downstream systems (issue 16, item 10), as a holder of a ``systems:manage`` key tries it.

With the default settings a callback URL must resolve to public internet addresses only, checked at
registration and again right before each POST (a name that resolves elsewhere by then is refused, and
the POST goes to the address that was checked). The delivery log names an error class, never an
address or port. DNS is faked at its edge (the runtime's resolver): the test machine has no DNS server.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text

from privacy_service.config import Settings
from privacy_service.runtime import Runtime
from privacy_service.systems.jobs import DeliveryResult, HttpTransport, TransportError, deliver_webhooks
from privacy_service.systems.network import RefusedDestination, SystemResolver, public_addresses, refusal
from tests.api.dsr_support import assert_problem, fresh_settings, submit_and_verify
from tests.conftest import MailSink
from tests.integration.systems_support import CUSTOMER_EMAIL, HookReceiver, make_customer, register

PUBLIC = "93.184.215.14"
ATTACKS = (
    "http://127.0.0.1:5432/",
    "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "https://10.0.0.1/",
    "https://[::1]:6379/",
    "https://2130706433/",  # 127.0.0.1 as one decimal number
    "https://0x7f.1/",  # 127.0.0.1 again
    "https://[::ffff:127.0.0.1]/",
    "https://0.0.0.0/",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://localhost:8200/",
    "https://internal.corp.example/",  # the company's own DNS: a private address
    "https://mixed.example/",  # one public address and one private
    "https://nowhere.example/",  # does not resolve
)


class FakeDns:
    """The resolver at the DNS edge: a zone the test controls; IP literals resolve to themselves."""

    def __init__(self, zone: Mapping[str, Iterable[str]]) -> None:
        self.zone = {name: list(addresses) for name, addresses in zone.items()}
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        if host in self.zone:
            return list(self.zone[host])
        if host == "localhost" or host[-1:].isdigit():
            return await SystemResolver().resolve(host, port)  # the C library's own reading of these
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


ZONE = {
    "internal.corp.example": ["10.20.30.40"],
    "mixed.example": [PUBLIC, "192.168.1.10"],
    "hooks.partner.example": [PUBLIC],
}


@pytest.fixture
async def settings(make_settings: Any, backend: str) -> Settings:
    # The defaults under attack, except plain http, so that a webhook could reach the local receivers.
    return await fresh_settings(make_settings, backend, systems_allow_http=True)


@pytest.fixture
def dns(runtime: Runtime) -> FakeDns:
    fake = FakeDns(ZONE)
    runtime.resolver = fake
    return fake


def _system(url: str, name: str = "exfil") -> dict[str, Any]:
    return {"name": name, "callback_url": url, "request_types": ["access"], "categories": ["user.name"]}


async def _systems(runtime: Runtime) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM systems"))).scalar_one())


async def _deliver(runtime: Runtime) -> DeliveryResult:
    return await deliver_webhooks(
        runtime.db, runtime.keys, runtime.clock, resolver=runtime.resolver, retry_base=0.01, max_attempts=2
    )


@pytest.mark.parametrize("url", ATTACKS)
async def test_internal_destinations_are_refused_at_registration(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, dns: FakeDns, url: str
) -> None:
    response = await client.post("/v1/systems", json=_system(url), headers=auth)
    body = assert_problem(response, 422, "invalid-input")
    assert "public internet addresses" in body["detail"]
    for detail in ("10.20.30.40", "192.168.1.10", "127.0.0.1", "does not resolve", "5432"):
        assert detail not in response.text  # one answer for every refusal: no probe of the network
    assert await _systems(runtime) == 0


async def test_a_public_name_is_registered(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, dns: FakeDns
) -> None:
    await register(client, auth, "https://hooks.partner.example/privacy")
    await register(client, auth, f"https://{PUBLIC}:8443/privacy", name="by-address")
    assert "hooks.partner.example" in dns.lookups
    assert await _systems(runtime) == 2


async def test_a_name_rebound_to_loopback_after_registration_is_refused_at_delivery(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink, dns: FakeDns
) -> None:
    with HookReceiver().running() as receiver:
        # Public when registered; the attacker's DNS answers 127.0.0.1 (the receiver's port) afterwards.
        dns.zone["rebind.attacker.example"] = [PUBLIC]
        system = await register(client, auth, f"http://rebind.attacker.example:{receiver.port}/hooks")
        dns.zone["rebind.attacker.example"] = ["127.0.0.1"]
        await make_customer(client, auth)
        await submit_and_verify(client, runtime, mail, CUSTOMER_EMAIL, "access")
        first = await _deliver(runtime)
        async with runtime.db.engine.connect() as conn:
            await conn.execute(text("UPDATE system_deliveries SET next_attempt_at = created_at"))
            await conn.commit()
        second = await _deliver(runtime)
    assert receiver.received == []  # no POST, so no identity, reached the loopback service
    assert (first.retried, second.dead) == (1, 1)
    page = await client.get(f"/v1/systems/{system['system']['id']}/deliveries", headers=auth)
    [delivery] = page.json()["items"]
    assert delivery["last_error"] == "refused_address"
    assert [attempt["outcome"] for attempt in delivery["log"]] == ["refused_address", "refused_address"]
    assert all(attempt["status_code"] is None for attempt in delivery["log"])
    logged = json.dumps(delivery)
    for detail in ("127.0.0.1", str(receiver.port), "rebind.attacker", "Connection refused", "Errno"):
        assert detail not in logged


async def test_every_resolved_address_is_checked_at_delivery(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink, dns: FakeDns
) -> None:
    await register(client, auth, "https://hooks.partner.example/privacy")
    dns.zone["hooks.partner.example"] = [PUBLIC, "169.254.169.254"]
    await make_customer(client, auth)
    await submit_and_verify(client, runtime, mail, CUSTOMER_EMAIL, "access")
    assert (await _deliver(runtime)).retried == 1
    async with runtime.db.engine.connect() as conn:
        outcomes = (await conn.execute(text("SELECT outcome FROM system_delivery_attempts"))).scalars().all()
    assert outcomes == ["refused_address"]


async def test_development_setting_posts_to_the_checked_address_under_the_registered_name(
    make_settings: Any, backend: str, mail: MailSink
) -> None:
    """PRIVACY_SYSTEMS_ALLOW_PRIVATE_NETWORKS=true: the POST still goes to the address resolved and
    checked for it (pinned), with the registered name in the Host header; metadata stays refused."""
    from privacy_service.app import create_app
    from privacy_service.runtime import build_runtime
    from tests.conftest import make_operator_key

    settings = await fresh_settings(
        make_settings, backend, systems_allow_private_networks=True, systems_allow_http=True
    )
    runtime = build_runtime(settings)
    runtime.resolver = FakeDns({"hooks.dev.example": ["127.0.0.1"]})
    try:
        import httpx

        headers = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(runtime=runtime)), base_url="http://testserver"
        ) as client:
            for url in ("https://169.254.169.254/latest/", "https://metadata.google.internal/"):
                refused = await client.post("/v1/systems", json=_system(url), headers=headers)
                assert_problem(refused, 422, "invalid-input")
            with HookReceiver().running() as receiver:
                await register(client, headers, f"http://hooks.dev.example:{receiver.port}/hooks")
                await make_customer(client, headers)
                await submit_and_verify(client, runtime, mail, CUSTOMER_EMAIL, "access")
                assert (await _deliver(runtime)).delivered == 1
        [hit] = receiver.received
        assert hit.headers["Host"] == f"hooks.dev.example:{receiver.port}"
    finally:
        await runtime.close()


# Public addresses written in forms the C resolver reads (octal, hex, fewer parts, one number) but httpx
# refuses (``Invalid IPv4 address``) or other parsers read differently, and names httpx cannot send to.
ODD_FORMS = (
    "https://1.2.3.04/",
    f"https://{PUBLIC.rsplit('.', 1)[0]}.014/",  # octal 014: .12
    "https://0x5d.184.215.14/",
    f"https://{int(ipaddress.IPv4Address(PUBLIC))}/",
    "https://93.184.55054/",
    "https://xn--/",
    "https://exa mple.com/",
)


@pytest.mark.parametrize("url", ODD_FORMS)
async def test_addresses_in_odd_forms_and_urls_httpx_cannot_send_are_refused_at_registration(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, dns: FakeDns, url: str
) -> None:
    response = await client.post("/v1/systems", json=_system(url), headers=auth)
    body = assert_problem(response, 422, "invalid-input")
    assert "dotted-decimal IPv4 address without leading zeros" in body["detail"]
    assert "Invalid IPv4" not in response.text
    assert await _systems(runtime) == 0


@asynccontextmanager
async def _development(
    make_settings: Any, backend: str, zone: Mapping[str, Iterable[str]]
) -> AsyncIterator[tuple[Runtime, AsyncClient, dict[str, str]]]:
    """An app with PRIVACY_SYSTEMS_ALLOW_PRIVATE_NETWORKS=true (receivers on loopback) and a fake DNS."""
    from privacy_service.app import create_app
    from privacy_service.runtime import build_runtime
    from tests.conftest import make_operator_key

    settings = await fresh_settings(
        make_settings, backend, systems_allow_private_networks=True, systems_allow_http=True
    )
    runtime = build_runtime(settings)
    runtime.resolver = FakeDns(zone)
    try:
        headers = {"Authorization": f"Bearer {await make_operator_key(runtime)}"}
        async with AsyncClient(
            transport=ASGITransport(app=create_app(runtime=runtime)), base_url="http://testserver"
        ) as client:
            yield runtime, client, headers
    finally:
        await runtime.close()


async def _log(client: AsyncClient, auth: Mapping[str, str], system: dict[str, Any]) -> dict[str, Any]:
    page = await client.get(f"/v1/systems/{system['system']['id']}/deliveries", headers=dict(auth))
    [delivery] = page.json()["items"]
    return dict(delivery)


async def test_a_stored_url_httpx_cannot_send_does_not_stop_other_systems_deliveries(
    make_settings: Any, backend: str, mail: MailSink
) -> None:
    """A row stored before registration refused ``1.2.3.04`` (httpx.InvalidURL, no httpx.HTTPError):
    its delivery is dead-lettered as unsendable in the same pass that delivers the other system's."""
    async with _development(make_settings, backend, {"hooks.dev.example": ["127.0.0.1"]}) as (runtime, client, auth):
        with HookReceiver().running() as receiver:
            good = await register(client, auth, f"http://hooks.dev.example:{receiver.port}/hooks")
            bad = await register(client, auth, "https://hooks.dev.example/old", name="legacy")
            async with runtime.db.engine.connect() as conn:
                await conn.execute(
                    text("UPDATE systems SET callback_url = 'https://1.2.3.04/hooks' WHERE name = 'legacy'")
                )
                await conn.commit()
            await make_customer(client, auth)
            await submit_and_verify(client, runtime, mail, CUSTOMER_EMAIL, "access")
            result = await _deliver(runtime)
            again = await _deliver(runtime)
        assert (result.delivered, result.dead, result.retried) == (1, 1, 0)
        assert again == DeliveryResult()  # nothing re-leased to fail again
        assert len(receiver.received) == 1
        assert (await _log(client, auth, good))["status"] == "delivered"
        dead = await _log(client, auth, bad)
        assert (dead["status"], dead["last_error"]) == ("dead", "unsendable")
        assert [attempt["outcome"] for attempt in dead["log"]] == ["unsendable"]
        assert "Invalid" not in json.dumps(dead)  # a class, not httpx's message


class _BrokenFor:
    """A transport that fails in a way no one planned for (a bug) for one URL, and answers 204 otherwise."""

    def __init__(self, broken_url: str) -> None:
        self.broken_url = broken_url
        self.posted: list[str] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        if url == self.broken_url:
            raise RuntimeError("unexpected")
        self.posted.append(url)
        return 204


async def test_an_unexpected_failure_of_one_send_does_not_stop_the_others(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink, dns: FakeDns
) -> None:
    dns.zone["hooks.other.example"] = [PUBLIC]
    good = await register(client, auth, "https://hooks.partner.example/privacy")
    bad = await register(client, auth, "https://hooks.other.example/privacy", name="other")
    await make_customer(client, auth)
    await submit_and_verify(client, runtime, mail, CUSTOMER_EMAIL, "access")
    transport = _BrokenFor("https://hooks.other.example/privacy")
    result = await deliver_webhooks(runtime.db, runtime.keys, runtime.clock, transport=transport)
    assert (result.delivered, result.dead) == (1, 1)
    assert transport.posted == ["https://hooks.partner.example/privacy"]
    assert (await _log(client, auth, good))["status"] == "delivered"
    assert (await _log(client, auth, bad))["last_error"] == "unsendable"


@pytest.mark.parametrize(
    "address",
    [
        str(ipaddress.IPv4Address(0)),  # unspecified
        "127.0.0.1",
        "127.255.255.254",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.1.1",
        "100.64.0.1",  # carrier-grade NAT
        "192.0.0.1",
        "198.18.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::1",  # 6to4 wrapping 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 wrapping 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refusal(address, allow_private=False) is not None
    assert refusal(address, allow_private=True) is None


def test_public_and_metadata_addresses() -> None:
    for public in (PUBLIC, "8.8.8.8", "2606:4700:4700::1111"):
        assert refusal(public, allow_private=False) is None
    for metadata in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "::ffff:169.254.169.254"):
        assert refusal(metadata, allow_private=True) == "metadata"


def _certificates(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for ``name`` it signed: (CA file, certificate file, key file)."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


@contextmanager
def _tls_receiver(certificate: Path, key: Path) -> Iterator[tuple[int, list[str | None], list[str]]]:
    """An HTTPS receiver on 127.0.0.1 answering 202: (port, TLS server names asked for, Host headers)."""
    server_names: list[str | None] = []
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hosts.append(self.headers.get("Host", ""))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)

    def record_server_name(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        server_names.append(name)

    context.sni_callback = record_server_name
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], server_names, hosts
    finally:
        server.shutdown()
        server.server_close()


async def test_https_goes_to_the_checked_address_with_the_registered_name_for_tls(tmp_path: Path) -> None:
    """The pinned connection still verifies the certificate against the URL's name (sent as SNI):
    a name whose certificate does not match is a ``tls_error``, with no detail."""
    ca, certificate, key = _certificates(tmp_path, "hooks.tls.example")
    trust = ssl.create_default_context(cafile=str(ca))
    dns = FakeDns({"hooks.tls.example": ["127.0.0.1"], "impostor.example": ["127.0.0.1"]})
    with _tls_receiver(certificate, key) as (port, server_names, hosts):
        transport = HttpTransport(dns, allow_private_networks=True, ssl_context=trust)
        try:
            status = await transport.post(f"https://hooks.tls.example:{port}/hooks", b"{}", {}, 5.0)
            with pytest.raises(TransportError) as mismatch:
                await transport.post(f"https://impostor.example:{port}/hooks", b"{}", {}, 5.0)
        finally:
            await transport.aclose()
        guarded = HttpTransport(dns, ssl_context=trust)  # the default: private networks refused
        try:
            with pytest.raises(TransportError) as refused:
                await guarded.post(f"https://hooks.tls.example:{port}/hooks", b"{}", {}, 5.0)
        finally:
            await guarded.aclose()
    assert status == 202
    assert hosts == [f"hooks.tls.example:{port}"]
    assert server_names == ["hooks.tls.example", "impostor.example"]  # the refused one never connected
    assert (mismatch.value.outcome, refused.value.outcome) == ("tls_error", "refused_address")
    assert str(mismatch.value) == "tls_error"


@pytest.mark.parametrize("host", ["a" * 64 + ".example", "bad\x00name.example", ".", ""])
async def test_names_the_resolver_cannot_take_are_refused_not_errors(host: str) -> None:
    with pytest.raises(RefusedDestination):
        await public_addresses(SystemResolver(), host, 443, allow_private=False)

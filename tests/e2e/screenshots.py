"""`make screenshots`: the console's main pages as PNG files in docs/images/console/, taken from a real run.

Starts the service on 127.0.0.1 (a fresh SQLite database and keyring in a temporary folder, mail to an
SMTP sink in this process), fills it with demo data through the HTTP API as a customer and an operator
would (requests, verified with the code the customer was mailed, a subject with records and a legal
hold, a breach assessed and notified to the authority, a purge run, a downstream system), signs in to
the console with an operator key in Debian's Chromium (``/usr/bin/chromium``, as the browser tests
launch it; no browser is ever downloaded) and saves each page. A page the app does not have (yet) is
skipped and named. Every run writes the same file names, so the docs' links stay valid.

    .venv/bin/python -m tests.e2e.screenshots [--out docs/images/console]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller as SmtpController
from litestar import Litestar
from litestar.routes import HTTPRoute
from playwright.async_api import Page, async_playwright

from privacy_service.app import create_app
from privacy_service.config import DEFAULT_RATE_LIMITS, Settings
from privacy_service.migrations.runner import upgrade
from privacy_service.operators.service import SCOPES, create_operator
from privacy_service.runtime import build_runtime

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "images" / "console"
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
MAX_HEIGHT = 2400
CODE = re.compile(r"\b(\d{6})\b")
_PARAM = re.compile(r"\{[^}]*\}")
OPEN_LIMITS: dict[str, str] = {
    name: "100000/min burst 10000"
    for name in ("intake", "intake_identity", "verify", "resend", "download", "default", "operator", "console_sign_in")
}


class Sink:
    """SMTP server in this process: the demo's customers read their codes here."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content or envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    async def code_for(self, address: str) -> str:
        for _ in range(200):
            for message in reversed(self.messages):
                found = CODE.search(message.get_content()) if message["To"] == address else None
                if found:
                    return found.group(1)
            await asyncio.sleep(0.05)
        raise RuntimeError(f"no code was mailed to {address}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Demo:
    """What the pages are opened on."""

    request_id: str
    subject_id: str
    hold_id: str
    breach_id: str
    notice_seq: int | None
    run_id: str | None
    system_id: str | None


async def _ok(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    if response.status_code not in statuses:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


async def _seed(api: httpx.AsyncClient, sink: Sink) -> Demo:
    """Demo data through the HTTP API, as a customer and an operator would enter it."""
    filed: list[str] = []
    customers: tuple[tuple[str, str, dict[str, Any]], ...] = (
        ("access", "mei.chen@example.com", {"regime": "pipl", "language": "zh"}),
        ("erase", "jonas.weber@example.com", {"reason": "I closed my wallet last year; please delete my data."}),
        ("rectify", "amira.haddad@example.com", {"changes": {"profile": {"city": "Leeds"}}}),
        ("portability", "lucas.martin@example.com", {"regime": "gdpr"}),
        ("access", "olivia.brown@example.com", {"regime": "ccpa"}),
        ("erase", "tomasz.nowak@example.com", {}),
    )
    for n, (kind, address, extra) in enumerate(customers):
        body: dict[str, Any] = {"type": kind, "identity": {"email": address}, **extra}
        request_id = str((await _ok(await api.post("/v1/requests", json=body), 202))["id"])
        filed.append(request_id)
        if n < 4:  # the customer enters the mailed code: the request waits for the operator
            code = await sink.code_for(address)
            await _ok(await api.post(f"/v1/requests/{request_id}/verify", json={"code": code}), 200)
    subject = await _ok(
        await api.post(
            "/v1/subjects",
            json={
                "email": "jonas.weber@example.com",
                "external_id": "cust-20417",
                "profile": {"name": "Jonas Weber", "city": "Berlin", "country": "DE"},
            },
        ),
        201,
    )
    subject_id = str(subject["id"])
    for category, data in (
        ("user.device", {"device": "Pixel 8", "app_version": "5.2.1"}),
        ("user.financial.transaction", {"amount": "42.50", "currency": "EUR", "merchant": "Café Nord"}),
        ("user.financial.transaction", {"amount": "310.00", "currency": "EUR", "merchant": "Rail Europe"}),
    ):
        record = {"kind": "event", "category": category, "occurred_at": "2026-03-02T09:15:00Z", "data": data}
        await _ok(await api.post(f"/v1/subjects/{subject_id}/records", json=record), 201)
    hold = await _ok(
        await api.post(f"/v1/subjects/{subject_id}/holds", json={"reason": "Chargeback dispute CB-2026-0113"}), 201
    )
    breach = await _ok(
        await api.post(
            "/v1/breaches",
            json={
                "title": "Support mailbox forwarded to an outside address",
                "description": "A mailbox rule forwarded support tickets to an external address for two days.",
                "nature": ["confidentiality"],
                "categories": ["user.name", "user.contact.email", "user.financial.transaction"],
                "affected": {"estimated_count": 412},
                "malicious": True,
                "exfiltration_known": True,
                "mitigation": "The rule was removed and the mailbox password reset.",
                "consequences": "Phishing e-mails that quote real support conversations.",
                "advice": "Ignore messages asking for your password; we never ask for it.",
            },
        ),
        201,
    )
    breach_id = str(breach["id"])
    await _ok(await api.post(f"/v1/breaches/{breach_id}/assessment", json={"ease_of_identification": "maximum"}), 200)
    notice = await api.post(
        f"/v1/breaches/{breach_id}/authority-notification", json={"recipient": "Online breach form, ref. BN-2026-118"}
    )
    notice_seq = int(notice.json()["seq"]) if notice.status_code == 201 else None
    await api.post(
        "/v1/breaches",
        json={
            "title": "Statement e-mails sent to the wrong customers",
            "description": "A template error addressed 37 monthly statements to other customers.",
            "nature": ["confidentiality"],
            "categories": ["user.name", "user.financial.transaction"],
            "affected": {"estimated_count": 37},
        },
    )
    system = await api.post(
        "/v1/systems",
        json={
            "name": "crm",
            "callback_url": "http://127.0.0.1:9/privacy-hook",
            "request_types": ["access", "erase"],
            "categories": ["user.contact.email"],
        },
    )
    system_id = str(system.json()["system"]["id"]) if system.status_code == 201 else None
    for dry_run in (True, False):
        run = await api.post("/v1/retention/runs", json={"dry_run": dry_run})
        run_id = str(run.json()["id"]) if run.status_code == 202 else None
        for _ in range(200):  # the run is carried out after the response
            if run_id is None or (await api.get(f"/v1/retention/runs/{run_id}")).json().get("status") != "running":
                break
            await asyncio.sleep(0.1)
    return Demo(
        request_id=filed[1],  # the erasure with the customer's note
        subject_id=subject_id,
        hold_id=str(hold["id"]),
        breach_id=breach_id,
        notice_seq=notice_seq,
        run_id=run_id,
        system_id=system_id,
    )


def _shape(template: str) -> str:
    """A route's path with its parameters' names and types left out (``{ref:str}`` and ``{id:uuid}`` alike)."""
    return _PARAM.sub("{}", template)


def _has_page(app: Litestar, template: str) -> bool:
    return any(
        isinstance(route, HTTPRoute) and _shape(route.path) == _shape(template) and "GET" in route.methods
        for route in app.routes
    )


def _shots(demo: Demo) -> list[tuple[str, str, str, dict[str, int], str]]:
    """(file name, route as the app declares it, path, viewport, language) for each screenshot."""
    shots = [
        ("dashboard", "/console", "/console", DESKTOP, "en"),
        ("requests", "/console/requests", "/console/requests", DESKTOP, "en"),
        ("request", "/console/requests/{ref:str}", f"/console/requests/{demo.request_id}", DESKTOP, "en"),
        ("subject", "/console/subjects/{subject_id:uuid}", f"/console/subjects/{demo.subject_id}", DESKTOP, "en"),
        ("breaches", "/console/breaches", "/console/breaches", DESKTOP, "en"),
        ("breach", "/console/breaches/{breach_id:uuid}", f"/console/breaches/{demo.breach_id}", DESKTOP, "en"),
        ("retention", "/console/retention", "/console/retention", DESKTOP, "en"),
        ("audit", "/console/audit", "/console/audit", DESKTOP, "en"),
        ("systems", "/console/systems", "/console/systems", DESKTOP, "en"),
        ("api-reference", "/console/api", "/console/api", DESKTOP, "en"),
        ("dashboard-zh", "/console", "/console", DESKTOP, "zh"),
        ("request-phone", "/console/requests/{ref:str}", f"/console/requests/{demo.request_id}", PHONE, "en"),
    ]
    if demo.notice_seq is not None:
        shots.insert(
            6,
            (
                "breach-art33",
                "/console/breaches/{breach_id:uuid}/authority-notifications/{seq:int}",
                f"/console/breaches/{demo.breach_id}/authority-notifications/{demo.notice_seq}",
                DESKTOP,
                "en",
            ),
        )
    if demo.run_id is not None:
        shots.insert(
            -4,
            (
                "retention-run",
                "/console/retention/runs/{run_id:str}",
                f"/console/retention/runs/{demo.run_id}",
                DESKTOP,
                "en",
            ),
        )
    return shots


async def _sign_in(page: Page, key: str) -> None:
    await page.goto("/console/sign-in?lang=en")
    await page.locator("#key").fill(key)
    await page.locator("form button[type=submit]").first.click()
    await page.wait_for_url("**/console")


async def _capture(url: str, app: Litestar, key: str, demo: Demo, out: Path) -> tuple[list[str], list[str]]:
    taken: list[str] = []
    skipped: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            for name, template, path, viewport, language in _shots(demo):
                if not _has_page(app, template):
                    skipped.append(f"{name} ({template}: no such page)")
                    continue
                context = await browser.new_context(base_url=url, viewport=viewport, locale="en-GB")  # type: ignore[arg-type]
                try:
                    page = await context.new_page()
                    await _sign_in(page, key)
                    response = await page.goto(f"{path}{'&' if '?' in path else '?'}lang={language}")
                    if response is None or response.status != 200:
                        skipped.append(f"{name} ({path}: answered {response.status if response else 'nothing'})")
                        continue
                    await page.wait_for_load_state("networkidle")
                    if name == "api-reference":
                        await page.locator(".swagger-ui .opblock").first.wait_for(timeout=15_000)
                    # Long pages (the audit log, the API reference) are cut at MAX_HEIGHT: the top is what shows.
                    height = int(await page.evaluate("document.documentElement.scrollHeight"))
                    clip = {"x": 0, "y": 0, "width": viewport["width"], "height": min(height, MAX_HEIGHT)}
                    await page.screenshot(path=str(out / f"{name}.png"), full_page=True, clip=clip)  # type: ignore[arg-type]
                    taken.append(name)
                finally:
                    await context.close()
        finally:
            await browser.close()
    return taken, skipped


async def main(out: Path) -> int:
    if not CHROMIUM.exists():
        print("make screenshots: Debian's Chromium is missing (make chromium)", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    sink = Sink()
    smtp_port = _free_port()
    smtp = SmtpController(sink, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        with tempfile.TemporaryDirectory(prefix="ps-screens-") as folder:
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            settings = Settings(
                database_url=f"sqlite+aiosqlite:///{folder}/demo.db",
                keyring_path=Path(folder) / "keyring.json",
                policy_dir=ROOT / "policies",
                base_url=url,
                smtp_port=smtp_port,
                rate_limits={**DEFAULT_RATE_LIMITS, **OPEN_LIMITS},
                systems_allow_private_networks=True,
                log_level="ERROR",
            )
            await asyncio.to_thread(upgrade, settings)
            setup = build_runtime(settings)
            try:
                async with setup.db.transaction() as session:
                    _, key = await create_operator(
                        session, name="Data protection officer", scopes=frozenset(SCOPES), now=setup.clock.now()
                    )
            finally:
                await setup.close()
            app = create_app(settings)
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning", access_log=False)
            )
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            started = time.monotonic()
            while not server.started and thread.is_alive() and time.monotonic() - started < 30:
                await asyncio.sleep(0.05)
            if not server.started:
                raise RuntimeError("the service did not start")
            try:
                async with httpx.AsyncClient(
                    base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
                ) as api:
                    demo = await _seed(api, sink)
                taken, skipped = await _capture(url, app, key, demo, out)
            finally:
                server.should_exit = True
                await asyncio.to_thread(thread.join, 30)
    finally:
        smtp.stop()
    print(f"saved {len(taken)} screenshots in {out}: {', '.join(taken)}")
    if skipped:
        print("skipped: " + "; ".join(skipped))
    return 0 if taken else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=OUT)
    sys.exit(asyncio.run(main(parser.parse_args().out.resolve())))

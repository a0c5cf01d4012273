"""Breach notification (issue 7): notifying 10,000 subjects through a real SMTP server, vs raw sends.

Measured: the whole service path from "notify the data subjects" to the last message accepted by the
server: ``BreachService.request_subject_notifications`` (one transaction), ``queue_subject_notices``
(per batch: decrypt each address from the vault, render the notice in the subject's language, seal it
into the outbox) and ``deliver_pending`` (claim with a lease, open, send over SMTP, record), as the
worker runs them. Baseline: the very same messages (recipients, subjects, bodies, as the server
received them) sent again with ``aiosmtplib.send``, one after another, to the same in-process aiosmtpd
server, in the same run. Both open one SMTP connection per message, as ``SmtpMailer`` does.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

import aiosmtplib
from aiosmtpd.controller import Controller
from sqlalchemy import text, update
from sqlmodel import col

from benchmarks.common import BenchContext, Figure, progress, verdict
from benchmarks.vault import bulk_load
from privacy_service.audit.service import Actor
from privacy_service.breaches import schemas
from privacy_service.breaches.messaging import queue_subject_notices
from privacy_service.breaches.policy import load_breach_policy
from privacy_service.breaches.service import BreachService
from privacy_service.notify.jobs import deliver_pending
from privacy_service.notify.mailer import SmtpMailer
from privacy_service.subjects.models import Subject

RATIO_TARGET = 0.25
ACTOR = Actor("operator", "benchmark")


def _subjects() -> int:
    raw = os.environ.get("PRIVACY_BENCH_BREACH_SUBJECTS", "").replace("_", "").strip()
    return int(raw) if raw else 10_000


class Sink:
    """aiosmtpd handler: keeps what arrived (recipient, subject, body) to resend and to check duplicates."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str]] = []
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        message = message_from_bytes(envelope.original_content or envelope.content, policy=default)
        body = message.get_content() if isinstance(message, EmailMessage) else ""
        self.received.append((str(message["To"]), str(message["Subject"]), body))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _service_path(ctx: BenchContext, ids: list[Any], port: int) -> tuple[float, float, float]:
    rt = ctx.runtime
    rules = load_breach_policy(rt.settings.policy_dir, rt.policy)
    async with rt.db.transaction() as session:
        service = BreachService(session, rt.keys, rt.policy, rules, rt.clock, ACTOR, is_sqlite=rt.settings.is_sqlite)
        breach = await service.create(
            schemas.BreachCreate(
                title="Benchmark: card data exposed",
                description="A misconfigured export exposed account numbers.",
                nature=["confidentiality"],
                categories=["user.name", "user.contact.email", "user.financial.account_number"],
                affected=schemas.Affected(subject_ids=ids),
                exfiltration_known=True,
                malicious=True,
                advice="Watch your statements and tell us about any payment you do not recognise.",
            )
        )
        await service.assess(breach.id, schemas.AssessmentBody(ease_of_identification="maximum"))
    mailer = SmtpMailer(host="127.0.0.1", port=port, sender=rt.settings.smtp_from)
    # The bench database is shared: mail queued by earlier benches (e.g. request intake codes) must
    # neither be sent here nor counted as breach notices.
    async with rt.db.transaction() as session:
        await session.exec(  # type: ignore[call-overload]
            text("UPDATE outbox_messages SET status = 'sent', payload = NULL WHERE status IN ('pending', 'sending')")
        )
    started = time.perf_counter()
    async with rt.db.transaction() as session:
        service = BreachService(session, rt.keys, rt.policy, rules, rt.clock, ACTOR, is_sqlite=rt.settings.is_sqlite)
        await service.request_subject_notifications(breach.id)
    queued = await queue_subject_notices(rt.db, rt.keys, rt.clock, batch=rt.settings.breach_dispatch_batch)
    queue_seconds = time.perf_counter() - started
    progress.log(f"queued {queued.queued:,} notices in {queue_seconds:.1f} s")
    sent = 0
    while True:
        result = await deliver_pending(rt.db, rt.keys, mailer, rt.clock, batch=200)
        sent += result.sent
        if not (result.sent or result.retried or result.dead):
            break
        if sent % 2000 < 200:
            progress.log(f"delivered {sent:,}")
    total = time.perf_counter() - started
    if sent != len(ids):
        raise RuntimeError(f"{sent} of {len(ids)} notices were delivered")
    return total, queue_seconds, total - queue_seconds


async def _raw_path(messages: list[tuple[str, str, str]], port: int, sender: str) -> float:
    started = time.perf_counter()
    for to, subject, body in messages:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = sender, to, subject
        message.set_content(body)
        await aiosmtplib.send(message, hostname="127.0.0.1", port=port, timeout=10)
    return time.perf_counter() - started


async def subject_notification_throughput(ctx: BenchContext) -> list[Figure]:
    count = _subjects()
    rt = ctx.runtime
    ids, _ = await bulk_load(ctx, count)
    async with rt.db.transaction() as session:
        # A tenth of the customers read Chinese: both templates are rendered.
        await session.exec(update(Subject).where(col(Subject.id).in_(ids[: count // 10])).values(language="zh"))
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        total, queue_seconds, deliver_seconds = await _service_path(ctx, ids, controller.port)
        received = list(sink.received)
        duplicates = sum(n - 1 for n in Counter(to for to, _, _ in received).values() if n > 1)
        if duplicates or len(received) != count:
            raise RuntimeError(f"{len(received)} received for {count} subjects, {duplicates} duplicates")
        progress.log(f"service path: {count / total:,.0f} msgs/s; now the same messages with raw aiosmtplib")
        sink.received, sink.count = [], 0
        raw = await _raw_path(received, controller.port, rt.settings.smtp_from)
        if sink.count != count:
            raise RuntimeError(f"baseline delivered {sink.count} of {count}")
    finally:
        controller.stop()
    measured, baseline = count / total, count / raw
    ratio = measured / baseline
    return [
        Figure(
            figure=f"breach notices to {count:,} subjects",
            unit="msgs/s",
            measured=measured,
            baseline=baseline,
            ratio=ratio,
            target=f"≥ {RATIO_TARGET:.2f}x",
            verdict=verdict(ratio >= RATIO_TARGET),
            details={
                "subjects": count,
                "service_seconds": round(total, 3),
                "queue_seconds": round(queue_seconds, 3),
                "deliver_seconds": round(deliver_seconds, 3),
                "raw_seconds": round(raw, 3),
                "duplicates": duplicates,
                "chinese_notices": sum(1 for _, subject, _ in received if "个人信息" in subject),
                "measured": "request + queue (decrypt, render, seal) + deliver_pending (claim, open, SMTP, record)",
                "baseline": "the same messages sent with aiosmtplib.send to the same aiosmtpd server",
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
    ]

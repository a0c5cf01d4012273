"""Notifying ~300 subjects through a real SMTP server: batched, resumable, nobody mailed twice after crashes."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from httpx import AsyncClient
from sqlalchemy import text

from privacy_service.breaches import messaging
from privacy_service.breaches.messaging import queue_subject_notices
from privacy_service.notify.mailer import Mail, MailConnection, Mailer
from privacy_service.runtime import Runtime
from tests.breach_support import assess, create, deliver_all, make_subjects
from tests.conftest import MailSink

SUBJECTS = 300
ERASED = 5


class CrashingMailer:
    """Sends through the real mailer, then fails every message after the K-th (a connection that broke)."""

    connection: MailConnection

    def __init__(self, inner: Mailer, crash_after: int) -> None:
        self.inner, self.crash_after, self.sent = inner, crash_after, 0

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[CrashingMailer]:
        async with self.inner.connect() as connection:
            self.connection = connection
            yield self

    async def send(self, mail: Mail) -> None:
        if self.sent >= self.crash_after:
            raise RuntimeError("worker killed")
        await self.connection.send(mail)
        self.sent += 1


class LaterClock:
    """After the crash: time enough for the dead worker's outbox lease (2 minutes) to expire."""

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(minutes=3)


async def scalar(runtime: Runtime, sql: str) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def test_many_subjects_each_notified_exactly_once_despite_crashes(
    client: AsyncClient, auth: dict[str, str], runtime: Runtime, mail: MailSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await make_subjects(runtime, SUBJECTS - 20, domain="many.example")
    ids += await make_subjects(runtime, 20, domain="zh.many.example", language="zh")
    for subject_id in ids[:ERASED]:
        assert (await client.delete(f"/v1/subjects/{subject_id}", headers=auth)).status_code in (200, 204)
    breach = await create(
        client,
        auth,
        categories=["user.name", "user.contact.email", "user.financial.account_number"],
        affected={"subject_ids": [str(i) for i in ids]},
    )
    await assess(client, auth, breach["id"])
    requested = await client.post(f"/v1/breaches/{breach['id']}/subject-notifications", json={}, headers=auth)
    assert requested.status_code == 202
    assert requested.json()["counts"]["pending"] == SUBJECTS
    # Requesting wrote no addresses anywhere: the outbox is empty until the dispatcher runs.
    assert await scalar(runtime, "SELECT count(*) FROM outbox_messages") == 0

    # Crash 1: the dispatcher dies inside its second batch; that batch rolls back, the first stays.
    real_enqueue, calls = messaging.enqueue, Counter[str]()

    def dying_enqueue(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 150:
            raise RuntimeError("dispatcher killed")
        return real_enqueue(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(messaging, "enqueue", dying_enqueue)
    with pytest.raises(RuntimeError, match="dispatcher killed"):
        await queue_subject_notices(runtime.db, runtime.keys, runtime.clock, batch=100)
    monkeypatch.setattr(messaging, "enqueue", real_enqueue)
    queued = await scalar(runtime, "SELECT count(*) FROM breach_subjects WHERE status = 'queued'")
    assert await scalar(runtime, "SELECT count(*) FROM breach_subjects WHERE status = 'pending'") == SUBJECTS - 100
    assert await scalar(runtime, "SELECT count(*) FROM outbox_messages") == queued > 90
    # Sealed: the outbox holds no address in clear.
    async with runtime.db.engine.connect() as conn:
        payloads = [row[0] for row in await conn.execute(text("SELECT payload FROM outbox_messages"))]
    assert all(b"many.example" not in bytes(payload) for payload in payloads)

    # Failure 2: the mail connection breaks after 40 messages of the first claimed batch. Each later message
    # fails alone (one attempt, backed off; notify/jobs.py isolates a message's failure from its batch).
    await deliver_all(runtime, CrashingMailer(runtime.mailer, 40))
    assert len(mail.messages) == 40
    assert await scalar(runtime, "SELECT count(*) FROM outbox_messages WHERE status = 'pending' AND attempts = 1") == (
        queued - 40
    )

    # Rerun everything: the dispatcher finishes, delivery resumes once the dead worker's lease expired.
    result = await queue_subject_notices(runtime.db, runtime.keys, runtime.clock, batch=100)
    assert result.queued + result.skipped_erased == SUBJECTS - 100
    await deliver_all(runtime, clock=LaterClock())
    await queue_subject_notices(runtime.db, runtime.keys, runtime.clock)  # syncs delivery status

    received = Counter(str(message["To"]) for message in mail.messages)
    assert len(received) == SUBJECTS - ERASED
    assert set(received.values()) == {1}, [to for to, n in received.items() if n > 1]
    for erased in range(ERASED):
        assert f"person{erased}@many.example" not in received
    zh = [m for m in mail.messages if str(m["To"]).endswith("@zh.many.example")]
    assert len(zh) == 20
    assert all("个人信息安全事件告知" in str(m["Subject"]) for m in zh)

    status = (await client.get(f"/v1/breaches/{breach['id']}/subject-notifications", headers=auth)).json()
    assert status["done"] is True
    assert (status["counts"]["sent"], status["counts"]["skipped_erased"]) == (SUBJECTS - ERASED, ERASED)
    page = (
        await client.get(
            f"/v1/breaches/{breach['id']}/subject-notifications/recipients", params={"limit": 1000}, headers=auth
        )
    ).json()
    assert Counter(item["status"] for item in page["items"]) == {"sent": SUBJECTS - ERASED, "skipped_erased": ERASED}
    # Sent messages keep no payload: the addresses are gone from the outbox too.
    assert await scalar(runtime, "SELECT count(*) FROM outbox_messages WHERE payload IS NOT NULL") == 0
    # A rerun of everything is a no-op.
    again = await queue_subject_notices(runtime.db, runtime.keys, runtime.clock)
    assert again.queued == 0
    assert await deliver_all(runtime, clock=LaterClock()) == 0

"""``GET /metrics``: Prometheus text exposition (format 0.0.4), computed from the database per scrape.

The figures come from tables, not process memory, so every API and worker replica reports the same
numbers and a restart loses nothing; Prometheus keeps the history. Labels are enums, category-free
request types, system names and opaque incident ids: never personal data (nor an incident's title).
Times are absolute (``*_timestamp_seconds``) or hours left until a legal deadline (``*_hours_left``),
which deploy/prometheus/alerts.yml alerts on. Scraping needs an operator key with the scope
``metrics:read``; figures are a snapshot at most PRIVACY_METRICS_CACHE_SECONDS old, and none tells a
known customer from a stranger (see ``_outbox``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import MediaType, Request, Response, get
from sqlalchemy import case, func, inspect, text
from sqlalchemy.engine import Connection
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit.models import AuditVerification
from privacy_service.breaches.clocks import authority_clock, california_clock
from privacy_service.breaches.flows import CLOCK_RUNNING
from privacy_service.breaches.models import Breach
from privacy_service.breaches.policy import BreachPolicy, BreachPolicyError, load_breach_policy
from privacy_service.breaches.schemas import CaliforniaClockView, ClockView
from privacy_service.clock import Clock
from privacy_service.connections.tasks import ConnectionTask
from privacy_service.db import Database
from privacy_service.dsr.flows import OPEN, Status
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.notify.jobs import DROPPED
from privacy_service.notify.models import OutboxMessage
from privacy_service.operators.guards import operator_guard
from privacy_service.systems.flows import FINAL, DeliveryStatus
from privacy_service.systems.models import Delivery, DeliveryAttempt, DownstreamSystem

# Litestar appends "; charset=utf-8" to text types.
CONTENT_TYPE = "text/plain; version=0.0.4"
# Webhook latency buckets, seconds.
# The states of a clock that is counting down (breaches.clocks).
RUNNING_STATES = frozenset({"running", "overdue"})
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
Labels = Mapping[str, str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Exposition:
    """Text format: ``# HELP``, ``# TYPE``, then one sample per line."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.sample(name, labels, value)

    def sample(self, name: str, labels: Labels, value: float) -> None:
        rendered = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
        self._lines.append(f"{name}{{{rendered}}} {_number(value)}" if rendered else f"{name} {_number(value)}")

    def render(self) -> str:
        return "\n".join(self._lines) + "\n"


async def _requests(out: Exposition, session: AsyncSession, now: datetime) -> None:
    rows = await session.exec(
        select(PrivacyRequest.type, PrivacyRequest.status, func.count()).group_by(
            col(PrivacyRequest.type), col(PrivacyRequest.status)
        )
    )
    out.family(
        "privacy_requests",
        "gauge",
        "Data-subject requests by type and status.",
        (({"type": t, "status": s}, n) for t, s, n in rows.all()),
    )
    overdue = await session.exec(
        select(func.count()).where(
            col(PrivacyRequest.status).in_([s.value for s in OPEN]), col(PrivacyRequest.due_at) < now
        )
    )
    out.family("privacy_requests_overdue", "gauge", "Open requests past their legal due date.", [({}, overdue.one())])
    # The requests the team can act on (as the daily digest): an unverified one waits for its customer.
    nearest = await session.exec(
        select(func.min(PrivacyRequest.due_at)).where(
            col(PrivacyRequest.status).in_([s.value for s in OPEN if s is not Status.AWAITING_VERIFICATION])
        )
    )
    due = nearest.one()
    out.family(
        "privacy_request_deadline_hours_left",
        "gauge",
        "Hours to the nearest legal due date of an open, verified request (negative: overdue); "
        "absent when none is open.",
        [] if due is None else [({}, _hours(due - now))],
    )


def _hours(delta: timedelta) -> float:
    return round(delta.total_seconds() / 3600, 3)


def _timestamp(moment: datetime) -> float:
    return round(moment.timestamp(), 3)


async def _breach_clocks(
    out: Exposition, session: AsyncSession, now: datetime, rules: Callable[[], BreachPolicy | None]
) -> None:
    """Every running legal clock of an incident, as the incident's view computes it (breaches.clocks):
    the opaque incident id and the clock's name only."""
    open_incidents = (
        await session.exec(select(Breach).where(col(Breach.status).in_([s.value for s in CLOCK_RUNNING])))
    ).all()
    policy = rules() if open_incidents else None
    samples: list[tuple[Labels, float]] = []
    for breach in open_incidents:
        views: list[tuple[str, ClockView | CaliforniaClockView | None]] = [
            ("authority", authority_clock(breach, now)),
            ("california", california_clock(policy, breach, now) if policy is not None else None),
        ]
        for name, view in views:
            if view is not None and view.state in RUNNING_STATES and view.seconds_left is not None:
                samples.append(({"incident": str(breach.id), "clock": name}, round(view.seconds_left / 3600, 3)))
    out.family(
        "privacy_breach_clock_hours_left",
        "gauge",
        "Hours left on each running breach notification clock (negative: overdue): clock=authority is the "
        "GDPR Art. 33 notification to the supervisory authority, clock=california the notice to California "
        "residents (Civ. Code 1798.82, when policies/breach.yaml sets clock.california).",
        samples,
    )


async def _audit(out: Exposition, session: AsyncSession) -> None:
    verified = await session.exec(select(func.max(AuditVerification.at)).where(col(AuditVerification.ok).is_(True)))
    last_ok = verified.one()
    out.family(
        "privacy_audit_chain_last_verified_timestamp_seconds",
        "gauge",
        "When the audit hash chain last passed a full check (audit verify, or the worker's daily audit-verify); "
        "absent until one has.",
        [] if last_ok is None else [({}, _timestamp(last_ok))],
    )
    latest = await session.exec(
        select(AuditVerification.ok).order_by(col(AuditVerification.at).desc(), col(AuditVerification.id).desc())
    )
    outcome = latest.first()
    out.family(
        "privacy_audit_chain_verification_ok",
        "gauge",
        "1 if the latest check of the audit hash chain passed, 0 if it found the chain broken.",
        [] if outcome is None else [({}, 1 if outcome else 0)],
    )


OUTBOX_STATES = ("pending", "sending", "done", "dead")


async def outbox_counts(session: AsyncSession) -> tuple[dict[str, int], int]:
    """Queued mail by state (:data:`OUTBOX_STATES`), and the failed attempts of the mail still held.

    Sent and dropped (no customer holds the phone a code was requested for) are one figure, ``done``:
    apart, they would tell anyone who files a request by phone whether that number is a customer's.
    The operator console's dashboard shows the same figures.
    """
    rows = (
        await session.exec(
            select(OutboxMessage.status, func.count(), func.coalesce(func.sum(OutboxMessage.attempts), 0)).group_by(
                col(OutboxMessage.status)
            )
        )
    ).all()
    counts = dict.fromkeys(OUTBOX_STATES, 0)
    for status, n, _ in rows:
        state = "done" if status in ("sent", DROPPED) else status
        counts[state] = counts.get(state, 0) + int(n)
    failed = sum(int(attempts) for status, _, attempts in rows if status not in ("sent", DROPPED))
    return counts, failed


async def _outbox(out: Exposition, session: AsyncSession, now: datetime) -> None:
    counts, failed = await outbox_counts(session)
    out.family(
        "privacy_outbox_messages",
        "gauge",
        "Queued mail by status (pending/sending = backlog, done = finished, dead = gave up).",
        (({"status": s}, counts.get(s, 0)) for s in OUTBOX_STATES),
    )
    out.family(
        "privacy_outbox_failed_attempts",
        "gauge",
        "Failed delivery attempts of queued mail still held (pending retries and dead letters).",
        [({}, failed)],
    )
    # Codes expire 15 minutes after they are queued: how long mail waits is what customers notice.
    waiting = col(OutboxMessage.status).in_(("pending", "sending"))
    ages = await session.exec(
        select(
            func.min(OutboxMessage.created_at),
            func.min(case((col(OutboxMessage.next_attempt_at) <= now, OutboxMessage.next_attempt_at))),
        ).where(waiting)
    )
    oldest, most_overdue = ages.one()
    out.family(
        "privacy_outbox_oldest_pending_age_seconds",
        "gauge",
        "Seconds since the oldest mail still waiting (pending/sending, retries too) was queued; 0 when none waits.",
        [({}, _seconds_since(oldest, now))],
    )
    out.family(
        "privacy_outbox_delivery_lag_seconds",
        "gauge",
        "Seconds the most overdue mail has been due and not sent (a first attempt, a retry, or a lease of a "
        "stopped process run out): how far delivery is behind; 0 when it keeps up.",
        [({}, _seconds_since(most_overdue, now))],
    )


async def _connection_tasks(out: Exposition, session: AsyncSession) -> None:
    by_status = await session.exec(
        select(ConnectionTask.connection_name, ConnectionTask.kind, ConnectionTask.status, func.count()).group_by(
            col(ConnectionTask.connection_name), col(ConnectionTask.kind), col(ConnectionTask.status)
        )
    )
    out.family(
        "privacy_connection_tasks",
        "gauge",
        "Requests' tasks on connected databases by connection, kind and status "
        "(pending/running = backlog, needs_operator = waiting for an operator).",
        (({"connection": name, "kind": kind, "status": status}, n) for name, kind, status, n in by_status.all()),
    )


def _seconds_since(moment: datetime | None, now: datetime) -> float:
    return 0.0 if moment is None else max(0.0, round((now - moment).total_seconds(), 3))


async def _webhooks(out: Exposition, session: AsyncSession, now: datetime) -> None:
    by_status = await session.exec(
        select(DownstreamSystem.name, Delivery.status, func.count())
        .select_from(Delivery)
        .join(DownstreamSystem, col(Delivery.system_id) == col(DownstreamSystem.id))
        .group_by(col(DownstreamSystem.name), col(Delivery.status))
    )
    out.family(
        "privacy_webhook_deliveries",
        "gauge",
        "Webhooks to downstream systems by system and delivery status (pending/sending = backlog).",
        (({"system": name, "status": status}, n) for name, status, n in by_status.all()),
    )
    overdue = await session.exec(
        select(DownstreamSystem.name, func.count())
        .select_from(Delivery)
        .join(DownstreamSystem, col(Delivery.system_id) == col(DownstreamSystem.id))
        .join(PrivacyRequest, col(Delivery.request_id) == col(PrivacyRequest.id))
        .where(
            col(Delivery.status) != DeliveryStatus.CANCELLED,
            col(Delivery.answer_due_at) < now,
            or_(col(Delivery.answer).is_(None), col(Delivery.answer).not_in([a.value for a in FINAL])),
            col(PrivacyRequest.status).in_([s.value for s in OPEN]),
        )
        .group_by(col(DownstreamSystem.name))
    )
    out.family(
        "privacy_webhook_answers_overdue",
        "gauge",
        "Systems past their answer date on open requests.",
        (({"system": name}, n) for name, n in overdue.all()),
    )
    attempts = await session.exec(
        select(DownstreamSystem.name, DeliveryAttempt.outcome, func.count())
        .select_from(DeliveryAttempt)
        .join(DownstreamSystem, col(DeliveryAttempt.system_id) == col(DownstreamSystem.id))
        .group_by(col(DownstreamSystem.name), col(DeliveryAttempt.outcome))
    )
    out.family(
        "privacy_webhook_attempts_total",
        "counter",
        "Webhook POSTs by system and outcome "
        "(delivered, http_error, refused_address, timeout, tls_error, network_error, unsendable).",
        (({"system": name, "outcome": outcome}, n) for name, outcome, n in attempts.all()),
    )
    duration = col(DeliveryAttempt.duration_ms)
    latency = await session.exec(
        select(
            DownstreamSystem.name,
            func.count(),
            func.coalesce(func.sum(duration), 0.0),
            *(func.sum(case((duration <= bound * 1000, 1), else_=0)) for bound in BUCKETS),
        )
        .select_from(DeliveryAttempt)
        .join(DownstreamSystem, col(DeliveryAttempt.system_id) == col(DownstreamSystem.id))
        .where(col(DeliveryAttempt.outcome) != "unsendable")
        .group_by(col(DownstreamSystem.name))
    )
    name = "privacy_webhook_latency_seconds"
    out.family(name, "histogram", "Time from POST to the receiver's answer (or timeout).", [])
    for row in latency.all():
        system, count, total = row[0], row[1], row[2]
        cumulative: tuple[int | None, ...] = tuple(row[3:])
        for bound, within in zip(BUCKETS, cumulative, strict=True):
            out.sample(f"{name}_bucket", {"system": system, "le": _number(bound)}, within or 0)
        out.sample(f"{name}_bucket", {"system": system, "le": "+Inf"}, count)
        out.sample(f"{name}_sum", {"system": system}, round(float(total) / 1000, 6))
        out.sample(f"{name}_count", {"system": system}, count)


def _has_table(connection: Connection, name: str) -> bool:
    return inspect(connection).has_table(name)


async def _retention(out: Exposition, session: AsyncSession) -> None:
    # Retention is optional in this code base's history; its runs are read only if the table exists.
    connection = await session.connection()
    if not await connection.run_sync(_has_table, "retention_runs"):
        return
    rows = (await connection.execute(text("SELECT status, dry_run, report, finished_at FROM retention_runs"))).all()
    runs: dict[str, int] = {}
    acted = {"purged": 0, "anonymised": 0, "restricted": 0}
    last_success: datetime | None = None
    for status, dry_run, report, finished_at in rows:
        runs[status] = runs.get(status, 0) + 1
        if dry_run:
            continue
        if status == "completed" and finished_at is not None:
            finished = _aware(finished_at)
            last_success = finished if last_success is None else max(last_success, finished)
        if isinstance(report, str):
            report = json.loads(report)
        totals = (report or {}).get("totals") or {}
        for action in acted:
            value = totals.get(action, 0)
            acted[action] += value if isinstance(value, int) else 0
    out.family(
        "privacy_retention_runs",
        "gauge",
        "Retention purge runs by status.",
        (({"status": status}, n) for status, n in sorted(runs.items())),
    )
    out.family(
        "privacy_retention_rows_total",
        "counter",
        "Rows acted on by real (not dry) retention runs, by action.",
        (({"action": action}, n) for action, n in acted.items()),
    )
    out.family(
        "privacy_retention_last_success_timestamp_seconds",
        "gauge",
        "When the last real (not dry) retention purge completed; absent until one has.",
        [] if last_success is None else [({}, _timestamp(last_success))],
    )


def _aware(value: datetime | str) -> datetime:
    """A raw ``finished_at`` (read without the model's column type): SQLite gives text, both may be naive UTC."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Snapshot:
    """The exposition, computed at most once per ``max_age`` seconds however often it is scraped.

    The figures come from GROUP BY scans over whole tables; a cached snapshot bounds what scrapes cost
    (one scan per period per process, concurrent scrapes wait for the same one), and it blurs what a
    single request changes between two scrapes.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._text: str | None = None
        self._taken: datetime | None = None

    async def text(
        self, db: Database, clock: Clock, max_age: float, breach_rules: Callable[[], BreachPolicy | None]
    ) -> str:
        async with self._lock:
            now, taken = clock.now(), self._taken
            if self._text is not None and taken is not None and 0 <= (now - taken).total_seconds() < max_age:
                return self._text
            out = Exposition()
            async with db.transaction() as session:
                await _requests(out, session, now)
                await _breach_clocks(out, session, now, breach_rules)
                await _outbox(out, session, now)
                await _webhooks(out, session, now)
                await _connection_tasks(out, session)
                await _retention(out, session)
                await _audit(out, session)
            self._text, self._taken = out.render(), now
            return self._text


@get(
    "/metrics",
    tags=["ops"],
    media_type=MediaType.TEXT,
    guards=[operator_guard],
    opt={"scopes": {"metrics:read"}},
    summary="Prometheus metrics (no personal data; an operator key with metrics:read)",
)
async def metrics(request: Request[Any, Any, Any]) -> Response[str]:
    state = request.app.state
    runtime = state.runtime

    def breach_rules() -> BreachPolicy | None:
        try:
            return load_breach_policy(runtime.settings.policy_dir, runtime.policy)
        except BreachPolicyError:
            return None  # the breach routes and the worker log the problems; the 72-hour clock still counts

    snapshot: Snapshot = state.setdefault("metrics_snapshot", Snapshot())
    text = await snapshot.text(state.db, state.clock, runtime.settings.metrics_cache_seconds, breach_rules)
    return Response(text, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

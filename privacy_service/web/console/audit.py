"""The console's audit area: audit search by subject, actor, action and time, and verifying the chain.

The search is the API's ``GET /v1/audit`` (``audit.queries.page`` with an ``AuditFilter``: sealed
events in chain order, keyset on ``seq``) behind a GET form; events are shown as the API shows them
(opaque ids and PII-free detail, nothing decrypted).

Verifying is what ``privacy-service audit verify`` runs (``audit.jobs.verify_and_record``: seal the pending
entries, recompute the chain, store the verdict in ``audit_verifications`` with the operator who ran it as the
actor, ``operator:<id>``), so ``/metrics`` and the dashboard see a console check like the CLI's. A check from
the newest signed checkpoint (what the worker runs daily) covers at most the entries sealed since; a full
check reads the whole chain, which can take minutes on a long log. The request therefore waits at most
:data:`VERIFY_WAIT` seconds: a check still running then carries on in this process (one at a time), records
its verdict when done, and the page says it is running until then.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import structlog
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.response import Redirect
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit.jobs import verify_and_record
from privacy_service.audit.models import AuditVerification
from privacy_service.audit.queries import AuditFilter, page
from privacy_service.audit.schemas import AuditPage
from privacy_service.audit.service import Verification
from privacy_service.clock import as_utc
from privacy_service.errors import InvalidInput
from privacy_service.policy.document import PolicyDocument
from privacy_service.runtime import Runtime
from privacy_service.web.console.access import PAGES, console_guard, signed_in_operator
from privacy_service.web.console.rendering import AnyRequest, console_language, page_context, render
from privacy_service.web.console.sessions import CONSOLE_PATH
from privacy_service.web.i18n import messages

log = structlog.get_logger("privacy_service.console")
AUDIT_PATH = PAGES["audit"].path
PAGE_SIZE = 50
TEXT_MAX = 64  # the API's limit on actor and action (audit_events' column widths)
CURSOR_MAX = 2**63 - 1
VERIFY_WAIT = 10.0  # seconds a verify request waits before the check carries on in the background
RUNNING_KEY = "console_audit_check"  # app.state: the check this process is running, if any
MODES = ("checkpoint", "full")
FILTERS = ("subject", "actor", "action", "since", "until")


@dataclass(frozen=True, slots=True)
class RunningCheck:
    task: asyncio.Task[Verification]
    started_at: datetime
    full: bool


@dataclass(slots=True)
class Search:
    """The form's fields as typed (valid ones only, for re-display), the filter, and each field's problem."""

    values: dict[str, str]
    where: AuditFilter
    after: int | None
    errors: dict[str, str]


def _when(raw: str, policy: PolicyDocument, name: str) -> datetime:
    """A ``datetime-local`` value (the operator's zone, the policy's display zone) or ISO 8601 with an offset."""
    moment = datetime.fromisoformat(raw)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=policy.display_zone)
    return as_utc(moment, name)


def parse_search(params: Any, policy: PolicyDocument, words: dict[str, str]) -> Search:
    """The GET form's query, checked as the API checks it; a bad field is reported, never echoed."""
    values = {name: str(params.get(name) or "").strip() for name in FILTERS}
    errors: dict[str, str] = {}
    subject: uuid.UUID | None = None
    if values["subject"]:
        try:
            subject = uuid.UUID(values["subject"])
        except ValueError:
            errors["subject"] = words["bad_subject"]
    for name in ("actor", "action"):
        if len(values[name]) > TEXT_MAX:
            errors[name] = words["bad_text"].format(limit=TEXT_MAX)
    moments: dict[str, datetime | None] = {"since": None, "until": None}
    for name in moments:
        if values[name]:
            try:
                moments[name] = _when(values[name], policy, name)
            except (ValueError, InvalidInput):
                errors[name] = words["bad_time"]
    since, until = moments["since"], moments["until"]
    if since and until and until <= since:
        errors["until"] = words["bad_range"]
    after: int | None = None
    raw_after = str(params.get("after") or "")
    if raw_after:
        if raw_after.isdigit() and len(raw_after) <= 19 and int(raw_after) <= CURSOR_MAX:
            after = int(raw_after)
        else:
            errors["search-heading"] = words["bad_cursor"]  # no field: the link leads to the search
    for name in errors:
        values.pop(name, None)  # a refused value is not written back into the page
    where = AuditFilter(
        subject_id=subject,
        actor_id=values.get("actor") or None,
        action=values.get("action") or None,
        since=since,
        until=until,
    )
    return Search(values=values, where=where, after=after, errors=errors)


def _next_href(search: Search, cursor: int | None) -> str | None:
    if cursor is None:
        return None
    query = {name: value for name, value in search.values.items() if value}
    return f"{AUDIT_PATH}?{urlencode({**query, 'after': cursor})}"


def _first_href(search: Search) -> str | None:
    if search.after is None:
        return None
    query = {name: value for name, value in search.values.items() if value}
    return f"{AUDIT_PATH}?{urlencode(query)}" if query else AUDIT_PATH


def running_check(request: AnyRequest) -> RunningCheck | None:
    found: RunningCheck | None = request.app.state.get(RUNNING_KEY)
    if found is None or found.task.done():
        return None
    return found


async def latest_verification(session: AsyncSession) -> AuditVerification | None:
    """The newest recorded check (console, CLI or worker): the outcome the page shows."""
    query = select(AuditVerification).order_by(col(AuditVerification.at).desc(), col(AuditVerification.id).desc())
    return (await session.exec(query.limit(1))).first()


def _retrieved(task: asyncio.Task[Verification]) -> None:
    """A check that failed once its request stopped waiting is logged (its kind, never its data); the
    page then shows no new verdict, and the operator can run it again or use the CLI."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("console_audit_check_failed", error=type(exc).__name__)


def _local_input(moment: datetime | None, policy: PolicyDocument) -> str:
    return moment.astimezone(policy.display_zone).strftime("%Y-%m-%dT%H:%M") if moment else ""


async def _audit_page(
    request: AnyRequest, session: AsyncSession, found: Search, results: AuditPage | None
) -> Response[bytes]:
    """The page: the latest verdict, the running check, the search form (with its problems) and the results."""
    policy: PolicyDocument = request.app.state.policy
    language = console_language(request)
    context = page_context(request, language, AUDIT_PATH, "audit")
    values = dict(found.values)
    # A time the operator typed in another form (ISO with an offset) is shown as the field takes it.
    for name in ("since", "until"):
        if values.get(name):
            values[name] = _local_input(getattr(found.where, name), policy)
    context.update(
        title=context["c"]["audit"]["title"],
        values=values,
        errors=found.errors,
        results=results,
        searched=any(found.values.values()) or found.after is not None,
        next_href=_next_href(found, results.next_cursor if results else None),
        first_href=_first_href(found),
        latest=await latest_verification(session),
        running=running_check(request),
        notice=request.query_params.get("verify"),
    )
    status = 422 if found.errors else 200
    return render(request, "console/audit/index.html", context, status_code=status)


class AuditConsole(Controller):
    path = f"{CONSOLE_PATH}/audit"
    include_in_schema = False

    @get("/", guards=[console_guard], opt=PAGES["audit"].opt)
    async def search(self, request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Response[bytes]:
        policy: PolicyDocument = request.app.state.policy
        language = console_language(request)
        found = parse_search(request.query_params, policy, messages(language)["console"]["audit"])
        results: AuditPage | None = None
        if not found.errors:
            results = await page(db_session, found.where, after=found.after, limit=PAGE_SIZE)
        return await _audit_page(request, db_session, found, results)

    @post("/verify", guards=[console_guard], opt=PAGES["audit"].opt)
    async def verify(self, request: AnyRequest) -> Response[Any]:
        """Run the CLI's check (bounded wait; see the module's docstring), then show the page (PRG)."""
        form = await request.form()
        mode = str(form.get("mode") or "checkpoint")
        if mode not in MODES:
            words = messages(console_language(request))["console"]["audit"]
            refused = Search(values={}, where=AuditFilter(), after=None, errors={"mode-checkpoint": words["bad_mode"]})
            # No session is held while the check runs (SQLite's writer lock); this page reads in its own.
            async with request.app.state.db.transaction() as session:
                return await _audit_page(request, session, refused, None)
        if running_check(request) is not None:
            return Redirect(f"{AUDIT_PATH}?verify=busy#verify-heading", status_code=303)
        runtime: Runtime = request.app.state.runtime
        full = mode == "full"
        # The check's record names the operator who ran it (the CLI's says "cli", the worker's "worker").
        operator = signed_in_operator(request).operator.actor
        by = f"{operator.type}:{operator.id}"
        task = asyncio.create_task(verify_and_record(runtime, actor=by, from_checkpoint=not full))
        task.add_done_callback(_retrieved)
        request.app.state[RUNNING_KEY] = RunningCheck(task, request.app.state.clock.now(), full)
        done, _ = await asyncio.wait({task}, timeout=VERIFY_WAIT)
        if not done:
            return Redirect(f"{AUDIT_PATH}?verify=running#verify-heading", status_code=303)
        task.result()  # a failure to check (e.g. the database gone) is an error page, not a verdict
        return Redirect(f"{AUDIT_PATH}?verify=done#verify-heading", status_code=303)

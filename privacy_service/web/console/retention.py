"""The console's retention area: the purge: dry-run preview, a run started and followed live, run reports,
the safety threshold and a forced run with a reason.

A client of the same functions as ``POST /v1/retention/runs``: :func:`retention.jobs.start_run` takes the
run lock and records the run (another run active: :class:`RunActive`, a 409 page, nothing started), then
the run is carried out by ``StartedRun.execute`` after the response, as the API runs it. The preview is the
newest dry run's report (the API's and the CLI's dry run, the same computation), refreshed by starting a dry
run: a GET never plans a purge, which reads every table and takes the run lock. A forced run (the API's
``force``, the CLI's ``--force``) needs a reason here, chosen from a fixed list with an optional case
reference (:mod:`.reasons`: the audit log is permanent, so no free text that could name a person goes
into it); it is recorded as ``console.reason`` with the run's id, beside the run's own
``retention.run.started`` (``forced: true``).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.retention.jobs import RunActive, RunOptions, start_run
from privacy_service.retention.models import RunStatus
from privacy_service.retention.runs import get_run, list_runs
from privacy_service.retention.schemas import RunView
from privacy_service.runtime import Runtime
from privacy_service.web.console.access import PAGES, console_guard, signed_in_operator
from privacy_service.web.console.reasons import ACTION as REASON_ACTION
from privacy_service.web.console.reasons import chosen_reason
from privacy_service.web.console.rendering import (
    CONSOLE_CSP,
    AnyRequest,
    console_language,
    page_context,
    path_id,
    render,
)
from privacy_service.web.console.retention_views import (
    RUNS_SHOWN,
    latest_run,
    progress_document,
    progress_of,
    requested_by,
    rule_rows,
)
from privacy_service.web.console.sessions import CONSOLE_PATH
from privacy_service.web.i18n import messages

BASE = f"{CONSOLE_PATH}/retention"
PAGE = PAGES["retention"]
MODES = ("dry_run", "run", "force")
# Why a purge may go past the safety thresholds: codes, recorded in the audit log as they are.
FORCE_REASONS = ("policy_change_approved", "backlog_after_pause", "thresholds_below_normal", "regulator_or_court")
# The run page's script polls the progress route (fetch is a connection: the console's CSP has none).
LIVE_CSP = CONSOLE_CSP + "; connect-src 'self'"


def _report_context(context: dict[str, Any], request: AnyRequest, run: RunView) -> None:
    rows, quiet = rule_rows(run.report, request.app.state.policy, context["language"])
    context.update(run=run, rows=rows, quiet=quiet, progress=progress_of(run))


async def _index(
    request: AnyRequest,
    session: AsyncSession,
    *,
    after: str | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response[bytes]:
    language = console_language(request)
    context = page_context(request, language, BASE, "retention")
    words = context["c"]["retention"]
    page = await list_runs(session, after=after, limit=RUNS_SHOWN)
    preview = await latest_run(session, dry_run=True)
    last = await latest_run(session, dry_run=False)
    rows, quiet = rule_rows(preview.report, request.app.state.policy, language) if preview else ([], 0)
    context.update(
        title=words["title"],
        r=words,
        runs=page.items,
        next_href=f"{BASE}?{urlencode({'after': page.next_cursor})}" if page.next_cursor else None,
        first_href=BASE if after else None,
        preview=preview,
        rows=rows,
        quiet=quiet,
        last=last,
        errors=errors or {},
        # The override is offered open when the last word on the purge is a refusal.
        force_open=bool(errors) or (last is not None and last.status == RunStatus.REFUSED),
        force_reasons=FORCE_REASONS,
    )
    return render(request, "console/retention/index.html", context, status_code=status_code)


class RetentionConsole(Controller):
    path = BASE
    include_in_schema = False

    @get("/", guards=[console_guard], opt=PAGE.opt)
    async def index(
        self,
        request: AnyRequest,
        db_session: NamedDependency[AsyncSession],
        after: Annotated[str | None, QueryParameter(max_length=120)] = None,
    ) -> Response[bytes]:
        return await _index(request, db_session, after=after)

    @post("/runs", guards=[console_guard], opt=PAGE.opt)
    async def start(self, request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Response[Any]:
        """Start a dry run, a run, or a forced run with its reason; then follow it on its page (PRG)."""
        form = await request.form()
        mode = str(form.get("mode", ""))
        words = messages(console_language(request))["console"]["retention"]
        if mode not in MODES:
            return await _index(request, db_session, errors={"start": words["mode_unknown"]}, status_code=422)
        reason: dict[str, str] | None = None
        if mode == "force":
            reason, errors = chosen_reason(form, FORCE_REASONS, words)
            if errors:
                return await _index(request, db_session, errors=errors, status_code=422)
        runtime: Runtime = request.app.state.runtime
        actor = signed_in_operator(request).operator.actor
        options = RunOptions(dry_run=mode == "dry_run", force=mode == "force", actor=actor)
        try:
            started = await start_run(runtime, options)
        except RunActive as exc:
            return await self._busy(request, exc)
        if reason is not None:
            try:
                async with runtime.db.transaction() as session:
                    audit.record(
                        session,
                        at=runtime.clock.now(),
                        actor=actor,
                        action=REASON_ACTION,
                        detail={"for": "retention.run.started", "run_id": str(started.run_id), **reason},
                    )
            except BaseException:
                # No forced run without its reason on record: it never starts (a later run marks its row
                # interrupted, as for a run whose process died).
                await started.lock.release()
                raise
        return Redirect(f"{BASE}/runs/{started.run_id}", status_code=303, background=BackgroundTask(started.execute))

    async def _busy(self, request: AnyRequest, exc: RunActive) -> Response[bytes]:
        language = console_language(request)
        context = page_context(request, language, BASE, "retention")
        words = context["c"]["retention"]
        active = exc.extra.get("active_run_id")
        context.update(title=words["busy_title"], r=words, active=active)
        return render(request, "console/retention/busy.html", context, status_code=409)

    @get("/runs/{run_id:str}", guards=[console_guard], opt=PAGE.opt)
    async def run(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], run_id: FromPath[str]
    ) -> Response[bytes]:
        found = await get_run(db_session, path_id(run_id))
        language = console_language(request)
        context = page_context(request, language, f"{BASE}/runs/{found.id}", "retention")
        words = context["c"]["retention"]
        context.update(
            title=words["run_title_dry" if found.dry_run else "run_title"],
            r=words,
            requester=await requested_by(db_session, found),
            errors={},
            force_reasons=FORCE_REASONS,
        )
        _report_context(context, request, found)
        return render(request, "console/retention/run.html", context, csp=LIVE_CSP)

    @get("/runs/{run_id:str}/progress", guards=[console_guard], opt=PAGE.opt)
    async def progress(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], run_id: FromPath[str]
    ) -> Response[dict[str, Any]]:
        """What the run page's script polls while the run is going (the page itself works without it)."""
        found = await get_run(db_session, path_id(run_id))
        words = messages(console_language(request))["console"]["retention"]
        return Response(progress_document(found, words), headers={"Cache-Control": "no-store"})

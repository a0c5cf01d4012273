"""The console's subjects area: look up a subject by e-mail, phone or external id (audited as a read); a subject's
records, kept data, legal holds and erasure.

Thin controllers over the services the API calls, with the signed-in operator as the actor, so the audit log
records a console action as it records the API's: the lookup is ``SubjectService.lookup`` (POST, so the identifier
never reaches a URL, a log or the browser's history), the page is ``SubjectService.read`` / ``list_records`` /
``HoldService.list`` (each audited as the API's GETs are), holds are ``HoldService.place`` / ``release``.
Erasure is a data subject's erasure: ``DsrService.file_erasure`` files an erasure request for the subject,
approved at once by the operator, so the same processing runs (a legal hold or duty keeps, downstream systems
and connection tasks are queued, the recipients to tell are in the request's result, shown on its page).
Each action needs the scopes of its API routes (erasure: ``subjects:write`` and ``requests:manage``).

Reasons for a release or an erasure are picked from a fixed list (with an optional case reference), never free
text, because they go into the permanent audit log (``console.reason``) beside the service's own event.
The page's scopes are declared in ``access.PAGES["subjects"]``.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.dsr.routes import kick_outbox
from privacy_service.errors import Conflict, Gone, InvalidInput, NotFound
from privacy_service.retention.models import LegalHold
from privacy_service.subjects.models import Subject
from privacy_service.subjects.service import IDENTIFIERS
from privacy_service.web.console.access import PAGES, console_guard, console_opt, signed_in_operator
from privacy_service.web.console.rendering import AnyRequest, console_language, page_context, path_id, render
from privacy_service.web.console.requests import QUEUE_PATH as REQUESTS_PATH
from privacy_service.web.console.requests import request_service
from privacy_service.web.console.sessions import CONSOLE_PATH
from privacy_service.web.console.subjects_forms import (
    ERASE_REASONS,
    RELEASE_REASONS,
    hold_form,
    lookup_form,
    reason_form,
)
from privacy_service.web.console.subjects_view import (
    hold_service,
    subject_page,
    subject_service,
)

BASE = f"{CONSOLE_PATH}/subjects"
READ = PAGES["subjects"].opt  # subjects:read, as POST /v1/subjects/lookup and GET /v1/subjects/{id}
WRITE = console_opt("subjects:write")  # as POST/DELETE /v1/subjects/{id}/holds and DELETE /v1/subjects/{id}
# Erasure files a request and approves it: DELETE /v1/subjects/{id}'s scope and the request decisions' scope.
ERASE = console_opt("subjects:write", "requests:manage")
RECORDS_PER_PAGE = 50


def _context(request: AnyRequest, title_key: str, path: str) -> dict[str, Any]:
    context = page_context(request, console_language(request), path, "subjects")
    s = context["c"]["subjects"]
    scopes = context["scopes"]
    context.update(s=s, title=s[title_key], write="subjects:write" in scopes)
    context.update(erase=ERASE["console_scopes"] <= scopes)
    return context


async def _subject_row(db_session: AsyncSession, subject_id: uuid.UUID) -> Subject:
    subject = await db_session.get(Subject, subject_id)
    if subject is None:
        raise NotFound("no subject with this id")
    return subject


def _reason_audit(
    request: AnyRequest, db_session: AsyncSession, subject_id: uuid.UUID, action: str, reason: dict[str, str]
) -> None:
    """The console's reason for an action, beside the service's own event (codes and a case number only)."""
    audit.record(
        db_session,
        at=request.app.state.clock.now(),
        actor=signed_in_operator(request).operator.actor,
        action="console.reason",
        subject_id=subject_id,
        request_id=request.scope.get("state", {}).get("request_id"),
        detail={"for": action, **reason},
    )


class SubjectsConsole(Controller):
    path = BASE
    include_in_schema = False

    # -- look-up ---------------------------------------------------------------------------------

    @get("/", guards=[console_guard], opt=READ)
    async def index(self, request: AnyRequest) -> Response[bytes]:
        context = _context(request, "title", BASE)
        context.update(kinds=IDENTIFIERS, chosen="email", not_found=False)
        return render(request, "console/subjects/index.html", context)

    @post("/lookup", guards=[console_guard], opt=READ)
    async def lookup(self, request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Response[Any]:
        context = _context(request, "title", BASE)
        s = context["s"]
        form = await request.form()
        kind, value, errors = lookup_form(form, s)
        context.update(kinds=IDENTIFIERS, chosen=kind if kind in IDENTIFIERS else "email", not_found=False)
        if not errors:
            try:
                found = await subject_service(request, db_session).lookup(kind, value)
            except InvalidInput:
                # The service's message names the identifier's problem, never shown: one generic line.
                errors = {"value": s["errors"]["value_invalid"]}
            else:
                if found:
                    return Redirect(f"{BASE}/{found[0].id}", status_code=303)
                context.update(not_found=True)
                return render(request, "console/subjects/index.html", context)
        context.update(errors=errors)
        return render(request, "console/subjects/index.html", context, status_code=422)

    # -- a subject's page ------------------------------------------------------------------------

    @get("/{subject_ref:str}", guards=[console_guard], opt=READ)
    async def subject(
        self,
        request: AnyRequest,
        db_session: NamedDependency[AsyncSession],
        subject_ref: FromPath[str],
        after: FromQuery[uuid.UUID | None] = None,
        done: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        subject_id = path_id(subject_ref)
        context = _context(request, "subject_title", f"{BASE}/{subject_id}")
        language = context["language"]
        page = await subject_page(
            request, db_session, subject_id, after=after, limit=RECORDS_PER_PAGE, language=language
        )
        context.update(page, done=done if done in context["s"]["done"] else None)
        return render(request, "console/subjects/subject.html", context)

    # -- legal holds -----------------------------------------------------------------------------

    @get("/{subject_ref:str}/holds/new", guards=[console_guard], opt=WRITE)
    async def hold_new(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], subject_ref: FromPath[str]
    ) -> Response[bytes]:
        subject_id = path_id(subject_ref)
        await _subject_row(db_session, subject_id)
        context = _context(request, "hold_title", f"{BASE}/{subject_id}/holds/new")
        context.update(subject_id=subject_id, form={})
        return render(request, "console/subjects/hold.html", context)

    @post("/{subject_ref:str}/holds", guards=[console_guard], opt=WRITE)
    async def hold_place(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], subject_ref: FromPath[str]
    ) -> Response[Any]:
        subject_id = path_id(subject_ref)
        context = _context(request, "hold_title", f"{BASE}/{subject_id}/holds/new")
        body, errors = hold_form(await request.form(), context["s"], request.app.state.policy.display_zone)
        if body is not None:
            try:
                await hold_service(request, db_session).place(subject_id, body)
            except InvalidInput:
                errors = {"until": context["s"]["errors"]["until_past"]}
            else:
                return Redirect(f"{BASE}/{subject_id}?done=hold_placed", status_code=303)
        await _subject_row(db_session, subject_id)
        # The reason is not filled back in: it may name people, and is only ever kept sealed.
        context.update(subject_id=subject_id, errors=errors)
        return render(request, "console/subjects/hold.html", context, status_code=422)

    async def _hold(self, db_session: AsyncSession, subject_id: uuid.UUID, hold_id: uuid.UUID) -> LegalHold:
        hold = await db_session.get(LegalHold, hold_id)
        if hold is None or hold.subject_id != subject_id:
            raise NotFound("no hold with this id for this subject")
        return hold

    @get("/{subject_ref:str}/holds/{hold_ref:str}/release", guards=[console_guard], opt=WRITE)
    async def hold_release_form(
        self,
        request: AnyRequest,
        db_session: NamedDependency[AsyncSession],
        subject_ref: FromPath[str],
        hold_ref: FromPath[str],
    ) -> Response[bytes]:
        subject_id = path_id(subject_ref)
        hold_id = path_id(hold_ref)
        hold = await self._hold(db_session, subject_id, hold_id)
        path = f"{BASE}/{subject_id}/holds/{hold_id}/release"
        context = _context(request, "release_title", path)
        context.update(subject_id=subject_id, hold=hold, reasons=RELEASE_REASONS)
        return render(request, "console/subjects/release.html", context)

    @post("/{subject_ref:str}/holds/{hold_ref:str}/release", guards=[console_guard], opt=WRITE)
    async def hold_release(
        self,
        request: AnyRequest,
        db_session: NamedDependency[AsyncSession],
        subject_ref: FromPath[str],
        hold_ref: FromPath[str],
    ) -> Response[Any]:
        subject_id = path_id(subject_ref)
        hold_id = path_id(hold_ref)
        path = f"{BASE}/{subject_id}/holds/{hold_id}/release"
        context = _context(request, "release_title", path)
        reason, errors = reason_form(await request.form(), context["s"], RELEASE_REASONS, confirm=None)
        hold = await self._hold(db_session, subject_id, hold_id)
        if reason is not None:
            try:
                await hold_service(request, db_session).release(subject_id, hold_id)
            except Conflict:
                # As the API's 409: released already (by someone else meanwhile), nothing to do.
                context.update(subject_id=subject_id, hold=hold, reasons=RELEASE_REASONS)
                context.update(errors={"reason": context["s"]["errors"]["already_released"]})
                return render(request, "console/subjects/release.html", context, status_code=409)
            else:
                _reason_audit(request, db_session, subject_id, "hold.released", {"hold_id": str(hold_id), **reason})
                return Redirect(f"{BASE}/{subject_id}?done=hold_released", status_code=303)
        context.update(subject_id=subject_id, hold=hold, reasons=RELEASE_REASONS, errors=errors)
        return render(request, "console/subjects/release.html", context, status_code=422)

    # -- erasure ---------------------------------------------------------------------------------

    @get("/{subject_ref:str}/erase", guards=[console_guard], opt=ERASE)
    async def erase_form(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], subject_ref: FromPath[str]
    ) -> Response[bytes]:
        subject_id = path_id(subject_ref)
        subject = await _subject_row(db_session, subject_id)
        if subject.erased_at is not None:
            raise Gone("this subject has been erased")
        context = _context(request, "erase_title", f"{BASE}/{subject_id}/erase")
        context.update(subject_id=subject_id, reasons=ERASE_REASONS)
        return render(request, "console/subjects/erase.html", context)

    @post("/{subject_ref:str}/erase", guards=[console_guard], opt=ERASE)
    async def erase(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], subject_ref: FromPath[str]
    ) -> Response[Any]:
        subject_id = path_id(subject_ref)
        subject = await _subject_row(db_session, subject_id)
        if subject.erased_at is not None:
            # As the GET form: gone, and nothing recorded (no reason row for an erasure that cannot happen).
            raise Gone("this subject has been erased")
        context = _context(request, "erase_title", f"{BASE}/{subject_id}/erase")
        reason, errors = reason_form(await request.form(), context["s"], ERASE_REASONS, confirm=str(subject_id))
        if reason is None:
            context.update(subject_id=subject_id, reasons=ERASE_REASONS, errors=errors)
            return render(request, "console/subjects/erase.html", context, status_code=422)
        # A data subject's erasure, filed for the subject and approved by this operator at once: the same
        # processing (vault, downstream systems, connection tasks, recipients to tell, mail, history).
        filed = await request_service(request, db_session).file_erasure(subject_id)
        _reason_audit(request, db_session, subject_id, "subject.erase", {"request": str(filed.id), **reason})
        # The request's page shows the outcome: what was erased and kept, the systems still to answer and the
        # recipients to tell (Art. 19); the mail goes once the transaction has committed.
        return Redirect(f"{REQUESTS_PATH}/{filed.id}?done=erased", status_code=303, background=kick_outbox(request))

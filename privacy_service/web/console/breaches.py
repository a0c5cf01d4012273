"""The console's breaches area: the incident list and an incident's workspace: facts, ENISA assessment,
decisions, the 72 h clock, the Art. 33 document, subject notifications, the register.

A thin client of ``breaches.service.BreachService``, built exactly as the API builds it
(``breaches.routes``) but with the signed-in operator as the actor, so every action is the API's own call,
with its rules, its versions and its audit events. Forms become the API's bodies in
``breaches_forms`` (the same ``schemas`` structs validate them). A body the schema or the service refuses
is shown on the workspace with the service's status (422 bad input, 409 not allowed now) and the
transaction rolled back: nothing of a refused action is kept. Every route needs ``breaches:manage``,
the scope of every ``/v1/breaches`` route.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal
from urllib.parse import quote

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, PathParameter, QueryParameter
from litestar.response import Redirect
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.breaches.clocks import authority_clock
from privacy_service.breaches.flows import ACTIONS, Status
from privacy_service.breaches.messaging import category_names, render_authority_notice
from privacy_service.breaches.routes import breach_rules, breach_service_for
from privacy_service.breaches.service import BreachService
from privacy_service.errors import Conflict, InvalidInput
from privacy_service.web.console import breaches_forms as forms
from privacy_service.web.console.access import PAGES, console_guard, signed_in_operator
from privacy_service.web.console.rendering import AnyRequest, console_language, page_context, path_id, render
from privacy_service.web.console.sessions import CONSOLE_PATH

BASE = f"{CONSOLE_PATH}/breaches"
OPT = PAGES["breaches"].opt  # breaches:manage, as every /v1/breaches route
LIST_LIMIT = 25
RECIPIENTS_LIMIT = 100
DOCUMENT_STYLESHEET = "/static/breach-document.css"
_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def _service(request: AnyRequest, session: AsyncSession) -> BreachService:
    """The API's service (``breaches.routes.breach_service_for``) acting as the signed-in operator."""
    return breach_service_for(request, session, signed_in_operator(request).operator.actor)


def _hours(seconds: int | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 1)


class Posted:
    """What a refused form sent, to show it again (other forms show the stored values)."""

    def __init__(self, name: str | None = None, form: forms.Form | None = None) -> None:
        self.name, self.form = name, form

    def value(self, form_name: str, field: str, default: Any = "") -> Any:
        if self.form is not None and self.name == form_name:
            return self.form.text(field) or ""
        return "" if default is None else default

    def values(self, form_name: str, field: str, default: list[str]) -> list[str]:
        if self.form is not None and self.name == form_name:
            return self.form.all(field)
        return default


def _other_languages(request: AnyRequest) -> list[str]:
    """The policy's languages the incident's texts may be translated into (its own texts are English)."""
    return [code for code in request.app.state.policy.languages if code != "en"]


def _choices(request: AnyRequest, language: str) -> dict[str, Any]:
    """What the facts forms offer: the policy's categories in its own words and breach.yaml's data types."""
    rules = breach_rules(request.app.state)
    return {
        "natures": forms.NATURES,
        "categories": category_names(request.app.state.policy, list(rules.enisa.data_categories), language),
        "data_types": [{"key": key, "name": rules.data_type_name(key, language)} for key in rules.enisa.taxonomy],
        "flags": forms.FLAGS,
        "texts": forms.TEXTS,
        "translated": forms.TRANSLATED,
        "other_languages": _other_languages(request),
    }


class BreachesConsole(Controller):
    path = BASE
    include_in_schema = False

    # -- the register ---------------------------------------------------------------------------

    async def _list(
        self,
        request: AnyRequest,
        db_session: AsyncSession,
        *,
        status: str | None = None,
        after: str | None = None,
        status_code: int = 200,
        posted: Posted | None = None,
        errors: dict[str, str] | None = None,
    ) -> Response[bytes]:
        service = _service(request, db_session)
        rows, cursor = await service.register_rows(status=status, band=None, after=after, limit=LIST_LIMIT)
        now = request.app.state.clock.now()
        clocks = [authority_clock(row, now) for row in rows]
        language = console_language(request)
        context = page_context(request, language, BASE, "breaches")
        b = context["c"]["breaches"]
        query = f"?status={status}&" if status else "?"
        context.update(
            title=b["title"],
            b=b,
            items=[(row, clock, _hours(clock.seconds_left)) for row, clock in zip(rows, clocks, strict=True)],
            statuses=[s.value for s in Status],
            status=status,
            next_href=f"{BASE}{query}after={quote(cursor)}" if cursor else None,
            first_href=f"{BASE}{query.rstrip('&?')}" if after else None,
            posted=posted or Posted(),
            errors=_labelled(errors or {}, b),
            **_choices(request, language),
        )
        return render(request, "console/breaches/list.html", context, status_code=status_code)

    @get("/", guards=[console_guard], opt=OPT)
    async def register_page(
        self,
        request: AnyRequest,
        db_session: NamedDependency[AsyncSession],
        status: FromQuery[Status | None] = None,
        after: Annotated[str | None, QueryParameter(max_length=100)] = None,
    ) -> Response[bytes]:
        return await self._list(request, db_session, status=status, after=after)

    @post("/", guards=[console_guard], opt=OPT)
    async def record(self, request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Response[Any]:
        """Record an incident (``POST /v1/breaches``): it is open and its clock runs from ``aware_at``."""
        form = forms.Form(await request.form())
        zone = request.app.state.policy.display_zone
        try:
            body = forms.create_body(form, zone, _other_languages(request))
            breach = await _service(request, db_session).create(body)
        except (forms.FormProblem, InvalidInput, Conflict) as problem:
            await db_session.rollback()
            errors, status_code = _problem(problem, "record")
            return await self._list(
                request, db_session, status_code=status_code, posted=Posted("record", form), errors=errors
            )
        return Redirect(f"{BASE}/{breach.id}", status_code=303)

    @get("/register.csv", guards=[console_guard], opt=OPT)
    async def register_csv(self, request: AnyRequest, db_session: NamedDependency[AsyncSession]) -> Response[str]:
        """The same CSV as ``GET /v1/breaches/register.csv`` (same service call, same headers)."""
        return Response(
            await _service(request, db_session).register_csv(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="breach-register.csv"', "Cache-Control": "no-store"},
        )

    # -- an incident's workspace ----------------------------------------------------------------

    async def _workspace(
        self,
        request: AnyRequest,
        db_session: AsyncSession,
        breach_id: uuid.UUID,
        *,
        status_code: int = 200,
        posted: Posted | None = None,
        errors: dict[str, str] | None = None,
    ) -> Response[bytes]:
        service = _service(request, db_session)
        view = await service.view(breach_id)
        versions = await service.versions(breach_id)
        rules = service.rules
        language = console_language(request)
        path = f"{BASE}/{breach_id}"
        context = page_context(request, language, path, "breaches")
        b = context["c"]["breaches"]
        zone = request.app.state.policy.display_zone
        targets = [item.key for item in view.categories] + [item.key for item in view.data_types]
        inputs = (view.assessment or {}).get("inputs") or {}
        competent = ((view.assessment or {}).get("authorities") or {}).get("authorities") or []
        authorities = [{"key": a["key"], "name": a["name"]} for a in competent]
        if not any(a["key"] == rules.lead_authority for a in authorities):
            lead = rules.authority(request.app.state.policy, rules.lead_authority)
            authorities.append({"key": rules.lead_authority, "name": lead.name if lead else rules.lead_authority})
        context.update(
            title=view.title,
            b=b,
            view=view,
            path=path,
            hours_left=_hours(view.clock.seconds_left),
            california_hours=_hours(view.california_clock.seconds_left) if view.california_clock else None,
            versions=list(reversed(versions)),
            can={action: Status(view.status) in allowed for action, allowed in ACTIONS.items()},
            posted=posted or Posted(),
            errors=_labelled(errors or {}, b),
            local=lambda moment: forms.local_input(moment, zone),
            inputs=inputs,
            factor_targets=forms.factor_targets(rules, targets),
            levels={
                "ease_of_identification": forms.EASE_LEVELS,
                "confidentiality": forms.CONFIDENTIALITY,
                "integrity": forms.INTEGRITY,
                "availability": forms.AVAILABILITY,
            },
            recipient_trust=forms.RECIPIENT_TRUST,
            recipient_data=forms.RECIPIENT_DATA,
            consequence_choices=[
                {"key": key, "name": item.zh if language == "zh" else item.en}
                for key, item in rules.consequences.items()
            ],
            overrides=forms.OVERRIDES,
            authorities=authorities,
            notice_kinds=forms.NOTICE_KINDS,
            fact_groups=forms.FACT_GROUPS,
            **_choices(request, language),
        )
        return render(request, "console/breaches/workspace.html", context, status_code=status_code)

    @get("/{breach_ref:str}", guards=[console_guard], opt=OPT)
    async def workspace(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], breach_ref: FromPath[str]
    ) -> Response[bytes]:
        breach_id = path_id(breach_ref)
        return await self._workspace(request, db_session, breach_id)

    async def _act(
        self,
        request: AnyRequest,
        db_session: AsyncSession,
        breach_id: uuid.UUID,
        form_name: str,
        action: Callable[[BreachService, forms.Form], Awaitable[Any]],
    ) -> Response[Any]:
        """One workspace action: the API's service call; a refusal is shown on the workspace with the
        service's status and nothing of it kept (the transaction is rolled back)."""
        form = forms.Form(await request.form())
        try:
            await action(_service(request, db_session), form)
        except (forms.FormProblem, InvalidInput, Conflict) as problem:
            await db_session.rollback()
            errors, status_code = _problem(problem, form_name)
            return await self._workspace(
                request, db_session, breach_id, status_code=status_code, posted=Posted(form_name, form), errors=errors
            )
        return Redirect(f"{BASE}/{breach_id}#{form_name}", status_code=303)

    @post("/{breach_ref:str}/facts", guards=[console_guard], opt=OPT)
    async def update_facts(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], breach_ref: FromPath[str]
    ) -> Response[Any]:
        """New facts (``PATCH /v1/breaches/{id}``): a new version with what changed."""
        breach_id = path_id(breach_ref)
        zone = request.app.state.policy.display_zone

        async def act(service: BreachService, form: forms.Form) -> None:
            current = await service.view(breach_id)
            await service.update(breach_id, forms.patch_body(form, zone, current, _other_languages(request)))

        return await self._act(request, db_session, breach_id, "facts", act)

    @post("/{breach_ref:str}/confirm", guards=[console_guard], opt=OPT)
    async def confirm(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], breach_ref: FromPath[str]
    ) -> Response[Any]:
        breach_id = path_id(breach_ref)
        zone = request.app.state.policy.display_zone

        async def act(service: BreachService, form: forms.Form) -> None:
            await service.confirm(breach_id, forms.confirm_body(form, zone))

        return await self._act(request, db_session, breach_id, "confirm", act)

    @post("/{breach_ref:str}/dismiss", guards=[console_guard], opt=OPT)
    async def dismiss(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], breach_ref: FromPath[str]
    ) -> Response[Any]:
        breach_id = path_id(breach_ref)

        async def act(service: BreachService, form: forms.Form) -> None:
            await service.dismiss(breach_id, forms.dismiss_body(form))

        return await self._act(request, db_session, breach_id, "dismiss", act)

    @post("/{breach_ref:str}/assessment", guards=[console_guard], opt=OPT)
    async def assess(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], breach_ref: FromPath[str]
    ) -> Response[Any]:
        """The ENISA assessment and its decisions (``POST .../assessment``), overrides with justifications."""

        breach_id = path_id(breach_ref)

        async def act(service: BreachService, form: forms.Form) -> None:
            view = await service.view(breach_id)
            targets = [item.key for item in view.categories] + [item.key for item in view.data_types]
            await service.assess(breach_id, forms.assessment_body(form, targets))

        return await self._act(request, db_session, breach_id, "assessment", act)

    @post("/{breach_ref:str}/authority-notification", guards=[console_guard], opt=OPT)
    async def notify_authority(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], breach_ref: FromPath[str]
    ) -> Response[Any]:
        """Record the notification to the supervisory authority (Art. 33); its document is then linked."""
        breach_id = path_id(breach_ref)
        zone = request.app.state.policy.display_zone

        async def act(service: BreachService, form: forms.Form) -> None:
            await service.notify_authority(breach_id, forms.authority_body(form, zone))

        return await self._act(request, db_session, breach_id, "authority", act)

    @get("/{breach_ref:str}/authority-notifications/{seq:int}", guards=[console_guard], opt=OPT)
    async def authority_document(
        self,
        request: AnyRequest,
        db_session: NamedDependency[AsyncSession],
        breach_ref: FromPath[str],
        seq: Annotated[int, PathParameter(ge=1, le=1_000_000)],
        lang: FromQuery[Literal["en", "zh"]] = "en",
    ) -> Response[str]:
        """The Art. 33(3) document the API serves (``?format=html``), opened with the session instead of a
        bearer key, plus a print stylesheet. Its own inline style is allowed by its hash alone."""
        breach_id = path_id(breach_ref)
        notice = await _service(request, db_session).authority_notice(breach_id, seq)
        text = render_authority_notice(notice.content, request.app.state.policy, lang, "html")
        hashes = " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()}'"
            for style in _STYLE.findall(text)
        )
        link = f'<link rel="stylesheet" href="{DOCUMENT_STYLESHEET}">'
        text = text.replace("</head>", f"{link}\n</head>", 1)
        csp = (
            f"default-src 'none'; style-src 'self' {hashes}; img-src 'self'; form-action 'none'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        return Response(
            text,
            media_type="text/html",
            headers={"Content-Language": lang, "Content-Security-Policy": csp, "Cache-Control": "no-store"},
        )

    @post("/{breach_ref:str}/subject-notifications", guards=[console_guard], opt=OPT)
    async def notify_subjects(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], breach_ref: FromPath[str]
    ) -> Response[Any]:
        """Queue the notice to every affected person (Art. 34), sent by the worker in batches."""

        breach_id = path_id(breach_ref)

        async def act(service: BreachService, form: forms.Form) -> None:
            await service.request_subject_notifications(breach_id)

        return await self._act(request, db_session, breach_id, "subjects", act)

    @get("/{breach_ref:str}/recipients", guards=[console_guard], opt=OPT)
    async def recipients(
        self,
        request: AnyRequest,
        db_session: NamedDependency[AsyncSession],
        breach_ref: FromPath[str],
        after: FromQuery[uuid.UUID | None] = None,
    ) -> Response[bytes]:
        """Each person's notice, by subject id only (``GET .../subject-notifications/recipients``), in pages."""
        breach_id = path_id(breach_ref)
        service = _service(request, db_session)
        view = await service.view(breach_id)
        page = await service.recipients(breach_id, status=None, after=after, limit=RECIPIENTS_LIMIT)
        language = console_language(request)
        path = f"{BASE}/{breach_id}/recipients"
        context = page_context(request, language, path, "breaches")
        b = context["c"]["breaches"]
        context.update(
            title=b["recipients_title"],
            b=b,
            view=view,
            items=page.items,
            next_href=f"{path}?after={page.next_cursor}" if page.next_cursor else None,
            first_href=path if after else None,
        )
        return render(request, "console/breaches/recipients.html", context)

    @post("/{breach_ref:str}/public-communication", guards=[console_guard], opt=OPT)
    async def public_communication(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], breach_ref: FromPath[str]
    ) -> Response[Any]:
        breach_id = path_id(breach_ref)
        zone = request.app.state.policy.display_zone

        async def act(service: BreachService, form: forms.Form) -> None:
            await service.public_communication(breach_id, forms.public_body(form, zone))

        return await self._act(request, db_session, breach_id, "public", act)

    @post("/{breach_ref:str}/close", guards=[console_guard], opt=OPT)
    async def close(
        self, request: AnyRequest, db_session: NamedDependency[AsyncSession], breach_ref: FromPath[str]
    ) -> Response[Any]:
        """Close: the service refuses (409) while a duty is open."""

        breach_id = path_id(breach_ref)

        async def act(service: BreachService, form: forms.Form) -> None:
            await service.close(breach_id, forms.close_body(form))

        return await self._act(request, db_session, breach_id, "close", act)


def _labelled(errors: dict[str, str], b: dict[str, Any]) -> dict[str, str]:
    """Each field's error headed by the field's name in the page's language (the schema's and the
    service's own words follow; they never repeat the value sent)."""
    out = {}
    for key, text in errors.items():
        field = key.split("-", 1)[1] if "-" in key else key
        label = b["level"].get(field) or b["field"].get(field) or b["decision"].get(field.removeprefix("override_"))
        out[key] = b["invalid"].format(label=label, detail=text) if label else b["refused"].format(detail=text)
    return out


def _problem(problem: Exception, form_name: str) -> tuple[dict[str, str], int]:
    """The refused form's errors and status: the schema's (422) or the service's own (422 / 409)."""
    if isinstance(problem, forms.FormProblem):
        return {f"{form_name}-{name}": text for name, text in problem.errors.items()}, 422
    assert isinstance(problem, InvalidInput | Conflict)  # noqa: S101 - the caught kinds
    return {f"{form_name}-form": problem.detail}, problem.status

"""HTTP controllers for breach incidents (operator API, scope ``breaches:manage``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import structlog
from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit.service import Actor
from privacy_service.breaches import schemas
from privacy_service.breaches.flows import Status
from privacy_service.breaches.messaging import render_authority_notice
from privacy_service.breaches.policy import Band, BreachPolicy, BreachPolicyError, load_breach_policy
from privacy_service.breaches.service import BreachService, document_links
from privacy_service.errors import DomainError
from privacy_service.operators.guards import current_operator, operator_guard

MANAGE = {"scopes": {"breaches:manage"}}
log = structlog.get_logger("privacy_service.breaches")


class BreachPolicyUnavailable(DomainError):
    status = 503
    slug = "breach-policy-unavailable"
    title = "The breach policy is missing or invalid"


def breach_rules(state: Any) -> BreachPolicy:
    try:
        return load_breach_policy(state.runtime.settings.policy_dir, state.policy)
    except BreachPolicyError as exc:
        problems = [str(problem) for problem in exc.problems][:20]
    log.error("breach_policy_invalid", problems=problems)
    raise BreachPolicyUnavailable("policies/breach.yaml is missing or invalid: run `privacy-service policy check`")


def breach_service_for(request: Request[Any, Any, Any], db_session: AsyncSession, actor: Actor) -> BreachService:
    """The breach service for one HTTP request, acting as ``actor`` (the API's key or the console's operator)."""
    state = request.app.state
    return BreachService(
        session=db_session,
        keys=state.key_service,
        policy=state.policy,
        rules=breach_rules(state),
        clock=state.clock,
        actor=actor,
        request_id=request.scope.get("state", {}).get("request_id"),
        is_sqlite=state.runtime.settings.is_sqlite,
    )


async def provide_breach_service(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> BreachService:
    return breach_service_for(request, db_session, current_operator(request).actor)


class BreachController(Controller):
    path = "/v1/breaches"
    tags = ["breaches"]  # noqa: RUF012 - Litestar reads these class attributes
    guards = [operator_guard]  # noqa: RUF012
    dependencies = {"service": Provide(provide_breach_service)}  # noqa: RUF012

    @post("/", status_code=HTTP_201_CREATED, opt=MANAGE, summary="Record a breach incident")
    async def create(
        self, data: JSONBody[schemas.BreachCreate], service: NamedDependency[BreachService]
    ) -> schemas.BreachView:
        breach = await service.create(data)
        return await service.view(breach.id)

    @get("/", opt=MANAGE, summary="The breach register: every incident, notified or not, newest first")
    async def register(
        self,
        service: NamedDependency[BreachService],
        status: FromQuery[Status | None] = None,
        band: FromQuery[Band | None] = None,
        after: Annotated[str | None, QueryParameter(max_length=100)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> schemas.BreachPage:
        return await service.register(status=status, band=band, after=after, limit=limit)

    @get("/register.csv", opt=MANAGE, media_type="text/csv", summary="The breach register as CSV")
    async def register_csv(self, service: NamedDependency[BreachService]) -> Response[str]:
        return Response(
            await service.register_csv(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="breach-register.csv"', "Cache-Control": "no-store"},
        )

    @get("/{breach_id:uuid}", opt=MANAGE, summary="One incident: facts, clock, decisions, notifications")
    async def view(self, breach_id: FromPath[uuid.UUID], service: NamedDependency[BreachService]) -> schemas.BreachView:
        return await service.view(breach_id)

    @patch("/{breach_id:uuid}", opt=MANAGE, summary="Record new facts (a new version of the incident)")
    async def update(
        self,
        breach_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.BreachPatch],
        service: NamedDependency[BreachService],
    ) -> schemas.BreachView:
        await service.update(breach_id, data)
        return await service.view(breach_id)

    @get("/{breach_id:uuid}/versions", opt=MANAGE, summary="Every version of the incident (Art. 33(5))")
    async def versions(
        self, breach_id: FromPath[uuid.UUID], service: NamedDependency[BreachService]
    ) -> list[schemas.VersionView]:
        return await service.versions(breach_id)

    @post("/{breach_id:uuid}/confirm", status_code=HTTP_200_OK, opt=MANAGE, summary="A draft is a breach")
    async def confirm(
        self,
        breach_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.ConfirmBody],
        service: NamedDependency[BreachService],
    ) -> schemas.BreachView:
        await service.confirm(breach_id, data)
        return await service.view(breach_id)

    @post("/{breach_id:uuid}/dismiss", status_code=HTTP_200_OK, opt=MANAGE, summary="Not a personal data breach")
    async def dismiss(
        self,
        breach_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.DismissBody],
        service: NamedDependency[BreachService],
    ) -> schemas.BreachView:
        await service.dismiss(breach_id, data)
        return await service.view(breach_id)

    @post("/{breach_id:uuid}/assessment", status_code=HTTP_200_OK, opt=MANAGE, summary="Assess severity (ENISA)")
    async def assess(
        self,
        breach_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.AssessmentBody],
        service: NamedDependency[BreachService],
    ) -> schemas.BreachView:
        await service.assess(breach_id, data)
        return await service.view(breach_id)

    @post(
        "/{breach_id:uuid}/authority-notification",
        status_code=HTTP_201_CREATED,
        opt=MANAGE,
        summary="Record a notification to the supervisory authority; returns its Art. 33(3) content",
    )
    async def notify_authority(
        self,
        breach_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.AuthorityNotificationBody],
        service: NamedDependency[BreachService],
    ) -> schemas.AuthorityNoticeView:
        notice = await service.notify_authority(breach_id, data)
        return schemas.AuthorityNoticeView(notice.seq, notice.kind, notice.late, notice.content, document_links(notice))

    @get("/{breach_id:uuid}/authority-notifications", opt=MANAGE, summary="Notifications to the authority")
    async def authority_notifications(
        self, breach_id: FromPath[uuid.UUID], service: NamedDependency[BreachService]
    ) -> list[schemas.AuthorityNoticeSummary]:
        return (await service.view(breach_id)).authority_notifications

    @get(
        "/{breach_id:uuid}/authority-notifications/{seq:int}",
        opt=MANAGE,
        summary="One notification as JSON, HTML or Markdown, in English or Chinese",
    )
    async def authority_notification(
        self,
        request: Request[Any, Any, Any],
        breach_id: FromPath[uuid.UUID],
        seq: Annotated[int, PathParameter(ge=1, le=1_000_000)],
        service: NamedDependency[BreachService],
        format: FromQuery[Literal["json", "html", "markdown"]] = "json",
        lang: FromQuery[Literal["en", "zh"]] = "en",
    ) -> Response[Any]:
        notice = await service.authority_notice(breach_id, seq)
        if format == "json":
            return Response(notice.content)
        text = render_authority_notice(notice.content, request.app.state.policy, lang, format)
        # Litestar adds "; charset=utf-8" to text/* itself.
        media_type = "text/html" if format == "html" else "text/markdown"
        return Response(text, media_type=media_type, headers={"Content-Language": lang})

    @post(
        "/{breach_id:uuid}/subject-notifications",
        status_code=HTTP_202_ACCEPTED,
        opt=MANAGE,
        summary="Queue a notice to every affected subject (sent by the worker, in batches)",
    )
    async def notify_subjects(
        self,
        breach_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.SubjectNotificationBody],
        service: NamedDependency[BreachService],
    ) -> schemas.SubjectNotificationView:
        await service.request_subject_notifications(breach_id)
        return await service.subject_notification_view(breach_id)

    @get("/{breach_id:uuid}/subject-notifications", opt=MANAGE, summary="Delivery status of the subject notices")
    async def subject_notifications(
        self, breach_id: FromPath[uuid.UUID], service: NamedDependency[BreachService]
    ) -> schemas.SubjectNotificationView:
        return await service.subject_notification_view(breach_id)

    @get(
        "/{breach_id:uuid}/subject-notifications/recipients",
        opt=MANAGE,
        summary="Per-recipient delivery status (subject ids only)",
    )
    async def recipients(
        self,
        breach_id: FromPath[uuid.UUID],
        service: NamedDependency[BreachService],
        status: Annotated[str | None, QueryParameter(max_length=20)] = None,
        after: FromQuery[uuid.UUID | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 200,
    ) -> schemas.RecipientPage:
        return await service.recipients(breach_id, status=status, after=after, limit=limit)

    @post(
        "/{breach_id:uuid}/public-communication",
        status_code=HTTP_200_OK,
        opt=MANAGE,
        summary="Record a public communication (Art. 34(3)(c))",
    )
    async def public_communication(
        self,
        breach_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.PublicCommunicationBody],
        service: NamedDependency[BreachService],
    ) -> schemas.BreachView:
        await service.public_communication(breach_id, data)
        return await service.view(breach_id)

    @post("/{breach_id:uuid}/close", status_code=HTTP_200_OK, opt=MANAGE, summary="Close (only when duties are done)")
    async def close(
        self,
        breach_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.CloseBody],
        service: NamedDependency[BreachService],
    ) -> schemas.BreachView:
        await service.close(breach_id, data)
        return await service.view(breach_id)

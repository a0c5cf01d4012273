"""Public, unauthenticated policy endpoints: the policy in force, published versions, GPC support."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter, QueryParameter
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.errors import NotFound
from privacy_service.openapi import JsonOrJsonLd
from privacy_service.policy import service
from privacy_service.policy.document import PolicyDocument
from privacy_service.policy.pages import (
    FORMATS,
    VERSION_CACHE_CONTROL,
    current_policy_page,
    make_page,
    negotiate_language,
    respond,
)
from privacy_service.policy.render import JSON_MEDIA_TYPE
from privacy_service.policy.schemas import VersionList, VersionSummary
from privacy_service.ratelimit import ip_rate_limit

Lang = Annotated[
    str | None,
    QueryParameter(max_length=35, description="Language, e.g. en or zh; otherwise Accept-Language; default en"),
]
Format = Annotated[
    Literal["json", "jsonld"],
    QueryParameter(name="format", description="json (default) or jsonld (W3C Data Privacy Vocabulary)"),
]
# The current policy is served from memory; the version endpoints read the database.
_RATE_LIMIT = ip_rate_limit("policy_versions")
_RESPONSES = {
    # The handlers return pre-rendered bytes; document what they hold (a JSON object) rather than a string.
    200: ResponseSpec(dict[str, Any], media_type=JSON_MEDIA_TYPE, description="The policy", generate_examples=False),
    304: ResponseSpec(data_container=None, description="Not modified (If-None-Match / If-Modified-Since)"),
}


class PolicyController(Controller):
    path = "/v1/policy"
    tags = ["policy"]  # noqa: RUF012 - Litestar reads these class attributes
    opt = {"public": True}  # noqa: RUF012

    @get(
        "/",
        media_type=JSON_MEDIA_TYPE,
        summary="The privacy policy in force, as JSON or DPV JSON-LD",
        description="Rendered from the policy files this server runs on; cacheable (ETag, Last-Modified).",
        responses=_RESPONSES,
        operation_class=JsonOrJsonLd,
    )
    async def current(
        self, request: Request[Any, Any, Any], lang: Lang = None, format_: Format = "json"
    ) -> Response[bytes]:
        state = request.app.state
        document: PolicyDocument = state.policy
        language = negotiate_language(lang, request.headers.get("accept-language"), document.languages)
        page = current_policy_page(
            state.policy_pages,
            document,
            language,
            format_,
            base_url=state.runtime.settings.base_url,
            now=state.clock.now(),
        )
        return respond(page, request.headers)

    @get("/versions", guards=[_RATE_LIMIT], summary="Every published policy version, newest first")
    async def versions(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> VersionList:
        rows = await service.list_versions(db_session)
        return VersionList(
            current=request.app.state.policy.version,
            items=[
                VersionSummary(
                    version=row.version,
                    effective_date=row.effective_date,
                    published_at=row.published_at,
                    content_hash=row.content_hash,
                    languages=list(row.document["languages"]),
                )
                for row in rows
            ],
        )

    @get(
        "/versions/{version:str}",
        guards=[_RATE_LIMIT],
        media_type=JSON_MEDIA_TYPE,
        summary="One published version, exactly as it was published",
        responses=_RESPONSES,
        operation_class=JsonOrJsonLd,
    )
    async def version(
        self,
        request: Request[Any, Any, Any],
        version: Annotated[str, PathParameter(max_length=64)],
        db_session: NamedDependency[AsyncSession],
        lang: Lang = None,
        format_: Format = "json",
    ) -> Response[bytes]:
        row = await service.get_version(db_session, version)
        snapshot = row.document
        language = negotiate_language(lang, request.headers.get("accept-language"), snapshot["languages"])
        page = make_page(
            snapshot["rendered"][format_][language].encode(),
            FORMATS[format_],
            language=language,
            last_modified=row.published_at,
            cache_control=VERSION_CACHE_CONTROL,
        )
        return respond(page, request.headers)


@get(
    "/.well-known/gpc.json",
    tags=["policy"],
    opt={"public": True, "problems": (404,)},
    summary="Global Privacy Control support, as the policy declares it",
)
async def gpc_json(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    document: PolicyDocument = request.app.state.policy
    if not document.spec.tracking.honours_gpc:
        raise NotFound("this service does not declare support for Global Privacy Control")
    return Response(
        {"gpc": True, "lastUpdate": document.effective_date.isoformat()},
        headers={"Cache-Control": "public, max-age=86400"},
    )

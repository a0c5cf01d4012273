"""HTML routes and the static files they use."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.params import QueryParameter
from litestar.static_files import create_static_files_router

from privacy_service.policy.document import PolicyDocument
from privacy_service.policy.pages import negotiate_language, respond
from privacy_service.web.pages import HTML_MEDIA_TYPE, STATIC, privacy_notice_page

static_files = create_static_files_router(
    path="/static",
    directories=[STATIC],
    cache_control=CacheControlHeader(public=True, max_age=3600),
    include_in_schema=False,
)


@get("/privacy", media_type=HTML_MEDIA_TYPE, tags=["policy"], summary="The privacy notice as an HTML page")
async def privacy_page(
    request: Request[Any, Any, Any],
    lang: Annotated[str | None, QueryParameter(max_length=35, description="Language, e.g. en or zh")] = None,
) -> Response[bytes]:
    state = request.app.state
    document: PolicyDocument = state.policy
    language = negotiate_language(lang, request.headers.get("accept-language"), document.languages)
    page = privacy_notice_page(state.policy_pages, document, language, now=state.clock.now())
    return respond(page, request.headers)

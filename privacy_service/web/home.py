"""``GET /``: where a visitor (or a client) goes from here: the request portal and the privacy notice.

A browser gets a small page in the visitor's language; a client that asks for JSON gets an index of
links. Nothing here reads a credential or touches the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, get
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema

from privacy_service.policy.document import PolicyDocument
from privacy_service.web.i18n import messages, visitor_language
from privacy_service.web.portal import PORTAL_PATH, base_context, remember_language, render

JSON_MEDIA_TYPE = "application/json"
LINKS = {
    "portal": PORTAL_PATH,
    "privacy_notice": "/privacy",
    "policy": "/v1/policy",
    "openapi": "/schema/openapi.json",
    "health": "/healthz",
}


_TEXT = Schema(type=OpenAPIType.STRING)


@dataclass
class HtmlOrJson(Operation):
    """``operation_class`` of ``GET /``: a page for browsers, the index of links for JSON clients."""

    def __post_init__(self) -> None:
        index = Schema(
            type=OpenAPIType.OBJECT,
            required=["service", "controller", "links"],
            properties={
                "service": _TEXT,
                "controller": _TEXT,
                "links": Schema(type=OpenAPIType.OBJECT, additional_properties=_TEXT),
            },
        )
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            ok.content = {"text/html": OpenAPIMediaType(schema=_TEXT), JSON_MEDIA_TYPE: OpenAPIMediaType(schema=index)}


def _wants_json(request: Request[Any, Any, Any]) -> bool:
    """Whether the client prefers JSON; an Accept header Litestar cannot read (``q=1e999`` overflows
    its parser) gets the page, as a header that names neither type does."""
    try:
        return request.accept.best_match(["text/html", JSON_MEDIA_TYPE], default="text/html") == JSON_MEDIA_TYPE
    except (ValueError, OverflowError):
        return False


@get(
    "/",
    opt={"public": True},
    tags=["ops"],
    summary="Where to go: the request portal and the privacy notice",
    operation_class=HtmlOrJson,
)
async def home(request: Request[Any, Any, Any]) -> Response[Any]:
    document: PolicyDocument = request.app.state.policy
    vary = {"Vary": "Accept, Accept-Language, Cookie"}
    if _wants_json(request):
        body = {"service": "privacy-service", "controller": document.spec.controller.name, "links": LINKS}
        return Response(body, media_type=JSON_MEDIA_TYPE, headers={**vary, "Cache-Control": "no-cache"})
    language = visitor_language(request, document.languages)
    context = base_context(request, language, "/")
    context.update(title=messages(language)["home"]["title"])
    return render("home.html", context, headers=vary, cookies=remember_language(request, language))

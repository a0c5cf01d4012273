"""The error half of the OpenAPI document: every operation lists the problem+json answers it can give.

Litestar documents a 400 with its own ``{status_code, detail, extra}`` body, which this service never
sends (errors.py renders RFC 9457 problems). :class:`ProblemResponses` replaces it, in one place, with
the statuses the shared machinery can produce for each operation: validation and domain errors on
``/v1``, authentication and scopes from the route's access declaration (operator keys, subject
tokens, a credential of its own), rate limits for guarded routes, body limits for routes that take a
body. A handler names any others in ``opt={"problems": (...)}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Router, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    SwaggerRenderPlugin,
    YamlRenderPlugin,
)
from litestar.openapi.spec import OpenAPIResponse, Operation
from litestar.plugins import ReceiveRoutePlugin
from litestar.response import Redirect
from litestar.routes import BaseRoute, HTTPRoute

from privacy_service.errors import PROBLEM_JSON

JSON = "application/json"
# Swagger UI as the package ships it (web/static/vendor, `make vendor-swagger-ui`): no CDN.
SWAGGER_UI = "/static/vendor/swagger-ui"
# Starts Swagger UI on the element with id ``api-reference`` from its ``data-openapi-url``: a file of this
# origin, so the page needs no inline script (the console's API reference uses the same one).
SWAGGER_START = "/static/console-api.js"
# Litestar's other viewers load their scripts from CDNs; they are not served, and their paths send the
# browser to the offline Swagger UI (old links and bookmarks keep working).
RETIRED_VIEWERS = ("/redoc", "/elements", "/rapidoc")
JSON_LD = "application/ld+json"

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# What any /v1 use case may raise: malformed or invalid input, unknown ids, state conflicts, erased data.
_DOMAIN = frozenset({400, 404, 409, 410, 422})


class FieldProblem(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details; some problems add members (e.g. ``errors``, ``attempts_left``)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldProblem] | None = None


def problem_statuses(route: HTTPRoute, handler: HTTPRouteHandler) -> set[int]:
    statuses: set[int] = set(handler.opt.get("problems", ()))
    has_body = "data" in handler.parsed_fn_signature.parameters
    if route.path.startswith("/v1/"):
        statuses |= _DOMAIN
    elif route.path_parameters or handler.parsed_fn_signature.parameters.keys() - {"request", "data"}:
        statuses.add(400)
    if has_body and handler.http_methods & _BODY_METHODS:
        statuses |= {400, 413, 415}
    if handler.resolve_guards():
        statuses.add(429)  # every guard here rate-limits (per operator key or per client address)
    # From the route's access declaration (operators.service.ACCESS_KINDS).
    if "scopes" in handler.opt or "subject_token" in handler.opt:
        statuses |= {401, 403}
    if "credential" in handler.opt:
        statuses.add(401)
    return statuses


class ProblemResponses(ReceiveRoutePlugin):
    """Declares the problem+json responses on each handler as its route is registered."""

    __slots__ = ()

    def receive_route(self, route: BaseRoute) -> None:
        if not isinstance(route, HTTPRoute):
            return
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            declared = dict(handler.responses or {})
            for status in sorted(problem_statuses(route, handler)):
                declared.setdefault(
                    status,
                    ResponseSpec(
                        data_container=Problem,
                        media_type=PROBLEM_JSON,
                        description=HTTPStatus(status).phrase,
                        generate_examples=False,
                    ),
                )
            handler.responses = declared


@dataclass
class JsonOrJsonLd(Operation):
    """``operation_class`` for routes that answer JSON or, on request, JSON-LD with the same schema."""

    def __post_init__(self) -> None:
        for status, response in (self.responses or {}).items():
            if status.startswith("2") and isinstance(response, OpenAPIResponse) and response.content:
                if JSON in response.content:
                    response.content.setdefault(JSON_LD, response.content[JSON])


class OfflineSwaggerRenderPlugin(SwaggerRenderPlugin):
    """``/schema/swagger`` (and ``/schema``): Swagger UI from the vendored files under the strict CSP.

    Litestar's page starts Swagger UI with an inline script holding the whole document, which a
    ``script-src 'self'`` policy refuses; this page loads the same files plus a start script of this
    origin, which reads the document from ``/schema/openapi.json``. Nothing on it leaves the origin.
    """

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        title = escape(str(openapi_schema["info"]["title"]))
        document = escape(self.get_openapi_json_route(request))
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{escape(self.css_url)}">
<script src="{escape(self.js_url)}" defer></script>
<script src="{escape(self.standalone_preset_js_url)}" defer></script>
<script src="{SWAGGER_START}" defer></script>
</head>
<body>
<main><div id="api-reference" data-openapi-url="{document}"></div></main>
<noscript><p>{title}: the interactive reference needs JavaScript. The document itself is at
<a href="{document}">{document}</a>.</p></noscript>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        """Instead of Litestar's OAuth2 redirect page (an inline script; no OAuth2 flow is offered here),
        the retired viewers' paths, each a redirect to this page."""
        target = f"{router.path.rstrip('/')}{self.paths[0]}"

        @get(list(RETIRED_VIEWERS), status_code=301, sync_to_thread=False, include_in_schema=False)
        def retired_viewer() -> Redirect:
            return Redirect(target, status_code=301)

        router.register(retired_viewer)


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """The pages under ``/schema``: Swagger UI (``/schema/swagger``, and ``/schema`` itself) from the
    vendored files, the document as JSON and YAML. Redoc, Elements and RapiDoc would each need a
    vendored bundle of their own (megabytes, three more licences and upgrade paths) for a second
    rendering of the same document; their paths redirect to Swagger UI instead."""
    return [
        OfflineSwaggerRenderPlugin(
            js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            css_url=f"{SWAGGER_UI}/swagger-ui.css",
            standalone_preset_js_url=f"{SWAGGER_UI}/swagger-ui-standalone-preset.js",
            favicon="",
            path=["/swagger", "/"],
        ),
        JsonRenderPlugin(),
        YamlRenderPlugin(path=["/openapi.yaml", "/openapi.yml"]),
    ]

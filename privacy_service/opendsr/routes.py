"""The OpenDSR-compatible routes under ``/opendsr`` (unversioned, ``/v2`` and the OpenGDPR ``/v1`` names).

Errors stay RFC 9457 problem+json like everywhere else (one contract, checked by the OpenAPI fuzzer),
and additionally carry OpenDSR's error object as an extension member, so a client written for the
specification reads ``error.code`` / ``error.message`` from the same body. A 422 is answered as 400,
which is what OpenDSR uses for every invalid request.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, Router, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from privacy_service.dsr.routes import kick_outbox, provide_dsr_service
from privacy_service.dsr.service import DsrService
from privacy_service.errors import DomainError, domain_error_handler, http_error_handler, internal_error_handler
from privacy_service.opendsr import schemas
from privacy_service.opendsr.service import OpenDsrService, discovery, processor_domain
from privacy_service.operators.guards import operator_guard

MANAGE = {"scopes": {"requests:manage"}, "problems": (400, 404, 409, 410, 413)}
DOMAIN_HEADER = "X-OpenDSR-Processor-Domain"
REQUESTS = ["/requests", "/v2/requests", "/v1/opengdpr_requests"]
ONE_REQUEST = [f"{path}/{{request_id:uuid}}" for path in REQUESTS]


def _headers(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {DOMAIN_HEADER: processor_domain(request.app.state.runtime.settings)}


def _with_opendsr_error(response: Response[dict[str, Any]], request: Request[Any, Any, Any]) -> Response[Any]:
    body = response.content
    if body.get("status") == 422:
        body["status"] = response.status_code = 400
    reason = str(body.get("type", "")).rsplit("/", 1)[-1]
    body["error"] = {
        "code": body["status"],
        "message": body.get("detail", ""),
        "errors": [{"domain": "opendsr", "reason": reason, "message": body.get("detail", "")}],
    }
    response.headers.update(_headers(request))
    return response


def _domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    return _with_opendsr_error(domain_error_handler(request, exc), request)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return _with_opendsr_error(http_error_handler(request, exc), request)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return _with_opendsr_error(internal_error_handler(request, exc), request)


async def provide_opendsr_service(request: Request[Any, Any, Any], dsr: NamedDependency[DsrService]) -> OpenDsrService:
    state = request.app.state
    return OpenDsrService(dsr=dsr, settings=state.runtime.settings, policy=state.policy)


class OpenDsrController(Controller):
    tags = ["opendsr"]  # noqa: RUF012 - Litestar reads these class attributes
    dependencies = {  # noqa: RUF012
        "service": Provide(provide_opendsr_service),
        "dsr": Provide(provide_dsr_service),
    }

    @post(REQUESTS, status_code=HTTP_201_CREATED, guards=[operator_guard], opt=MANAGE, summary="Submit (OpenDSR)")
    async def submit(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[schemas.OpenDsrRequest],
        service: NamedDependency[OpenDsrService],
    ) -> Response[schemas.Created]:
        created = await service.submit(data, await request.body())
        return Response(
            created, status_code=HTTP_201_CREATED, headers=_headers(request), background=kick_outbox(request)
        )

    @get(ONE_REQUEST, guards=[operator_guard], opt=MANAGE, summary="Status (OpenDSR)")
    async def status(
        self, request: Request[Any, Any, Any], request_id: FromPath[uuid.UUID], service: NamedDependency[OpenDsrService]
    ) -> Response[schemas.StatusView]:
        return Response(await service.status(request_id), status_code=HTTP_200_OK, headers=_headers(request))

    @delete(
        ONE_REQUEST, status_code=HTTP_202_ACCEPTED, guards=[operator_guard], opt=MANAGE, summary="Cancel while pending"
    )
    async def cancel(
        self, request: Request[Any, Any, Any], request_id: FromPath[uuid.UUID], service: NamedDependency[OpenDsrService]
    ) -> Response[schemas.StatusView]:
        return Response(await service.cancel(request_id), status_code=HTTP_202_ACCEPTED, headers=_headers(request))

    @get(
        ["/discovery", "/v2/discovery", "/v1/discovery"],
        opt={"public": True},
        summary="What this processor supports (OpenDSR)",
    )
    async def discovery(self, request: Request[Any, Any, Any]) -> Response[schemas.Discovery]:
        return Response(discovery(request.app.state.runtime.settings), headers=_headers(request))


opendsr_router = Router(
    path="/opendsr",
    route_handlers=[OpenDsrController],
    exception_handlers={
        DomainError: _domain_error,
        HTTPException: _http_error,
        Exception: _internal_error,
    },
)

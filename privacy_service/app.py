"""Application factory: wires settings, runtime objects, routes, middleware and error handling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from litestar import Litestar, Request, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service import __version__
from privacy_service.audit.routes import AuditController
from privacy_service.audit.service import seal_pending
from privacy_service.breaches.routes import BreachController
from privacy_service.breaches.signals import record_integrity_failure
from privacy_service.config import Settings, load_settings
from privacy_service.connections.routes import ConnectionController
from privacy_service.dsr.routes import RequestController
from privacy_service.errors import EXCEPTION_HANDLERS, DomainError
from privacy_service.health import healthz, readyz
from privacy_service.logging import configure_logging
from privacy_service.metrics import metrics
from privacy_service.middleware import add_response_headers, request_context_middleware
from privacy_service.notify.jobs import deliver_outbox_forever, delivers_in
from privacy_service.openapi import ProblemResponses, render_plugins
from privacy_service.opendsr.routes import opendsr_router
from privacy_service.operators.guards import FailedAuthGate, OperatorAuthenticator
from privacy_service.policy.pages import PageCache
from privacy_service.policy.routes import PolicyController, gpc_json
from privacy_service.ratelimit import build_limiter
from privacy_service.retention.routes import HoldController, RetentionRunController
from privacy_service.runtime import Runtime, build_runtime
from privacy_service.subjects.routes import SubjectController
from privacy_service.systems.jobs import deliver_webhooks_forever
from privacy_service.systems.routes import SystemController
from privacy_service.web.console.routes import console_router
from privacy_service.web.home import home
from privacy_service.web.routes import portal_router, privacy_page, static_files

_BODY_METHODS = {"POST", "PUT", "PATCH"}
log = structlog.get_logger("privacy_service.app")


class UnsupportedMediaType(DomainError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


async def provide_db_session(state: State) -> AsyncGenerator[AsyncSession, None]:
    """The request owns the transaction: commit after the handler succeeds, roll back if it raises."""
    async with state.db.transaction() as session:
        yield session


def _body_and_media_type(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bool, str]:
    """Whether a request carries a body (a Transfer-Encoding, or a Content-Length other than 0), and
    its media type: read off the raw headers as Litestar's ``Headers`` gives them (names in any case,
    the first value of each), without building that object for every request."""
    length = media_type = ""
    chunked = False
    for raw_name, raw_value in headers:
        name = raw_name.lower()
        if name == b"content-length" and not length:
            length = raw_value.decode("latin-1") or " "
        elif name == b"content-type" and not media_type:
            media_type = raw_value.decode("latin-1") or " "
        elif name == b"transfer-encoding":
            chunked = True
    has_body = chunked or length.strip() not in ("", "0")
    return has_body, media_type.split(";", 1)[0].strip().lower()


async def require_json(request: Request[Any, Any, Any]) -> None:
    # A bodiless POST (e.g. resend) has no content type to check.
    # The path from the scope as Request.url would give it, without building a URL on every request.
    scope = request.scope
    path = scope.get("root_path", "") + scope["path"]
    if scope["method"] in _BODY_METHODS and path.startswith("/v1/"):
        has_body, media_type = _body_and_media_type(scope["headers"])
        if has_body and media_type != "application/json" and not media_type.endswith("+json"):
            raise UnsupportedMediaType("send the body as application/json")


async def reject_nul(request: Request[Any, Any, Any]) -> None:
    # PostgreSQL text cannot hold NUL: a parameter compared with a text column would fail as a 500.
    # No query string, no parameters: parsing an empty one on every request is wasted work.
    if "\x00" in request.scope["path"] or (
        request.scope.get("query_string")
        and any("\x00" in key or "\x00" in value for key, value in request.query_params.multi_items())
    ):
        raise DomainError("the path and query parameters must not contain NUL characters")


async def check_request(request: Request[Any, Any, Any]) -> None:
    await reject_nul(request)
    await require_json(request)


async def seal_audit_forever(runtime: Runtime) -> None:
    """Link new audit events into the hash chain every few moments (single-flight across replicas)."""
    interval = runtime.settings.audit_seal_interval_seconds
    while True:
        try:
            await seal_pending(runtime.db, runtime.clock, runtime.audit_key)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("audit_seal_failed", error=type(exc).__name__)
        await asyncio.sleep(interval)


class Kick:
    """``state.outbox_kick.set()`` after a commit wakes every delivery loop (mail and webhooks), so a
    slow webhook receiver never delays a verification code."""

    def __init__(self, *events: asyncio.Event) -> None:
        self._events = events

    def set(self) -> None:
        for event in self._events:
            event.set()

    async def after_commit(self) -> None:
        """The background task form: a coroutine runs on the event loop (asyncio events are not
        thread-safe, and Litestar would hand a plain function to a worker thread)."""
        self.set()


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Litestar:
    if runtime is None:
        runtime = build_runtime(settings or load_settings(), create_keyring=False)
    settings = runtime.settings
    configure_logging(settings.log_level, settings.log_json)

    # One limiter for the process's limits (Redis-backed, shared by every process, when configured).
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    limiter = build_limiter(redis_url, prefix=settings.redis_prefix, secret=runtime.derived_secret("ratelimit-keys"))
    outbox_kick = asyncio.Event()
    webhook_kick = asyncio.Event()

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        loops = [
            asyncio.create_task(seal_audit_forever(runtime)),
            asyncio.create_task(deliver_webhooks_forever(runtime, webhook_kick)),
        ]
        if delivers_in(runtime, "api"):  # PRIVACY_OUTBOX_DELIVERY=worker leaves mail to the workers
            loops.append(asyncio.create_task(deliver_outbox_forever(runtime, outbox_kick)))
        try:
            yield
        finally:
            for task in loops:
                task.cancel()
            for task in loops:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await limiter.close()
            await runtime.close()

    return Litestar(
        route_handlers=[
            healthz,
            readyz,
            metrics,
            SubjectController,
            AuditController,
            RequestController,
            SystemController,
            ConnectionController,
            opendsr_router,
            HoldController,
            RetentionRunController,
            BreachController,
            PolicyController,
            gpc_json,
            home,
            privacy_page,
            portal_router(settings, runtime.policy, runtime.derived_secret("csrf")),
            console_router(settings, runtime.derived_secret("csrf")),
            static_files,
        ],
        dependencies={"db_session": Provide(provide_db_session)},
        middleware=[request_context_middleware],
        before_request=check_request,
        before_send=[add_response_headers],
        exception_handlers=EXCEPTION_HANDLERS,
        after_exception=[record_integrity_failure],
        plugins=[ProblemResponses()],
        # Litestar's default logging config would replace the root handler with plain-text lines;
        # privacy_service.logging renders every record (errors are logged by errors.py).
        logging_config=None,
        request_max_body_size=settings.max_body_bytes,
        cors_config=CORSConfig(allow_origins=settings.allowed_origins) if settings.allowed_origins else None,
        openapi_config=OpenAPIConfig(
            title="privacy-service",
            version=__version__,
            description="Encrypted PII vault and privacy-rights service for a digital wallet.",
            # Litestar's own router for /schema, with the access declaration every route carries.
            openapi_router=Router(path="/schema", route_handlers=[], include_in_schema=False, opt={"public": True}),
            render_plugins=render_plugins(),
        ),
        state=State(
            {
                "runtime": runtime,
                "db": runtime.db,
                "key_service": runtime.keys,
                "policy": runtime.policy,
                "clock": runtime.clock,
                # Without Redis the lock-out keeps a bounded table of its own (see FailedAuthGate).
                "authenticator": OperatorAuthenticator(failures=FailedAuthGate(limiter=limiter if redis_url else None)),
                "rate_limiter": limiter,
                "policy_pages": PageCache(),
                "outbox_kick": Kick(outbox_kick, webhook_kick),
            }
        ),
        lifespan=[lifespan],
        debug=False,
    )

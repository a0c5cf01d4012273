"""OpenDSR use cases, mapped onto the native requests (``DsrService``); nothing is stored twice.

Mapping: ``erasure`` -> ``erase``, ``rectification`` (extension) -> ``rectify``; statuses
``pending`` (received ... awaiting_review), ``in_progress`` (processing), ``completed`` (completed,
partially_completed), ``cancelled`` (cancelled, denied, expired, verification_failed).
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec

from privacy_service.config import Settings
from privacy_service.dsr.flows import Status
from privacy_service.dsr.schemas import Changes, RequestView
from privacy_service.dsr.service import DsrService
from privacy_service.errors import DomainError, Forbidden
from privacy_service.opendsr import schemas
from privacy_service.opendsr.models import ControllerBinding
from privacy_service.policy.document import PolicyDocument
from privacy_service.systems.fanout import active_systems
from privacy_service.systems.models import DownstreamSystem

EXTENSION = "privacy-service"
REQUEST_TYPES = {"access": "access", "portability": "portability", "erasure": "erase", "rectification": "rectify"}
# identity_type -> native identity kind; only raw values can be matched (the vault's blind index is keyed).
IDENTITIES = {"email": "email", "controller_customer_id": "external_id"}
STATUSES: dict[str, schemas.RequestStatus] = {
    Status.RECEIVED: "pending",
    Status.AWAITING_VERIFICATION: "pending",
    Status.VERIFIED: "pending",
    Status.AWAITING_REVIEW: "pending",
    Status.PROCESSING: "in_progress",
    Status.COMPLETED: "completed",
    Status.PARTIALLY_COMPLETED: "completed",
    Status.DENIED: "cancelled",
    Status.CANCELLED: "cancelled",
    Status.EXPIRED: "cancelled",
    Status.VERIFICATION_FAILED: "cancelled",
}
NOTE = "identity verified by the submitting controller (OpenDSR)"
# Request types whose answer is the customer's export, and the scope that reading it takes.
EXPORTING = frozenset({"access", "portability"})
EXPORT_SCOPE = "subjects:export"


class InvalidRequest(DomainError):
    """OpenDSR answers every invalid request with 400."""

    status = 400
    slug = "invalid-request"
    title = "The OpenDSR request is not acceptable"


def processor_domain(settings: Settings) -> str:
    return urlsplit(settings.base_url).hostname or "localhost"


@dataclass(slots=True)
class OpenDsrService:
    dsr: DsrService
    settings: Settings
    policy: PolicyDocument

    @property
    def controller_id(self) -> str:
        return self.policy.spec.controller.name

    def _extension(self, body: schemas.OpenDsrRequest) -> dict[str, Any]:
        found = body.extensions or {}
        return found.get(processor_domain(self.settings)) or found.get(EXTENSION) or {}

    async def _controller(self, urls: list[str]) -> DownstreamSystem | None:
        """The registered system the answer goes to: every status_callback_url must be the callback URL
        of a registered system (registering one needs systems:manage), so the answer never goes to an
        address the caller chose freely."""
        if not urls:
            return None
        registered = {system.callback_url: system for system in await active_systems(self.dsr.session)}
        if any(url not in registered for url in urls):
            raise InvalidRequest(
                "status_callback_urls: each must be the callback URL of a registered system (POST /v1/systems); "
                "the answer is sent there, signed with that system's key"
            )
        return registered[urls[0]]

    async def submit(self, body: schemas.OpenDsrRequest, raw: bytes) -> schemas.Created:
        if body.submitted_time.tzinfo is None:
            raise InvalidRequest("submitted_time must be RFC 3339 with a time zone offset")
        controller = await self._controller(list(body.status_callback_urls))
        usable = [i for i in body.subject_identities if i.identity_type in IDENTITIES and i.identity_format == "raw"]
        if not usable:
            raise InvalidRequest(
                "no supported subject identity: send email or controller_customer_id in raw format "
                "(see GET /opendsr/discovery)"
            )
        # An e-mail address first: it is what the customer proved control of with the controller.
        chosen = min(usable, key=lambda i: list(IDENTITIES).index(i.identity_type))
        type_ = REQUEST_TYPES[body.subject_request_type]
        if controller is not None and type_ in EXPORTING and EXPORT_SCOPE not in self.dsr.scopes:
            # The export would leave for a system this caller may have registered itself: the same
            # deliberate grant as downloading it (else requests:manage + systems:manage reads anyone).
            raise Forbidden(
                f"an {body.subject_request_type} request answered to a system delivers the customer's export: "
                f"it needs the scope {EXPORT_SCOPE}"
            )
        changes = None
        if type_ == "rectify":
            raw_changes = self._extension(body).get("changes")
            if raw_changes is None:
                raise InvalidRequest(f"rectification needs extensions.{EXTENSION}.changes (the corrected values)")
            try:
                changes = msgspec.convert(raw_changes, type=Changes)
            except msgspec.ValidationError:
                raise InvalidRequest("extensions changes: not valid rectification changes") from None
        request = await self.dsr.submit_verified(
            request_id=body.subject_request_id,
            type_=type_,
            kind=IDENTITIES[chosen.identity_type],
            value=chosen.identity_value,
            regime=body.regulation,
            changes=changes,
            received_at=body.submitted_time,
            note=NOTE,
        )
        if controller is not None:
            # The answer is queued for the system after this commits (opendsr.jobs.queue_results).
            self.dsr.session.add(
                ControllerBinding(request_id=request.id, system_id=controller.id, created_at=self.dsr.clock.now())
            )
        return schemas.Created(
            controller_id=self.controller_id,
            expected_completion_time=request.due_at,
            received_time=self.dsr.clock.now(),
            encoded_request=base64.b64encode(raw).decode(),
            subject_request_id=request.id,
        )

    def _status(self, view: RequestView) -> schemas.StatusView:
        results_url = None
        if view.export_url is not None:
            results_url = self.settings.base_url.rstrip("/") + view.export_url
        records = (view.result or {}).get("records")
        return schemas.StatusView(
            controller_id=self.controller_id,
            expected_completion_time=view.due_at,
            subject_request_id=view.id,
            request_status=STATUSES[view.status],
            results_url=results_url,
            results_count=records if isinstance(records, int) and results_url else None,
            extensions={
                EXTENSION: {
                    "native_status": view.status,
                    "subject_request_type": view.type,
                    "overdue": view.overdue,
                    "systems": msgspec.to_builtins(view.systems or []),
                }
            },
        )

    async def status(self, request_id: uuid.UUID) -> schemas.StatusView:
        return self._status(await self.dsr.view(request_id))

    async def cancel(self, request_id: uuid.UUID) -> schemas.StatusView:
        """Only while pending: a request already processing cannot be taken back (409)."""
        await self.dsr.cancel(request_id)
        return self._status(await self.dsr.view(request_id))


def discovery(settings: Settings) -> schemas.Discovery:
    return schemas.Discovery(
        api_version=schemas.API_VERSION,
        supported_identities=[schemas.IdentitySupport(kind, "raw") for kind in IDENTITIES],
        supported_subject_request_types=["access", "portability", "erasure"],
        processor_certificate=None,
        extensions={
            EXTENSION: {
                "processor_domain": processor_domain(settings),
                "subject_request_types": ["rectification"],
                "regulations": ["gdpr", "ccpa"],
                "authentication": (
                    "operator API key (Authorization: Bearer psk_..., scope requests:manage; "
                    "subjects:export too for an access or portability request with status_callback_urls)"
                ),
                # The answer to an access request goes, signed, to the registered system named in
                # status_callback_urls (POST /v1/systems), never to whoever holds an operator key.
                "status_callbacks": True,
            }
        },
    )

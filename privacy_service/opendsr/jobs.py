"""Sending an OpenDSR request's answer to the registered controller system that filed it.

Runs before every webhook delivery pass (``systems.jobs.deliver_from_runtime``, in the API and the
worker). For each request bound to a system (``ControllerBinding``) whose export is ready and not yet
queued, the export is built as a download is (its own short transactions; the read is audited as an
export of the subject by the system actor "opendsr") and queued as a webhook to that system: sealed
under the request's key, signed with the system's key and retried like every webhook. Nobody holding
an operator key receives it; an operator key needs subjects:export to download it.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from sqlalchemy import update
from sqlmodel import col, select

from privacy_service.audit.service import Actor
from privacy_service.crypto.service import REQUEST
from privacy_service.dsr.export import json_export
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.dsr.reading import EXPORTABLE
from privacy_service.dsr.service import DsrService
from privacy_service.opendsr.models import ControllerBinding
from privacy_service.opendsr.schemas import API_VERSION
from privacy_service.runtime import Runtime
from privacy_service.systems.fanout import payload_binding
from privacy_service.systems.flows import DeliveryStatus
from privacy_service.systems.models import Delivery, DownstreamSystem

ACTOR = Actor.system("opendsr")
EXTENSION = "privacy-service"
BATCH = 20


class _AlreadyQueued(Exception):
    """Another process queued this answer first: roll back ours."""


async def queue_results(runtime: Runtime, limit: int = BATCH) -> int:
    """Queue the answers owed to controller systems; returns how many were queued."""
    now = runtime.clock.now()
    async with runtime.db.transaction() as session:
        due = await session.exec(
            select(ControllerBinding.request_id)
            .join(PrivacyRequest, col(PrivacyRequest.id) == col(ControllerBinding.request_id))
            .join(DownstreamSystem, col(DownstreamSystem.id) == col(ControllerBinding.system_id))
            .where(
                col(ControllerBinding.results_delivery_id).is_(None),
                col(DownstreamSystem.removed_at).is_(None),
                col(PrivacyRequest.type).in_(["access", "portability"]),
                col(PrivacyRequest.status).in_([status.value for status in EXPORTABLE]),
                col(PrivacyRequest.subject_id).is_not(None),
                col(PrivacyRequest.export_expires_at) > now,
            )
            .order_by(col(ControllerBinding.created_at))
            .limit(limit)
        )
        request_ids = list(due.all())
    queued = 0
    for request_id in request_ids:
        try:
            queued += await _queue_one(runtime, request_id)
        except _AlreadyQueued:
            continue
    return queued


async def _queue_one(runtime: Runtime, request_id: uuid.UUID) -> bool:
    async with runtime.db.transaction() as session:
        dsr = DsrService.for_runtime(runtime, session, ACTOR)
        parts = await dsr.export_parts(request_id)
    export = msgspec.json.decode(b"".join([chunk async for chunk in json_export(runtime.db, runtime.keys, *parts)]))
    now = runtime.clock.now()
    delivery_id = uuid.uuid4()
    async with runtime.db.transaction() as session:
        claimed = await session.exec(
            update(ControllerBinding)
            .where(
                col(ControllerBinding.request_id) == request_id,
                col(ControllerBinding.results_delivery_id).is_(None),
            )
            .values(results_delivery_id=delivery_id)
        )
        if claimed.rowcount != 1:
            raise _AlreadyQueued
        binding = await session.get(ControllerBinding, request_id)
        request = await session.get(PrivacyRequest, request_id)
        assert binding is not None  # noqa: S101 - just claimed
        assert request is not None  # noqa: S101 - the binding cascades with it
        key = await runtime.keys.load_key(session, request_id, REQUEST)
        body = msgspec.json.encode(_body(runtime, request, export, delivery_id))
        session.add(
            Delivery(
                id=delivery_id,
                request_id=request_id,
                system_id=binding.system_id,
                required=False,  # the request is complete; nothing waits for an answer
                status=DeliveryStatus.PENDING,
                next_attempt_at=now,
                payload=key.seal(body, payload_binding(request_id, delivery_id)),
                created_at=now,
                answer_due_at=request.due_at,
            )
        )
    return True


def _body(runtime: Runtime, request: PrivacyRequest, export: dict[str, Any], delivery_id: uuid.UUID) -> dict[str, Any]:
    """An OpenDSR status callback carrying the answer (``results``: the access export)."""
    return {
        "api_version": API_VERSION,
        "controller_id": runtime.policy.spec.controller.name,
        "subject_request_id": str(request.id),
        "subject_request_type": request.type,
        "request_status": "completed",
        "results_count": len(export.get("records", [])),
        "results": export,
        "extensions": {
            EXTENSION: {"kind": "results", "delivery_id": str(delivery_id), "native_status": request.status}
        },
    }

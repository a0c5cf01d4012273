"""OpenDSR 2.0 bodies (opengdpr/OpenDSR ``specification.md``). Unknown members are ignored, as the
specification lets controllers send fields a processor does not use."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

API_VERSION = "2.0"
RequestStatus = Literal["pending", "in_progress", "completed", "cancelled"]


class SubjectIdentity(msgspec.Struct, kw_only=True):
    identity_type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    identity_value: Annotated[str, msgspec.Meta(min_length=1, max_length=320)]
    identity_format: Literal["raw", "sha1", "md5", "sha256"] = "raw"


class OpenDsrRequest(msgspec.Struct, kw_only=True):
    regulation: Literal["gdpr", "ccpa"]
    subject_request_id: uuid.UUID
    # "rectification" is this service's extension (OpenDSR has no such type): the corrected values go
    # in extensions.<processor domain>.changes, shaped like the native rectify "changes".
    subject_request_type: Literal["access", "portability", "erasure", "rectification"]
    submitted_time: datetime
    subject_identities: Annotated[list[SubjectIdentity], msgspec.Meta(min_length=1, max_length=20)]
    api_version: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    # Callback URLs of registered systems (POST /v1/systems) only: the answer to an access request is
    # sent to the first, signed with that system's key (opendsr.jobs). Statuses are polled.
    status_callback_urls: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=2000)]], msgspec.Meta(max_length=10)
    ] = msgspec.field(default_factory=list)
    extensions: dict[str, dict[str, Any]] | None = None


class Created(msgspec.Struct):
    controller_id: str
    expected_completion_time: datetime
    received_time: datetime
    encoded_request: str
    subject_request_id: uuid.UUID
    # OpenDSR signs with an X.509 certificate; this service does not (see the README's deviations).
    processor_signature: str | None = None


class StatusView(msgspec.Struct):
    controller_id: str
    expected_completion_time: datetime
    subject_request_id: uuid.UUID
    request_status: RequestStatus
    api_version: str = API_VERSION
    results_url: str | None = None
    results_count: int | None = None
    extensions: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


class IdentitySupport(msgspec.Struct):
    identity_type: str
    identity_format: str


class Discovery(msgspec.Struct):
    api_version: str
    supported_identities: list[IdentitySupport]
    supported_subject_request_types: list[str]
    processor_certificate: str | None
    extensions: dict[str, dict[str, Any]]

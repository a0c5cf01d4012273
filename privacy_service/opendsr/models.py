"""OpenDSR rows: which registered controller system an OpenDSR request's answer goes to."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, ForeignKey, Uuid
from sqlmodel import Field, SQLModel

from privacy_service.db import UTCDateTime


class ControllerBinding(SQLModel, table=True):
    """An OpenDSR request filed for a registered system (``status_callback_urls``): its answer (the
    export of an access request) is sent there, signed with that system's key, never to a bearer."""

    __tablename__ = "opendsr_requests"

    request_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("dsr_requests.id", ondelete="CASCADE"), primary_key=True)
    )
    system_id: uuid.UUID = Field(foreign_key="systems.id")
    created_at: datetime = Field(sa_type=UTCDateTime)
    # The webhook carrying the answer, once queued (systems.models.Delivery).
    results_delivery_id: uuid.UUID | None = None

"""GET /v1/audit (scope audit:read)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit.queries import AuditFilter, page
from privacy_service.audit.schemas import AuditPage
from privacy_service.clock import as_utc
from privacy_service.operators.guards import operator_guard


class AuditController(Controller):
    path = "/v1/audit"
    tags = ["audit"]  # noqa: RUF012 - Litestar reads these class attributes
    guards = [operator_guard]  # noqa: RUF012

    @get("/", opt={"scopes": {"audit:read"}}, summary="Audit events, filtered, in chain order")
    async def list_events(
        self,
        db_session: NamedDependency[AsyncSession],
        subject: FromQuery[uuid.UUID | None] = None,
        actor: Annotated[str | None, QueryParameter(max_length=64)] = None,
        action: Annotated[str | None, QueryParameter(max_length=64)] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        after: Annotated[int | None, QueryParameter(ge=0, le=2**63 - 1)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> AuditPage:
        since = as_utc(since, "since") if since is not None else None
        until = as_utc(until, "until") if until is not None else None
        where = AuditFilter(subject_id=subject, actor_id=actor, action=action, since=since, until=until)
        return await page(db_session, where, after=after, limit=limit)

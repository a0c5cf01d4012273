"""The dry run of an erasure on the connected databases: per collection, how many rows it would touch.

Nothing is written: the rows are counted (keys only, ``query.count``) along the same traversal the
erasure takes, with the identities and the masking plan the erasure would use: the request's own
tasks' when it has them (captured before the vault erasure), else the customer's identities in the
vault now and the plan the policy gives today. Lines hold names and counts, never a value.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlmodel import col, select

from privacy_service.audit.service import Actor
from privacy_service.connections import probe
from privacy_service.connections.flow import IDENTITY_KINDS, active_connections, datasets, keep_for
from privacy_service.connections.graph import build_plan
from privacy_service.connections.query import TooManyRows, count
from privacy_service.connections.service import ConnectionService
from privacy_service.connections.tasks import ConnectionTask, TaskKind, erasure_plan, identities_binding
from privacy_service.crypto.service import REQUEST
from privacy_service.dsr.models import PrivacyRequest
from privacy_service.errors import NotFound
from privacy_service.runtime import Runtime
from privacy_service.subjects.service import SubjectService

ACTOR = Actor("operator", "dry-run")


@dataclass(frozen=True, slots=True)
class DryRunLine:
    connection: str
    collection: str
    rows: int  # rows the identities lead to in the collection
    touched: int  # rows the erasure would write (mask or delete)
    action: str  # "mask email, phone" | "delete rows" | "none" | the problem, for a connection that failed


async def _plans(
    runtime: Runtime, request: PrivacyRequest
) -> tuple[dict[str, list[str]], dict[uuid.UUID, dict[str, Any]]]:
    """The identities and, per connection, the erasure's targets: from the request's tasks, else now."""
    async with runtime.db.transaction() as session:
        tasks = list(
            (
                await session.exec(
                    select(ConnectionTask).where(
                        col(ConnectionTask.request_id) == request.id, col(ConnectionTask.kind) == TaskKind.ERASE
                    )
                )
            ).all()
        )
        if tasks and tasks[0].identities_ct is not None:
            key = await runtime.keys.load_key(session, request.id, REQUEST)
            raw = key.open(tasks[0].identities_ct, identities_binding(request.id, tasks[0].id))
            identities = msgspec.json.decode(raw, type=dict[str, list[str]])
            return identities, {t.connection_id: dict(t.targets) for t in tasks}
        if request.subject_id is None:
            return {}, {}
        subjects = SubjectService(session, runtime.keys, runtime.policy, runtime.clock, ACTOR)
        subject = await subjects.read(request.subject_id)
        identities = {k: [v] for k in IDENTITY_KINDS if (v := getattr(subject, k)) is not None}
        keep, held = await keep_for(session, subjects, runtime.deadlines, runtime.clock.now(), request.subject_id)
        targets: dict[uuid.UUID, dict[str, Any]] = {}
        found = datasets(runtime.settings.policy_dir)
        for connection in await active_connections(session):
            dataset = found.get(connection.dataset)
            if dataset is not None:
                targets[connection.id] = erasure_plan(dataset, runtime.policy, keep, held=held).targets
        return identities, targets


def _action(fields: dict[str, Any]) -> str:
    if not fields:
        return "none"
    if any(spec["strategy"] == "delete_row" for spec in fields.values()):
        return "delete rows"
    return "mask " + ", ".join(f"{name} ({spec['strategy']})" for name, spec in sorted(fields.items()))


async def dry_run(runtime: Runtime, request_id: uuid.UUID) -> list[DryRunLine]:
    """Per connection and collection: rows found, rows an erasure would touch, and how."""
    async with runtime.db.transaction() as session:
        request = await session.get(PrivacyRequest, request_id)
        if request is None:
            raise NotFound("no request with this id")
        connections = await active_connections(session)
    identities, targets = await _plans(runtime, request)
    lines: list[DryRunLine] = []
    if not identities:
        return lines
    described = datasets(runtime.settings.policy_dir)
    for connection in connections:
        dataset = described.get(connection.dataset)
        if dataset is None or connection.id not in targets:
            continue
        wanted = targets[connection.id]
        async with runtime.db.transaction() as session:
            engine = await ConnectionService(session, runtime.keys, runtime.clock, runtime.settings, ACTOR).engine_for(
                connection
            )
        try:
            async with engine.connect() as conn:
                counts = await count(conn, dataset, build_plan(dataset, sorted(identities)), identities)
        except TooManyRows as exc:
            lines.append(DryRunLine(connection.name, exc.collection, exc.limit, 0, "more rows than the limit"))
            continue
        except (TimeoutError, OSError, DBAPIError, SQLAlchemyError) as exc:
            problem = probe.describe(probe.classify(exc), runtime.settings.connections_task_timeout_seconds)
            lines.append(DryRunLine(connection.name, "-", 0, 0, problem))
            continue
        for name in sorted(counts):
            fields = wanted.get(name, {})
            lines.append(
                DryRunLine(connection.name, name, counts[name], counts[name] if fields else 0, _action(fields))
            )
    return lines

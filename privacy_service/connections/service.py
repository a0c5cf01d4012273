"""Connection registry use cases: add, list, get, remove, test; and the sealed URL and shared engine
that the execution side (tasks, worker) reaches a database with.

Services never commit. The URL is sealed under a data key owned by the connection's id (purpose
``connection``) and opened only to connect: it is never logged, returned or put in an error.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from privacy_service.audit import service as audit
from privacy_service.audit.service import Actor
from privacy_service.clock import Clock
from privacy_service.config import Settings
from privacy_service.connections import probe, schemas
from privacy_service.connections.engines import create_engine, engines
from privacy_service.connections.models import Connection
from privacy_service.connections.targets import allowed_networks, check_target, guard, own_identity
from privacy_service.connections.urls import normalise, target_of
from privacy_service.crypto.fields import Binding, DecryptionFailed
from privacy_service.crypto.service import KeyService, KeyShredded
from privacy_service.errors import Conflict, DataIntegrityError, Gone, InvalidInput, NotFound
from privacy_service.systems.events import emit

if TYPE_CHECKING:
    from fideslang.models import Dataset

PURPOSE = "connection"


def _binding(connection_id: uuid.UUID) -> Binding:
    return Binding("connections", connection_id, None, "url")


def datasets_dir(settings: Settings) -> Path:
    return settings.policy_dir / "datasets"


def wanted_columns(dataset: Dataset) -> dict[str, list[str]]:
    """Collection -> its top-level fields (a nested field lives inside its parent's column)."""
    return {collection.name: [field.name for field in collection.fields] for collection in dataset.collections or []}


def _problem_line(outcome: probe.Outcome) -> str | None:
    """What the row keeps: the problem, with the missing names (schema names, no data) as room allows."""
    if outcome.problem is None or not outcome.missing:
        return outcome.problem
    line = f"{outcome.problem}: {', '.join(outcome.missing)}"
    return line if len(line) <= 500 else line[:497] + "..."


@dataclass(slots=True)
class ConnectionService:
    session: AsyncSession
    keys: KeyService
    clock: Clock
    settings: Settings
    actor: Actor
    request_id: str | None = None

    def _audit(self, action: str, outcome: str = "ok", **detail: object) -> None:
        audit.record(
            self.session,
            at=self.clock.now(),
            actor=self.actor,
            action=action,
            request_id=self.request_id,
            outcome=outcome,
            detail={key: str(value) if isinstance(value, uuid.UUID) else value for key, value in detail.items()},
        )

    def dataset(self, fides_key: str) -> Dataset:
        """The dataset with this key from policies/datasets/ (422 if there is none or they do not load)."""
        from privacy_service.connections.datasets import DatasetError, load_datasets

        try:
            found = load_datasets(datasets_dir(self.settings))
        except DatasetError:
            raise InvalidInput(
                "the dataset files in policies/datasets do not load; run `privacy-service policy check`"
            ) from None
        if fides_key not in found:
            raise InvalidInput("dataset: no dataset with this fides_key in policies/datasets")
        return found[fides_key]

    async def row(self, connection_id: uuid.UUID) -> Connection:
        found = await self.session.get(Connection, connection_id)
        if found is None:
            raise NotFound("no connection with this id")
        return found

    async def _active(self, connection_id: uuid.UUID) -> Connection:
        found = await self.row(connection_id)
        if found.removed_at is not None:
            raise Gone("this connection was removed")
        return found

    # -- registry ------------------------------------------------------------------------

    async def add(self, body: schemas.ConnectionCreate) -> schemas.ConnectionOut:
        stored, target = normalise(body.url, self.settings)
        await check_target(stored, self.settings)  # where the host resolves to (own database, link-local)
        self.dataset(body.dataset)
        taken = await self.session.exec(
            select(Connection.id).where(col(Connection.name) == body.name, col(Connection.removed_at).is_(None))
        )
        if taken.first() is not None:
            raise Conflict("a connection with this name is already registered")
        connection_id = uuid.uuid4()
        data_key = await self.keys.create_key(self.session, connection_id, PURPOSE)
        now = self.clock.now()
        connection = Connection(
            id=connection_id,
            name=body.name,
            dataset=body.dataset,
            dialect=target.dialect,
            url_ct=data_key.seal(stored.encode(), _binding(connection_id)),
            max_concurrency=body.max_concurrency,
            created_at=now,
            updated_at=now,
        )
        self.session.add(connection)
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError:
            raise Conflict("a connection with this name is already registered") from None
        self._audit("connections.added", connection_id=connection_id, dataset=body.dataset, dialect=target.dialect)
        emit("connection_added", category="configuration", outcome="success", connection_id=str(connection_id))
        return await self.describe(connection)

    async def list_connections(self, *, include_removed: bool = False) -> schemas.ConnectionPage:
        query = select(Connection)
        if not include_removed:
            query = query.where(col(Connection.removed_at).is_(None))
        rows = await self.session.exec(query.order_by(col(Connection.name), col(Connection.created_at)))
        return schemas.ConnectionPage(items=[await self.describe(row) for row in rows.all()])

    async def get(self, connection_id: uuid.UUID) -> schemas.ConnectionOut:
        return await self.describe(await self.row(connection_id))

    async def find(self, name: str) -> uuid.UUID:
        query = select(Connection.id).where(col(Connection.name) == name, col(Connection.removed_at).is_(None))
        found = (await self.session.exec(query)).first()
        if found is None:
            raise NotFound("no registered connection with this name")
        return found

    async def remove(self, connection_id: uuid.UUID) -> schemas.ConnectionRemoved:
        """Forget a connection: its URL's key is shredded (no copy of the row opens again), its engine closed."""
        connection = await self._active(connection_id)
        now = self.clock.now()
        connection.removed_at = connection.updated_at = now
        self.session.add(connection)
        await self.keys.shred(self.session, connection.id, PURPOSE)
        await engines.discard(connection.id)
        self._audit("connections.removed", connection_id=connection.id)
        emit("connection_removed", category="configuration", outcome="success", connection_id=str(connection.id))
        return schemas.ConnectionRemoved(id=connection.id, removed_at=now)

    async def describe(self, connection: Connection) -> schemas.ConnectionOut:
        """The row as shown: host, port and database from the sealed URL (a removed one: none)."""
        host = port = database = None
        if connection.removed_at is None:
            target = target_of(await self.open_url(connection))
            host, port, database = target.host, target.port, target.database
        return schemas.ConnectionOut(
            id=connection.id,
            name=connection.name,
            dataset=connection.dataset,
            dialect=connection.dialect,
            host=host,
            port=port,
            database=database,
            max_concurrency=connection.max_concurrency,
            created_at=connection.created_at,
            updated_at=connection.updated_at,
            last_test_at=connection.last_test_at,
            last_test_ok=connection.last_test_ok,
            last_test_problem=connection.last_test_problem,
            removed_at=connection.removed_at,
        )

    # -- reaching the database -----------------------------------------------------------

    async def open_url(self, connection: Connection) -> str:
        """The stored URL in clear (password included): for connecting only, never to show or log."""
        try:
            data_key = await self.keys.load_key(self.session, connection.id, PURPOSE)
            return data_key.open(connection.url_ct, _binding(connection.id)).decode()
        except KeyShredded:
            raise Gone("this connection was removed") from None
        except DecryptionFailed:
            raise DataIntegrityError("the connection's stored URL failed its integrity check") from None

    async def engine_for(self, connection: Connection) -> AsyncEngine:
        """The connection's shared engine (a pool of ``max_concurrency`` connections), made on first use."""
        if connection.removed_at is not None:
            raise Gone("this connection was removed")
        engine = engines.get(connection.id)
        if engine is None:
            url = await self.open_url(connection)
            own = await own_identity(await self.session.connection())
            engine = create_engine(
                url, pool_size=connection.max_concurrency, timeout=self.settings.connections_test_timeout_seconds
            )
            # Each new connection of the pool is checked before use (TargetRefused from engine.connect()).
            guard(engine, own, allowed_networks(self.settings))
            engine = engines.put(connection.id, engine)
        return engine

    async def test(self, connection_id: uuid.UUID) -> schemas.ConnectionTest:
        """Connect and check every collection and field of the dataset; the outcome is kept on the row."""
        connection = await self._active(connection_id)
        dataset = self.dataset(connection.dataset)
        wanted = wanted_columns(dataset)
        timeout = self.settings.connections_test_timeout_seconds
        url = await self.open_url(connection)
        await check_target(url, self.settings)  # resolved again: a name may lead elsewhere by now
        own = await own_identity(await self.session.connection())
        outcome = await probe.probe(url, wanted, timeout=timeout, own=own, networks=allowed_networks(self.settings))
        now = self.clock.now()
        connection.last_test_at = connection.updated_at = now
        connection.last_test_ok = outcome.ok
        connection.last_test_problem = _problem_line(outcome)
        self.session.add(connection)
        result = "ok" if outcome.ok else "failed"
        self._audit("connections.tested", outcome=result, connection_id=connection.id, missing=len(outcome.missing))
        emit(
            "connection_tested",
            category="configuration",
            outcome="success" if outcome.ok else "failure",
            connection_id=str(connection.id),
            duration_ms=outcome.duration_ms,
        )
        return schemas.ConnectionTest(
            id=connection.id,
            ok=outcome.ok,
            tested_at=now,
            problem=outcome.problem,
            missing=outcome.missing,
            collections=len(wanted),
            duration_ms=outcome.duration_ms,
        )

"""One engine per connection, shared by the worker's tasks (created on first use, disposed on removal).

An engine belongs to the event loop it first connected on; a lookup from another loop (a new
``asyncio.run``, a test's loop) gets a new engine rather than one whose pool cannot be used there.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from privacy_service.connections.urls import engine_url


def connect_args(dialect: str, timeout: float) -> dict[str, Any]:
    """How long a connection attempt may take, in each driver's own words."""
    if dialect == "postgresql":
        return {"timeout": timeout}
    if dialect == "mysql":
        return {"connect_timeout": max(1, round(timeout))}
    return {"timeout": timeout}  # sqlite: seconds to wait for a lock


def create_engine(stored_url: str, *, pool_size: int, timeout: float, **options: Any) -> AsyncEngine:
    url = engine_url(stored_url)
    dialect = url.get_backend_name()
    if dialect != "sqlite" and "poolclass" not in options:
        options.setdefault("pool_size", pool_size)
        options.setdefault("max_overflow", 0)
        options.setdefault("pool_pre_ping", True)
    # hide_parameters: a failing statement's message never carries the values it was bound to.
    return create_async_engine(url, connect_args=connect_args(dialect, timeout), hide_parameters=True, **options)


class EngineCache:
    def __init__(self) -> None:
        self._engines: dict[uuid.UUID, tuple[asyncio.AbstractEventLoop, AsyncEngine]] = {}

    def get(self, connection_id: uuid.UUID) -> AsyncEngine | None:
        found = self._engines.get(connection_id)
        if found is None or found[0] is not asyncio.get_running_loop():
            return None
        return found[1]

    def put(self, connection_id: uuid.UUID, engine: AsyncEngine) -> AsyncEngine:
        self._engines[connection_id] = (asyncio.get_running_loop(), engine)
        return engine

    async def discard(self, connection_id: uuid.UUID) -> None:
        found = self._engines.pop(connection_id, None)
        if found is not None and found[0] is asyncio.get_running_loop():
            await found[1].dispose()

    async def dispose_all(self) -> None:
        """Close every engine of the running loop (a worker shutting down); forget the others."""
        loop = asyncio.get_running_loop()
        engines, self._engines = self._engines, {}
        for owner, engine in engines.values():
            if owner is loop:
                await engine.dispose()


engines = EngineCache()

"""Redis for tests: the server at PRIVACY_TEST_REDIS_URL (db 0 is shared by parallel test runs, so
every test writes under a prefix of its own and deletes its keys afterwards).

Without a server the Redis cases skip with the reason shown, except under ``CI``, where they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

REDIS_URL = os.environ.get("PRIVACY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = bool(os.environ.get("CI"))


async def keys_under(client: Redis, prefix: str) -> list[bytes]:
    return [name async for name in client.scan_iter(match=prefix + "*", count=1000)]


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        message = f"Redis not reachable at PRIVACY_TEST_REDIS_URL ({type(exc).__name__})"
        if IN_CI:
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"ps-test-{os.getpid()}-{secrets.token_hex(4)}:"
    yield prefix
    for name in await keys_under(redis_client, prefix):
        await redis_client.unlink(name)

"""The Redis limiter against a real Redis: the in-memory limiter's semantics, one count for every
process, opaque self-expiring keys, and what happens when Redis does not answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from privacy_service.logging import configure_logging
from privacy_service.ratelimit import Limit, LimitsUnavailable, RateLimiter, RedisLimiter
from privacy_service.ratelimit.shared import TIMEOUT_SECONDS, connect
from tests.redis_support import REDIS_URL, keys_under, redis_client, redis_prefix

__all__ = ["redis_client", "redis_prefix"]  # fixtures

SECRET = b"k" * 32
DAY = 86_400.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def log_events(capsys: pytest.CaptureFixture[str]) -> Callable[[], list[dict[str, object]]]:
    """From now on, the service's log lines (JSON, as a deployed process writes them), read back.
    Called in the test's body: the captured stream of a fixture's set-up is not the test's."""
    configure_logging("INFO", json=True)

    def read() -> list[dict[str, object]]:
        return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]

    return read


@pytest.fixture
async def make_limiter(redis_prefix: str) -> AsyncIterator[Callable[..., RedisLimiter]]:
    """Limiters on their own clients (as separate processes would be), under the test's prefix."""
    made: list[RedisLimiter] = []

    def factory(clock: Callable[[], float] | None = None, **kwargs: object) -> RedisLimiter:
        limiter = RedisLimiter(connect(REDIS_URL), prefix=redis_prefix, secret=SECRET, clock=clock, **kwargs)  # type: ignore[arg-type]
        made.append(limiter)
        return limiter

    yield factory
    for limiter in made:
        await limiter.close()


async def test_burst_then_refill_with_retry_after(make_limiter: Callable[..., RedisLimiter]) -> None:
    clock = FakeClock()
    limiter = make_limiter(clock)
    limit = Limit(burst=3, per_minute=60)  # one token per second
    assert [await limiter.hit("b", "k", limit) for _ in range(3)] == [None, None, None]
    assert await limiter.hit("b", "k", limit) == pytest.approx(1.0)
    clock.now += 0.25
    assert await limiter.hit("b", "k", limit) == pytest.approx(0.75)
    clock.now += 0.75
    assert await limiter.hit("b", "k", limit) is None
    assert await limiter.hit("b", "k", limit) is not None


async def test_keys_and_buckets_are_independent(make_limiter: Callable[..., RedisLimiter]) -> None:
    limiter = make_limiter(FakeClock())
    limit = Limit(burst=1, per_minute=1)
    assert await limiter.hit("intake", "10.0.0.1", limit) is None
    assert await limiter.hit("intake", "10.0.0.1", limit) is not None
    assert await limiter.hit("intake", "10.0.0.2", limit) is None
    assert await limiter.hit("verify", "10.0.0.1", limit) is None


async def test_wait_peeks_without_taking(make_limiter: Callable[..., RedisLimiter]) -> None:
    limiter = make_limiter(FakeClock())
    limit = Limit(burst=1, per_minute=60)
    assert await limiter.wait("b", "k", limit) is None
    assert await limiter.wait("b", "k", limit) is None
    assert await limiter.hit("b", "k", limit) is None
    assert await limiter.wait("b", "k", limit) == pytest.approx(1.0)


async def test_refund_puts_back_what_hit_took_never_above_the_burst(
    make_limiter: Callable[..., RedisLimiter], redis_client: Redis, redis_prefix: str
) -> None:
    limiter = make_limiter(FakeClock())
    limit = Limit(burst=2, per_minute=60)
    assert [await limiter.hit("b", "k", limit) is None for _ in range(3)] == [True, True, False]
    await limiter.refund("b", "k", limit)
    assert await limiter.hit("b", "k", limit) is None  # the refunded token
    assert await limiter.hit("b", "k", limit) is not None
    for _ in range(5):  # refunds beyond the burst are capped: still a burst of 2
        await limiter.refund("b", "k", limit)
    assert await keys_under(redis_client, redis_prefix) == []  # a full bucket is no key at all
    assert [await limiter.hit("b", "k", limit) is None for _ in range(3)] == [True, True, False]
    await limiter.refund("b", "never-hit", limit)
    assert [await limiter.hit("b", "never-hit", limit) is None for _ in range(3)] == [True, True, False]


async def test_take_all_counts_for_every_key_or_none(make_limiter: Callable[..., RedisLimiter]) -> None:
    clock = FakeClock()
    limiter = make_limiter(clock)
    assert await limiter.take_all([("identity", 2), ("identity:a", 1)], 100.0) is None
    # The per-address key is full: nothing is counted, not even for the identity.
    assert await limiter.take_all([("identity", 2), ("identity:a", 1)], 100.0) == pytest.approx(100.0)
    assert await limiter.take_all([("identity", 2), ("identity:b", 1)], 100.0) is None
    assert await limiter.take_all([("identity", 2), ("identity:c", 1)], 100.0) is not None  # the identity is full
    clock.now += 100.0
    assert await limiter.take_all([("identity", 2), ("identity:c", 1)], 100.0) is None


async def test_a_sliding_window_never_holds_more_than_its_limit(make_limiter: Callable[..., RedisLimiter]) -> None:
    clock = FakeClock()
    limiter = make_limiter(clock)
    taken = []
    for _ in range(100):  # one attempt every hour for 4 days and 4 hours
        if await limiter.take_all([("id", 3)], DAY) is None:
            taken.append(clock.now)
        clock.now += 3600
    assert all(sum(1 for t in taken if start <= t < start + DAY) <= 3 for start in taken)
    assert len(taken) == 3 * 5


async def test_give_back_forgets_the_newest_event(make_limiter: Callable[..., RedisLimiter]) -> None:
    clock = FakeClock()
    limiter = make_limiter(clock)
    for _ in range(2):
        assert await limiter.take_all([("code:x:net", 2)], DAY) is None
        clock.now += 10
    assert await limiter.take_all([("code:x:net", 2)], DAY) is not None
    await limiter.give_back("code:x:net")
    assert await limiter.take_all([("code:x:net", 2)], DAY) is None
    await limiter.give_back("code:never-counted")  # nothing to give back: no error, nothing else changes
    assert await limiter.take_all([("code:x:net", 2)], DAY) is not None


async def test_same_answers_as_the_in_memory_limiter(make_limiter: Callable[..., RedisLimiter]) -> None:
    """A random mix of every operation, on both limiters with one clock: the same answers throughout.
    (Each bucket has its one limit, as each has one setting.)"""
    clock = FakeClock()
    shared = make_limiter(clock)
    memory = RateLimiter(clock)
    rng = random.Random(19)
    limits = {
        "a": Limit(burst=3, per_minute=30),
        "b": Limit(burst=1, per_minute=6),
        "c": Limit(burst=10, per_minute=600),
    }
    for step in range(400):
        clock.now += rng.choice([0.0, 0.1, 0.5, 2.0, 7.0, 30.0])
        op = rng.randrange(5)
        if op == 4:
            bucket, key = rng.choice("abc"), rng.choice("xyz")
            memory.refund(bucket, key, limits[bucket])
            await shared.refund(bucket, key, limits[bucket])
            continue
        if op == 0:
            bucket, key = rng.choice("abc"), rng.choice("xyz")
            limit = limits[bucket]
            expected, got = memory.hit(bucket, key, limit), await shared.hit(bucket, key, limit)
        elif op == 1:
            bucket, key = rng.choice("abc"), rng.choice("xyz")
            limit = limits[bucket]
            expected, got = memory.wait(bucket, key, limit), await shared.wait(bucket, key, limit)
        elif op == 2:
            quotas = rng.sample([("i", 4), ("i:n1", 2), ("i:n2", 2), ("j", 1)], k=rng.randint(1, 2))
            expected, got = memory.take_all(quotas, 60.0), await shared.take_all(quotas, 60.0)
        else:
            key = rng.choice(["i", "i:n1", "i:n2", "j"])
            memory.give_back(key)
            await shared.give_back(key)
            continue
        if expected is None:
            assert got is None, step
        else:
            assert got == pytest.approx(expected, abs=1e-3), step


async def test_two_processes_share_one_count(make_limiter: Callable[..., RedisLimiter]) -> None:
    """Two limiters on their own connections, hammering at once: a burst of 50 lets 50 through in all."""
    first, second = make_limiter(), make_limiter()
    limit = Limit(burst=50, per_minute=0.001)
    answers = await asyncio.gather(*(lim.hit("intake", "203.0.113.9", limit) for lim in [first, second] * 100))
    assert sum(answer is None for answer in answers) == 50
    quotas = [("code:victim", 7), ("code:victim:net", 100)]
    logged = await asyncio.gather(*(lim.take_all(quotas, DAY) for lim in [first, second] * 30))
    assert sum(answer is None for answer in logged) == 7


async def test_keys_are_opaque_and_expire(
    make_limiter: Callable[..., RedisLimiter], redis_client: Redis, redis_prefix: str
) -> None:
    limiter = make_limiter()
    await limiter.hit("ip:intake", "203.0.113.77", Limit(burst=5, per_minute=60))
    await limiter.take_all([("code:" + "ab" * 16, 3)], DAY)
    names = await keys_under(redis_client, redis_prefix)
    assert len(names) == 2
    for name in names:
        assert b"203.0.113" not in name
        assert b"abab" not in name
        ttl = await redis_client.pttl(name)
        assert 0 < ttl <= DAY * 1000
    bucket = next(name for name in names if b":bucket:" in name)
    assert await redis_client.pttl(bucket) <= 2000  # one token back in 1 s: gone a second after that
    await limiter.reset()
    assert await keys_under(redis_client, redis_prefix) == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_redis_refusing_connections(redis_prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Buckets fall back to this process's own (a limit stays in force); code-mail logs refuse (503)."""
    events = log_events(capsys)
    limiter = RedisLimiter(connect(f"redis://127.0.0.1:{_free_port()}/0"), prefix=redis_prefix, secret=SECRET)
    try:
        limit = Limit(burst=2, per_minute=1)
        started = time.monotonic()
        assert [await limiter.hit("ip:intake", "a", limit) for _ in range(3)][:2] == [None, None]
        assert await limiter.hit("ip:intake", "a", limit) is not None  # the local bucket is empty
        assert await limiter.wait("ip:intake", "a", limit) is not None
        await limiter.refund("ip:intake", "a", limit)  # into the local bucket it was taken from
        assert await limiter.wait("ip:intake", "a", limit) is None
        with pytest.raises(LimitsUnavailable) as refused:
            await limiter.take_all([("code:x", 3)], DAY)
        assert refused.value.status == 503
        assert refused.value.headers == {"Retry-After": "5"}
        await limiter.give_back("code:x")  # skipped, no error
        assert time.monotonic() - started < TIMEOUT_SECONDS  # one refused connection, then the pause
    finally:
        await limiter.close()
    outages = [event for event in events() if event["event"] == "ratelimit_redis_unavailable"]
    assert len(outages) == 1
    assert outages[0]["level"] == "warning"
    assert outages[0]["error"] == "ConnectionError"


async def test_a_silent_redis_costs_one_timeout_then_nothing_until_the_pause_ends(
    redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Redis that accepts connections and never answers: the first call waits out the timeout, the
    calls during the pause do not try again, the first after it does. Logged once."""
    events = log_events(capsys)

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = RedisLimiter(connect(f"redis://127.0.0.1:{port}/0"), prefix=redis_prefix, secret=SECRET, pause=1.5)
    limit = Limit(burst=5, per_minute=60)
    try:
        started = time.monotonic()
        assert await limiter.hit("b", "k", limit) is None
        first = time.monotonic() - started
        # One timeout and one immediate retry at most (redis-py's defaults: 5 s timeouts, 10 retries).
        assert TIMEOUT_SECONDS * 0.9 <= first < TIMEOUT_SECONDS * 2 + 1.5
        started = time.monotonic()
        for _ in range(4):
            await limiter.hit("b", "k", limit)
        with pytest.raises(LimitsUnavailable):
            await limiter.take_all([("code:x", 3)], DAY)
        assert time.monotonic() - started < TIMEOUT_SECONDS / 2  # the pause: Redis is not asked
        assert await limiter.hit("b", "k", limit) is not None  # five taken locally: the burst is spent
        await asyncio.sleep(1.6)
        started = time.monotonic()
        await limiter.hit("b", "k", limit)
        assert time.monotonic() - started >= TIMEOUT_SECONDS * 0.9  # tried again after the pause
    finally:
        await limiter.close()
        server.close()
    outages = [event for event in events() if event["event"] == "ratelimit_redis_unavailable"]
    assert [event["error"] for event in outages] == ["TimeoutError"]


async def test_reset_takes_the_prefix_literally(redis_client: Redis, redis_prefix: str) -> None:
    """A prefix with glob characters deletes its own keys only, not a neighbour's it would match."""
    globby = RedisLimiter(connect(REDIS_URL), prefix=redis_prefix + "a*:", secret=SECRET)
    neighbour = RedisLimiter(connect(REDIS_URL), prefix=redis_prefix + "ab:", secret=SECRET)
    try:
        for limiter in (globby, neighbour):
            await limiter.hit("b", "k", Limit(burst=5, per_minute=1))
        await globby.reset()
        assert await keys_under(redis_client, redis_prefix + "a\\*") == []
        assert len(await keys_under(redis_client, redis_prefix + "ab:")) == 1
    finally:
        await globby.close()
        await neighbour.close()


class Switch:
    """A TCP relay to the real Redis that can be cut (every connection dropped, new ones refused)."""

    def __init__(self) -> None:
        self.up = True
        self._open: set[asyncio.StreamWriter] = set()

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._open |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def cut(self) -> None:
        self.up = False
        for writer in self._open:
            writer.close()
        self._open.clear()


async def test_an_outage_and_the_recovery(
    redis_client: Redis, redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Counts go to Redis, to this process while it is cut off, and to Redis again once it answers."""
    events = log_events(capsys)
    switch = Switch()
    server = await asyncio.start_server(switch.relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = RedisLimiter(connect(f"redis://127.0.0.1:{port}/0"), prefix=redis_prefix, secret=SECRET, pause=0.5)
    other = RedisLimiter(connect(REDIS_URL), prefix=redis_prefix, secret=SECRET)  # another process
    limit = Limit(burst=3, per_minute=0.001)
    try:
        assert await limiter.hit("b", "k", limit) is None
        switch.cut()
        for _ in range(3):  # this process's own bucket: a full burst of its own
            assert await limiter.hit("b", "k", limit) is None
        assert await limiter.hit("b", "k", limit) is not None
        with pytest.raises(LimitsUnavailable):
            await limiter.take_all([("code:x", 3)], DAY)
        switch.up = True
        await asyncio.sleep(0.6)
        assert await limiter.hit("b", "k", limit) is None  # Redis again: 1 of 3 was taken there
        assert await other.hit("b", "k", limit) is None  # the third, seen by the other process
        assert await limiter.hit("b", "k", limit) is not None
        assert await limiter.take_all([("code:x", 3)], DAY) is None
    finally:
        await limiter.close()
        await other.close()
        server.close()
    logged = [event["event"] for event in events() if str(event["event"]).startswith("ratelimit_redis")]
    assert logged == ["ratelimit_redis_unavailable", "ratelimit_redis_recovered"]

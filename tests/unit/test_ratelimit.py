"""Token buckets: burst, refill, isolation between keys, Retry-After."""

from __future__ import annotations

import pytest

from privacy_service.ratelimit import Limit, RateLimited, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_parse() -> None:
    assert Limit.parse("30/min burst 10") == Limit(10, 30.0)
    assert Limit.parse("2/s") == Limit(2, 120.0)
    assert Limit.parse("5/hour burst 3") == Limit(3, 5 / 60)
    with pytest.raises(KeyError):
        Limit.parse("5/fortnight")


def test_burst_then_refill() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limit = Limit(burst=3, per_minute=60)  # one token per second
    assert [limiter.hit("b", "k", limit) for _ in range(3)] == [None, None, None]
    retry = limiter.hit("b", "k", limit)
    assert retry == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.hit("b", "k", limit) is None
    assert limiter.hit("b", "k", limit) is not None


def test_keys_and_buckets_are_independent() -> None:
    limiter = RateLimiter(FakeClock())
    limit = Limit(burst=1, per_minute=1)
    assert limiter.hit("intake", "10.0.0.1", limit) is None
    assert limiter.hit("intake", "10.0.0.1", limit) is not None
    assert limiter.hit("intake", "10.0.0.2", limit) is None
    assert limiter.hit("verify", "10.0.0.1", limit) is None


def test_check_raises_with_retry_after_header() -> None:
    limiter = RateLimiter(FakeClock())
    limit = Limit(burst=1, per_minute=2)
    limiter.check("b", "k", limit)
    with pytest.raises(RateLimited) as caught:
        limiter.check("b", "k", limit)
    assert caught.value.status == 429
    assert caught.value.headers == {"Retry-After": "30"}


def test_eviction_keeps_memory_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, max_keys=10)
    limit = Limit(burst=1, per_minute=60)
    for i in range(50):
        limiter.hit("b", str(i), limit)
        clock.now += 0.01
    assert len(limiter._buckets) <= 10


def test_a_sliding_window_never_holds_more_than_its_limit() -> None:
    """take_all: "3 a day" means no 24 hours ever hold more than 3, whatever the timing."""
    clock = FakeClock()
    limiter = RateLimiter(clock)
    day = 86_400.0
    taken = []
    for _ in range(200):  # one attempt every 30 minutes for 4 days and 4 hours
        if limiter.take_all([("id", 3)], day) is None:
            taken.append(clock.now)
        clock.now += 1800
    assert all(sum(1 for t in taken if start <= t < start + day) <= 3 for start in taken)
    assert len(taken) == 3 * 5  # the window moves: each day (the fifth too) gets its 3 again


def test_take_all_counts_for_every_key_or_none() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    assert limiter.take_all([("identity", 2), ("identity:a", 1)], 100.0) is None
    # The per-address key is full: nothing is counted, not even for the identity.
    wait = limiter.take_all([("identity", 2), ("identity:a", 1)], 100.0)
    assert wait == pytest.approx(100.0)
    assert limiter.take_all([("identity", 2), ("identity:b", 1)], 100.0) is None
    assert limiter.take_all([("identity", 2), ("identity:c", 1)], 100.0) is not None  # the identity is full
    clock.now += 100.0
    assert limiter.take_all([("identity", 2), ("identity:c", 1)], 100.0) is None

"""Token buckets: burst, refill, isolation between keys, Retry-After."""

from __future__ import annotations

import pytest
from litestar import Litestar, Router
from litestar.exceptions import ImproperlyConfiguredException

from privacy_service.ratelimit import Limit, RateLimited, RateLimiter, address_key, ip_rate_limit, network_key
from privacy_service.ratelimit.http import RateLimitedRoute


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


def test_junk_keys_never_reset_a_bucket_at_its_cap() -> None:
    """An attacker filling the table with fresh keys must not empty the victim's bucket with the rest."""
    clock = FakeClock()
    limiter = RateLimiter(clock, max_keys=100)
    tight = Limit(burst=2, per_minute=1)
    assert limiter.hit("intake", "victim", tight) is None
    assert limiter.hit("intake", "victim", tight) is None
    assert limiter.hit("intake", "victim", tight) is not None
    for i in range(1000):  # ten times the bound, under another caller's (looser) limit
        limiter.hit("status", f"junk{i}", Limit(burst=10, per_minute=600))
        clock.now += 0.001
    assert len(limiter._buckets) <= 100
    assert limiter.hit("intake", "victim", tight) is not None  # still at its cap


def test_a_bucket_is_judged_full_by_its_own_limit() -> None:
    """Eviction drops only buckets that have refilled under their own limit, not the triggering caller's."""
    clock = FakeClock()
    limiter = RateLimiter(clock, max_keys=3)
    slow = Limit(burst=1, per_minute=1)  # refills after 60 s
    assert limiter.hit("slow", "a", slow) is None
    clock.now += 1.0  # refilled under a 600/min limit, far from it under its own
    fast = Limit(burst=1, per_minute=600)
    for key in ("x", "y", "z"):
        assert limiter.hit("fast", key, fast) is None
        clock.now += 1.0  # each fast bucket is full again a moment later
    assert ("fast", "x") not in limiter._buckets
    assert limiter.hit("slow", "a", slow) is not None


def test_refilled_buckets_go_first_then_the_least_used() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, max_keys=4)
    limit = Limit(burst=4, per_minute=4)
    for _ in range(4):
        limiter.hit("b", "heavy", limit)
    limiter.hit("b", "light", limit)
    limiter.hit("b", "spent", Limit(burst=1, per_minute=600))
    clock.now += 1.0  # "spent" has refilled: it carries nothing
    limiter.hit("b", "new1", limit)
    limiter.hit("b", "new2", limit)
    assert ("b", "spent") not in limiter._buckets
    assert ("b", "heavy") in limiter._buckets
    limiter.hit("b", "new3", limit)  # full of live buckets: the one furthest from its cap goes
    assert ("b", "heavy") in limiter._buckets
    assert len(limiter._buckets) <= 4


def test_junk_keys_never_reset_a_sliding_log_at_its_cap() -> None:
    """Item 12 via memory: ~max_keys junk intakes must not wipe the victim's daily code cap."""
    clock = FakeClock()
    limiter = RateLimiter(clock, max_keys=100)
    day = 86_400.0
    for _ in range(3):
        assert limiter.take_all([("code:victim", 3)], day) is None
    assert limiter.take_all([("code:victim", 3)], day) is not None
    for i in range(1000):
        assert limiter.take_all([(f"code:junk{i}", 10), (f"code:junk{i}:net", 3)], day) is None
        clock.now += 1.0
    assert len(limiter._windows) <= 100
    assert limiter.take_all([("code:victim", 3)], day) is not None
    clock.now += day  # the window moves on: the cap lifts as it should
    assert limiter.take_all([("code:victim", 3)], day) is None


def test_expired_logs_are_dropped_before_live_ones() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, max_keys=3)
    limiter.take_all([("old", 5)], 10.0)
    clock.now += 5.0
    limiter.take_all([("live", 5)], 10.0)
    clock.now += 6.0  # "old" has left its window, "live" has not
    limiter.take_all([("a", 5)], 10.0)
    limiter.take_all([("b", 5)], 10.0)
    assert "old" not in limiter._windows
    assert "live" in limiter._windows


def test_wait_peeks_without_taking() -> None:
    limiter = RateLimiter(FakeClock())
    limit = Limit(burst=1, per_minute=60)
    assert limiter.wait("b", "k", limit) is None
    assert limiter.wait("b", "k", limit) is None
    assert limiter.hit("b", "k", limit) is None
    assert limiter.wait("b", "k", limit) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("unknown", "unknown"),
    ],
)
def test_ipv6_callers_are_limited_per_64(address: str, key: str) -> None:
    assert address_key(address) == key


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.7", "203.0.113.0/24"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),
        ("unknown", "unknown"),
    ],
)
def test_source_networks(address: str, network: str) -> None:
    assert network_key(address) == network


def test_one_ipv6_host_cannot_rotate_through_its_64() -> None:
    limiter = RateLimiter(FakeClock())
    limit = Limit(burst=3, per_minute=1)
    results = [limiter.hit("intake", address_key(f"2001:db8:0:7::{i:x}"), limit) for i in range(1, 10)]
    assert results[:3] == [None, None, None]
    assert all(result is not None for result in results[3:])


def test_refund_puts_back_what_hit_took_never_above_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limit = Limit(burst=2, per_minute=60)
    assert [limiter.hit("b", "k", limit) for _ in range(3)][:2] == [None, None]
    assert limiter.hit("b", "k", limit) is not None
    limiter.refund("b", "k", limit)
    assert limiter.hit("b", "k", limit) is None  # the refunded token
    assert limiter.hit("b", "k", limit) is not None
    for _ in range(5):  # refunds beyond the burst are capped: still a burst of 2
        limiter.refund("b", "k", limit)
    assert [limiter.hit("b", "k", limit) is None for _ in range(3)] == [True, True, False]
    limiter.refund("b", "never-hit", limit)  # a bucket not held is full: nothing to put back
    assert [limiter.hit("b", "never-hit", limit) is None for _ in range(3)] == [True, True, False]


def test_a_rate_limited_route_refuses_any_other_guard() -> None:
    """RateLimitedRoute hands its guards the route handler itself, not Litestar's copy: only the
    rate-limit guards, which read nothing of it, may be on such a route, from any layer."""

    async def another(_connection: object, _handler: object) -> None:
        return None

    @RateLimitedRoute("/limited", http_method="GET", guards=[ip_rate_limit("verify")])
    async def limited() -> str:
        return "ok"

    Litestar([limited])  # accepted: the rate-limit guard alone

    @RateLimitedRoute("/limited", http_method="GET", guards=[ip_rate_limit("verify")])
    async def also_guarded() -> str:
        return "ok"

    with pytest.raises(ImproperlyConfiguredException, match="takes ip_rate_limit guards only"):
        Litestar([Router("/", route_handlers=[also_guarded], guards=[another])])

"""FailedAuthGate: the per-address bucket of failed keys and the aggregated audit tally (fake clock)."""

from __future__ import annotations

from privacy_service.operators.guards import FailedAuthGate
from privacy_service.ratelimit import Limit

LIMIT = Limit.parse("10/min burst 3")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_rows_at_each_doubling_and_the_tail_carried_into_the_next_window() -> None:
    clock = FakeClock()
    gate = FailedAuthGate(clock, window=600.0)
    due = [await gate.reject("a", "k1", LIMIT, throttled=False) for _ in range(6)]
    assert [row is not None for row in due] == [True, True, False, True, False, False]
    assert [row[1]["attempts"] for row in due if row] == [1, 1, 2]
    clock.now = 601.0  # the window ends: the two unrecorded attempts ride on the next window's first row
    carried = await gate.reject("a", None, LIMIT, throttled=True)
    assert carried is not None
    assert carried[1] == {"attempts": 3, "throttled": 1, "malformed": 1, "key_ids": ["k1"]}


async def test_the_bucket_blocks_after_the_burst_and_refills() -> None:
    clock = FakeClock()
    gate = FailedAuthGate(clock)
    assert await gate.retry_after("a", LIMIT) is None
    for _ in range(3):
        await gate.reject("a", None, LIMIT, throttled=False)
    wait = await gate.retry_after("a", LIMIT)
    assert wait is not None
    assert 5.9 < wait <= 6.0  # one failure back every 6 s at 10/min
    await gate.reject("a", None, LIMIT, throttled=True)  # a throttled attempt takes nothing
    clock.now = 6.0
    assert await gate.retry_after("a", LIMIT) is None
    assert await gate.retry_after("b", LIMIT) is None  # other addresses are unaffected


async def test_a_full_table_never_refuses_a_new_address_unchecked() -> None:
    """Junk from many addresses fills the table: a new address is still let through to have its key checked."""
    clock = FakeClock()
    gate = FailedAuthGate(clock, max_addresses=50)
    for i in range(500):  # ten times the bound, every address spending its whole burst
        for _ in range(LIMIT.burst):
            await gate.reject(f"10.0.{i // 256}.{i % 256}", None, LIMIT, throttled=False)
        clock.now += 0.001
    assert await gate.retry_after("10.0.1.243", LIMIT) is not None  # the newest junk address is still limited
    for address in ("198.51.100.7", "198.51.100.8", "2001:db8::/64"):
        assert await gate.retry_after(address, LIMIT) is None


async def test_junk_addresses_do_not_free_an_address_at_its_limit() -> None:
    clock = FakeClock()
    gate = FailedAuthGate(clock, max_addresses=50)
    for _ in range(LIMIT.burst):
        await gate.reject("attacker", None, LIMIT, throttled=False)
    for i in range(500):  # one failure each: they never reach their limit
        await gate.reject(f"junk{i}", None, LIMIT, throttled=False)
    assert await gate.retry_after("attacker", LIMIT) is not None


async def test_audit_tallies_beyond_the_bound_share_one_row_source() -> None:
    """Only the audit aggregation overflows into "*"; each address keeps its own bucket."""
    clock = FakeClock()
    gate = FailedAuthGate(clock, max_addresses=2)
    assert await gate.reject("a", None, LIMIT, throttled=False) is not None
    assert await gate.reject("b", None, LIMIT, throttled=False) is not None
    third = await gate.reject("c", None, LIMIT, throttled=False)
    assert third is not None
    assert third[0] == "*"
    for address in ("d", "e"):
        await gate.reject(address, None, LIMIT, throttled=False)
    assert await gate.retry_after("f", LIMIT) is None  # nobody's failures are charged to a stranger
    assert await gate.retry_after("c", LIMIT) is None  # one failure of three
    clock.now = 10_000.0  # every window over: room again for new addresses' own rows
    fresh = await gate.reject("g", None, LIMIT, throttled=False)
    assert fresh is not None
    assert fresh[0] == "g"


async def test_a_tally_slot_frees_as_soon_as_the_oldest_window_ends() -> None:
    clock = FakeClock()
    gate = FailedAuthGate(clock, window=600.0, max_addresses=2)
    await gate.reject("a", None, LIMIT, throttled=False)
    clock.now = 300.0
    await gate.reject("b", None, LIMIT, throttled=False)
    clock.now = 301.0
    pooled = await gate.reject("c", None, LIMIT, throttled=False)
    assert pooled is not None
    assert pooled[0] == "*"
    clock.now = 599.0  # "a"'s window is still open
    pooled = await gate.reject("d", None, LIMIT, throttled=False)
    assert pooled is not None
    assert pooled[0] == "*"
    clock.now = 601.0  # "a"'s window has ended: its slot goes to the next new address
    own = await gate.reject("e", None, LIMIT, throttled=False)
    assert own is not None
    assert own[0] == "e"

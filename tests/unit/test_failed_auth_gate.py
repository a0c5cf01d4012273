"""FailedAuthGate: the per-address bucket of failed keys and the aggregated audit tally (fake clock)."""

from __future__ import annotations

import asyncio
from typing import Any

from privacy_service.operators.guards import FailedAuthGate
from privacy_service.ratelimit import Limit

LIMIT = Limit.parse("10/min burst 3")


async def _failed(gate: FailedAuthGate, address: str, key_id: str | None) -> tuple[str, dict[str, Any]] | None:
    """A wrong key as the guard handles it: its failure taken first (here whatever the answer), then tallied."""
    await gate.admit(address, LIMIT)
    return await gate.reject(address, key_id, throttled=False)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_rows_at_each_doubling_and_the_tail_carried_into_the_next_window() -> None:
    clock = FakeClock()
    gate = FailedAuthGate(clock, window=600.0)
    due = [await _failed(gate, "a", "k1") for _ in range(6)]
    assert [row is not None for row in due] == [True, True, False, True, False, False]
    assert [row[1]["attempts"] for row in due if row] == [1, 1, 2]
    clock.now = 601.0  # the window ends: the two unrecorded attempts ride on the next window's first row
    carried = await gate.reject("a", None, throttled=True)
    assert carried is not None
    assert carried[1] == {"attempts": 3, "throttled": 1, "malformed": 1, "key_ids": ["k1"]}


async def test_the_bucket_blocks_after_the_burst_and_refills() -> None:
    clock = FakeClock()
    gate = FailedAuthGate(clock)
    assert await gate.retry_after("a", LIMIT) is None
    for _ in range(3):
        await _failed(gate, "a", None)
    wait = await gate.retry_after("a", LIMIT)
    assert wait is not None
    assert 5.9 < wait <= 6.0  # one failure back every 6 s at 10/min
    await gate.reject("a", None, throttled=True)  # a throttled attempt takes nothing
    clock.now = 6.0
    assert await gate.retry_after("a", LIMIT) is None
    assert await gate.retry_after("b", LIMIT) is None  # other addresses are unaffected


async def test_a_full_table_never_refuses_a_new_address_unchecked() -> None:
    """Junk from many addresses fills the table: a new address is still let through to have its key checked."""
    clock = FakeClock()
    gate = FailedAuthGate(clock, max_addresses=50)
    for i in range(500):  # ten times the bound, every address spending its whole burst
        for _ in range(LIMIT.burst):
            await _failed(gate, f"10.0.{i // 256}.{i % 256}", None)
        clock.now += 0.001
    assert await gate.retry_after("10.0.1.243", LIMIT) is not None  # the newest junk address is still limited
    for address in ("198.51.100.7", "198.51.100.8", "2001:db8::/64"):
        assert await gate.retry_after(address, LIMIT) is None


async def test_junk_addresses_do_not_free_an_address_at_its_limit() -> None:
    clock = FakeClock()
    gate = FailedAuthGate(clock, max_addresses=50)
    for _ in range(LIMIT.burst):
        await _failed(gate, "attacker", None)
    for i in range(500):  # one failure each: they never reach their limit
        await _failed(gate, f"junk{i}", None)
    assert await gate.retry_after("attacker", LIMIT) is not None


async def test_audit_tallies_beyond_the_bound_share_one_row_source() -> None:
    """Only the audit aggregation overflows into "*"; each address keeps its own bucket."""
    clock = FakeClock()
    gate = FailedAuthGate(clock, max_addresses=2)
    assert await _failed(gate, "a", None) is not None
    assert await _failed(gate, "b", None) is not None
    third = await _failed(gate, "c", None)
    assert third is not None
    assert third[0] == "*"
    for address in ("d", "e"):
        await _failed(gate, address, None)
    assert await gate.retry_after("f", LIMIT) is None  # nobody's failures are charged to a stranger
    assert await gate.retry_after("c", LIMIT) is None  # one failure of three
    clock.now = 10_000.0  # every window over: room again for new addresses' own rows
    fresh = await _failed(gate, "g", None)
    assert fresh is not None
    assert fresh[0] == "g"


async def test_a_tally_slot_frees_as_soon_as_the_oldest_window_ends() -> None:
    clock = FakeClock()
    gate = FailedAuthGate(clock, window=600.0, max_addresses=2)
    await _failed(gate, "a", None)
    clock.now = 300.0
    await _failed(gate, "b", None)
    clock.now = 301.0
    pooled = await _failed(gate, "c", None)
    assert pooled is not None
    assert pooled[0] == "*"
    clock.now = 599.0  # "a"'s window is still open
    pooled = await _failed(gate, "d", None)
    assert pooled is not None
    assert pooled[0] == "*"
    clock.now = 601.0  # "a"'s window has ended: its slot goes to the next new address
    own = await _failed(gate, "e", None)
    assert own is not None
    assert own[0] == "e"


async def test_admit_takes_a_failure_first_and_a_right_key_gives_it_back() -> None:
    clock = FakeClock()
    gate = FailedAuthGate(clock)
    admitted = await asyncio.gather(*(gate.admit("a", LIMIT) for _ in range(10)))  # at once
    assert sum(wait is None for wait in admitted) == LIMIT.burst
    assert await gate.retry_after("a", LIMIT) is not None
    await gate.accepted("a", LIMIT)  # one of them was right
    assert await gate.retry_after("a", LIMIT) is None
    assert await gate.admit("a", LIMIT) is None
    assert await gate.admit("a", LIMIT) is not None
    for _ in range(10):  # never above the burst
        await gate.accepted("b", LIMIT)
    assert [await gate.admit("b", LIMIT) is None for _ in range(4)] == [True, True, True, False]

"""Cluster time against stepped wall clocks (issue 10, bugs 9 and 10), in simulated time.

Before ticks carried the leader's monotonic elapsed time, a leader whose wall clock ran a day
ahead expired a 60 s lease within a few seconds, and after it failed over tick time stood still
for a day (no lease expired). Here the leader's wall clock jumps a day forward, then the leader
crashes and another takes over: the lease must live out its 60 s of real time, no less and not
forever.
"""

from __future__ import annotations

from typing import Any

from coreplane.core import commands as C
from coreplane.testing.cluster import SimCluster

DAY_MS = 86_400_000


def _grant(c: SimCluster, ttl_ms: int) -> int:
    done: list[Any] = []
    c.command("t", C.LeaseGrant(ttl_ms=ttl_ms, client_id="t", seq=1), done.append)
    assert c.run_until(lambda: bool(done), 5_000)
    applied = done[0].result
    assert applied is not None and applied.ok, applied
    return int(applied.value)


def _lease_everywhere(c: SimCluster, lease_id: int) -> list[bool]:
    return [
        lease_id in slot.node.state.kv.leases for slot in c.slots.values() if slot.node is not None
    ]


def _tick_ms(c: SimCluster) -> int:
    return max(slot.node.state.tick_ms for slot in c.slots.values() if slot.node is not None)


def test_a_wall_clock_a_day_ahead_moves_no_lease() -> None:
    with SimCluster(seed=31) as c:
        assert c.run_until(lambda: c.leader() is not None, 5_000)
        leader = c.leader()
        assert leader is not None
        lease = _grant(c, 60_000)
        start_ms = _tick_ms(c)
        c.jump_clock(leader, DAY_MS)
        c.run_for(10_000)
        assert _lease_everywhere(c, lease) == [True, True, True]
        assert 8_000 <= _tick_ms(c) - start_ms <= 12_000  # cluster time kept real pace

        c.crash(leader)  # the next leader continues from the last committed tick
        assert c.run_until(lambda: c.leader() not in (None, leader), 5_000)
        c.run_for(20_000)
        assert all(_lease_everywhere(c, lease))
        assert 27_000 <= _tick_ms(c) - start_ms <= 35_000  # not frozen, not a day ahead
        c.restart(leader)
        c.run_for(40_000)  # 60 s of real time since the grant have passed
        assert _lease_everywhere(c, lease) == [False, False, False]
        assert not c.violations, c.violations


def test_a_lease_granted_before_the_first_tick_lives_its_ttl() -> None:
    """Tick time starts at 0 on a new cluster; the first tick is one interval, not a wall-clock
    reading of ~1.7e12 ms that expired every lease granted before it."""
    with SimCluster(seed=5) as c:
        assert c.run_until(lambda: c.leader() is not None, 5_000)
        lease = _grant(c, 1_000)
        c.run_for(500)
        assert all(_lease_everywhere(c, lease))
        c.run_for(1_500)
        assert not any(_lease_everywhere(c, lease))
        assert not c.violations, c.violations

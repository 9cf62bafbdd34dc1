"""The leader's work takes turns (`ControlPlane._step`): ticks, the fleet and the quotas.

Each proposes at most one entry per pass. When every commit takes longer than a tick interval
a tick is due at the start of every pass, and with ticks always first the quota work never
ran: no epoch of a global limit was ever allotted (0 in 10 s of simulated time at 60-70 ms
one-way delays, against 11 with the turns). Ticks must go on too.
"""

from __future__ import annotations

from coreplane.core import commands as C
from coreplane.testing import SimCluster
from coreplane.testing.cluster import NetworkConfig


def test_quota_epochs_are_allotted_while_every_commit_outlasts_a_tick() -> None:
    slow = NetworkConfig(delay_us_min=60_000, delay_us_max=70_000)  # a commit: 120-140 ms
    with SimCluster(1, network=slow) as c:
        assert c.run_until(lambda: c.leader() is not None, 20_000)
        done: list[object] = []
        limit = C.QuotaSetLimit(
            key="api", limit_milli=100_000, routers_max=4, client_id="op", seq=1
        )
        c.command("op", limit, done.append)
        assert c.run_until(lambda: bool(done), 20_000)
        leader = c.leader()
        assert leader is not None
        ticks_before = c.ask(leader, lambda node: node.state.tick_n)
        c.run_for(10_000)
        assert c.leader() == leader
        record = c.ask(leader, lambda node: node.state.quotas.keys.get("api"))
        assert record is not None and record.epochs and record.epochs[-1].n >= 8
        assert c.ask(leader, lambda node: node.state.tick_n) - ticks_before >= 40
        c.check_hashes()

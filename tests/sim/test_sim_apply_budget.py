"""A whole simulated cluster with a tiny per-tick apply bound (`engine_overrides` 9.).

Every node applies at most 2 committed entries per tick, so a restarted node replays its
journal over many ticks, and so does a follower that fell behind, while writes go on and the
leader is crashed in the middle of the catch-up. The cluster must still hold every law
`SimCluster` checks: one leader per term, acknowledged writes kept, linearizable histories,
equal state hashes once converged.
"""

from __future__ import annotations

import pytest

from coreplane.raft import engine as E
from coreplane.testing import SimCluster

ENTRIES_PER_TICK = 2


@pytest.fixture
def tiny_apply_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every engine built meanwhile applies at most `ENTRIES_PER_TICK` entries a tick."""
    defaults = E.RaftEngine.__init__.__kwdefaults__
    assert defaults is not None and "apply_entries_max" in defaults
    monkeypatch.setitem(defaults, "apply_entries_max", ENTRIES_PER_TICK)


@pytest.mark.usefixtures("tiny_apply_bound")
def test_chunked_replay_and_catch_up_keep_every_law() -> None:
    with SimCluster(23) as c:
        assert c.run_until(c.converged, 5_000)
        for i in range(40):
            c.put(f"c{i % 2}", i // 2 + 1, f"k{i % 7}", b"a%d" % i)
            c.run_for(5)
        c.crash("n3")
        c.restart("n3")  # its commit index comes back from its disk: a replay, in chunks
        assert c.ask("n3", lambda node: node.engine.apply_backlog()) > 40
        c.run_for(30)
        yields = c.ask("n3", lambda node: node.engine.counters()["apply_yields"])
        assert yields and yields > 0  # the replay spanned several ticks
        leader = c.leader()
        assert leader is not None
        for i in range(40, 60):
            c.put(f"c{i % 2}", i // 2 + 1, f"k{i % 7}", b"b%d" % i)
            c.run_for(5)
        c.crash(leader)  # while n3 may still be catching up
        c.run_for(1_000)
        c.restart(leader)
        assert c.run_until(c.converged, 20_000), "no convergence after faults stopped"
        c.check_hashes()
        c.check_acknowledged()
        c.check_linearizable()
        assert c.violations == []
        assert len({c.slots[n].node.state_hash() for n in c.node_ids}) == 1

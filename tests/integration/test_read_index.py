"""ReadIndex reads (issue 4, defect 5): linearizable without writing to the log.

The leader answers with its commit index once it has committed an entry of its term and either
holds its check-quorum lease or a quorum acknowledged a heartbeat sent after the index was
taken; a follower asks the leader, then waits until it has applied that index itself.
"""

from __future__ import annotations

from typing import Any

import pytest

from coreplane.runtime.status import NodeStatus

# Real ControlPlanes on 127.0.0.1 sockets: opt-in (`pytest -m slow`), as CONTRIBUTING.md says.
pytestmark = pytest.mark.slow


def _settled(status: NodeStatus) -> NodeStatus | None:
    return status if status.applied_index == status.commit_index else None


def test_reads_are_linearizable_and_write_nothing(wait_until: Any, cluster_factory: Any) -> None:
    cluster = cluster_factory(tick_interval_ms=60_000).start_all()  # no Tick entries meanwhile
    for _attempt in range(3):  # an election under CPU starvation adds entries: try again
        leader = cluster.leader()
        follower = next(cp for cp in cluster.nodes.values() if cp is not leader)
        rev = leader.kv.put("k", b"v0")
        wait_until(
            lambda f=follower, ld=leader: f.status().commit_index == ld.status().commit_index,
            10,
            "the follower to learn the commit index",
        )
        st = leader.status()
        term, before, ticks = st.term, st.commit_index, st.tick_n
        for i in range(20):
            if i % 5 == 0:
                rev = leader.kv.put("k", f"v{i}".encode())
            # A read on the follower right after a write on the leader sees it (no stale read).
            assert follower.kv.get("k") == (f"v{i - i % 5}".encode(), rev)
            assert leader.kv.get("k") == (f"v{i - i % 5}".encode(), rev)
        status = wait_until(
            lambda ld=leader: _settled(ld.status()), 10, "the leader to apply what it committed"
        )
        if status.term == term:
            # The 4 writes, and a Tick each time a lease lapse (CPU starvation) re-established
            # the leadership; the 40 reads appended nothing.
            assert status.commit_index == before + 4 + status.tick_n - ticks
            return
    raise AssertionError("the leader changed in every attempt")


def test_stale_read_reports_its_bound(cluster_factory: Any) -> None:
    cluster = cluster_factory().start_all()
    leader = cluster.leader()
    follower = cluster.followers()[0]
    leader.kv.put("s", b"1")
    value, bound = follower.kv.get_stale("s")
    assert value is None or value[0] == b"1"
    assert bound.entries_behind_min == max(0, bound.known_commit_index - bound.applied_index)
    assert bound.ms_since_leader_heard is not None and bound.ms_since_leader_heard < 5000
    assert leader.kv.get_stale("s")[1].ms_since_leader_heard == 0

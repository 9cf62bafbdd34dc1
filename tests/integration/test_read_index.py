"""ReadIndex reads (issue 4, defect 5): linearizable without writing to the log.

The leader answers with its commit index once it has committed an entry of its term and either
holds its check-quorum lease or a quorum acknowledged a heartbeat sent after the index was
taken; a follower asks the leader, then waits until it has applied that index itself.
"""

from __future__ import annotations

from typing import Any

from .conftest import wait_until


def test_reads_are_linearizable_and_write_nothing(cluster_factory: Any) -> None:
    cluster = cluster_factory(tick_interval_ms=60_000).start_all()  # no Tick entries meanwhile
    leader = cluster.leader()
    follower = cluster.followers()[0]
    rev = leader.kv.put("k", b"v1")
    wait_until(lambda: follower.status()["commit_index"] == leader.status()["commit_index"], 10,
               "the follower to learn the commit index")
    before = leader.status()["commit_index"]
    for i in range(20):
        rev = leader.kv.put("k", f"v{i}".encode()) if i % 5 == 0 else rev
        # A read on the follower right after a write on the leader sees it (no stale read).
        assert follower.kv.get("k") == (f"v{i - i % 5}".encode(), rev)
        assert leader.kv.get("k") == (f"v{i - i % 5}".encode(), rev)
    writes = 4
    assert leader.status()["commit_index"] == before + writes  # reads appended nothing


def test_stale_read_reports_its_bound(cluster_factory: Any) -> None:
    cluster = cluster_factory().start_all()
    leader = cluster.leader()
    follower = cluster.followers()[0]
    leader.kv.put("s", b"1")
    value, bound = follower.kv.get_stale("s")
    assert value is None or value[0] == b"1"
    assert set(bound) >= {"applied_index", "known_commit_index", "entries_behind_min",
                          "ms_since_leader_heard"}
    assert bound["ms_since_leader_heard"] is not None and bound["ms_since_leader_heard"] < 5000
    assert leader.kv.get_stale("s")[1]["ms_since_leader_heard"] == 0

"""Seeds on which the simulator found pysyncobj defects, pinned (see the closing notes of
issue 5). Each runs one seeded schedule and must come out clean.

Seeds pin a whole schedule, so any change to the engine's timing can move a defect off its
seed; each defect is pinned by several seeds found at different times, and the second one also
by scripted scenarios that do not depend on timing (`_stale_leader_rejoins`).

1. Stale snapshot install (seeds 6, 8, 24, 28, 20261149, 20261162, 21261152; scripted
   after compaction, seed 4): a leader whose ``nextIndex`` for a follower fell below its
   compacted log start (walking back over the follower's conflicting tail) streams a snapshot
   *older* than the follower's commit index; pysyncobj's ``__loadDumpFile(clearJournal=True)``
   clears the follower's log and state back to it. Its applied state goes back in time
   (``applied_regressed``) and committed entries leave its journal. Raft §7: a follower that
   already holds the snapshot's last entry (same index and term) keeps its log.
2. Commit from a snapshot chunk (seeds 135, 1000107, 1000124, 20261363; scripted, seeds 2
   and 4, and after compaction 0, 1, 3, 5): pysyncobj sets ``commit = min(leader commit,
   own last index)`` after *any* ``append_entries``, including InstallSnapshot chunks that
   verified nothing about the follower's log; a rejoining ex-leader then commits and applies
   its own stale, never-committed entries (``log_agreement``: two replicas applied different
   entries at one index).

Both are fixed in ``coreplane/raft/engine_overrides.py`` (d308044); these keep them fixed.
"""

from __future__ import annotations

import pytest

from coreplane.testing import SimCluster, run_schedule

STALE_SNAPSHOT = [(6, 3), (8, 3), (24, 3), (28, 3), (20261149, 3), (20261162, 3), (21261152, 5)]
SNAPSHOT_CHUNK_COMMIT = [(135, 3), (1000107, 5), (1000124, 5), (20261363, 3)]


@pytest.mark.chaos
@pytest.mark.parametrize(("seed", "nodes"), STALE_SNAPSHOT)
def test_stale_snapshot_install_does_not_regress_a_follower(seed: int, nodes: int) -> None:
    result = run_schedule(seed, nodes)
    assert result.ok, f"{result.violations[:3]}; replay: {result.replay}"


@pytest.mark.chaos
@pytest.mark.parametrize(("seed", "nodes"), SNAPSHOT_CHUNK_COMMIT)
def test_snapshot_chunk_does_not_commit_unverified_entries(seed: int, nodes: int) -> None:
    result = run_schedule(seed, nodes)
    assert result.ok, f"{result.violations[:3]}; replay: {result.replay}"


def _stale_leader_rejoins(seed: int, *, writes_before: int, writes_after: int) -> list[str]:
    """An isolated leader appends entries nobody commits while the majority goes on; on
    healing the old leader is brought up to date (by snapshot: the logs are compacted every
    50 entries). `writes_before` isolation puts every node's compaction point below the old
    leader's commit; `writes_after` decides whether the new leader compacts past it."""
    with SimCluster(seed, 3, log_compaction_min_entries=50) as c:
        assert c.run_until(c.converged, 5_000)
        old = c.leader()
        assert old is not None
        for i in range(writes_before):
            c.put("w0", i + 1, f"k{i % 7}", b"a%d" % i, via=old)
            c.run_for(3)
        c.run_for(300)
        c.isolate(old)
        for i in range(5):
            c.put("stale", i + 1, "k", b"stale-%d" % i, via=old)
        c.run_for(10)
        others = [n for n in c.node_ids if n != old]
        assert c.run_until(lambda: c.leader() in others, 5_000)
        new = c.leader()
        for i in range(writes_after):
            c.put("w", i + 1, f"k{i % 7}", b"v%d" % i, via=new)
            c.run_for(3)
        c.run_for(300)
        c.heal()
        c.run_for(3_000)
        c.check_hashes()
        return sorted({v.invariant for v in c.violations})


@pytest.mark.chaos
@pytest.mark.parametrize("seed", [2, 4])
def test_rejoining_stale_leader_never_applies_its_uncommitted_entries(seed: int) -> None:
    assert _stale_leader_rejoins(seed, writes_before=0, writes_after=150) == []


@pytest.mark.chaos
@pytest.mark.parametrize("seed", [0, 1, 3, 4, 5])
def test_rejoining_stale_leader_keeps_its_committed_prefix(seed: int) -> None:
    """The walk back over the old leader's conflicting tail reaches the compacted start, so
    it is sent a snapshot older than its own commit index (seed 4: applied_regressed)."""
    assert _stale_leader_rejoins(seed, writes_before=70, writes_after=15) == []

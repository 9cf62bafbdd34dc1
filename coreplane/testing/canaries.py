"""Known-bug canaries: negative controls that prove the checkers can fail (as Jepsen keeps).

Each canary switches on one deliberate bug (`Canaries`) and runs seeds of a scenario shaped to
expose it, until a checker reports a violation or the seed budget runs out. `catch(name)`
returns the first seed whose run was flagged; `None` means the harness missed a known bug,
which is itself a failure of the harness.

- fsync_skipped: crash-heavy schedules on the lossy simulated disk (acknowledged writes lost,
  logs diverge).
- stale_read: reads served from the local replica (linearizability).
- unfenced_lock: lock clients paused past their lease act with an old token on a resource that
  does not check it (two holders act).
- lease_unchecked: a paused leader acts when it resumes, before re-checking its lease.
- vote_not_durable: scripted; a voter crashes right after voting and, having lost its vote,
  votes again in the same term (two leaders in one term).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coreplane.testing.cluster import SimCluster
from coreplane.testing.node import Canaries
from coreplane.testing.workload import run_schedule

__all__ = ["CANARIES", "CanaryResult", "catch", "vote_scenario"]


@dataclass(frozen=True, slots=True)
class CanaryResult:
    name: str
    caught: bool
    seed: int | None
    seeds_tried: int
    invariants: tuple[str, ...]


def vote_scenario(seed: int, canaries: Canaries | None = None) -> list[str]:
    """Isolate the leader; the moment a follower votes for another candidate, crash and
    restart that voter, then let the old leader reach only the restarted voter. With votes
    durable the voter refuses a second vote in that term; without, two nodes lead in it.
    Returns the violated invariants."""
    with SimCluster(seed, 3, canaries=canaries or Canaries(), keep_trace=False) as c:
        if not c.run_until(c.converged, 10_000):
            return []
        old = c.leader()
        if old is None:
            return []
        term = c.ask(old, lambda n: n.engine.term())
        c.isolate(old)
        found: list[str] = []

        def voted() -> bool:
            for node_id in c.node_ids:
                node = c.slots[node_id].node
                if node_id == old or node is None:
                    continue
                journal = node.journal
                choice = journal.getVotedForNodeId()
                if journal.getCurrentTerm() > term and choice not in (None, node_id):
                    found[:] = [node_id, str(choice)]
                    return True
            return False

        if not c.run_until(voted, 10_000):
            return []
        voter, candidate = found
        c.crash(voter)
        c.restart(voter)
        c.run_for(10)  # the vote reaches the candidate
        c.partition([candidate])
        c.run_for(3_000)
        return sorted({v.invariant for v in c.violations})


Scenario = Callable[[int, bool], list[str]]  # (seed, canary on) -> violated invariants


def _schedule(name: str, **kwargs: Any) -> Scenario:
    def run(seed: int, on: bool) -> list[str]:
        result = run_schedule(seed, canaries=(name,) if on else (), **kwargs)
        return sorted({v["invariant"] for v in result.violations})

    return run


def _vote(seed: int, on: bool) -> list[str]:
    return vote_scenario(seed, Canaries(vote_not_durable=on))


CANARIES: dict[str, Scenario] = {
    "fsync_skipped": _schedule(
        "fsync_skipped",
        faults=("crash", "crash_leader"),
        fault_gap_ms=(50, 400),
        fault_len_ms=(20, 600),
        chaos_ms=(3_000, 5_000),
    ),
    "lease_unchecked": _schedule(
        "lease_unchecked",
        faults=("pause_leader",),
        fault_gap_ms=(200, 800),
        chaos_ms=(3_000, 5_000),
    ),
    "stale_read": _schedule("stale_read", chaos_ms=(2_000, 3_000)),
    "unfenced_lock": _schedule(
        "unfenced_lock",
        faults=("pause", "pause_leader"),
        fault_gap_ms=(300, 900),
        chaos_ms=(6_000, 9_000),
        lock_clients=3,
    ),
    "vote_not_durable": _vote,
}


def catch(name: str, *, seed: int = 0, seeds_max: int = 20) -> CanaryResult:
    """Run the canary's scenario on seeds ``seed, seed+1, ...`` until a violation is found
    whose control (the same seed, canary off) passes: the bug, not the harness, failed it."""
    scenario = CANARIES[name]
    for i in range(seeds_max):
        found = scenario(seed + i, True)
        if found and not scenario(seed + i, False):
            return CanaryResult(name, True, seed + i, i + 1, tuple(found))
    return CanaryResult(name, False, None, seeds_max, ())

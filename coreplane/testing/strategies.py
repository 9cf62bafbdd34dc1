"""Hypothesis for chaos: strategies for fault schedules and a stateful test over a SimCluster.

`ClusterMachine` is a `RuleBasedStateMachine`: Hypothesis picks a seed, then interleaves client
operations (writes with unique values, linearizable reads, CAS), user-machine commands and
faults (partitions, crashes, restarts, pauses, clock jumps) with runs of simulated time; the
online invariants are checked after every step, and at teardown the faults stop and the
cluster must converge with equal state hashes, every acknowledged write applied everywhere and
a linearizable history. A failure shrinks to a short rule sequence and notes the seed.

Users subclass it: set `nodes`, list their machines in `machines` (``(name, machine)`` pairs,
registered on every node), add rules that call `user_command`, and add invariants that read
``self.cluster``. Requires the ``hypothesis`` package (a test dependency, imported only here).
"""

from __future__ import annotations

from typing import Any

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from coreplane.core import commands as C
from coreplane.testing.cluster import SimCluster
from coreplane.testing.workload import FAULTS

__all__ = ["ClusterMachine", "fault_schedules", "seeds"]

seeds = st.integers(min_value=0, max_value=2**31 - 1)


def fault_schedules(*, max_faults: int = 8) -> st.SearchStrategy[list[tuple[str, int, int]]]:
    """Lists of ``(fault, gap_ms, duration_ms)`` drawn from `workload.FAULTS`."""
    return st.lists(
        st.tuples(st.sampled_from(FAULTS), st.integers(50, 1_500), st.integers(20, 2_500)),
        max_size=max_faults,
    )


class ClusterMachine(RuleBasedStateMachine):
    """A stateful chaos test of a SimCluster; subclass to add machines, rules, invariants."""

    nodes: int = 3
    machines: tuple[tuple[str, Any], ...] = ()
    keys: tuple[str, ...] = ("a", "b", "c")

    def __init__(self) -> None:
        super().__init__()
        self.cluster: SimCluster | None = None
        self.seq = 0

    @initialize(seed=seeds)
    def start(self, seed: int) -> None:
        note(f"SimCluster seed {seed} ({self.nodes} nodes)")
        self.cluster = SimCluster(seed, self.nodes, machines=self.machines, keep_trace=False)
        self.cluster.run_until(self.cluster.converged, 10_000)

    @property
    def c(self) -> SimCluster:
        assert self.cluster is not None
        return self.cluster

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def user_command(self, machine: str, body: Any) -> None:
        """Propose a command to a registered user machine through a random node."""
        seq = self._next()
        self.c.command(
            "user",
            C.UserCommand(machine=machine, body=body, client_id="user", seq=seq),
            lambda op: None,
        )

    @rule(key=st.sampled_from(keys))
    def write(self, key: str) -> None:
        seq = self._next()
        self.c.put("w", seq, key, f"w.{seq}".encode())

    @rule(key=st.sampled_from(keys))
    def read(self, key: str) -> None:
        self.c.get("r", key)

    @rule(ms=st.integers(1, 1_500))
    def advance(self, ms: int) -> None:
        self.c.run_for(ms)

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        group = data.draw(
            st.lists(
                st.sampled_from(self.c.node_ids), min_size=1, max_size=self.nodes // 2, unique=True
            )
        )
        self.c.partition(sorted(group))

    @rule()
    def heal(self) -> None:
        self.c.heal()

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        self.c.crash(data.draw(st.sampled_from(self.c.node_ids)))

    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        self.c.restart(data.draw(st.sampled_from(self.c.node_ids)))

    @rule(data=st.data(), ms=st.integers(10, 1_500))
    def pause(self, data: st.DataObject, ms: int) -> None:
        self.c.pause(data.draw(st.sampled_from(self.c.node_ids)), ms)

    @rule(data=st.data(), ms=st.integers(-60_000, 60_000))
    def jump_clock(self, data: st.DataObject, ms: int) -> None:
        self.c.jump_clock(data.draw(st.sampled_from(self.c.node_ids)), ms)

    @invariant()
    def online_invariants_hold(self) -> None:
        if self.cluster is not None:
            assert self.cluster.violations == [], self.cluster.violations[:3]

    def teardown(self) -> None:
        c = self.cluster
        if c is None:
            return
        try:
            c.heal()
            for node_id in c.node_ids:
                c.restart(node_id)
            c.run_until(lambda: all(op.done for op in c.ops), 5_000)
            assert c.run_until(c.converged, 20_000), f"seed {c.seed}: no convergence"
            c.check_hashes()
            c.check_acknowledged()
            c.check_linearizable()
            assert c.violations == [], f"seed {c.seed}: {c.violations[:3]}"
        finally:
            c.close()

"""Hypothesis drives a SimCluster: faults, client operations and a user machine, interleaved.

`ClusterMachine` is the public stateful test; here it runs as is and subclassed with a user
machine (a replicated counter) and an invariant of its own, the way hosts are meant to use it.
A failure shrinks to a short rule sequence whose notes name the SimCluster seed.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import settings
from hypothesis.stateful import invariant, rule

from coreplane.testing.strategies import ClusterMachine, fault_schedules


def _counter(state: Any, body: Any, ctx: Any) -> tuple[Any, Any]:
    return state + 1, state + 1


class CounterMachine(ClusterMachine):
    machines = (("counter", {"apply": _counter, "initial": 0}),)

    @rule()
    def increment(self) -> None:
        self.user_command("counter", None)

    @invariant()
    def counters_never_exceed_the_increments_sent(self) -> None:
        if self.cluster is None:
            return
        for slot in self.cluster.slots.values():
            if slot.node is not None:
                value = slot.node.state.machine_states.get("counter", 0)
                assert value <= self.seq


# Short by default; the `chaos` hypothesis profile (COREPLANE_HYPOTHESIS_PROFILE=chaos) runs
# its own, much larger number of examples.
_LONG = os.environ.get("COREPLANE_HYPOTHESIS_PROFILE") == "chaos"
TestCluster = ClusterMachine.TestCase
TestCluster.settings = settings(
    max_examples=settings.default.max_examples if _LONG else 6,
    stateful_step_count=50 if _LONG else 25,
    deadline=None,
)
TestCounter = CounterMachine.TestCase
TestCounter.settings = settings(
    max_examples=settings.default.max_examples if _LONG else 4,
    stateful_step_count=50 if _LONG else 25,
    deadline=None,
)


def test_fault_schedule_strategy_draws_known_faults() -> None:
    from hypothesis import given

    from coreplane.testing.workload import FAULTS

    @given(fault_schedules())
    @settings(max_examples=20, deadline=None)
    def check(schedule: list[tuple[str, int, int]]) -> None:
        assert all(f in FAULTS and gap > 0 and dur > 0 for f, gap, dur in schedule)

    check()

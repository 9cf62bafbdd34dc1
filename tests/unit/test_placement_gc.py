"""An embedded solver must not switch the host's garbage collector off (issue 11): the solve
once called gc.disable() for its whole run, pausing collection for every thread of the host."""

from __future__ import annotations

import gc

import pytest

from coreplane.placement import Node, Partition, Problem, solve
from coreplane.placement.backend import available_backends


@pytest.mark.parametrize("backend", available_backends())
def test_a_solve_leaves_the_collector_alone(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    def refuse() -> None:
        raise AssertionError("the solver switched the process-wide collector off")

    monkeypatch.setattr(gc, "disable", refuse)
    nodes = [Node(f"n{i}", f"z{i % 3}") for i in range(9)]
    parts = [Partition(f"p{i}", 3, 1 + i % 5) for i in range(60)]
    plan = solve(Problem(nodes=nodes, partitions=parts), backend=backend)
    assert plan.feasible and len(plan.assignment) == 60 and gc.isenabled()

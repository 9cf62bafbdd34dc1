"""Cluster events as problem transformations, and the independent hard-constraint checker.

Each event takes the problem the last plan answered and returns the next one (the assignment is
the plan's), so the leader, the tests and the benchmarks drive the solver the same way.
`hard_violations` re-checks a plan from the ids alone, sharing no code with the solvers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from coreplane.errors import InvalidArgument
from coreplane.placement.model import ALIVE, DEAD, DRAINING, Node, Partition, Plan, Problem

__all__ = [
    "add_nodes",
    "after",
    "bootstrap",
    "change_rf",
    "drain_zone",
    "hard_violations",
    "node_dead",
    "shift_heat",
    "with_budget",
]


def bootstrap(
    nodes: Iterable[Node], partitions: Iterable[Partition], *, moves_in_flight_per_node: int = 2
) -> Problem:
    """A fresh cluster: nothing placed yet."""
    return Problem(
        tuple(nodes), tuple(partitions), {}, moves_in_flight_per_node=moves_in_flight_per_node
    )


def after(problem: Problem, plan: Plan) -> Problem:
    """The problem once `plan` has been carried out (budget mode switched off)."""
    if not plan.feasible:
        raise InvalidArgument("plan", f"infeasible plans cannot be applied: {plan.reason}")
    return dataclasses.replace(
        problem, assignment=plan.assignment, moves_max=None, budget_objective="worst"
    )


def add_nodes(problem: Problem, nodes: Iterable[Node]) -> Problem:
    return dataclasses.replace(problem, nodes=problem.nodes + tuple(nodes))


def _set_state(problem: Problem, ids: set[str], state: str) -> Problem:
    known = {n.id for n in problem.nodes}
    for nid in sorted(ids - known):
        raise InvalidArgument("node_id", f"unknown node id {nid!r}")
    nodes = tuple(dataclasses.replace(n, state=state) if n.id in ids else n for n in problem.nodes)
    return dataclasses.replace(problem, nodes=nodes)


def node_dead(problem: Problem, node_id: str) -> Problem:
    return _set_state(problem, {node_id}, DEAD)


def drain_zone(problem: Problem, zone: str) -> Problem:
    ids = {n.id for n in problem.nodes if n.zone == zone and n.state == ALIVE}
    if not any(n.zone == zone for n in problem.nodes):
        raise InvalidArgument("zone", f"unknown zone {zone!r}")
    return _set_state(problem, ids, DRAINING)


def _replace_partitions(problem: Problem, values: Mapping[str, int], attr: str) -> Problem:
    known = {p.id for p in problem.partitions}
    for pid in sorted(set(values) - known):
        raise InvalidArgument(attr, f"unknown partition id {pid!r}")

    def changed(p: Partition) -> Partition:
        if p.id not in values:
            return p
        if attr == "rf":
            return dataclasses.replace(p, rf=values[p.id])
        return dataclasses.replace(p, heat=values[p.id])

    parts = tuple(changed(p) for p in problem.partitions)
    return dataclasses.replace(problem, partitions=parts)


def shift_heat(problem: Problem, heat: Mapping[str, int]) -> Problem:
    return _replace_partitions(problem, heat, "heat")


def change_rf(problem: Problem, rf: Mapping[str, int]) -> Problem:
    return _replace_partitions(problem, rf, "rf")


def with_budget(problem: Problem, moves_max: int, *, objective: str = "worst") -> Problem:
    """Budget mode: at most `moves_max` moves, spent as `objective` says (`Problem`)."""
    return dataclasses.replace(problem, moves_max=moves_max, budget_objective=objective)


def hard_violations(problem: Problem, assignment: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Every broken hard constraint: RF distinct alive nodes in RF distinct zones; slots."""
    nodes = {n.id: n for n in problem.nodes}
    load: dict[str, int] = {}
    out: list[str] = []
    for part in problem.partitions:
        reps = assignment.get(part.id, ())
        zones = {nodes[nid].zone for nid in reps}
        if len(reps) != part.rf or len(set(reps)) != len(reps) or len(zones) != len(reps):
            out.append(f"partition {part.id}: {reps} for rf={part.rf}")
        for nid in reps:
            load[nid] = load.get(nid, 0) + 1
            if nodes[nid].state != ALIVE:
                out.append(f"partition {part.id}: replica on {nodes[nid].state} node {nid}")
    for nid in sorted(load):
        if load[nid] > nodes[nid].slots:
            out.append(f"node {nid}: {load[nid]} replicas over {nodes[nid].slots} slots")
    return out

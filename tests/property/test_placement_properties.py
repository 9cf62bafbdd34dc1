"""Placement properties on random instances: kernel == twin byte for byte, hard constraints after
every event, moves >= the plan's lower bound (always) and >= lower_bound(problem) (when the plan
meets the targets), and plans that ignore the order nodes and partitions come in.
"""

from __future__ import annotations

import dataclasses

from hypothesis import example, given
from hypothesis import strategies as st

from coreplane.placement import (
    Node,
    Partition,
    Plan,
    Problem,
    available_backends,
    lower_bound,
    solve,
)
from coreplane.placement import events as ev
from coreplane.placement.bounds import compile_problem, dense_replicas, hard_lower_bound_dense
from coreplane.placement.model import Assignment

EVENTS = ("none", "add", "dead", "drain", "heat", "rf", "budget")


@st.composite
def instances(draw: st.DrawFn) -> tuple[Problem, str, int]:
    zones = draw(st.integers(2, 5))
    n_nodes = draw(st.integers(zones, 14))
    nodes = [
        Node(
            f"n{i:02d}",
            f"z{i % zones}",
            weight=draw(st.integers(1, 3)),
            slots=draw(st.sampled_from([1 << 20, 1 << 20, 2, 5, 12])),
        )
        for i in range(n_nodes)
    ]
    n_parts = draw(st.integers(1, 40))
    rf_max = min(3, zones)
    parts = [
        Partition(f"p{i:03d}", draw(st.integers(1, rf_max)), draw(st.integers(0, 1000)))
        for i in range(n_parts)
    ]
    inflight = draw(st.integers(1, 3))
    problem = ev.bootstrap(nodes, parts, moves_in_flight_per_node=inflight)
    return problem, draw(st.sampled_from(EVENTS)), draw(st.integers(0, 10**6))


def _event(problem: Problem, event: str, seed: int) -> Problem:
    nodes = sorted(problem.nodes, key=lambda n: n.id)
    parts = sorted(problem.partitions, key=lambda p: p.id)
    zones = sorted({n.zone for n in nodes})
    if event == "add":
        return ev.add_nodes(
            problem,
            [Node(f"m{i}", zones[(seed + i) % len(zones)], weight=2) for i in range(1 + seed % 3)],
        )
    if event == "dead":
        return ev.node_dead(problem, nodes[seed % len(nodes)].id)
    if event == "drain":
        return ev.drain_zone(problem, zones[seed % len(zones)])
    if event == "heat":
        return ev.shift_heat(
            problem,
            {p.id: (seed * (i + 7)) % 2000 for i, p in enumerate(parts) if i % 3 == seed % 3},
        )
    if event == "rf":
        return ev.change_rf(
            problem,
            {p.id: 1 + (seed + i) % min(3, len(zones)) for i, p in enumerate(parts) if i % 2 == 0},
        )
    if event == "budget":
        return ev.with_budget(ev.add_nodes(problem, [Node("m0", zones[0], weight=3)]), seed % 20)
    return problem


def _check(problem: Problem, plan: Plan) -> None:
    if not plan.feasible:
        assert plan.reason and plan.moves == ()
        return
    assert ev.hard_violations(problem, plan.assignment) == []
    d = compile_problem(problem)
    # The plan's bound is over plans ending within its own per-node counts and heats: no plan
    # comes in under its own.
    assert plan.metrics.moves == len(plan.moves) >= plan.metrics.lower_bound
    assert plan.metrics.lower_bound >= hard_lower_bound_dense(d)
    assert plan.metrics.lower_bound == lower_bound(problem, reached=plan.assignment)
    target = lower_bound(problem)
    assert plan.metrics.lower_bound <= target  # a wider class of plans, a smaller bound
    # Without split candidates, Metrics.heat_over_cap counts nodes over the bound's own caps.
    met = plan.metrics.band_violations == 0 and plan.metrics.heat_over_cap == 0
    if met and not plan.split_candidates:
        assert plan.metrics.lower_bound == target <= plan.metrics.moves
    if problem.moves_max is not None:
        assert len(plan.moves) <= problem.moves_max
    per_wave: dict[tuple[str, int], int] = {}
    for move in plan.moves:
        for nid in (move.source, move.target):
            if nid is not None:
                per_wave[(nid, move.wave)] = per_wave.get((nid, move.wave), 0) + 1
    assert max(per_wave.values(), default=0) <= problem.moves_in_flight_per_node
    waves_of: dict[str, list[int]] = {}
    for move in plan.moves:
        waves_of.setdefault(move.partition, []).append(move.wave)
    for waves in waves_of.values():  # one replica of a partition in flight at a time
        assert waves == sorted(waves) and len(set(waves)) == len(waves)


def _solve_all(problem: Problem) -> Plan:
    plans = [solve(problem, backend=b) for b in available_backends()]
    for other in plans[1:]:
        assert other.canonical() == plans[0].canonical()
    for plan in plans:  # the dense memo a plan leaves behind is the assignment it describes
        memo = plan.assignment.dense if isinstance(plan.assignment, Assignment) else None
        if plan.feasible and memo is not None:
            node_ids, part_ids, off, rep = memo
            fresh = dense_replicas(
                part_ids, plan.assignment, {n: i for i, n in enumerate(node_ids)}
            )
            assert (list(off), list(rep)) == fresh
    return plans[0]


def _split_budget_case() -> tuple[Problem, str, int]:
    """Two split candidates and a 2-move budget: the plan meets the family's cap, not the
    solver's (hottest movable replica); found by the ci profile on 2026-12-07."""
    zw = [("z0", 1), ("z1", 1), ("z2", 3), ("z3", 2), ("z0", 2)]
    zw += [("z1", 2), ("z2", 1), ("z3", 2), ("z0", 3), ("z1", 1)]
    nodes = tuple(Node(f"n{i:02d}", z, weight=w) for i, (z, w) in enumerate(zw))
    rh = [(1, 137), (1, 0), (2, 176), (3, 1), (1, 3), (3, 193), (1, 31), (1, 276)]
    rh += [(2, 403), (1, 0), (1, 31), (1, 0), (1, 0), (1, 0), (1, 409)]
    parts = tuple(Partition(f"p{i:03d}", rf=r, heat=h) for i, (r, h) in enumerate(rh))
    return Problem(nodes, parts, moves_in_flight_per_node=1), "budget", 182


def _shave_after_polish_case() -> tuple[Problem, str, int]:
    """After an rf change the plan meets every target, `_polish` having swapped a 682 onto a
    weight-1 node (1.58 of fair, under its cap, the hottest replica); `_shave` then moved a
    replica off it on the next solve, and `_peak` followed (found by hypothesis, 2026-12-07)."""
    weights = [3, 2, 3, 2, 3, 1, 3, 3, 2, 3, 1, 3, 2]
    slots = {7: 5, 9: 2}
    nodes = tuple(
        Node(f"n{i:02d}", f"z{i % 4}", weight=w, slots=slots.get(i, 1 << 20))
        for i, w in enumerate(weights)
    )
    rh = [(1, 165), (3, 137), (3, 120), (2, 171), (1, 445), (2, 246), (1, 272), (3, 116)]
    rh += [(3, 116), (1, 995), (2, 524), (1, 304), (3, 682), (3, 98), (3, 204), (1, 6)]
    rh += [(2, 682), (3, 24), (3, 150), (3, 30), (3, 178), (2, 999), (3, 344), (3, 719)]
    rh += [(1, 267), (1, 0)]
    parts = tuple(Partition(f"p{i:03d}", rf=r, heat=h) for i, (r, h) in enumerate(rh))
    return Problem(nodes, parts, moves_in_flight_per_node=1), "rf", 86


@given(instances())
@example(_split_budget_case())
@example(_shave_after_polish_case())
def test_backends_agree_and_hard_constraints_hold_after_events(
    case: tuple[Problem, str, int],
) -> None:
    problem, event, seed = case
    plan = _solve_all(problem)
    _check(problem, plan)
    if not plan.feasible:
        return
    nxt = _event(ev.after(problem, plan), event, seed)
    plan2 = _solve_all(nxt)
    _check(nxt, plan2)
    met = plan2.metrics.band_violations == 0 and plan2.metrics.heat_over_cap == 0
    # With split candidates Metrics counts against the family's cap (the hottest replica, split
    # or not), the solver against the hottest movable one: a budgeted plan can meet the first
    # and not the second, and the next solve then finishes the job (found by the ci profile).
    if plan2.feasible and met and not plan2.split_candidates:
        again = _solve_all(ev.after(nxt, plan2))  # a cluster that meets every target stays put
        assert again.moves == ()


@given(instances(), st.randoms(use_true_random=False))
def test_input_order_does_not_change_the_plan(case: tuple[Problem, str, int], rnd: object) -> None:
    problem, _, _ = case
    nodes = list(problem.nodes)
    parts = list(problem.partitions)
    rnd.shuffle(nodes)  # type: ignore[attr-defined]
    rnd.shuffle(parts)  # type: ignore[attr-defined]
    shuffled = dataclasses.replace(problem, nodes=tuple(nodes), partitions=tuple(parts))
    assert solve(shuffled).canonical() == solve(problem).canonical()


@given(instances())
def test_relabeling_ids_relabels_the_plan(case: tuple[Problem, str, int]) -> None:
    problem, _, _ = case
    renamed = Problem(
        tuple(dataclasses.replace(n, id="x" + n.id, zone="y" + n.zone) for n in problem.nodes),
        tuple(dataclasses.replace(p, id="x" + p.id) for p in problem.partitions),
        moves_in_flight_per_node=problem.moves_in_flight_per_node,
    )
    a = solve(problem)
    b = solve(renamed)
    assert [(m.partition, m.source, m.target, m.wave) for m in a.moves] == [
        (m.partition[1:], m.source and m.source[1:], m.target and m.target[1:], m.wave)
        for m in b.moves
    ]


def test_regression_targets_met_after_a_budget_means_no_more_moves() -> None:
    """Found by the chaos profile: the peak pass used to polish a cluster already within targets.

    Fewer moves come first in the objective, so a cluster meeting every target stays put.
    """
    weights = [1, 1, 1, 2, 3, 1, 1, 1, 3]
    nodes = [Node(f"n{i:02d}", f"z{i % 3}", weight=w) for i, w in enumerate(weights)]
    spec = [
        (1, 501),
        (1, 0),
        (1, 0),
        (1, 0),
        (2, 771),
        (3, 509),
        (1, 0),
        (2, 744),
        (2, 0),
        (2, 160),
        (1, 0),
        (1, 0),
        (1, 0),
        (3, 0),
        (2, 183),
        (1, 0),
        (1, 215),
        (2, 181),
        (1, 142),
        (1, 0),
        (1, 0),
        (3, 249),
        (3, 267),
        (2, 233),
        (1, 218),
        (1, 0),
        (1, 0),
        (1, 0),
        (1, 0),
        (2, 2),
        (2, 143),
        (3, 181),
        (1, 306),
        (3, 539),
        (1, 2),
        (1, 241),
        (1, 233),
        (2, 4),
    ]
    parts = [Partition(f"p{i:03d}", rf, heat) for i, (rf, heat) in enumerate(spec)]
    test_backends_agree_and_hard_constraints_hold_after_events.hypothesis.inner_test(  # type: ignore[attr-defined]
        (ev.bootstrap(nodes, parts, moves_in_flight_per_node=1), "budget", 13)
    )

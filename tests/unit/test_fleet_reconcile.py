"""Reconcile closes the loop in pure code: capture -> problem -> solve -> FleetPlan -> acks.

No runtime here: a loop plays leader (ticks, liveness batches, plans) and agents (acks), so the
claims are about the core and the solver together: a dead node's replicas are re-created
exactly once and RF is restored; a drained node ends empty; a cluster bootstraps to RF.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from coreplane import placement
from coreplane.core import commands as C
from coreplane.core.machines.fleet import FleetConfig
from coreplane.core.reconcile import pair_by_zone, plan_moves, problem_from_capture
from coreplane.core.state import StateMachine
from coreplane.errors import InvalidArgument

CFG = FleetConfig(
    suspect_after_ms=2_000, dead_after_ms=4_000, moves_in_flight_per_node=4, moves_in_flight_max=32
)


class Loop:
    def __init__(self, nodes: int, zones: int) -> None:
        self.sm = StateMachine(fleet=CFG)
        self.index, self.tick_n, self.ms, self.seq = 0, 0, 0, 0
        self.down: set[str] = set()
        self.apply(C.Leader("cp", 1))
        self.apply(
            C.FleetReport(
                [[f"n{i}", f"z{i % zones}", 1, 1000] for i in range(nodes)], [], [], [], []
            )
        )

    def apply(self, cmd: Any) -> Any:
        self.index += 1
        if getattr(cmd, "client_id", None) == "":
            self.seq += 1
            cmd = type(cmd)(**{**cmd.to_body(), "client_id": "c", "seq": self.seq})
        data = C.encode_internal(cmd) if cmd.TAG in C.INTERNAL_TAGS else C.encode(cmd)
        result = self.sm.apply(data, self.index)
        assert result.ok, result
        return result.value

    def step(self) -> None:
        fleet = self.sm.fleet
        self.tick_n += 1
        self.ms += 500
        self.apply(C.Tick(self.tick_n, 500))
        if fleet.needs_plan():
            solve = problem_from_capture(fleet.capture()(), moves_in_flight_per_node=4)
            plan = placement.solve(solve.problem)
            assert plan.feasible, plan.reason
            moves, more = plan_moves(plan, 500)
            self.apply(C.FleetPlan(solve.index, moves, list(plan.split_candidates), more))
        for node_id in sorted(fleet.nodes):
            if node_id in self.down:
                continue
            for action in fleet.actions(node_id):
                self.apply(C.FleetAck(node_id, action["id"], action["token"]))

    def count_started(self) -> Counter[tuple[str, str]]:
        """(partition, source) of every operation started, from the decision journal."""
        out: Counter[tuple[str, str]] = Counter()
        for _index, _ms, _subjects, text in self.sm.fleet.journal:
            if " started (" in text:
                pid, source = text.split(": ", 1)[1].split(" ")[:2]
                out[(pid, source)] += 1
        return out

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def converged(self) -> bool:
        fleet = self.sm.fleet
        return not fleet.ops and not fleet.queue and not fleet.under and not fleet.needs_plan()


def test_bootstrap_places_every_partition_at_rf() -> None:
    loop = Loop(nodes=6, zones=3)
    for i in range(30):
        loop.apply(C.FleetCreatePartition(f"p{i}", rf=3))
    loop.run(40)
    assert loop.converged()
    fleet = loop.sm.fleet
    for pid in fleet.parts:
        view = fleet.partition_view(pid)
        assert view["health"] == "healthy"
        assert len({fleet.nodes[n].zone for n in view["replicas"]}) == 3


def test_a_dead_node_is_repaired_exactly_once_and_rf_restored() -> None:
    loop = Loop(nodes=6, zones=3)
    for i in range(30):
        loop.apply(C.FleetCreatePartition(f"p{i}", rf=3))
    loop.run(40)
    fleet = loop.sm.fleet
    lost = sorted(fleet.node_parts["n1"])
    assert lost
    before = loop.count_started()
    loop.down.add("n1")
    loop.apply(C.FleetReport([], [], [["n1", loop.ms]], [], []))
    loop.run(60)
    assert fleet.nodes["n1"].liveness == "dead"
    assert loop.converged()
    repairs = {k: v for k, v in (loop.count_started() - before).items() if k[1] == "n1"}
    assert sorted(k[0] for k in repairs) == lost  # every lost replica re-created ...
    assert set(repairs.values()) == {1}  # ... exactly once
    for pid in lost:
        assert fleet.partition_view(pid)["health"] == "healthy"
        assert "n1" not in fleet.parts[pid][2]


def test_drain_empties_the_node() -> None:
    loop = Loop(nodes=6, zones=3)
    for i in range(20):
        loop.apply(C.FleetCreatePartition(f"p{i}", rf=2))
    loop.run(40)
    loop.apply(C.FleetDrain("n2"))
    loop.run(60)
    assert loop.converged()
    assert not loop.sm.fleet.node_parts["n2"]
    assert all(loop.sm.fleet.partition_view(p)["health"] == "healthy" for p in loop.sm.fleet.parts)


def test_rf_above_the_zones_is_capped_for_the_solve() -> None:
    loop = Loop(nodes=4, zones=2)
    loop.apply(C.FleetCreatePartition("p", rf=3))
    solve = problem_from_capture(loop.sm.fleet.capture()(), moves_in_flight_per_node=2)
    assert solve.capped == ("p",)
    assert solve.problem.partitions[0].rf == 2


def test_one_unplaceable_partition_does_not_hold_back_the_others() -> None:
    from coreplane.runtime.fleet import _solve_around

    nodes = (
        placement.Node("n0", "z0", 1, 10),
        placement.Node("n1", "z1", 1, 10),
        placement.Node("n2", "z2", 1, 0),
    )  # z2 has no free slot: b (rf=3) cannot fit
    problem = placement.Problem(
        nodes, (placement.Partition("a", 2, 1), placement.Partition("b", 3, 1)), {}
    )
    assert not placement.solve(problem).feasible
    plan, skipped = _solve_around(problem)
    assert plan.feasible and [pid for pid, _ in skipped] == ["b"]
    assert sorted(m.target for m in plan.moves if m.partition == "a") == ["n0", "n1"]


def test_the_trusted_problem_equals_the_validated_one_and_users_keep_their_errors() -> None:
    loop = Loop(nodes=7, zones=3)
    for i in range(20):
        loop.apply(C.FleetCreatePartition(f"p{i}", rf=3 + (i == 0), heat=1 + i))
    loop.run(30)
    loop.down.add("n1")
    loop.apply(C.FleetReport([], [], [["n1", loop.ms]], [], []))
    loop.apply(C.FleetDrain("n2"))
    fleet = loop.sm.fleet
    loop.down = set(fleet.nodes)  # nobody acks: the moves stay in flight
    for _ in range(12):  # n1 dead, n2 draining, rf 4 capped at the 3 zones
        loop.step()
    assert fleet.nodes["n1"].liveness == "dead" and fleet.ops
    solve = problem_from_capture(fleet.capture()(), moves_in_flight_per_node=4)
    problem = solve.problem
    checked = placement.Problem(
        problem.nodes,
        problem.partitions,
        dict(problem.assignment),
        moves_in_flight_per_node=problem.moves_in_flight_per_node,
    )
    assert solve.capped == ("p0",)
    assert problem == checked
    assert placement.solve(problem).moves == placement.solve(checked).moves
    with pytest.raises(InvalidArgument, match=r"partitions\[1\]\.rf"):
        placement.Problem(problem.nodes, (problem.partitions[0], placement.Partition("x", 9)), {})


def test_the_trusted_problem_still_checks_the_aggregate_heat_bound() -> None:
    loop = Loop(nodes=3, zones=3)
    loop.apply(C.FleetCreatePartition("a", rf=3, heat=1 << 39))
    with pytest.raises(InvalidArgument, match="partitions"):
        problem_from_capture(loop.sm.fleet.capture()(), moves_in_flight_per_node=4)


def test_a_zone_swap_is_re_paired_into_moves_apply_can_run_one_at_a_time() -> None:
    zone_of = {"a": "A", "b": "B", "c": "B", "d": "A", "e": "C", "f": "C", "g": "D"}
    swap = [["p", "a", "b"], ["q", "e", "g"], ["p", "c", "d"]]
    pair_by_zone(swap, zone_of)
    assert swap == [["p", "a", "d"], ["q", "e", "g"], ["p", "c", "b"]]
    cycle = [["p", "a", "b"], ["p", "c", "f"], ["p", "e", "d"]]  # A->B, B->C, C->A
    pair_by_zone(cycle, zone_of)
    assert sorted(m[1:] for m in cycle) == [["a", "d"], ["c", "b"], ["e", "f"]]
    # The final replica sets are the solver's; and apply admits the re-paired first step.
    loop = Loop(nodes=6, zones=3)  # z0: n0 n3, z1: n1 n4, z2: n2 n5
    loop.apply(C.FleetCreatePartition("p", rf=3))
    loop.run(10)
    assert loop.sm.fleet.parts["p"][2] == ("n0", "n1", "n2")
    zones = {f"n{i}": f"z{i % 3}" for i in range(6)}
    moves = [["p", "n0", "n4"], ["p", "n1", "n3"]]
    pair_by_zone(moves, zones)
    assert moves == [["p", "n0", "n3"], ["p", "n1", "n4"]]
    loop.apply(C.FleetPlan(loop.index, moves, []))
    assert [op.target for op in loop.sm.fleet.ops.values()] == ["n3"]


def test_an_add_in_the_zone_a_moving_replica_leaves_is_re_paired_with_it() -> None:
    """The solver's repair of a partition below its RF may add a replica in the zone one of
    its live replicas leaves for balance. Re-paired, the live replica moves within its zone
    and the add goes where the move went: neither waits for the other (the move may be held
    back by a cooldown, the add must not be)."""
    zone_of = {"s0": "z0", "s1": "z1", "s2": "z2", "s6": "z2"}
    moves = [["p", "s6", "s1"], ["p", "", "s2"]]
    pair_by_zone(moves, zone_of)
    assert moves == [["p", "s6", "s2"], ["p", "", "s1"]]
    lone = [["p", "", "s1"], ["p", "", "s2"]]  # adds alone: nothing to re-pair
    pair_by_zone(lone, zone_of)
    assert lone == [["p", "", "s1"], ["p", "", "s2"]]

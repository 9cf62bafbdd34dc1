"""Placement model, bounds and backend switch: bad input, infeasibility, exact small answers."""

from __future__ import annotations

import os
import subprocess
import sys
from array import array
from fractions import Fraction

import pytest

import coreplane.placement as placement
from coreplane.errors import InvalidArgument
from coreplane.placement import (
    BACKEND,
    Node,
    Partition,
    Problem,
    available_backends,
    lower_bound,
    solve,
)
from coreplane.placement import events as ev
from coreplane.placement.bounds import (
    Dense,
    compile_problem,
    dense_replicas,
    hotter_than,
    plan_metrics,
    touched_rows,
    water_fill,
)
from coreplane.placement.model import Assignment


def _nodes(zones: int, per_zone: int) -> list[Node]:
    return [Node(f"n{z}{i}", f"z{z}") for z in range(zones) for i in range(per_zone)]


def _parts(count: int, rf: int = 3) -> list[Partition]:
    return [Partition(f"p{i:03d}", rf, heat=1 + i % 7) for i in range(count)]


def test_all_is_sorted() -> None:
    # isort style, as ruff's RUF022 wants: CONSTANTS, then Classes, then functions and modules.
    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert placement.__all__ == sorted(placement.__all__, key=kind)
    assert {"solve", "lower_bound", "BACKEND", "Problem", "Plan"} <= set(placement.__all__)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Problem((Node("a", "z"), Node("a", "y")), ()), "nodes[1].id"),
        (lambda: Problem((Node("a", "z"),), (Partition("p", 2),)), "partitions[0].rf"),
        (lambda: Problem((Node("a", "z"),), (Partition("p", 1, heat=-1),)), "partitions[0].heat"),
        (
            lambda: Problem((Node("a", "z"),), (Partition("p", 1), Partition("p", 1))),
            "partitions[1].id",
        ),
        (
            lambda: Problem((Node("a", "z"),), (Partition("p", 1),), {"p": ("b",)}),
            "assignment['p']",
        ),
        (
            lambda: Problem((Node("a", "z"),), (Partition("p", 1),), {"q": ("a",)}),
            "assignment['q']",
        ),
        (
            lambda: Problem(
                (Node("a", "z"), Node("b", "y")), (Partition("p", 2),), {"p": ("a", "a")}
            ),
            "assignment['p']",
        ),
        (lambda: Problem((Node("a", "z", weight=0),), ()), "nodes[0].weight"),
        (lambda: Problem((Node("a", "z", state="gone"),), ()), "nodes[0].state"),
        (
            lambda: Problem((Node("a", "z"),), (), moves_in_flight_per_node=0),
            "moves_in_flight_per_node",
        ),
        (lambda: Problem((Node("a", "z"),), (), moves_max=-1), "moves_max"),
    ],
)
def test_bad_input_names_the_item(build: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        build()  # type: ignore[operator]
    assert info.value.field == field


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        solve(Problem((Node("a", "z"),), ()), backend="fortran")


def test_water_fill_caps_a_big_zone() -> None:
    # Three zones weights 1, 1, 4; 30 replicas of 10 partitions: the big zone holds at most 10.
    shares = water_fill(Fraction(30), [1, 1, 4], [10, 10, 10])
    assert shares == [Fraction(10), Fraction(10), Fraction(10)]
    assert water_fill(Fraction(12), [1, 2, 3], [100, 100, 100]) == [2, 4, 6]


def test_bootstrap_balances_exactly_and_meets_lower_bound() -> None:
    problem = ev.bootstrap(_nodes(3, 4), _parts(120))
    plan = solve(problem)
    assert plan.feasible and plan.metrics.band_violations == 0
    assert len(plan.moves) == lower_bound(problem) == 360
    assert ev.hard_violations(problem, plan.assignment) == []
    counts: dict[str, int] = {}
    for reps in plan.assignment.values():
        for nid in reps:
            counts[nid] = counts.get(nid, 0) + 1
    assert set(counts.values()) <= {29, 30, 31}


def test_dead_node_moves_exactly_its_replicas_within_its_zone() -> None:
    problem = ev.bootstrap(_nodes(3, 4), _parts(120))
    base = ev.after(problem, solve(problem))
    dead = ev.node_dead(base, "n10")
    plan = solve(dead)
    assert lower_bound(dead) == 30
    assert len(plan.moves) == 30
    assert all(m.source == "n10" and m.target and m.target.startswith("n1") for m in plan.moves)
    assert ev.hard_violations(dead, plan.assignment) == []


def test_draining_the_only_spare_zone_is_infeasible_with_a_reason() -> None:
    problem = ev.bootstrap(_nodes(3, 2), _parts(10))
    plan = solve(ev.drain_zone(ev.after(problem, solve(problem)), "z0"))
    assert not plan.feasible and plan.moves == ()
    assert "needs 3 zones" in plan.reason


def test_budget_below_the_hard_moves_is_infeasible_and_budget_is_respected() -> None:
    problem = ev.bootstrap(_nodes(3, 2), _parts(10))
    base = ev.after(problem, solve(problem))
    dead = ev.node_dead(base, "n00")
    assert not solve(ev.with_budget(dead, 1)).feasible
    grown = ev.add_nodes(base, [Node("m0", "z0"), Node("m1", "z1")])
    plan = solve(ev.with_budget(grown, 3))
    assert plan.feasible and len(plan.moves) == 3
    assert ev.hard_violations(grown, plan.assignment) == []


def test_lower_bound_counts_dead_and_deficit_nodes() -> None:
    nodes = _nodes(3, 1)
    parts = _parts(6)
    assignment = {p.id: ("n00", "n10", "n20") for p in parts}
    problem = Problem(tuple(nodes), tuple(parts), assignment)
    assert lower_bound(problem) == 0
    grown = ev.add_nodes(problem, [Node("n01", "z0")])
    # z0's share 6 splits 3/3 between two equal nodes: the newcomer must gain >= floor(0.95*3).
    assert lower_bound(grown) == 2
    d = compile_problem(grown)
    assert d.lo[d.node_ids.index("n01")] == 2


def test_plan_bound_holds_when_the_heat_target_is_out_of_reach() -> None:
    # p01 (RF=2) pins 300 on both nodes; the 500 of p00 overloads whichever node holds it. No
    # plan meets the heat target, so lower_bound(problem) (over plans that do: none) said one
    # move while the best plan, staying put, makes none. The plan's own bound is over plans
    # that leave n0 at or below the 800 it reached (n1 under its cap), and that needs no move.
    nodes = (Node("n0", "z0", weight=3), Node("n1", "z1", weight=2))
    parts = (Partition("p00", 1, heat=500), Partition("p01", 2, heat=300))
    problem = Problem(nodes, parts, {"p00": ("n0",), "p01": ("n0", "n1")})
    d = compile_problem(problem)
    assert (d.hfair, d.hcap) == ([660, 440], [726, 484])
    assert lower_bound(problem) == 1
    for backend in available_backends():
        plan = solve(problem, backend=backend)
        assert plan.feasible and plan.moves == ()
        assert plan.metrics.heat_over_cap == 1 and plan.metrics.band_violations == 0
        assert plan.metrics.heat_max_over_fair == 800 / 660
        assert plan.metrics.lower_bound == 0 == lower_bound(problem, reached=plan.assignment)


def test_plan_bound_counts_heat_moves_on_nodes_that_got_under_their_cap() -> None:
    # One zone, RF=1, fair heat 262 and cap 288 per node. n1..n3 hold at most 2 replicas, so
    # n0 keeps at least 4 (400 heat at best, 1.53x fair): no plan meets the heat target. n1
    # (a + b = 300) can get under its cap and the plan does it (a to n3, then n0 refills n1
    # with one 100). A cap relaxed globally to n0's 1.53x let n1 keep 300 and counted one move;
    # relaxed per node, n1 keeps its 288 cap and its move counts: the bound is the plan's 2.
    nodes = (
        Node("n0", "z0", slots=100),
        Node("n1", "z0", slots=2),
        Node("n2", "z0", slots=2),
        Node("n3", "z0", slots=2),
    )
    heat = {"a": 150, "b": 150, "c": 50, "d": 100, "e": 100, **dict.fromkeys("fghij", 100)}
    parts = tuple(Partition(pid, 1, heat=h) for pid, h in heat.items())
    where = {"a": "n1", "b": "n1", "c": "n3", "d": "n2", "e": "n2", **dict.fromkeys("fghij", "n0")}
    problem = Problem(nodes, parts, {pid: (nid,) for pid, nid in where.items()})
    d = compile_problem(problem)
    assert (d.hfair, d.hcap) == ([262] * 4, [288] * 4)
    assert lower_bound(problem) == 4  # n0 down to 288 (3 of its 100s) and n1 under 288 (one)
    for backend in available_backends():
        plan = solve(problem, backend=backend)
        assert plan.feasible and plan.metrics.band_violations == 0
        assert plan.metrics.heat_over_cap == 1  # n0 alone: it cannot get under 288
        assert not ev.hard_violations(problem, plan.assignment)
        # n1 ends under its cap (a leaves it); n0 cannot get under 288 (the others have two
        # slots each), so the heat cap pass leaves it as it was rather than churn its replicas.
        heat_of = {
            nid: sum(heat[pid] for pid, reps in plan.assignment.items() if nid in reps)
            for nid in ("n0", "n1", "n2", "n3")
        }
        assert heat_of["n1"] <= 288 and heat_of["n2"] <= 288 and heat_of["n3"] <= 288
        assert heat_of["n0"] == 400
        bound = lower_bound(problem, reached=plan.assignment)
        assert plan.metrics.lower_bound == bound <= plan.metrics.moves


def test_plan_bound_holds_when_a_budget_leaves_bands_unmet() -> None:
    problem = ev.bootstrap(_nodes(3, 2), _parts(30))
    grown = ev.add_nodes(ev.after(problem, solve(problem)), [Node("m0", "z0"), Node("m1", "z1")])
    assert lower_bound(grown) > 3
    plan = solve(ev.with_budget(grown, 3))
    assert plan.feasible and len(plan.moves) == 3 and plan.metrics.band_violations > 0
    assert plan.metrics.lower_bound <= 3
    assert plan.metrics.lower_bound == lower_bound(grown, reached=plan.assignment)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"reached": {"nope": ("n00",)}}, "reached"),
        ({"reached": {"p000": ("nope",)}}, "reached"),
    ],
)
def test_lower_bound_options_are_checked(kwargs: dict[str, object], field: str) -> None:
    problem = ev.bootstrap(_nodes(3, 1), _parts(2))
    with pytest.raises(InvalidArgument) as info:
        lower_bound(problem, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_split_candidates_are_reported() -> None:
    parts = [*_parts(30), Partition("hot", 3, heat=10_000)]
    plan = solve(ev.bootstrap(_nodes(3, 3), parts))
    assert plan.split_candidates == ("hot",)


def test_rf_change_adds_and_drops_replicas() -> None:
    problem = ev.bootstrap(_nodes(3, 2), _parts(10, rf=2))
    base = ev.after(problem, solve(problem))
    plan = solve(ev.change_rf(base, {"p000": 3, "p001": 1}))
    assert sorted((m.partition, m.source is None, m.target is None) for m in plan.moves) == [
        ("p000", True, False),
        ("p001", False, True),
    ]


def test_backend_switch() -> None:
    assert BACKEND in available_backends()
    if os.environ.get("COREPLANE_PURE_PYTHON") == "1":
        assert BACKEND == "python"
    if os.environ.get("COREPLANE_REQUIRE_EXT") == "1":
        assert "cython" in available_backends()
    env = {**os.environ, "COREPLANE_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", "import coreplane.placement as p; print(p.BACKEND)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "python"


def test_require_ext_fails_loudly_without_the_kernel() -> None:
    # sys.modules[name] = None makes that import raise ImportError, as a missing build would.
    code = (
        "import sys; sys.modules['coreplane.placement._kernel'] = None\n"
        "import coreplane.placement as p; print(p.BACKEND)"
    )
    env = {**os.environ, "COREPLANE_REQUIRE_EXT": "1"}
    env.pop("COREPLANE_PURE_PYTHON", None)
    loud = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert loud.returncode != 0 and "COREPLANE_REQUIRE_EXT=1" in loud.stderr
    env["COREPLANE_REQUIRE_EXT"] = "0"
    quiet = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert quiet.stdout.strip() == "python"


def test_assignment_is_read_only_and_plans_hand_one_over() -> None:
    problem = ev.bootstrap(_nodes(3, 2), _parts(4))
    plan = solve(problem)
    with pytest.raises(TypeError):
        plan.assignment["p000"] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        plan.assignment.update({})  # type: ignore[attr-defined]
    assert ev.after(problem, plan).assignment is plan.assignment


def test_compiled_replicas_match_the_python_loop() -> None:
    kernel = pytest.importorskip("coreplane.placement._kernel")
    problem = ev.bootstrap(_nodes(3, 3), _parts(30))
    plan = solve(problem)
    d = compile_problem(ev.after(problem, plan))
    idx = {n: i for i, n in enumerate(d.node_ids)}
    fresh = Assignment(dict(plan.assignment))
    assert kernel.dense_replicas(d.part_ids, fresh, idx) == dense_replicas(d.part_ids, fresh, idx)


def test_compiled_rows_match_the_python_loop() -> None:
    kernel = pytest.importorskip("coreplane.placement._kernel")
    problem = ev.bootstrap(_nodes(3, 3), _parts(30))
    d = compile_problem(ev.after(problem, solve(problem)))
    moved = [5, 2, 5, 29, 0]
    ours: dict[str, tuple[str, ...]] = {"p001": ("x",), "p002": ("y",)}
    theirs = dict(ours)
    touched_rows(ours, d.part_ids, d.node_ids, moved, d.off, d.rep)
    kernel.touched_rows(theirs, d.part_ids, d.node_ids, moved, d.off, d.rep)
    assert list(ours.items()) == list(theirs.items())
    assert ours["p001"] == ("x",) and ours["p002"] == problem_row(d, 2)


def test_compiled_metrics_match_the_python_loop() -> None:
    # A dead node (out of band with replicas left), a split candidate (its heat counted from the
    # CSR), heat caps that some nodes exceed: the same three numbers, the ratio bit for bit.
    kernel = pytest.importorskip("coreplane.placement._kernel")
    parts = [*_parts(60), Partition("hot", 3, heat=10_000)]
    problem = ev.bootstrap(_nodes(3, 4), parts)
    base = ev.after(problem, solve(problem))
    d = compile_problem(ev.node_dead(base, "n01"))
    assert d.split_ids == ("hot",)
    count = [0] * len(d.node_ids)
    for n in d.rep:
        count[n] += 1
    mheat = [7 * n + 3 for n in range(len(d.node_ids))]
    off, rep = list(d.off), list(d.rep)
    ours = plan_metrics(d, count, mheat, off, rep)
    theirs = kernel.plan_metrics(d, count, mheat, off, rep)
    assert ours == theirs
    assert ours[0] >= 1 and ours[1] >= 1 and ours[2] > 1.0


def test_compiled_split_flags_match_the_python_loop() -> None:
    kernel = pytest.importorskip("coreplane.placement._kernel")
    heat = [0, 5, 6, 7, 1 << 39, 6]
    ids = [f"p{i}" for i in range(len(heat))]
    for above in (-1, 0, 6, 1 << 39):
        ours, theirs = hotter_than(heat, above, ids), kernel.hotter_than(heat, above, ids)
        assert (list(ours[0]), ours[1]) == (list(theirs[0]), theirs[1])
    flags, flagged = kernel.hotter_than(array("q", heat), 6, ids)
    assert (list(flags), flagged) == ([0, 0, 0, 1, 1, 0], ("p3", "p4"))
    assert kernel.hotter_than([], 0, [])[1] == ()


def test_replica_memo_survives_a_compile_with_added_nodes() -> None:
    # An add_nodes compile remaps the plan's CSR beside it, not over it: a later event on the
    # original nodes (a node dies) reads the plan's own memo, and both give the same CSR as
    # building it from the assignment.
    problem = ev.bootstrap(_nodes(3, 2), _parts(40))
    base = ev.after(problem, solve(problem))
    assert isinstance(base.assignment, Assignment) and base.assignment.dense is not None
    memo = base.assignment.dense
    grown = compile_problem(ev.add_nodes(base, [Node("n00a", "z0")]))
    dead = compile_problem(ev.node_dead(base, "n10"))
    assert base.assignment.dense is memo and dead.rep is memo[3]
    again = compile_problem(ev.add_nodes(base, [Node("n00a", "z0")]))
    assert again.rep is grown.rep
    for d in (grown, dead):
        fresh = dense_replicas(
            d.part_ids, dict(base.assignment), {n: i for i, n in enumerate(d.node_ids)}
        )
        assert (list(d.off), list(d.rep)) == fresh


def _dense_values(d: Dense) -> list[object]:
    return [list(v) if isinstance(v, array) else v for v in vars(d).values()]


def test_kernel_partition_arrays_from_the_memo_match_a_fresh_compile() -> None:
    # A heat shift or an RF change keeps most Partition objects: the kernel derives the arrays
    # from the memo's; the same Dense as compiling from scratch in Python.
    if "cython" not in available_backends():
        pytest.skip("kernel not built")
    from coreplane.placement import bounds
    from coreplane.placement.backend import _CORES

    accel = _CORES["cython"][1]
    problem = ev.bootstrap(_nodes(4, 2), _parts(50))
    base = ev.after(problem, solve(problem))
    for event in (
        ev.shift_heat(base, {"p003": 900, "p047": 0}),
        ev.change_rf(base, {"p001": 2, "p010": 4}),
        ev.shift_heat(base, {}),
    ):
        compile_problem(base, accel)  # the memo holds base's partitions
        ours = compile_problem(event, accel)
        assert bounds._PARTS_MEMO[0][2]  # derived, and still known to be in order
        bounds._PARTS_MEMO.clear()
        bounds._SPLIT_MEMO.clear()
        assert _dense_values(ours) == _dense_values(compile_problem(event))
    shuffled = Problem(base.nodes, base.partitions[::-1])
    compile_problem(shuffled, accel)
    assert not bounds._PARTS_MEMO[0][2]  # not in sorted order: never derived from


def problem_row(d: Dense, p: int) -> tuple[str, ...]:
    return tuple(d.node_ids[n] for n in d.rep[d.off[p] : d.off[p + 1]])


def test_kernel_heat_order_cache_keeps_plans_identical() -> None:
    # The kernel keeps its order of all partitions by heat between solves with the same heat;
    # plans must not depend on whether it was reused, rebuilt or made for another heat.
    if "cython" not in available_backends():
        pytest.skip("kernel not built")
    problem = ev.bootstrap(_nodes(4, 3), _parts(300))
    first = solve(problem, backend="cython")
    again = solve(problem, backend="cython")  # cached order
    twin = solve(problem, backend="python")
    assert first.canonical() == again.canonical() == twin.canonical()
    base = ev.after(problem, first)
    for nxt in (
        ev.drain_zone(base, "z1"),
        ev.shift_heat(base, {f"p{i:03d}": 50 + i for i in range(0, 300, 3)}),
        ev.node_dead(base, "n20"),
    ):
        assert solve(nxt, backend="cython").canonical() == solve(nxt, backend="python").canonical()


def test_moves_are_a_lazy_sequence_of_moves() -> None:
    plan = solve(ev.bootstrap(_nodes(3, 1), _parts(2)))
    moves = list(plan.moves)
    assert len(plan.moves) == 6 and plan.moves[0] == moves[0] and plan.moves[-1] == moves[-1]
    assert plan.moves[1:3] == tuple(moves[1:3])
    assert moves[0].source is None and moves[0].target is not None
    waves = plan.by_wave()
    assert sum(len(w) for w in waves) == 6 and len(waves) == plan.metrics.waves
    assert all(m.wave == i for i, w in enumerate(waves) for m in w)


def test_same_bytes_whatever_the_hash_seed() -> None:
    code = (
        "import hashlib\n"
        "from coreplane.placement import Node, Partition, solve, events as ev\n"
        "nodes = [Node(f'n{i}', f'z{i % 4}', weight=1 + i % 3) for i in range(13)]\n"
        "parts = [Partition(f'p{i}', 3, heat=(i * 7919) % 1000) for i in range(200)]\n"
        "p = ev.bootstrap(nodes, parts)\n"
        "plan = solve(ev.node_dead(ev.after(p, solve(p)), 'n3'))\n"
        "print(hashlib.sha256(repr(plan.canonical()).encode()).hexdigest())\n"
    )
    digests = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_orphans_fill_a_zone_only_few_of_them_can_enter() -> None:
    # n21 dies holding p04, p05 and p13. The band wants one more replica on n02 (z0), n12 (z1)
    # and n22 (z2). Only p05 may enter z0 (p04 and p13 keep a replica on n01): z0 is tight, so
    # p05 must land on n02 even where z2 looks as good, or a replica moves inside z0 afterwards
    # (4 moves where the bound is 3).
    nodes = [Node(f"n{z}{i}", f"z{z}") for z in range(3) for i in range(3)]
    rows = [
        "n00 n10",
        "n00 n20",
        "n10 n20",
        "n01 n11",
        "n01 n21",
        "n11 n21",
        "n02 n12",
        "n02 n22",
        "n12 n22",
        "n00 n10",
        "n00 n20",
        "n10 n20",
        "n01 n11",
        "n01 n21",
    ]
    assignment = {f"p{i:02d}": tuple(row.split()) for i, row in enumerate(rows)}
    base = Problem(tuple(nodes), tuple(Partition(pid, 2, heat=0) for pid in assignment), assignment)
    problem = ev.node_dead(base, "n21")
    assert lower_bound(problem) == 3
    for backend in available_backends():
        plan = solve(problem, backend=backend)
        assert plan.metrics.band_violations == 0
        assert [(m.partition, m.source, m.target) for m in plan.moves] == [
            ("p04", "n21", "n12"),
            ("p05", "n21", "n02"),
            ("p13", "n21", "n22"),
        ]
        assert plan.metrics.lower_bound == 3


NINE_NODE_COUNTS = {
    "a1": 10,
    "a2": 31,
    "b1": 30,
    "b2": 30,
    "c1": 30,
    "c2": 30,
    "d1": 24,
    "d2": 27,
    "d3": 28,
}


def _nine_node_rows() -> list[tuple[str, ...]]:
    """80 RF=3 rows over zones a-d giving each node its `NINE_NODE_COUNTS`: a1's 10 all keep a
    replica on d3 (none may enter zone d); the rest take the three zones with the most
    replicas left, and each zone's fullest node."""
    rows: list[tuple[str, ...]] = [("a1", "b1" if i < 5 else "c1", "d3") for i in range(10)]
    left = dict(NINE_NODE_COUNTS)
    for nid in (nid for row in rows for nid in row):
        left[nid] -= 1
    while len(rows) < 80:
        zone_left = {z: sum(v for nid, v in left.items() if nid[0] == z) for z in "abcd"}
        zones = sorted(zone_left, key=lambda z: (-zone_left[z], z))[:3]
        row = tuple(
            max((nid for nid in left if nid[0] == z), key=lambda nid: (left[nid], nid))
            for z in zones
        )
        for nid in row:
            left[nid] -= 1
        rows.append(row)
    assert set(left.values()) == {0}
    return rows


def test_a_deficit_no_orphan_can_enter_is_filled_by_a_node_over_its_heat_cap() -> None:
    # a1 dies holding 10 partitions that all keep a replica on d3, so none may enter zone d,
    # where d1 still lacks one replica. d2 is above its heat cap (two replicas of heat 20) and
    # loses one anyway: filling d1 with the replica that brings d2 down does both jobs in one
    # move. d1 used to take a cold replica from its fullest peer d3 while one of d2's moved
    # elsewhere: 12 moves where the bound is 11.
    rows = _nine_node_rows()
    hot = [i for i, row in enumerate(rows) if "d2" in row][:2]
    heat = [20 if i in hot else 8 if "d3" in row else 10 for i, row in enumerate(rows)]
    nodes = tuple(Node(nid, f"z{nid[0]}") for nid in NINE_NODE_COUNTS)
    parts = tuple(Partition(f"p{i:02d}", 3, heat=h) for i, h in enumerate(heat))
    base = Problem(nodes, parts, {f"p{i:02d}": tuple(sorted(r)) for i, r in enumerate(rows)})
    problem = ev.node_dead(base, "a1")
    for backend in available_backends():
        plan = solve(problem, backend=backend)
        assert plan.metrics.band_violations == 0 and plan.metrics.heat_over_cap == 0
        # d2's gift comes first now (`_hot_gifts`, before the orphans are placed): same move,
        # with the coldest of d2's replicas that brings it to its cap (issue 15: a hot gift
        # left the taker over its cap once its band was filled).
        assert sorted(m.source for m in plan.moves) == ["a1"] * 10 + ["d2"]
        gift = next(m for m in plan.moves if m.source == "d2")
        assert gift[1:3] == ("d2", "d1") and gift.partition not in {f"p{i:02d}" for i in hot}
        assert plan.metrics.lower_bound == 11 == len(plan.moves)


def _nine_node_dead(extra_heat: int, n_hot: int, cold_heat: int) -> Problem:
    """a1 dies; its 10 partitions all keep a replica on d3, so none may enter zone d, where d1
    lacks a replica. The first `n_hot` other partitions on d2 have heat 20, the rest on d3
    `cold_heat`, one partition on none of d1-d3 `extra_heat`, every other one 10."""
    rows = _nine_node_rows()
    hot = [i for i, row in enumerate(rows) if "d2" in row and "a1" not in row][:n_hot]
    heat = [20 if i in hot else cold_heat if "d3" in row else 10 for i, row in enumerate(rows)]
    heat[next(i for i, row in enumerate(rows) if not {"d1", "d2", "d3"} & set(row))] = extra_heat
    nodes = tuple(Node(nid, f"z{nid[0]}") for nid in NINE_NODE_COUNTS)
    parts = tuple(Partition(f"p{i:03d}", 3, heat=h) for i, h in enumerate(heat))
    base = Problem(nodes, parts, {f"p{i:03d}": tuple(sorted(r)) for i, r in enumerate(rows)})
    return ev.node_dead(base, "a1")


NINE_NODE_GRID = [
    (extra, n_hot, cold)
    for extra in (10, 50, 100, 150, 200, 250, 300, 350)
    for n_hot in range(2, 18, 2)
    for cold in (1, 3, 5, 8)
]


def test_a_hot_peer_fills_a_deficit_only_when_that_never_costs_a_move_on_nine_nodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 256 small node-dead cases. The hot peer's gift saves a move where it brings the peer to
    # its heat cap; without the guard it cost one in 22 of them (the peer, one replica above
    # its band, then swapped with d3, which stayed full). Pinned: never more moves than the
    # fullest-donor order, fewer in 29 (the gift 119 times better, 22 worse before the guard).
    from coreplane.placement import _pure

    plans = {k: solve(_nine_node_dead(*k), backend="python") for k in NINE_NODE_GRID}
    if "cython" in available_backends():
        for k, plan in plans.items():
            assert solve(_nine_node_dead(*k), backend="cython").canonical() == plan.canonical()
    monkeypatch.setattr(_pure, "_hot_donor", lambda *args: (-1, -1))  # fullest donor only
    monkeypatch.setattr(_pure, "_hot_gifts", lambda *args: 0)  # (issue 15's gifts, the same idea)
    old = {k: len(solve(_nine_node_dead(*k), backend="python").moves) for k in NINE_NODE_GRID}
    fewer = [k for k in NINE_NODE_GRID if len(plans[k].moves) < old[k]]
    assert all(len(plans[k].moves) <= old[k] for k in NINE_NODE_GRID)
    assert len(fewer) >= 29  # the gift's savings are kept (29 at 4cdfadf; more is welcome)
    # (200, 4, 1): d2 ends its gift 5 over its cap with one replica to spare, d3 is full; the
    # gift made 25 moves where the fullest-donor order makes 24 (bound 12): d3 fills d1 again.
    # The heat cap pass (issue 15) brings it to 19: never more than the fullest-donor order.
    assert len(plans[(200, 4, 1)].moves) <= old[(200, 4, 1)] <= 24
    assert plans[(200, 4, 1)].moves[10][:3] == ("p000", "d3", "d1")

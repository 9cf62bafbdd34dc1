"""Issue 15: the heat cap pass on the seeded heat-cap family of benches/placement.py.

Small instances of the family (P=3000, N=30): mild skew meets the heat cap on every event at the
lower bound; bootstrap meets it under moderate skew too (for free: re-targets of its own moves);
the kernel and the twin give the same bytes; the generator is seeded.
"""

from __future__ import annotations

import itertools

import pytest

from benches import placement as bench
from coreplane.placement import Node, Partition, Problem, available_backends, lower_bound, solve
from coreplane.placement import events as ev
from coreplane.placement.bounds import Dense, compile_problem

SIZE = (3000, 30)


def _events(zones: int, skew: str) -> list[tuple[str, object]]:
    seed = 1500 + zones * 10 + len(skew)
    nodes, parts = bench.family(*SIZE, zones, skew, seed)
    empty = ev.bootstrap(nodes, parts)
    base = ev.after(empty, solve(empty))
    out: list[tuple[str, object]] = [("bootstrap", empty)]
    for event in bench.FAMILY_EVENTS[1:]:
        if event == "drain" and zones == 3:
            continue  # RF 3 cannot leave a zone of three
        out.append((event, bench.family_event(event, base, zones, seed + 1)))
    return out


def test_the_family_generator_is_seeded_and_sets_the_skew() -> None:
    a = bench.family(*SIZE, 4, "moderate", 7)
    assert a == bench.family(*SIZE, 4, "moderate", 7)
    assert a != bench.family(*SIZE, 4, "moderate", 8)
    nodes, parts = a
    assert sorted({n.zone for n in nodes}) == ["z0", "z1", "z2", "z3"]
    assert sum(n.weight == 2 for n in nodes) == 2 + 2 + 1 + 1  # 20% of zones of 8, 8, 7, 7
    d = compile_problem(ev.bootstrap(nodes, parts))
    fair_w1 = min(f for f, n in zip(d.hfair, nodes, strict=True) if n.weight == 1)
    assert 0.65 < max(p.heat for p in parts) / fair_w1 < 0.85  # 0.75: moderate


@pytest.mark.parametrize("zones", [3, 4])
def test_mild_skew_meets_the_cap_at_the_lower_bound_on_every_event(zones: int) -> None:
    for event, problem in _events(zones, "mild"):
        plan = solve(problem)  # type: ignore[arg-type]
        assert plan.feasible, event
        assert plan.metrics.heat_over_cap == 0, event
        assert plan.metrics.band_violations == 0, event
        assert len(plan.moves) == lower_bound(problem), event  # type: ignore[arg-type]


def test_moderate_bootstrap_meets_the_cap_with_one_move_per_replica() -> None:
    for zones in (3, 4, 5):
        problem = _events(zones, "moderate")[0][1]
        plan = solve(problem)  # type: ignore[arg-type]
        assert plan.metrics.heat_over_cap == 0
        assert len(plan.moves) == 3 * SIZE[0] == plan.metrics.lower_bound


def test_kernel_and_twin_agree_on_the_family() -> None:
    if "cython" not in available_backends():
        pytest.skip("the kernel is not built")
    for skew in bench.FAMILY_SKEW:
        for event, problem in _events(4, skew):
            a = solve(problem, backend="cython")  # type: ignore[arg-type]
            b = solve(problem, backend="python")  # type: ignore[arg-type]
            assert a.canonical() == b.canonical(), (skew, event)


def test_budget_objectives_trade_the_worst_node_for_the_count_out_of_band() -> None:
    # Added nodes: 3 empty nodes far below their band, 30 old ones a little above theirs. Half
    # the bound's moves: "worst" shrinks the largest imbalance; "out_of_band" brings every old
    # node into its band first, so fewer nodes stay out of band.
    nodes, parts = bench.family(*SIZE, 4, "mild", 1548)
    empty = ev.bootstrap(nodes, parts)
    grown = bench.family_event("add_nodes", ev.after(empty, solve(empty)), 4, 1549)
    budget = solve(grown).metrics.lower_bound // 2
    plans = {}
    for objective in ("worst", "out_of_band"):
        problem = ev.with_budget(grown, budget, objective=objective)
        for backend in available_backends():
            plan = solve(problem, backend=backend)
            assert len(plan.moves) <= budget and not ev.hard_violations(problem, plan.assignment)
            plans.setdefault(objective, plan)
            assert plan.canonical() == plans[objective].canonical()
    before = bench.score(grown, compile_problem(grown), grown.assignment, 0, 0)
    assert before["band_violations"] == 33
    worst = bench.score(grown, compile_problem(grown), plans["worst"].assignment, 0, 0)
    band = bench.score(grown, compile_problem(grown), plans["out_of_band"].assignment, 0, 0)
    assert band["band_violations"] < worst["band_violations"]
    assert worst["count_max_off_fair"] < band["count_max_off_fair"]


def test_an_unknown_budget_objective_is_refused() -> None:
    nodes, parts = bench.family(60, 6, 3, "mild", 1)
    with pytest.raises(ValueError, match="budget_objective"):
        ev.with_budget(ev.bootstrap(nodes, parts), 5, objective="fewest")


@pytest.mark.parametrize("skew", list(bench.FAMILY_SKEW))
def test_metrics_heat_over_cap_is_the_benchs_count(skew: str) -> None:
    # One cap definition: max(1.10 x fair heat, the hottest replica), all heat counted (split
    # candidates included), in Metrics and in the bench's family score alike.
    for event, problem in _events(4, skew):
        plan = solve(problem)  # type: ignore[arg-type]
        d = compile_problem(problem)  # type: ignore[arg-type]
        lb = plan.metrics.lower_bound
        scored = bench.family_score(problem, d, plan.assignment, len(plan.moves), lb)
        assert plan.metrics.heat_over_cap == scored["heat_over_cap_nodes"], (skew, event)
        assert round(plan.metrics.heat_max_over_fair, 4) == scored["heat_max_over_fair_all"]


def _greedy(problem: object) -> tuple[int, dict[str, object]]:
    d = compile_problem(problem)  # type: ignore[arg-type]
    moves = bench.greedy(d, bench.family_caps(problem, d))  # type: ignore[arg-type]
    scored = bench.family_score(problem, d, bench._apply(d, moves), len(moves), 1)  # type: ignore[arg-type]
    return len(moves), scored


@pytest.mark.parametrize("zones", [3, 4, 5])
def test_moderate_skew_meets_the_cap_on_every_event_and_heat_shifts_beat_the_greedy(
    zones: int,
) -> None:
    # Issue 15: 0 nodes over the cap where the greedy reaches 0 too (and on every event here);
    # a heat shift never takes more moves than the greedy in the same run. Z=4's heat shift
    # left a weight-1 node over its cap before _cap_room took a hot replica that alone is not
    # enough; Z=4's add left one before hot gifts became the coldest that suffices.
    for event, problem in _events(zones, "moderate"):
        plan = solve(problem)  # type: ignore[arg-type]
        assert plan.metrics.heat_over_cap == 0, event
        assert plan.metrics.band_violations == 0, event
        if event == "heat_shift":
            greedy_moves, _ = _greedy(problem)
            assert len(plan.moves) <= greedy_moves
        elif event != "bootstrap":
            assert len(plan.moves) <= 1.02 * lower_bound(problem), event  # type: ignore[arg-type]


@pytest.mark.parametrize("zones", [3, 4])
def test_a_split_candidate_is_isolated_on_the_largest_nodes_after_a_heat_shift(
    zones: int,
) -> None:
    # Boundary skew: the heat shift hands the hottest heat (a split candidate: hotter than
    # every fair share) to a partition on random nodes. It is isolated on weight-2 nodes (the
    # largest fair heat), reported with its nodes, still a split candidate, and the hottest
    # node over its fair heat is well below the greedy's in the same run (about 2.1-2.2x).
    problem = dict(_events(zones, "boundary"))["heat_shift"]
    plan = solve(problem)  # type: ignore[arg-type]
    weight = {n.id: n.weight for n in problem.nodes}  # type: ignore[attr-defined]
    assert len(plan.split_candidates) == 1
    (pid,) = plan.split_candidates
    assert plan.split_nodes()[pid] == tuple(sorted(plan.assignment[pid]))
    assert [weight[nid] for nid in plan.split_nodes()[pid]] == [2, 2, 2]
    _, greedy = _greedy(problem)
    assert plan.metrics.heat_max_over_fair < 0.8 * greedy["heat_max_over_fair_all"]
    assert plan.metrics.heat_over_cap <= greedy["heat_over_cap_nodes"]
    again = solve(ev.after(problem, plan))  # type: ignore[arg-type]
    assert again.moves == ()  # isolated: the next solve leaves it there


def test_the_over_cap_floor_bounds_every_plan_and_bootstrap_meets_it() -> None:
    # The bench's floor: nodes over the cap in every in-band plan (the hottest partition
    # plus the coldest lo - 1 other heats is over every node's cap: each replica costs one).
    # No plan beats it (boundary skew: 0 or 3, one partition of RF 3), and a bootstrap,
    # which places that partition first on empty weight-2 nodes, leaves no other node over.
    for zones in (3, 4):
        for event, problem in _events(zones, "boundary"):
            d = compile_problem(problem)  # type: ignore[arg-type]
            floor = bench.heat_over_cap_floor(problem, d)  # type: ignore[arg-type]
            over = solve(problem).metrics.heat_over_cap  # type: ignore[arg-type]
            assert over >= floor, (zones, event)
            if event == "bootstrap":
                assert over == floor, zones
    problem = _events(4, "moderate")[0][1]
    assert bench.heat_over_cap_floor(problem, compile_problem(problem)) == 0  # type: ignore[arg-type]


def _pinned_taker_problem() -> Problem:
    # Per zone: W (weight 2) holds split candidate S1, V (weight 2) the colder split S2, 18
    # weight-1 nodes 13 fillers each; H (1,600) sits on one of them, over its cap (2,560),
    # and has more heat than any unpinned node has room for (1,260).
    nodes: list[Node] = []
    for z in range(3):
        nodes += [Node(f"W{z}", f"z{z}", 2), Node(f"V{z}", f"z{z}", 2)]
        nodes += [Node(f"k{z}{i:02d}", f"z{z}", 1) for i in range(18)]
    parts = [Partition("S1", 3, 14_000), Partition("S2", 3, 7_000), Partition("H", 3, 1_600)]
    assignment: dict[str, tuple[str, ...]] = {
        "S1": ("W0", "W1", "W2"),
        "S2": ("V0", "V1", "V2"),
        "H": ("k000", "k100", "k200"),
    }
    homes = ["W"] * 26 + ["V"] * 26 + [f"k{i:02d}" for i in range(18) for _ in range(13)]
    for i, home in enumerate(homes):
        parts.append(Partition(f"f{i:04d}", 3, 100))
        assignment[f"f{i:04d}"] = tuple(f"{home[0]}{z}{home[1:]}" for z in range(3))
    return Problem(tuple(nodes), tuple(parts), assignment)


def test_a_replica_no_unpinned_node_can_take_goes_to_a_split_node_below_the_peak() -> None:
    # One move per over-cap node, to the node holding the colder split candidate: its heat
    # stays under the unavoidable peak (S1 alone on a weight-2 node), so neither the count over
    # the cap nor the peak rises. Emptying a weight-1 node for H instead took 6 moves (the
    # P=100k main-bench heat shift, Z=5: 111 where 7 did).
    problem = _pinned_taker_problem()
    plan = solve(problem)
    assert sorted(plan.assignment["H"]) == ["V0", "V1", "V2"]
    assert len(plan.moves) == plan.metrics.lower_bound == 3
    assert plan.metrics.heat_over_cap == 3  # the S1 nodes: no plan avoids them
    assert plan.split_nodes() == {"S1": ("W0", "W1", "W2"), "S2": ("V0", "V1", "V2")}
    if "cython" in available_backends():
        twin = solve(problem, backend="python")
        assert solve(problem, backend="cython").canonical() == twin.canonical()


def test_a_repair_that_leaves_a_node_over_its_cap_trades_its_own_moves() -> None:
    # P=10k main-bench node_dead, Z=3 skewed: the orphans left a node at the bottom of its band
    # over its cap. Swapping it a cold replica for a warm one cost 13 paid moves (522 for a
    # bound of 504); trading the targets of two repair moves costs none.
    nodes, parts = bench.generate(10_000, 100, 3, bench.HEAT_SKEW["skewed"], 306)
    empty = ev.bootstrap(nodes, parts)
    base = ev.after(empty, solve(empty))
    problem = bench.event_problem("node_dead", base, 3, bench.HEAT_SKEW["skewed"], 307)
    plan = solve(problem)
    assert plan.metrics.band_violations == 0
    assert plan.metrics.heat_over_cap == 3  # the split candidate's nodes: no plan avoids them
    assert len(plan.moves) <= 1.02 * plan.metrics.lower_bound


def test_a_drain_that_stacks_the_two_hottest_partitions_unstacks_them() -> None:
    # Boundary skew, P=10k, Z=5, drain of z0: the drained replica of the hottest partition
    # landed beside the third hottest (1.63 of fair, the greedy 1.59). _peak now swaps one
    # away with a replica back that keeps the taker under its cap; moves stay at the bound.
    zones, skew = 5, "boundary"
    seed = 1500 + zones * 10 + len(skew)
    nodes, parts = bench.family(10_000, 100, zones, skew, seed)
    empty = ev.bootstrap(nodes, parts)
    base = ev.after(empty, solve(empty))
    problem = bench.family_event("drain", base, zones, seed + 1)
    plan = solve(problem)
    _, greedy = _greedy(problem)
    assert plan.metrics.heat_max_over_fair < greedy["heat_max_over_fair_all"]  # type: ignore[operator]
    assert plan.metrics.heat_over_cap <= greedy["heat_over_cap_nodes"]  # type: ignore[operator]
    assert len(plan.moves) <= 1.02 * lower_bound(problem)


def _least_peak_by_search(dd: Dense, moves_max: int) -> float:
    """The least heat max / fair over every in-band plan of at most `moves_max` moves (a branch
    and bound over each partition's zone-distinct node sets, hottest partition first)."""
    elig = [n for n in range(len(dd.zone)) if dd.elig[n]]
    options = []
    for p in range(len(dd.rf)):
        have = set(dd.rep[dd.off[p] : dd.off[p + 1]])
        row = [
            (len(set(nodes) - have), nodes)
            for nodes in itertools.combinations(elig, dd.rf[p])
            if len({dd.zone[n] for n in nodes}) == dd.rf[p]
        ]
        options.append(sorted(row))
    order = sorted(range(len(dd.rf)), key=lambda p: -dd.heat[p])
    count = [0] * len(dd.zone)
    heat = [0] * len(dd.zone)
    best = [float("inf")]

    def search(i: int, moves: int, peak: float) -> None:
        if peak >= best[0]:
            return
        if i == len(order):
            if all(dd.lo[n] <= count[n] <= dd.hi[n] for n in elig):
                best[0] = peak
            return
        p = order[i]
        for cost, nodes in options[p]:
            if moves + cost > moves_max:
                break
            if any(count[n] >= dd.hi[n] for n in nodes):
                continue
            for n in nodes:
                count[n] += 1
                heat[n] += dd.heat[p]
            top = max(heat[n] / dd.hfair[n] for n in nodes)
            search(i + 1, moves + cost, max(peak, top))
            for n in nodes:
                count[n] -= 1
                heat[n] -= dd.heat[p]

    search(0, 0, 0.0)
    return best[0]


@pytest.mark.parametrize(("zones", "nodes", "parts"), [(3, 6, 12), (4, 8, 9), (3, 9, 10)])
def test_the_peak_floor_is_below_every_plan_within_the_bound(
    zones: int, nodes: int, parts: int
) -> None:
    # heat_max_floor (the bench's): the least heat max / fair of an in-band plan within
    # floor(1.02 x the bound) moves. Exhaustive search on tiny boundary-skew instances: no such
    # plan is below it, and it is near the best one (within 4%; 0.01% at 6 nodes).
    for seed in (1, 2):
        node_list, part_list = bench.family(parts, nodes, zones, "boundary", seed)
        empty = ev.bootstrap(node_list, part_list)
        base = ev.after(empty, solve(empty))
        for event in ("node_dead", "add_nodes"):
            problem = bench.family_event(event, base, zones, seed + 1)
            d = compile_problem(problem)
            lb = lower_bound(problem)
            best = _least_peak_by_search(d, lb * 102 // 100)
            floor = bench.heat_max_floor(d, lb)
            assert floor is not None, (seed, event)
            assert best * 0.95 <= floor <= best, (seed, event, floor, best)


def test_the_greedys_lower_peak_after_a_node_death_is_out_of_reach_within_the_bound() -> None:
    # Issue 15, boundary skew, P=10k, Z=4, node_dead: the greedy's peak (1.1844 of fair) is
    # lower than ours (1.1858) but takes 569 moves for a bound of 256. The three nodes of the
    # 1,000,000-heat partition hold 474 other replicas of heat <= 419 each; a plan within
    # floor(1.02 x 256) = 261 moves has 8 beyond the 253 repairs, each of which swaps one 419
    # for at best a 384: no such plan gets under 1.1853. Ours is within 0.0005 of that floor.
    zones, skew = 4, "boundary"
    seed = 1500 + zones * 10 + len(skew)
    node_list, part_list = bench.family(10_000, 100, zones, skew, seed)
    empty = ev.bootstrap(node_list, part_list)
    base = ev.after(empty, solve(empty))
    problem = bench.family_event("node_dead", base, zones, seed + 1)
    d = compile_problem(problem)
    lb = lower_bound(problem)
    floor = bench.heat_max_floor(d, lb)
    assert floor is not None
    plan = solve(problem)
    ours = bench.family_score(problem, d, plan.assignment, len(plan.moves), lb)
    moves = bench.greedy(d, bench.family_caps(problem, d))
    greedy = bench.family_score(problem, d, bench._apply(d, moves), len(moves), lb)
    assert len(plan.moves) <= 1.02 * lb < len(moves)
    assert greedy["heat_max_over_fair_all"] < floor <= ours["heat_max_over_fair_all"]
    assert ours["heat_max_over_fair_all"] - floor < 0.0005


@pytest.mark.parametrize("zones", [4, 5])
def test_a_drain_that_puts_the_hottest_replica_on_a_full_node_sheds_its_others(
    zones: int,
) -> None:
    # Issue 15, boundary skew, P=10k, drain of z0: the drained replica of the 1,000,000-heat
    # partition fits under no node's cap but a weight-2 one's, and every weight-2 node already
    # holds about 990,000 of heat at the bottom of its band. The node it lands on keeps it and
    # swaps its hottest others for cold drained replicas (Z=4: about 40 swaps, Z=5: about 90,
    # a 391,331 replica that fits nowhere alone among them). Counting the node's leavers with
    # the unmovable replica in allowed 32 actions and left it over its cap (the greedy too).
    seed = 1500 + zones * 10 + len("boundary")
    node_list, part_list = bench.family(10_000, 100, zones, "boundary", seed)
    empty = ev.bootstrap(node_list, part_list)
    base = ev.after(empty, solve(empty))
    problem = bench.family_event("drain", base, zones, seed + 1)
    d = compile_problem(problem)
    lb = lower_bound(problem)
    plan = solve(problem)
    ours = bench.family_score(problem, d, plan.assignment, len(plan.moves), lb)
    assert ours["heat_over_cap_nodes"] == bench.heat_over_cap_floor(problem, d) == 0
    assert plan.metrics.heat_over_cap == 0 and plan.metrics.band_violations == 0
    assert not ev.hard_violations(problem, plan.assignment)
    assert len(plan.moves) <= lb * 102 // 100
    _, greedy = _greedy(problem)
    assert greedy["heat_over_cap_nodes"] == 1  # the greedy leaves one over
    if "cython" in available_backends():
        twin = solve(problem, backend="python")
        assert solve(problem, backend="cython").canonical() == twin.canonical()

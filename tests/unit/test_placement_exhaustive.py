"""Issue 15: how often a bootstrap meets every heat cap when some placement does.

An exhaustive search (depth first, hottest partition first, pruned on the bands and caps) over
small random clusters (3 to 7 nodes, 3 or 4 zones, 3 to 9 partitions of RF 2 or 3, Zipf heat)
decides whether any placement keeps every node within its band and under its heat cap
(`Metrics.heat_over_cap`'s: max(1.10 x fair heat, the hottest replica), all heat counted, split
candidates too). Where one exists the solver should find one too; on these tiny clusters it
does in 94 of 110 (90 before split candidates were isolated), and it never breaks a band the
search could keep.
"""

from __future__ import annotations

import itertools
import random

from coreplane.placement import Node, Partition, solve
from coreplane.placement import events as ev
from coreplane.placement.bounds import Dense, compile_problem


def _feasible(d: Dense) -> bool:
    caps = [max(c, d.heat_top) for c in d.hcap]  # Metrics' cap, on all heat
    nodes = range(len(d.zone))
    by_zone: dict[int, list[int]] = {}
    for n in nodes:
        if d.elig[n]:
            by_zone.setdefault(d.zone[n], []).append(n)
    options = {
        p: [
            c
            for zs in itertools.combinations(sorted(by_zone), d.rf[p])
            for c in itertools.product(*(by_zone[z] for z in zs))
        ]
        for p in range(len(d.rf))
    }
    order = sorted(range(len(d.rf)), key=lambda p: -d.heat[p])
    count = [0] * len(d.zone)
    heat = [0] * len(d.zone)

    def search(i: int) -> bool:
        if sum(max(0, d.lo[n] - count[n]) for n in nodes if d.elig[n]) > sum(
            d.rf[q] for q in order[i:]
        ):
            return False
        if i == len(order):
            return True
        p = order[i]
        h = d.heat[p]
        for choice in options[p]:
            if any(count[n] >= d.hi[n] or heat[n] + h > caps[n] for n in choice):
                continue
            for n in choice:
                count[n] += 1
                heat[n] += h
            found = search(i + 1)
            for n in choice:
                count[n] -= 1
                heat[n] -= h
            if found:
                return True
        return False

    return search(0)


def test_bootstrap_meets_the_caps_where_an_exhaustive_search_can() -> None:
    rng = random.Random(3)
    feasible = met = band_missed = 0
    for _ in range(150):
        zones = rng.choice([3, 3, 4])
        n_nodes = rng.randint(zones, 7)
        nodes = [
            Node(f"n{i}", f"z{i % zones}", weight=rng.choice([1, 1, 1, 2])) for i in range(n_nodes)
        ]
        count = rng.randint(3, 9 if n_nodes <= 5 else 7)
        skew = rng.choice([0.5, 0.8, 1.2])
        ranks = list(range(1, count + 1))
        rng.shuffle(ranks)
        parts = [
            Partition(f"p{i}", rng.choice([2, 3]), max(1, int(1000 / ranks[i] ** skew)))
            for i in range(count)
        ]
        problem = ev.bootstrap(nodes, parts)
        plan = solve(problem)
        d = compile_problem(problem)
        if not plan.feasible or not _feasible(d):
            continue
        feasible += 1
        over = plan.metrics.heat_over_cap
        met += over == 0 and plan.metrics.band_violations == 0
        band_missed += plan.metrics.band_violations > 0
    assert feasible == 110
    # All heat counted (split candidates too), as Metrics does: 90 before split candidates were
    # isolated (`_isolate`); on the bound's cap without split heat it was 101 of 112 then.
    assert met >= 94
    assert band_missed == 0

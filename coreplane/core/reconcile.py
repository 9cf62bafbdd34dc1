"""Reconcile: the fleet state at one index -> a placement problem; a plan -> plan moves. Pure.

The leader captures the fleet (`FleetMachine.capture`, pointer copies on the apply thread), turns
it into a `placement.Problem` here (off the apply thread), runs the solver, and proposes the
first moves as a `FleetPlan` with the index the capture was taken at. Apply re-validates each
move, so this translation only has to agree with apply's rules closely enough not to waste
moves; it never has to be right for safety.

How fleet states map to the solver's: dead (and decommissioned nodes still listed as holding a
replica) -> DEAD; draining or decommissioning -> DRAINING; alive and active -> ALIVE with its
slots; suspect or cordoned -> ALIVE with no free slot (it keeps what it holds, receives
nothing). Operations in flight count as done (their target holds the replica), so the solver
never plans them again. An RF above the number of zones that can take a replica is capped at
that number for this solve (the caller may provision more).

Imports only `coreplane.placement` (its model) and `coreplane.errors`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

from coreplane.placement.model import ALIVE, DEAD, DRAINING, Node, Partition, Plan, Problem

__all__ = ["Solve", "plan_moves", "problem_from_capture"]

_RF, _HEAT, _REPLICAS = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Solve:
    """A problem ready for `placement.solve`, with what the translation had to give up."""

    index: int
    problem: Problem
    capped: tuple[str, ...]  # partitions whose RF was capped at the eligible zones
    zones: int  # zones that can take a replica


def problem_from_capture(
    view: Mapping[str, Any],
    *,
    moves_in_flight_per_node: int,
    cache: dict[str, Partition] | None = None,
) -> Solve:
    """The placement problem of a `FleetMachine.capture()` result.

    `cache` (kept by the caller between solves) reuses the `Partition` objects of partitions
    whose RF and heat did not change: at 100k partitions, building them is most of the cost."""
    parts: Mapping[str, tuple[Any, ...]] = view["parts"]
    pids = sorted(parts)
    projected: dict[str, tuple[str, ...]] = {}
    for pid, source, target, step in view["inflight"]:
        rec = parts.get(pid)
        if rec is None or step != "copy":
            continue
        projected[pid] = tuple(sorted({n for n in rec[_REPLICAS] if n != source} | {target}))
    assignment: dict[str, tuple[str, ...]] = {}
    for pid in pids:
        replicas = projected.get(pid) or parts[pid][_REPLICAS]
        if replicas:
            assignment[pid] = replicas
    holding = Counter(chain.from_iterable(assignment.values()))
    nodes: list[Node] = []
    eligible_zones: set[str] = set()
    for node_id, zone, weight, slots, liveness, admin in view["nodes"]:
        if admin == "decommissioned" and not holding.get(node_id):
            continue
        if liveness == "dead" or admin == "decommissioned":
            state, free = DEAD, slots
        elif admin in ("draining", "decommissioning"):
            state, free = DRAINING, slots
        elif liveness == "alive" and admin == "active":
            state, free = ALIVE, slots
            if slots > holding.get(node_id, 0):
                eligible_zones.add(zone)
        else:  # suspect or cordoned: keeps what it holds, receives nothing
            state, free = ALIVE, holding.get(node_id, 0)
        nodes.append(Node(node_id, zone, weight, min(free, 1 << 30), state))
    zones_cap = len(eligible_zones | {n.zone for n in nodes if n.state == ALIVE})
    memo = {} if cache is None else cache
    if len(memo) > 2 * len(parts) + 1024:
        memo.clear()  # deleted partitions: start over rather than grow
    partitions: list[Partition] = []
    capped: list[str] = []
    for pid in pids:
        rec = parts[pid]
        rf = rec[_RF]
        if rf > zones_cap:
            capped.append(pid)
            rf = max(1, zones_cap)
        part = memo.get(pid)
        if part is None or part.rf != rf or part.heat != rec[_HEAT]:
            part = memo[pid] = Partition(pid, rf, rec[_HEAT])
        partitions.append(part)
    problem = Problem(
        tuple(nodes),
        tuple(partitions),
        assignment,
        moves_in_flight_per_node=moves_in_flight_per_node,
    )
    return Solve(int(view["index"]), problem, tuple(capped), zones_cap)


def plan_moves(
    plan: Plan, limit: int, capped: tuple[str, ...] = ()
) -> tuple[list[list[str]], bool]:
    """The first `limit` moves of a feasible plan in wave order as ``[pid, source, target]``
    ("" for none), and whether moves were left out (the leader solves again once the queue
    drains). A partition whose RF was `capped` for the solve keeps every replica it has: the
    solver's drops for it would take it further below its real RF (apply refuses them)."""
    out: list[list[str]] = []
    keep = set(capped)
    for wave in plan.by_wave():
        for move in wave:
            if move.target is None and move.partition in keep:
                continue
            if len(out) >= limit:
                return out, True
            out.append([move.partition, move.source or "", move.target or ""])
    return out, False

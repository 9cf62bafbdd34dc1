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

The problem is built *trusted* (`trusted_problem`): the placement model's validation (0.25 s of
detect-to-plan at 100k partitions) is skipped, because every field it checks was already checked
when the fleet state was applied (ids, zones, weights, slots, RF, heat: `FleetMachine.report`,
`create_partition`), replica sets are distinct by the machine's invariants, RF is capped at the
zones here, and the two aggregate heat bounds (which no single apply checks) are checked here in
the same pass that builds the partitions. `placement.Problem(...)` still validates: a problem a
user builds keeps its `InvalidArgument` naming the bad item.

Imports only `coreplane.placement` (its model) and `coreplane.errors`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from itertools import chain
from typing import Any

from coreplane.errors import InvalidArgument
from coreplane.placement.model import (
    ALIVE,
    DEAD,
    DRAINING,
    HEAT_TOTAL_MAX,
    Assignment,
    Node,
    Partition,
    Plan,
    Problem,
)

__all__ = ["Solve", "pair_by_zone", "plan_moves", "problem_from_capture", "trusted_problem"]

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
    assignment = Assignment(
        {pid: r for pid in pids if (r := projected.get(pid) or parts[pid][_REPLICAS])}
    )
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
    rf_max = max(1, zones_cap)
    heat_total = replicas_total = 0
    for pid in pids:
        rec = parts[pid]
        rf, heat = rec[_RF], rec[_HEAT]
        if rf > zones_cap:
            capped.append(pid)
            rf = rf_max
        heat_total += heat * rf
        replicas_total += rf
        part = memo.get(pid)
        if part is None or part.rf != rf or part.heat != heat:
            part = memo[pid] = Partition(pid, rf, heat)
        partitions.append(part)
    _check_heat_totals(heat_total, replicas_total)
    problem = trusted_problem(
        tuple(nodes),
        tuple(partitions),
        assignment,
        moves_in_flight_per_node=moves_in_flight_per_node,
    )
    return Solve(int(view["index"]), problem, tuple(capped), zones_cap)


def _check_heat_totals(heat_total: int, replicas_total: int) -> None:
    """The model's two aggregate bounds (per-item bounds hold by the fleet's own checks)."""
    if heat_total >= HEAT_TOTAL_MAX:
        raise InvalidArgument("partitions", f"total heat must stay below 2**40, got {heat_total}")
    if heat_total * (replicas_total + 1) >= 1 << 62:
        raise InvalidArgument("partitions", "total heat times total replicas must stay below 2**62")


def trusted_problem(
    nodes: tuple[Node, ...],
    partitions: tuple[Partition, ...],
    assignment: Mapping[str, tuple[str, ...]],
    **options: Any,
) -> Problem:
    """A `Problem` built without the model's validation, for input already validated (the
    replicated fleet state, or a subset of a trusted problem). Equal (``==``) to
    ``Problem(nodes, partitions, assignment, **options)`` on valid input; fields the caller
    does not give take the model's defaults, so a field added to `Problem` later keeps working.
    """
    problem: Problem = object.__new__(Problem)
    given = {
        "nodes": nodes,
        "partitions": partitions,
        "assignment": assignment if isinstance(assignment, Assignment) else Assignment(assignment),
        **options,
    }
    for f in fields(Problem):
        if f.name in given:
            value = given.pop(f.name)
        elif f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            raise InvalidArgument(f.name, "is required")
        object.__setattr__(problem, f.name, value)
    if given:
        raise InvalidArgument(sorted(given)[0], "is not a Problem field")
    return problem


def plan_moves(
    plan: Plan,
    limit: int,
    capped: tuple[str, ...] = (),
    zone_of: Mapping[str, str] | None = None,
) -> tuple[list[list[str]], bool]:
    """The first `limit` moves of a feasible plan in wave order as ``[pid, source, target]``
    ("" for none), and whether moves were left out (the leader solves again once the queue
    drains). A partition whose RF was `capped` for the solve keeps every replica it has: the
    solver's drops for it would take it further below its real RF (apply refuses them).
    Given the nodes' zones (`zone_of`), the moves of one partition are re-paired so each can
    run alone (`pair_by_zone`)."""
    out: list[list[str]] = []
    keep = set(capped)
    more = False
    for wave in plan.by_wave():
        for move in wave:
            if move.target is None and move.partition in keep:
                continue
            if len(out) >= limit:
                more = True
                break
            out.append([move.partition, move.source or "", move.target or ""])
        if more:
            break
    if zone_of is not None:
        pair_by_zone(out, zone_of)
    return out, more


def pair_by_zone(moves: list[list[str]], zone_of: Mapping[str, str]) -> None:
    """Re-pair, in place, the sources and targets of each partition's moves so that a move
    whose target's zone is the zone of another of its moving replicas becomes a move within
    that replica's zone. Apply checks moves one at a time against the replica set of the
    moment, so a zone swap as the solver may plan it (a in zone A -> b in zone B, c in zone B
    -> d in zone A) has no valid first step; re-paired (a -> d, c -> b) both steps are valid
    and the final replica set is the same. A new replica (no source) takes part as a move
    from no zone: an add in zone B while b in B moves to zone C (the solver's repair plus its
    balance) becomes b -> (the add's node) and an add in C, so the add never waits for the
    move, which a cooldown may hold back. Each exchange makes one more move stay in its zone
    (never an add), so it ends after at most one exchange per move."""
    by_pid: dict[str, list[int]] = {}
    for i, (pid, _source, target) in enumerate(moves):
        if target:
            by_pid.setdefault(pid, []).append(i)
    for idx in by_pid.values():
        if len(idx) < 2:
            continue
        changed = True
        while changed:
            changed = False
            for i in idx:
                zone = zone_of.get(moves[i][2])
                if zone is None or zone == zone_of.get(moves[i][1]):
                    continue
                for j in idx:
                    if (
                        j != i
                        and moves[j][1]
                        and zone_of.get(moves[j][1]) == zone
                        and zone_of.get(moves[j][2]) != zone
                    ):
                        moves[i][2], moves[j][2] = moves[j][2], moves[i][2]
                        changed = True
                        break

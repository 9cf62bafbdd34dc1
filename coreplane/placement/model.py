"""Placement model: nodes, partitions, problems, moves and plans, with input validation.

Owns the public value types of the solver and the checks that turn bad input into
`InvalidArgument` naming the item. Integers only; ids are strings. Imports only coreplane.errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from coreplane.errors import InvalidArgument

__all__ = [
    "ALIVE",
    "DEAD",
    "DRAINING",
    "NODE_STATES",
    "Metrics",
    "Move",
    "Node",
    "Partition",
    "Plan",
    "Problem",
]

ALIVE = "alive"
DRAINING = "draining"
DEAD = "dead"
NODE_STATES = (ALIVE, DRAINING, DEAD)
# Bounds keep every intermediate of the kernel inside int64 (heat is shifted left by 20 bits).
HEAT_TOTAL_MAX = 1 << 40
WEIGHT_MAX = 1 << 20
SLOTS_MAX = 1 << 30


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Node:
    """A host that can hold replicas: `zone` is its failure domain, `weight` its relative size."""

    id: str
    zone: str
    weight: int = 1
    slots: int = 1 << 20
    state: str = ALIVE


@dataclass(frozen=True)
class Partition:
    """A replicated shard: `rf` replicas, each carrying `heat` integer load units."""

    id: str
    rf: int = 3
    heat: int = 1


@dataclass(frozen=True)
class Problem:
    """Everything one solve depends on; `assignment` maps partition id -> replica node ids.

    `moves_in_flight_per_node` throttles waves; `moves_max` (budget mode) caps the plan's moves.
    Construction validates and raises `InvalidArgument` naming the offending item.
    """

    nodes: tuple[Node, ...]
    partitions: tuple[Partition, ...]
    assignment: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    moves_in_flight_per_node: int = 2
    moves_max: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "partitions", tuple(self.partitions))
        object.__setattr__(self, "assignment", MappingProxyType(dict(self.assignment)))
        _validate(self)


def _validate_nodes(nodes: tuple[Node, ...]) -> set[str]:
    seen: set[str] = set()
    for i, node in enumerate(nodes):
        where = f"nodes[{i}]"
        if not isinstance(node, Node):
            raise InvalidArgument(where, "must be a Node")
        if not isinstance(node.id, str) or not node.id:
            raise InvalidArgument(f"{where}.id", "must be a non-empty str")
        if node.id in seen:
            raise InvalidArgument(f"{where}.id", f"duplicate node id {node.id!r}")
        seen.add(node.id)
        if not isinstance(node.zone, str) or not node.zone:
            raise InvalidArgument(f"{where}.zone", "must be a non-empty str")
        if not _is_int(node.weight) or not 1 <= node.weight <= WEIGHT_MAX:
            raise InvalidArgument(f"{where}.weight", f"must be an int in [1, {WEIGHT_MAX}]")
        if not _is_int(node.slots) or not 0 <= node.slots <= SLOTS_MAX:
            raise InvalidArgument(f"{where}.slots", f"must be an int in [0, {SLOTS_MAX}]")
        if node.state not in NODE_STATES:
            raise InvalidArgument(f"{where}.state", f"must be one of {NODE_STATES}")
    return seen


def _validate_partitions(partitions: tuple[Partition, ...], zones: int) -> set[str]:
    seen: set[str] = set()
    heat_total = 0
    for i, part in enumerate(partitions):
        where = f"partitions[{i}]"
        if not isinstance(part, Partition):
            raise InvalidArgument(where, "must be a Partition")
        if not isinstance(part.id, str) or not part.id:
            raise InvalidArgument(f"{where}.id", "must be a non-empty str")
        if part.id in seen:
            raise InvalidArgument(f"{where}.id", f"duplicate partition id {part.id!r}")
        seen.add(part.id)
        if not _is_int(part.rf) or part.rf < 1:
            raise InvalidArgument(f"{where}.rf", "must be an int >= 1")
        if part.rf > zones:
            raise InvalidArgument(
                f"{where}.rf", f"rf={part.rf} exceeds the {zones} zones of the cluster")
        if not _is_int(part.heat) or part.heat < 0:
            raise InvalidArgument(f"{where}.heat", "must be an int >= 0")
        heat_total += part.heat * part.rf
    if heat_total >= HEAT_TOTAL_MAX:
        raise InvalidArgument("partitions", f"total heat must stay below 2**40, got {heat_total}")
    return seen


def _validate(problem: Problem) -> None:
    node_ids = _validate_nodes(problem.nodes)
    zones = len({node.zone for node in problem.nodes})
    part_ids = _validate_partitions(problem.partitions, zones)
    for pid, replicas in problem.assignment.items():
        where = f"assignment[{pid!r}]"
        if pid not in part_ids:
            raise InvalidArgument(where, "unknown partition id")
        if not isinstance(replicas, tuple):
            raise InvalidArgument(where, "must be a tuple of node ids")
        for nid in replicas:
            if nid not in node_ids:
                raise InvalidArgument(where, f"unknown node id {nid!r}")
        if len(set(replicas)) != len(replicas):
            raise InvalidArgument(where, "a node holds two replicas of the partition")
    if not _is_int(problem.moves_in_flight_per_node) or problem.moves_in_flight_per_node < 1:
        raise InvalidArgument("moves_in_flight_per_node", "must be an int >= 1")
    if problem.moves_max is not None and (
            not _is_int(problem.moves_max) or problem.moves_max < 0):
        raise InvalidArgument("moves_max", "must be None or an int >= 0")


class Move(NamedTuple):
    """One replica of `partition` leaves `source` for `target`, in execution wave `wave`.

    `source` is None for a new replica (bootstrap, RF raised); `target` is None for a dropped one.
    A named tuple: plans at 100k partitions carry hundreds of thousands of these.
    """

    partition: str
    source: str | None
    target: str | None
    wave: int


@dataclass(frozen=True)
class Metrics:
    """Plan quality; floats appear only here, never in anything the plan depends on.

    Heat figures leave out split candidates (reported instead of moved): `heat_max_over_fair`
    is the largest node heat over its fair share, `heat_over_cap` counts nodes above 1.10x.
    """

    moves: int
    lower_bound: int
    moves_over_lb: float
    heat_max_over_fair: float
    band_violations: int
    heat_over_cap: int
    waves: int


@dataclass(frozen=True)
class Plan:
    """The solver's answer: moves in throttled waves, the resulting assignment, split candidates.

    An infeasible problem gives `feasible=False` with a `reason` and no moves, never a partial
    plan. `assignment` maps every placed partition to its replicas; those the plan changed list
    their node ids sorted.
    """

    feasible: bool
    reason: str
    moves: tuple[Move, ...]
    assignment: Mapping[str, tuple[str, ...]]
    split_candidates: tuple[str, ...]
    metrics: Metrics
    backend: str = ""

    def canonical(self) -> tuple[object, ...]:
        """A backend-independent value to compare plans byte for byte (excludes `backend`)."""
        moves = tuple((m.partition, m.source or "", m.target or "", m.wave) for m in self.moves)
        assignment = tuple((pid, self.assignment[pid]) for pid in sorted(self.assignment))
        m = self.metrics
        return (
            self.feasible, self.reason, moves, assignment, self.split_candidates,
            (m.moves, m.lower_bound, m.band_violations, m.heat_over_cap, m.waves),
        )

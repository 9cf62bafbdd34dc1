"""Placement model: nodes, partitions, problems, moves and plans, with input validation.

Owns the public value types of the solver and the checks that turn bad input into
`InvalidArgument` naming the item. Integers only; ids are strings. Imports only coreplane.errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn, overload

from coreplane.errors import InvalidArgument

__all__ = [
    "ALIVE",
    "BUDGET_OBJECTIVES",
    "DEAD",
    "DRAINING",
    "NODE_STATES",
    "Assignment",
    "Metrics",
    "Move",
    "MoveList",
    "Node",
    "Partition",
    "Plan",
    "Problem",
]

ALIVE = "alive"
DRAINING = "draining"
DEAD = "dead"
NODE_STATES = (ALIVE, DRAINING, DEAD)
BUDGET_OBJECTIVES = ("worst", "out_of_band")
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


class Assignment(dict[str, tuple[str, ...]]):
    """A read-only partition id -> replica node ids mapping.

    Plans hand their result over as one, and a Problem keeps one as is, so the dense form the
    solver already computed (`dense`, a memo: sorted node ids, sorted partition ids, CSR offsets
    and node indexes) follows the assignment into the next event instead of being rebuilt from
    100k string tuples. `dense_grown` is the same memo for a node set that grew since (ids
    remapped): kept beside `dense`, not over it, so events on the original nodes after one that
    added nodes (a node dies after an add was planned) still find theirs.
    """

    __slots__ = ("dense", "dense_grown")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dense: tuple[list[str], list[str], Sequence[int], Sequence[int]] | None = None
        self.dense_grown: tuple[list[str], list[str], Sequence[int], Sequence[int]] | None = None

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("Assignment is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (Assignment, (dict(self),))


@dataclass(frozen=True)
class Problem:
    """Everything one solve depends on; `assignment` maps partition id -> replica node ids.

    `moves_in_flight_per_node` throttles waves; `moves_max` (budget mode) caps the plan's moves.
    The hard repairs (replicas on dead or draining nodes, RF changes) come first and are never
    cut; a budget below them makes the plan infeasible. What the moves left are spent on is
    `budget_objective`, both greedy, one move at a time:
    - "worst" (default) minimises the worst imbalance, max over nodes of |count / fair - 1|:
      each move goes from the fullest node to the emptiest, relative to their fair counts, so
      both ends of the spread shrink with every move; many nodes may stay a little out of
      band.
    - "out_of_band" minimises the number of nodes out of their band: nodes above their band
      shed first, then nodes below fill, each side nearest its band first, so k moves fix the
      nodes needing the fewest moves. Smallest-first is what fixes the most nodes for a given
      number of moves on each side (zones permitting); the worst node may stay further out.
    Heat passes run on what is left of the budget, after either.
    Construction validates and raises `InvalidArgument` naming the offending item.
    """

    nodes: tuple[Node, ...]
    partitions: tuple[Partition, ...]
    assignment: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    moves_in_flight_per_node: int = 2
    moves_max: int | None = None
    budget_objective: str = "worst"

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "partitions", tuple(self.partitions))
        if not isinstance(self.assignment, Assignment):
            object.__setattr__(self, "assignment", Assignment(self.assignment))
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
    replicas_total = 0
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
                f"{where}.rf", f"rf={part.rf} exceeds the {zones} zones of the cluster"
            )
        if not _is_int(part.heat) or part.heat < 0:
            raise InvalidArgument(f"{where}.heat", "must be an int >= 0")
        heat_total += part.heat * part.rf
        replicas_total += part.rf
    if heat_total >= HEAT_TOTAL_MAX:
        raise InvalidArgument("partitions", f"total heat must stay below 2**40, got {heat_total}")
    if heat_total * (replicas_total + 1) >= 1 << 62:  # the kernel multiplies heat by counts
        raise InvalidArgument(
            "partitions",
            "total heat times total replicas must stay below 2**62 (use coarser heat units)",
        )
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
    if problem.moves_max is not None and (not _is_int(problem.moves_max) or problem.moves_max < 0):
        raise InvalidArgument("moves_max", "must be None or an int >= 0")
    if problem.budget_objective not in BUDGET_OBJECTIVES:
        raise InvalidArgument("budget_objective", f"must be one of {BUDGET_OBJECTIVES}")


class Move(NamedTuple):
    """One replica of `partition` leaves `source` for `target`, in execution wave `wave`.

    `source` is None for a new replica (bootstrap, RF raised); `target` is None for a dropped one.
    A named tuple: plans at 100k partitions carry hundreds of thousands of these.
    """

    partition: str
    source: str | None
    target: str | None
    wave: int


class MoveList(Sequence[Move]):
    """The plan's moves as a lazy, immutable sequence of `Move`.

    A bootstrap at 100k partitions has 300k moves; building 300k objects would cost more than
    the solve, so the dense lists are kept and a `Move` is made when one is looked at.
    """

    __slots__ = ("_nodes", "_parts", "_raw")

    def __init__(
        self,
        parts: Sequence[str],
        nodes: Sequence[str | None],
        raw: tuple[Sequence[int], Sequence[int], Sequence[int], Sequence[int]],
    ) -> None:
        self._parts = parts
        self._nodes = nodes  # index -1 (no source or no target) must map to None
        self._raw = raw

    def __len__(self) -> int:
        return len(self._raw[0])

    @overload
    def __getitem__(self, i: int) -> Move: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Move, ...]: ...

    def __getitem__(self, i: int | slice) -> Move | tuple[Move, ...]:
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self))))
        mp, ms, md, mw = self._raw
        return Move(self._parts[mp[i]], self._nodes[ms[i]], self._nodes[md[i]], mw[i])

    def __iter__(self) -> Iterator[Move]:
        parts, nodes = self._parts, self._nodes
        for p, s, t, w in zip(*self._raw, strict=True):
            yield Move(parts[p], nodes[s], nodes[t], w)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MoveList({list(self)!r})"


@dataclass(frozen=True)
class Metrics:
    """Plan quality; floats appear only here, never in anything the plan depends on.

    Heat figures count every replica, split candidates included: `heat_max_over_fair` is the
    largest node heat over its fair share; `heat_over_cap` counts nodes whose heat is above
    their heat cap, max(1.10 x fair heat, the hottest partition's heat) (issue 15's cap, and
    the bench's). Without split candidates that is exactly the cap the lower bound uses
    (`bounds.heat_caps`, on movable heat); with them, the bound leaves their heat out.
    `lower_bound` of a feasible plan is the fewest moves of any plan whose every node ends no
    further outside its band and no further over its heat cap than in this one
    (`lower_bound(problem, reached=plan.assignment)`), so `moves >= lower_bound` always holds;
    when the plan meets every target it equals `lower_bound(problem)`. An infeasible plan
    reports `lower_bound(problem)`.
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
    moves: Sequence[Move]
    assignment: Mapping[str, tuple[str, ...]]
    split_candidates: tuple[str, ...]
    metrics: Metrics
    backend: str = ""

    def split_nodes(self) -> dict[str, tuple[str, ...]]:
        """Each split candidate's replica nodes: where a partition too hot for any node's cap
        sits (isolated on the nodes with the largest caps when it was placed), sorted by id."""
        return {pid: tuple(sorted(self.assignment.get(pid, ()))) for pid in self.split_candidates}

    def by_wave(self) -> tuple[tuple[Move, ...], ...]:
        """The moves grouped into execution waves, in wave order (plan order inside a wave)."""
        count = max((m.wave for m in self.moves), default=-1) + 1
        groups: list[list[Move]] = [[] for _ in range(count)]
        for move in self.moves:
            groups[move.wave].append(move)
        return tuple(tuple(g) for g in groups)

    def canonical(self) -> tuple[object, ...]:
        """A backend-independent value to compare plans byte for byte (excludes `backend`)."""
        moves = tuple((m.partition, m.source or "", m.target or "", m.wave) for m in self.moves)
        assignment = tuple((pid, self.assignment[pid]) for pid in sorted(self.assignment))
        m = self.metrics
        return (
            self.feasible,
            self.reason,
            moves,
            assignment,
            self.split_candidates,
            (m.moves, m.lower_bound, m.band_violations, m.heat_over_cap, m.waves),
        )

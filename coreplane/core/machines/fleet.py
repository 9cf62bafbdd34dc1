"""The fleet machine: nodes, partitions, operations and the decision journal (DESIGN.md 7).

Pure and deterministic like the rest of `core/`: no clock (time is the committed tick time the
state machine hands in), no randomness, integers only, every map bounded, and nothing iterated
in an order that could differ between processes or after a snapshot restore (dict insertion
order does differ after a restore, so every loop that decides something is `sorted`).

What it owns:

- **nodes**: zone, weight, slots; liveness (alive / suspect / dead, since a tick time) decided
  here from tick time, never from a local clock: the leader commits only "silent since t" and
  "heard again" (a `FleetReport`), and ticks turn silence into suspect after `suspect_after_ms`
  and into dead after `dead_after_ms`. A new leader's first `suspect_after_ms` of tick time is a
  grace period in which nobody becomes suspect or dead (no mass death after a failover);
  administrative state (cordoned / draining / decommissioning / decommissioned) beside it.
- **partitions**: desired RF, heat (integer milli-units), replica set, split-candidate flag;
  and the size in bytes its agents report (`sizes`, beside the records: committed by the
  leader past a hysteresis, as heat is; absent until first reported; what a dry run's estimate
  of a copy is made of).
- **operations**: a move is ``add replica on target (copy) -> caught up (the target's ack) ->
  cutover (the replica set changes here) -> remove from source (cleanup)``; each step is one
  action for one agent, fenced by the log index that issued it (its token) and bounded by a
  deadline in tick time: a failed or late step is retried `retries_max` times, then rolled
  back with the reason journaled. At most one operation per partition is in flight, and the
  source is removed only after the target acknowledged it caught up. Throttles: operations per
  node and per cluster.
- **the plan queue**: the leader's solver proposes a plan computed at log index i; its moves
  wait here in wave order and are admitted one by one as throttles allow, each re-validated
  against the state at admission (a stale move is dropped, and the worklist asks for a new
  solve).
- **the worklist**: `dirty_index` (the newest change that calls for a solve) against
  `plan_index` (the base index of the newest plan), and the set of under-replicated partitions;
  maintained incrementally, so a tick costs O(what is due), never O(fleet).
- **the decision journal**: the last `journal_max` decisions, each with its index, tick time,
  subjects and one sentence, for `explain`.

Imports only `coreplane.core.codec` (for `Value`) and `coreplane.errors`.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from coreplane.core.codec import Value
from coreplane.errors import CommandRejected, DecodeError, InvalidArgument, require

__all__ = [
    "ACTIVE",
    "ALIVE",
    "CORDONED",
    "DEAD",
    "DECOMMISSIONED",
    "DECOMMISSIONING",
    "DRAINING",
    "SUSPECT",
    "FleetConfig",
    "FleetMachine",
    "FleetNode",
    "Operation",
]

ALIVE, SUSPECT, DEAD = "alive", "suspect", "dead"
ACTIVE, CORDONED, DRAINING = "active", "cordoned", "draining"
DECOMMISSIONING, DECOMMISSIONED = "decommissioning", "decommissioned"
ADD_REPLICA, REMOVE_REPLICA = "add_replica", "remove_replica"
COPY, CLEANUP, ABORT, GC = "copy", "cleanup", "abort", "gc"
ID_CHARS_MAX = 256
_HEAT_MAX = 1 << 40
_WEIGHT_MAX = 1 << 20
_SLOTS_MAX = 1 << 30
SIZE_BYTES_MAX = 1 << 62

# A partition record is a plain tuple (rf, heat, replicas, split, created_index, moved_ms,
# left): immutable, so a solver capture is one dict copy, and CPython stops GC-tracking it (see
# kv.Record). moved_ms is the tick time of its last move's cutover (-1: never); left the nodes
# its last moves took it from (at most LEFT_MAX, newest last), which a rebalance does not take
# it back to before `return_cooldown_ms` (a move undone is an oscillation).
PartRecord = tuple[int, int, tuple[str, ...], int, int, int, tuple[str, ...]]
_RF: Final = 0
_HEAT: Final = 1
_REPLICAS: Final = 2
_SPLIT: Final = 3
_CREATED: Final = 4
_MOVED: Final = 5
_LEFT: Final = 6
LEFT_MAX: Final = 3


def _with(rec: PartRecord, field: int, value: Any) -> PartRecord:
    out: PartRecord = (*rec[:field], value, *rec[field + 1 :])
    return out


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """Fleet timing and bounds; every replica must use the same values (they decide apply).

    Liveness defaults: a node not heard for `suspect_after_ms` (5 s) is suspect (no new
    replicas go to it), for `dead_after_ms` (30 s) dead (its replicas are re-created
    elsewhere). Compare Kubernetes' node-monitor-grace-period (40 s, then eviction), PD's
    max-store-down-time (30 min) and CockroachDB's server.time_until_store_dead (5 min): those
    trade re-replication traffic for patience; a host with large replicas should raise
    `dead_after_ms`.
    """

    suspect_after_ms: int = 5_000
    dead_after_ms: int = 30_000
    copy_timeout_ms: int = 60_000
    cleanup_timeout_ms: int = 30_000
    retries_max: int = 3
    moves_in_flight_per_node: int = 2
    moves_in_flight_max: int = 64
    heat_cap_pct: int = 110
    rebalance_trigger_pct: int = 125
    rebalance_cooldown_ms: int = 600_000  # not for a partition below its RF (its repair)
    # A rebalance never moves a partition back to a node its last moves took it from for
    # this long after its last move (1 day): the solver has no memory, apply has.
    return_cooldown_ms: int = 86_400_000
    nodes_max: int = 10_000
    partitions_max: int = 1_000_000
    queue_max: int = 1_000_000
    journal_max: int = 10_000
    requests_max: int = 1_000
    admit_scan_max: int = 128
    admit_per_tick_max: int = 16  # operations started per entry: bounds a tick's apply cost
    # A plan that queues nothing while work remains (every move stale, or no move for an
    # under-replicated partition) backs the next solve off: solve_backoff_ms, doubling per
    # such plan up to solve_backoff_max_ms; a change in the fleet (a node, a liveness, an RF,
    # an admin state, a partition) ends the back-off.
    solve_backoff_ms: int = 1_000
    solve_backoff_max_ms: int = 60_000
    # A replica an agent reports that no replica set holds (a rolled-back copy whose removal
    # was abandoned, a node back after it was declared dead, a deleted partition) is removed
    # through a fenced `remove_replica` once the leader heard it reported this long.
    orphan_grace_ms: int = 60_000
    orphans_per_entry_max: int = 64

    def validate(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"fleet.{name}", "must be a positive integer")
        if self.dead_after_ms < self.suspect_after_ms:
            raise InvalidArgument("fleet.dead_after_ms", "must be >= suspect_after_ms")
        if self.heat_cap_pct < 100:
            raise InvalidArgument("fleet.heat_cap_pct", "must be >= 100")
        if self.rebalance_trigger_pct < self.heat_cap_pct:
            raise InvalidArgument("fleet.rebalance_trigger_pct", "must be >= heat_cap_pct")
        if self.solve_backoff_max_ms < self.solve_backoff_ms:
            raise InvalidArgument("fleet.solve_backoff_max_ms", "must be >= solve_backoff_ms")


@dataclass(slots=True)
class FleetNode:
    zone: str
    weight: int
    slots: int
    registered_index: int
    liveness: str = ALIVE
    liveness_since_ms: int = 0
    admin: str = ACTIVE
    admin_since_ms: int = 0
    silent_since_ms: int = -1  # -1: heard; else the tick time it was last heard
    silent_gen: int = 0  # bumps on every silence change; stale liveness deadlines are skipped

    def to_plain(self, node_id: str) -> list[Value]:
        return [
            node_id,
            self.zone,
            self.weight,
            self.slots,
            self.registered_index,
            self.liveness,
            self.liveness_since_ms,
            self.admin,
            self.admin_since_ms,
            self.silent_since_ms,
            self.silent_gen,
        ]

    @property
    def state(self) -> str:
        """One word for views: decommissioned > dead > suspect > draining > cordoned > alive."""
        if self.admin == DECOMMISSIONED:
            return DECOMMISSIONED
        if self.liveness != ALIVE:
            return self.liveness
        if self.admin in (DRAINING, DECOMMISSIONING):
            return DRAINING
        return CORDONED if self.admin == CORDONED else ALIVE

    @property
    def gone(self) -> bool:
        """Its replicas no longer count: dead or decommissioned."""
        return self.liveness == DEAD or self.admin == DECOMMISSIONED

    @property
    def eligible(self) -> bool:
        """May receive a new replica."""
        return self.liveness == ALIVE and self.admin == ACTIVE


@dataclass(slots=True)
class Operation:
    """One partition change in flight; `node` runs the current step's action, fenced by `token`
    (the log index that issued the step)."""

    op_id: str
    pid: str
    source: str  # "" for a new replica
    target: str  # "" for a dropped replica
    step: str  # copy | cleanup | abort
    node: str
    copy_from: str
    token: int
    deadline_ms: int
    attempt: int
    created_index: int
    cause: str

    @property
    def action_id(self) -> str:
        return f"{self.op_id}#{self.token}"

    @property
    def kind(self) -> str:
        return ADD_REPLICA if self.step == COPY else REMOVE_REPLICA

    def to_plain(self) -> list[Value]:
        return [
            self.op_id,
            self.pid,
            self.source,
            self.target,
            self.step,
            self.node,
            self.copy_from,
            self.token,
            self.deadline_ms,
            self.attempt,
            self.created_index,
            self.cause,
        ]

    def view(self) -> dict[str, Value]:
        return {
            "id": self.op_id,
            "partition": self.pid,
            "source": self.source or None,
            "target": self.target or None,
            "step": self.step,
            "node": self.node,
            "action_id": self.action_id,
            "kind": self.kind,
            "copy_from": self.copy_from,
            "token": self.token,
            "deadline_ms": self.deadline_ms,
            "attempt": self.attempt,
            "created_index": self.created_index,
            "cause": self.cause,
        }


def _check_id(field: str, value: Value) -> str:
    if type(value) is not str or not value or len(value) > ID_CHARS_MAX:
        raise CommandRejected(
            "bad_argument", f"{field} must be a non-empty str of at most {ID_CHARS_MAX} characters"
        )
    return value


def _check_int(field: str, value: Value, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise CommandRejected("bad_argument", f"{field} must be an int in [{lo}, {hi}]")
    return value


class FleetMachine:
    """The fleet's replicated state and the deterministic ways to change it."""

    def __init__(self, config: FleetConfig | None = None) -> None:
        self.config = config or FleetConfig()
        self.config.validate()
        self.nodes: dict[str, FleetNode] = {}
        self.parts: dict[str, PartRecord] = {}
        self.sizes: dict[str, int] = {}  # pid -> size in bytes, as reported; only pids in parts
        self.ops: dict[str, Operation] = {}
        self.queue: deque[tuple[str, str, str]] = deque()
        # (index, tick_ms, subjects, text) tuples: immutable, so the GC stops tracking them
        self.journal: deque[tuple[int, int, tuple[str, ...], str]] = deque()
        # provider requests: id -> [kind, subject, zone, state, result, index]; see `request`
        self.requests: dict[str, list[Value]] = {}
        self.dirty_index = 0
        self.plan_index = 0
        self.plan_more = 0  # 1: the newest plan left moves out; solve again once the queue drains
        self.dirty_by_plan = 0
        self.solve_backoff_ms = 0  # > 0: the last plans made no progress (see FleetConfig)
        self.solve_after_ms = 0  # no solve before this tick time
        self.grace_until_ms = 0
        self.tick_ms = 0
        self.index = 0
        self.heat_total = 0
        self._derive()

    # ------------------------------------------------------------------ derived indexes

    def _derive(self) -> None:
        """Rebuild everything that is not in the snapshot from what is."""
        self.node_parts: dict[str, set[str]] = {n: set() for n in self.nodes}
        self.node_heat: dict[str, int] = dict.fromkeys(self.nodes, 0)
        self.op_of_pid: dict[str, str] = {}
        self.node_ops: dict[str, set[str]] = {n: set() for n in self.nodes}
        self.under: set[str] = set()
        self.splits: set[str] = set()
        self.heat_total = 0
        for pid in sorted(self.parts):
            rec = self.parts[pid]
            for node_id in rec[_REPLICAS]:
                self.node_parts[node_id].add(pid)
                self.node_heat[node_id] += rec[_HEAT]
            self.heat_total += rec[_HEAT] * len(rec[_REPLICAS])
            if rec[_SPLIT]:
                self.splits.add(pid)
            self._recheck(pid)
        self._live_heap: list[tuple[int, str, int, int]] = []  # (due_ms, node, gen, 0/1 dead)
        for node_id in sorted(self.nodes):
            self._schedule_liveness(node_id)
        self._op_heap: list[tuple[int, str, int]] = []  # (deadline_ms, op_id, token)
        for op_id in sorted(self.ops):
            op = self.ops[op_id]
            self.op_of_pid[op.pid] = op_id
            for node_id in self._op_nodes(op):
                self.node_ops[node_id].add(op_id)
            heapq.heappush(self._op_heap, (op.deadline_ms, op_id, op.token))
        self._weight_total = self._compute_weight_total()

    def _compute_weight_total(self) -> int:
        return sum(n.weight for _, n in sorted(self.nodes.items()) if not n.gone)

    @staticmethod
    def _op_nodes(op: Operation) -> tuple[str, ...]:
        """Nodes an operation loads (the throttles count these): target, source, copy source."""
        return tuple(sorted({n for n in (op.source, op.target, op.copy_from) if n}))

    def _live_count(self, replicas: Iterable[str]) -> int:
        nodes = self.nodes
        return sum(1 for n in replicas if not nodes[n].gone)

    def _recheck(self, pid: str) -> None:
        """Keep `under` (partitions with fewer live replicas than their RF) exact for `pid`."""
        rec = self.parts.get(pid)
        if rec is not None and self._live_count(rec[_REPLICAS]) < rec[_RF]:
            self.under.add(pid)
        else:
            self.under.discard(pid)

    # ------------------------------------------------------------------ journal and worklist

    def _note(self, subjects: tuple[str, ...], text: str) -> None:
        self.journal.append((self.index, self.tick_ms, subjects, text))
        if len(self.journal) > self.config.journal_max:
            self.journal.popleft()

    def _dirty(self, *, by_plan: bool = False, fresh: bool = True) -> None:
        """Ask for a solve. `by_plan`: the cause is a plan's own stale moves, which the leader
        answers with a growing back-off rather than a solve loop. `fresh`: a change in the
        fleet itself (not heat, not a plan's own failure), which ends a solve back-off."""
        self.dirty_index = self.index
        self.dirty_by_plan = int(by_plan)
        if fresh and not by_plan and self.solve_backoff_ms:
            self.solve_backoff_ms = self.solve_after_ms = 0

    def needs_plan(self) -> bool:
        """A change since the newest plan calls for the solver (or the plan left moves out and
        its queue drained), and no back-off holds the next solve."""
        return (
            self.dirty_index > self.plan_index or bool(self.plan_more and not self.queue)
        ) and self.tick_ms >= self.solve_after_ms

    # ------------------------------------------------------------------ hooks from StateMachine

    def on_leader(self, index: int, tick_ms: int) -> None:
        """A new leader: nobody turns suspect or dead for `suspect_after_ms` of tick time
        (counted from its first tick). A fleet with no node has nobody to spare: it stays
        pristine (and out of the snapshot, see `pristine`)."""
        if self.nodes:
            self.index, self.tick_ms = index, tick_ms
            self.grace_until_ms = -1

    def on_tick(self, index: int, tick_ms: int) -> None:
        """Liveness deadlines, operation deadlines and plan admission: O(what is due)."""
        if self.pristine():
            return
        self.index, self.tick_ms = index, tick_ms
        if self.grace_until_ms < 0:
            self.grace_until_ms = tick_ms + self.config.suspect_after_ms
            self._note(
                ("leader",),
                f"a new leader's first tick: nobody turns suspect or dead "
                f"before tick time {self.grace_until_ms} ms",
            )
        elif tick_ms >= self.grace_until_ms:
            self._liveness_due()
        heap = self._op_heap
        while heap and heap[0][0] <= tick_ms:
            _, op_id, token = heapq.heappop(heap)
            op = self.ops.get(op_id)
            if op is not None and op.token == token:
                self._step_failed(op, f"deadline passed at tick time {tick_ms} ms")
        if self.queue:
            self._admit()

    # ------------------------------------------------------------------ liveness

    def _schedule_liveness(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.silent_since_ms < 0 or node.liveness == DEAD or node.admin == DECOMMISSIONED:
            return
        cfg = self.config
        if node.liveness == ALIVE:
            heapq.heappush(
                self._live_heap,
                (node.silent_since_ms + cfg.suspect_after_ms, node_id, node.silent_gen, 0),
            )
        heapq.heappush(
            self._live_heap, (node.silent_since_ms + cfg.dead_after_ms, node_id, node.silent_gen, 1)
        )

    def _liveness_due(self) -> None:
        heap, cfg = self._live_heap, self.config
        while heap and heap[0][0] <= self.tick_ms:
            _, node_id, gen, dead = heapq.heappop(heap)
            node = self.nodes.get(node_id)
            if node is None or node.silent_gen != gen or node.silent_since_ms < 0:
                continue
            if dead and node.liveness != DEAD and node.admin != DECOMMISSIONED:
                self._set_liveness(
                    node_id,
                    DEAD,
                    (
                        f"{node_id} declared dead at tick time {self.tick_ms} ms: last heartbeat "
                        "at "
                        f"tick time {node.silent_since_ms} ms, dead_after {cfg.dead_after_ms} ms"
                    ),
                )
            elif not dead and node.liveness == ALIVE:
                self._set_liveness(
                    node_id,
                    SUSPECT,
                    (
                        f"{node_id} suspect at tick time {self.tick_ms} ms: last heartbeat at tick "
                        f"time {node.silent_since_ms} ms, suspect_after {cfg.suspect_after_ms} ms"
                    ),
                )

    def _set_liveness(self, node_id: str, liveness: str, text: str) -> None:
        node = self.nodes[node_id]
        was_gone = node.gone
        node.liveness, node.liveness_since_ms = liveness, self.tick_ms
        self._note((node_id,), text)
        if node.gone != was_gone:
            self._weight_total = self._compute_weight_total()
            for pid in sorted(self.node_parts[node_id]):
                self._recheck(pid)
        # Every liveness change changes the solver's input (a suspect node receives nothing,
        # an alive one does), not only alive <-> dead: a node heard again must ask for a solve
        # and end a back-off, or a partition only it can take stays under-replicated.
        self._dirty()
        if node.gone:
            self._node_lost(node_id)

    def _node_lost(self, node_id: str) -> None:
        """A dead or decommissioned node: steps that need it cannot finish."""
        for op_id in sorted(self.node_ops.get(node_id, ())):
            op = self.ops.get(op_id)
            if op is None:
                continue
            if op.step == COPY and op.target == node_id:
                self._finish(op, f"rolled back: target {node_id} is gone", rolled_back=True)
            elif op.step == COPY and op.copy_from == node_id:
                self._issue(op, f"copy source {node_id} is gone", retry=True)
            elif op.node == node_id:  # cleanup or abort on a gone node: nothing left to remove
                self._finish(op, f"skipped the last step on {node_id}: it is gone")

    def report(self, body: dict[str, Value], index: int) -> Value:
        """The leader's batch of liveness changes, registrations, heat and lost replicas.

        Validated whole before anything changes, so a bad batch changes nothing."""
        self.index = index
        nodes = [
            (
                _check_id("node_id", a),
                _check_id("zone", b),
                _check_int("weight", c, 1, _WEIGHT_MAX),
                _check_int("slots", d, 0, _SLOTS_MAX),
            )
            for a, b, c, d in (_fields(i, 4, "nodes") for i in _as_list(body["nodes"], "nodes"))
        ]
        heard = [_check_id("heard", n) for n in _as_list(body["heard"], "heard")]
        silent = [
            (_check_id("silent", a), _check_int("since_ms", b, 0, 2**62))
            for a, b in (_fields(i, 2, "silent") for i in _as_list(body["silent"], "silent"))
        ]
        heat = [
            (_check_id("heat", a), _check_int("heat", b, 0, _HEAT_MAX))
            for a, b in (_fields(i, 2, "heat") for i in _as_list(body["heat"], "heat"))
        ]
        lost = [
            (_check_id("lost", a), _check_id("lost", b))
            for a, b in (_fields(i, 2, "lost") for i in _as_list(body["lost"], "lost"))
        ]
        sizes = [
            (_check_id("sizes", a), _check_int("size_bytes", b, 0, SIZE_BYTES_MAX))
            for a, b in (_fields(i, 2, "sizes") for i in _as_list(body.get("sizes", []), "sizes"))
        ]
        new = sum(1 for node_id, *_ in nodes if node_id not in self.nodes)
        if len(self.nodes) + new > self.config.nodes_max:
            raise CommandRejected(
                "too_many_nodes", f"over the bound of {self.config.nodes_max} nodes"
            )
        counts = [0, 0, 0, 0, 0]
        for node_id, zone, weight, slots in nodes:
            counts[0] += self._register(node_id, zone, weight, slots)
        for node_id in heard:
            counts[1] += self._heard(node_id)
        for node_id, since_ms in silent:
            counts[2] += self._silent(node_id, since_ms)
        heat_changed = [pid for pid, h in heat if self._set_heat(pid, h)]
        counts[3] = len(heat_changed)
        if heat_changed:
            self._check_heat(heat_changed)
        for node_id, pid in lost:
            counts[4] += self._lost(node_id, pid)
        for pid, size_bytes in sizes:
            if pid in self.parts:  # bounded by the partitions; a deleted one is dropped
                self.sizes[pid] = size_bytes
        return counts

    def _register(self, node_id: str, zone: str, weight: int, slots: int) -> int:
        node = self.nodes.get(node_id)
        if node is None:
            self.nodes[node_id] = FleetNode(
                zone,
                weight,
                slots,
                self.index,
                liveness_since_ms=self.tick_ms,
                admin_since_ms=self.tick_ms,
            )
            self.node_parts[node_id], self.node_ops[node_id] = set(), set()
            self.node_heat[node_id] = 0
            self._weight_total = self._compute_weight_total()
            self._note(
                (node_id,),
                f"{node_id} registered in zone {zone} (weight {weight}, "
                f"{slots} slots) at tick time {self.tick_ms} ms",
            )
            self._dirty()
            return 1
        if (node.zone, node.weight, node.slots) == (zone, weight, slots):
            return 0
        if node.zone != zone and self.node_parts[node_id]:
            self._note(
                (node_id,),
                f"{node_id} reports zone {zone} but holds replicas in zone "
                f"{node.zone}: ignored until it is drained",
            )
            return 0
        node.zone, node.weight, node.slots = zone, weight, slots
        self._weight_total = self._compute_weight_total()
        self._note((node_id,), f"{node_id} now zone {zone}, weight {weight}, {slots} slots")
        self._dirty()
        return 1

    def _heard(self, node_id: str) -> int:
        node = self.nodes.get(node_id)
        if node is None or node.silent_since_ms < 0 or node.admin == DECOMMISSIONED:
            return 0
        since = node.silent_since_ms
        node.silent_since_ms, node.silent_gen = -1, node.silent_gen + 1
        if node.liveness != ALIVE:
            self._set_liveness(
                node_id,
                ALIVE,
                (
                    f"{node_id} heard again at tick time {self.tick_ms} ms after being "
                    f"{node.liveness} since {node.liveness_since_ms} ms (silent since {since} ms)"
                ),
            )
        return 1

    def _silent(self, node_id: str, since_ms: int) -> int:
        node = self.nodes.get(node_id)
        if node is None or node.silent_since_ms >= 0 or node.admin == DECOMMISSIONED:
            return 0
        node.silent_since_ms, node.silent_gen = min(since_ms, self.tick_ms), node.silent_gen + 1
        self._schedule_liveness(node_id)
        return 1

    def _set_heat(self, pid: str, heat: int) -> bool:
        rec = self.parts.get(pid)
        if rec is None or rec[_HEAT] == heat:
            return False
        delta = heat - rec[_HEAT]
        for node_id in rec[_REPLICAS]:
            self.node_heat[node_id] += delta
        self.heat_total += delta * len(rec[_REPLICAS])
        self.parts[pid] = _with(rec, _HEAT, heat)
        return True

    def over_cap(self, node_id: str, pct: int = 0) -> bool:
        """Node heat above `pct` (default `heat_cap_pct`) of its weighted fair share."""
        node = self.nodes[node_id]
        if node.gone or self._weight_total == 0:
            return False
        return (
            self.node_heat[node_id] * self._weight_total * 100
            > (pct or self.config.heat_cap_pct) * self.heat_total * node.weight
        )

    def _check_heat(self, pids: list[str]) -> None:
        """A rebalance is asked for only past `rebalance_trigger_pct` (hysteresis above the
        solver's own cap), so heat noise around the cap does not start solves."""
        touched = sorted({n for pid in pids for n in self.parts[pid][_REPLICAS]})
        trigger = self.config.rebalance_trigger_pct
        hot = [n for n in touched if self.over_cap(n, trigger)]
        if hot:
            self._note(
                tuple(hot[:8]),
                f"{', '.join(hot[:8])} over {trigger}% of its fair heat share: rebalance asked for",
            )
            self._dirty(fresh=False)
        self._avoid_hot_sources(touched)

    def _lost(self, node_id: str, pid: str) -> int:
        rec = self.parts.get(pid)
        if rec is None or node_id not in rec[_REPLICAS]:
            return 0
        self._set_replicas(pid, tuple(n for n in rec[_REPLICAS] if n != node_id))
        self._note((node_id, pid), f"replica of {pid} on {node_id} reported lost by its agent")
        self._dirty()
        op = self.ops.get(self.op_of_pid.get(pid, ""))
        if op is not None and op.step == COPY and op.copy_from == node_id:
            self._issue(op, f"copy source {node_id} lost its replica", retry=True)
        return 1

    def orphans(self, rows: Value, index: int) -> Value:
        """The leader's list of orphan copies: ``[node_id, pid, since_ms]``, a replica the
        node's agent has reported since tick time `since_ms` that no replica set holds. Each
        one gets a fenced ``remove_replica`` (an operation of cause ``gc``) when it is still an
        orphan now: the node is alive, the report is at least `orphan_grace_ms` old, no
        operation runs on the partition (a copy's target holds data before its cutover), the
        partition is not waiting for a repair, and the throttles allow; otherwise it is skipped
        (the leader reports it again later). Validated whole before anything changes."""
        self.index = index
        items = [
            (_check_id("node_id", a), _check_id("pid", b), _check_int("since_ms", c, 0, 2**62))
            for a, b, c in (_fields(i, 3, "orphans") for i in _as_list(rows, "orphans"))
        ]
        if len(items) > self.config.orphans_per_entry_max:
            raise CommandRejected(
                "bad_argument", f"over {self.config.orphans_per_entry_max} orphans in one entry"
            )
        started = 0
        for node_id, pid, since_ms in items:
            if not self._orphan_problem(node_id, pid, since_ms):
                self._start_gc(node_id, pid, since_ms)
                started += 1
        return {"started": started, "skipped": len(items) - started}

    def _orphan_problem(self, node_id: str, pid: str, since_ms: int) -> str:
        """Why this copy is not removed now ("" to remove it); O(RF)."""
        node = self.nodes.get(node_id)
        if node is None or node.liveness != ALIVE or node.admin == DECOMMISSIONED:
            return "node not alive"
        if self.tick_ms - since_ms < self.config.orphan_grace_ms:
            return "reported for less than the grace"
        rec = self.parts.get(pid)
        if rec is not None and node_id in rec[_REPLICAS]:
            return "in the replica set"
        if pid in self.op_of_pid:
            return "an operation runs on the partition"
        if pid in self.under:
            return "the partition waits for a repair"
        if len(self.ops) >= self.config.moves_in_flight_max or self._busy(node_id):
            return "throttled"
        return ""

    def _start_gc(self, node_id: str, pid: str, since_ms: int) -> None:
        op_id = f"{pid}@{self.index}"
        op = Operation(op_id, pid, node_id, "", GC, node_id, "", 0, 0, 0, self.index, "gc")
        self.ops[op_id] = op
        self.op_of_pid[pid] = op_id
        self.node_ops[node_id].add(op_id)
        held = "no replica set holds it" if pid in self.parts else f"{pid} was deleted"
        self._note(
            (pid, op_id, node_id),
            f"{op_id} started (gc): {pid} {node_id} -> - ({node_id} has reported a copy "
            f"since tick time {since_ms} ms and {held}; grace "
            f"{self.config.orphan_grace_ms} ms)",
        )
        self._issue(op, "", retry=False)

    # ------------------------------------------------------------------ desired state

    def create_partition(self, pid: str, rf: int, heat: int) -> Value:
        _check_id("pid", pid)
        _check_int("rf", rf, 1, 64)
        _check_int("heat", heat, 0, _HEAT_MAX)
        rec = self.parts.get(pid)
        if rec is not None:
            if rec[_RF] == rf:
                return {"created": False}
            raise CommandRejected("partition_exists", f"{pid} exists with rf={rec[_RF]}")
        if len(self.parts) >= self.config.partitions_max:
            raise CommandRejected(
                "too_many_partitions", f"at the bound of {self.config.partitions_max} partitions"
            )
        self.parts[pid] = (rf, heat, (), 0, self.index, -1, ())
        self.under.add(pid)
        self._note((pid,), f"{pid} created with rf={rf}, heat={heat}")
        self._dirty()
        return {"created": True}

    def set_rf(self, pid: str, rf: int) -> Value:
        rec = self._part(pid)
        _check_int("rf", rf, 1, 64)
        if rec[_RF] == rf:
            return rf
        self.parts[pid] = _with(rec, _RF, rf)
        self._recheck(pid)
        self._note((pid,), f"{pid} rf {rec[_RF]} -> {rf}")
        self._dirty()
        return rf

    def delete_partition(self, pid: str) -> Value:
        rec = self.parts.get(_check_id("pid", pid))
        if rec is None:
            return 0
        op = self.ops.get(self.op_of_pid.get(pid, ""))
        if op is not None:
            self._finish(op, f"cancelled: {pid} deleted", rolled_back=True)
            rec = self.parts[pid]
        self._set_replicas(pid, ())
        del self.parts[pid]
        self.sizes.pop(pid, None)
        self.under.discard(pid)
        self.splits.discard(pid)
        self._note((pid,), f"{pid} deleted (held on {', '.join(rec[_REPLICAS]) or 'no node'})")
        return 1

    def _part(self, pid: str) -> PartRecord:
        rec = self.parts.get(_check_id("pid", pid))
        if rec is None:
            raise CommandRejected("partition_not_found", f"no partition {pid}")
        return rec

    def _node(self, node_id: str) -> FleetNode:
        node = self.nodes.get(_check_id("node_id", node_id))
        if node is None:
            raise CommandRejected("node_not_found", f"no node {node_id}")
        return node

    def set_admin(self, node_id: str, admin: str) -> Value:
        """cordon / uncordon (ACTIVE) / drain / decommission; idempotent."""
        node = self._node(node_id)
        if node.admin == DECOMMISSIONED:
            if admin == DECOMMISSIONING:
                return DECOMMISSIONED
            raise CommandRejected("decommissioned", f"{node_id} is decommissioned")
        if node.admin == admin:
            return admin
        before, node.admin, node.admin_since_ms = node.admin, admin, self.tick_ms
        self._note((node_id,), f"{node_id} {before} -> {admin} at tick time {self.tick_ms} ms")
        if (
            admin in (DRAINING, DECOMMISSIONING)
            or before in (DRAINING, DECOMMISSIONING)
            or (admin == ACTIVE)
        ):
            self._dirty()
        self._maybe_decommissioned(node_id)
        return node.admin

    def _maybe_decommissioned(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if (
            node.admin == DECOMMISSIONING
            and not self.node_parts[node_id]
            and not self.node_ops[node_id]
        ):
            node.admin, node.admin_since_ms = DECOMMISSIONED, self.tick_ms
            node.silent_since_ms, node.silent_gen = -1, node.silent_gen + 1
            self._weight_total = self._compute_weight_total()
            self._note(
                (node_id,), f"{node_id} decommissioned: it holds no replica and runs no operation"
            )

    # ------------------------------------------------------------------ provider requests

    def request(self, kind: str, subject: str, zone: str, index: int) -> Value:
        """Record that the leader asks the host's provider to `provision` a node (`subject`
        names the need, e.g. ``zone-4``; `zone` "" = a zone the fleet lacks) or to
        `decommission` node `subject`. The request id is derived from the request, so asking
        again returns the same id while it is pending or done; a failed one gets a new
        attempt. The token the provider sees is the leader's fencing token."""
        self.index = index
        if kind not in ("provision", "decommission"):
            raise CommandRejected("bad_argument", "kind must be provision or decommission")
        _check_id("subject", subject)
        if type(zone) is not str or len(zone) > ID_CHARS_MAX:
            raise CommandRejected("bad_argument", "zone must be a str")
        if kind == "decommission":
            node = self._node(subject)
            if node.admin != DECOMMISSIONED:
                raise CommandRejected("not_decommissioned", f"{subject} is {node.admin}")
        attempt = 1
        while True:
            request_id = f"{kind}/{subject}#{attempt}"
            row = self.requests.get(request_id)
            if row is None or row[3] != "failed":
                break
            attempt += 1
        if row is not None:
            return request_id
        if len(self.requests) >= self.config.requests_max:
            finished = sorted((r[5], rid) for rid, r in self.requests.items() if r[3] != "pending")
            if not finished:
                raise CommandRejected("too_many_requests", "provider requests at their bound")
            del self.requests[finished[0][1]]
        self.requests[request_id] = [kind, subject, zone, "pending", "", index]
        self._note((request_id, subject), f"provider asked to {kind} {subject} ({request_id})")
        return request_id

    def request_done(self, request_id: str, ok: bool, result: str, index: int) -> Value:
        self.index = index
        row = self.requests.get(request_id)
        if row is None:
            raise CommandRejected("unknown_request", f"no provider request {request_id}")
        if row[3] != "pending":
            return row[3]
        row[3], row[4] = ("done" if ok else "failed"), str(result)[:ID_CHARS_MAX]
        self._note(
            (request_id, row[1], *((row[4],) if ok and row[4] else ())),
            f"provider {row[0]} {row[1]} {'done' if ok else 'failed'}: {row[4]}",
        )
        if not ok:
            self._dirty()  # the need is still there: the leader may ask again
        return row[3]

    def pending_requests(self) -> list[tuple[str, str, str, str]]:
        """(request_id, kind, subject, zone) of requests still waiting, in id order."""
        return [
            (rid, r[0], r[1], r[2]) for rid, r in sorted(self.requests.items()) if r[3] == "pending"
        ]

    # ------------------------------------------------------------------ plans

    def plan(
        self, base_index: int, moves: Value, splits: Value, index: int, more: bool = False
    ) -> Value:
        """Replace the queue with the moves of a plan computed at `base_index`."""
        self.index = index
        if base_index < self.plan_index:
            raise CommandRejected(
                "stale_plan",
                f"plan at {base_index} is older than the current plan at {self.plan_index}",
            )
        moves_list = _as_list(moves, "moves")
        if len(moves_list) > self.config.queue_max:
            raise CommandRejected("plan_too_large", f"over {self.config.queue_max} moves")
        split_ids = sorted({_check_id("splits", p) for p in _as_list(splits, "splits")})
        queue: deque[tuple[str, str, str]] = deque()
        dropped = 0
        first_drop = ""
        for item in moves_list:
            pid, source, target = _fields(item, 3, "moves")
            if type(pid) is not str or type(source) is not str or type(target) is not str:
                raise CommandRejected("bad_argument", "a move is [pid, source, target] of str")
            problem = self._move_problem(pid, source, target)
            if problem:
                if problem not in _QUIET:
                    dropped += 1
                    first_drop = first_drop or (
                        f"{pid} {source or '-'} -> {target or '-'}: {problem}"
                    )
            else:
                queue.append((pid, source, target))
        self.queue = queue
        self.plan_index, self.plan_more = base_index, int(more)
        for pid in split_ids:
            rec = self.parts.get(pid)
            if rec is not None and not rec[_SPLIT]:
                self.parts[pid] = _with(rec, _SPLIT, 1)
                self.splits.add(pid)
                self._note(
                    (pid,),
                    f"{pid} flagged as a split candidate: heat {rec[_HEAT]} "
                    f"alone exceeds what a node's heat cap allows",
                )
        if moves_list or dropped:
            self._note(
                ("plan",),
                f"plan computed at index {base_index}: {len(queue)} moves "
                f"queued, {dropped} stale dropped",
            )
        if dropped:
            self._dirty(by_plan=True)
        if queue:
            self.solve_backoff_ms = 0
        else:
            self._back_off(base_index, dropped, first_drop, bool(more))
        self._admit()
        return {"queued": len(queue), "dropped": dropped}

    def _back_off(self, base_index: int, dropped: int, first_drop: str, more: bool) -> None:
        """A plan that queued nothing while work remains: hold the next solve back, doubling
        per such plan (deterministic, in tick time), with the reason in the journal."""
        stuck = sorted(p for p in self.under if p not in self.op_of_pid)
        if not (dropped or stuck or more):
            return  # nothing left to do: an empty plan is progress
        cfg = self.config
        self.solve_backoff_ms = min(
            max(2 * self.solve_backoff_ms, cfg.solve_backoff_ms), cfg.solve_backoff_max_ms
        )
        self.solve_after_ms = self.tick_ms + self.solve_backoff_ms
        why = []
        if dropped:
            why.append(f"{dropped} stale moves dropped, first {first_drop}")
        if stuck:
            why.append(
                f"no move for {len(stuck)} under-replicated partitions ({', '.join(stuck[:4])})"
            )
        if not why:
            why.append("it left moves out and queued none")
        self._note(
            ("plan", *stuck[:8]),
            f"plan computed at index {base_index} made no progress ({'; '.join(why)}): next "
            f"solve not before tick time {self.solve_after_ms} ms "
            f"(back-off {self.solve_backoff_ms} ms)",
        )

    def _move_problem(self, pid: str, source: str, target: str) -> str:
        """Why this move is invalid now ("" if it is valid); cheap, O(RF)."""
        rec = self.parts.get(pid)
        if rec is None:
            return "partition gone"
        replicas = rec[_REPLICAS]
        if not source and not target:
            return "empty move"
        if source and source not in replicas:
            return f"{source} no longer holds it"
        if not target:
            return "" if len(replicas) > rec[_RF] else "would go below rf"
        if (
            source
            and rec[_MOVED] >= 0
            and self.nodes[source].admin in (ACTIVE, CORDONED)
            and not self.nodes[source].gone
        ):  # a rebalance: a live replica moves (a repair, a drain or an RF change never waits)
            since = self.tick_ms - rec[_MOVED]
            # A partition below its RF (or above it) skips the short cooldown: its plan may
            # move a recently moved replica to free the zone its repair needs. It never skips
            # the return cooldown: a move back to a node it left is the solver undoing its own
            # choice, and the re-paired plan (reconcile.pair_by_zone) lets its repair run alone.
            if (
                since < self.config.rebalance_cooldown_ms
                and len(replicas) <= rec[_RF]
                and pid not in self.under
            ):
                return _COOLDOWN
            if target in rec[_LEFT] and since < self.config.return_cooldown_ms:
                return _RETURN
        node = self.nodes.get(target)
        if node is None or not node.eligible:
            return f"target {target} not eligible"
        if target in replicas:
            return f"{target} already holds it"
        if not source and len(replicas) >= rec[_RF]:
            return "already at rf"
        zone = node.zone
        # A replica on a gone node does not hold its zone: it is about to be replaced (a plan
        # replacing two dead replicas may reuse one's zone for the other).
        if any(
            self.nodes[n].zone == zone and not self.nodes[n].gone for n in replicas if n != source
        ):
            return f"zone {zone} already holds a replica"
        if len(self.node_parts[target]) >= node.slots:
            return f"{target} has no free slot"
        return ""

    def _copy_source(self, pid: str, target: str, source: str, op_id: str = "") -> str:
        """The replica to copy from: live, and never over its heat cap while another live
        replica is not (the key's first field), then least loaded (not counting operation
        `op_id` itself, which is choosing), then the move's source."""
        best: tuple[int, int, int, str] | None = None
        for node_id in self.parts[pid][_REPLICAS]:
            node = self.nodes[node_id]
            if node_id == target or node.liveness != ALIVE or node.admin == DECOMMISSIONED:
                continue
            ops = self.node_ops[node_id]
            key = (
                int(self.over_cap(node_id)),
                len(ops) - (op_id in ops),
                0 if node_id == source else 1,
                node_id,
            )
            best = key if best is None or key < best else best
        return "" if best is None else best[3]

    def _avoid_hot_sources(self, nodes: list[str]) -> None:
        """A node over its heat cap is never a copy source while another live replica can be
        one: its copies in flight are re-issued from that replica (a fresh token, not counted
        as a retry). O(operations on the touched nodes)."""
        for node_id in nodes:
            if not self.node_ops.get(node_id) or not self.over_cap(node_id):
                continue
            for op_id in sorted(self.node_ops[node_id]):
                op = self.ops[op_id]
                if op.step != COPY or op.copy_from != node_id:
                    continue
                better = self._copy_source(op.pid, op.target, op.source, op.op_id)
                if not better or better == node_id or self.over_cap(better):
                    continue
                self._issue(op, "", retry=False)
                self._note(
                    (op.pid, op.op_id, node_id, better),
                    f"{op.op_id} copy source {node_id} is over its heat cap: copy re-issued "
                    f"from {better}",
                )

    def _busy(self, node_id: str) -> bool:
        """At its per-node throttle (a gone node is never busy: nothing runs there)."""
        return (
            bool(node_id)
            and not self.nodes[node_id].gone
            and len(self.node_ops[node_id]) >= self.config.moves_in_flight_per_node
        )

    def _admit(self) -> None:
        """Start queued moves while throttles allow; look at most `admit_scan_max` of them.

        Throttles are checked first (O(1)): a queue of moves waiting for busy nodes costs about
        a microsecond per move looked at, so a tick stays cheap while a large plan runs."""
        queue, dropped, started = self.queue, 0, 0
        flight_max = self.config.moves_in_flight_max
        for _ in range(min(len(queue), self.config.admit_scan_max)):
            if len(self.ops) >= flight_max or started >= self.config.admit_per_tick_max:
                break
            move = queue.popleft()
            pid, source, target = move
            if pid in self.op_of_pid or self._busy(source) or self._busy(target):
                queue.append(move)
                continue
            problem = self._move_problem(pid, source, target)
            copy_from = ""
            if not problem and target:
                copy_from = self._copy_source(pid, target, source)
                if not copy_from and self.parts[pid][_REPLICAS]:
                    problem = _NO_SOURCE
            if problem:
                dropped += problem not in _QUIET
                continue
            if self._busy(copy_from):
                queue.append(move)
                continue
            self._start(pid, source, target, copy_from)
            started += 1
        if dropped:
            self._dirty(by_plan=True)

    # ------------------------------------------------------------------ operations

    def _start(self, pid: str, source: str, target: str, copy_from: str) -> None:
        op_id = f"{pid}@{self.index}"
        cause = (
            "repair"
            if source and self.nodes[source].gone
            else ("rf" if not source or not target else "rebalance")
        )
        op = Operation(
            op_id,
            pid,
            source,
            target,
            COPY if target else CLEANUP,
            "",
            copy_from,
            0,
            0,
            0,
            self.index,
            cause,
        )
        self.ops[op_id] = op
        self.op_of_pid[pid] = op_id
        for node_id in self._op_nodes(op):
            self.node_ops[node_id].add(op_id)
        self._note(
            (pid, op_id, *self._op_nodes(op)),
            f"{op_id} started ({cause}): {pid} {source or '-'} -> {target or '-'}",
        )
        if target:
            self._issue(op, "", retry=False)
        else:
            self._cutover(op)

    def _issue(self, op: Operation, why: str, *, retry: bool) -> None:
        """(Re)issue the current step's action with a fresh token and deadline."""
        if retry:
            op.attempt += 1
            if op.attempt > self.config.retries_max:
                self._roll_back(op, f"{why}; gave up after {self.config.retries_max} retries")
                return
        if op.step == COPY:
            copy_from = self._copy_source(op.pid, op.target, op.source, op.op_id)
            if not copy_from and self.parts[op.pid][_REPLICAS]:  # none at all: a new, empty one
                self._roll_back(op, "no live replica to copy from")
                return
            self._set_copy_from(op, copy_from)
            op.node = op.target
            timeout = self.config.copy_timeout_ms
        else:
            timeout = self.config.cleanup_timeout_ms
        op.token, op.deadline_ms = self.index, self.tick_ms + timeout
        heapq.heappush(self._op_heap, (op.deadline_ms, op.op_id, op.token))
        if retry:
            self._note(
                (op.pid, op.op_id, op.node),
                f"{op.op_id} {op.step} retried on {op.node} (attempt {op.attempt}): {why}",
            )

    def _set_copy_from(self, op: Operation, copy_from: str) -> None:
        if copy_from == op.copy_from:
            return
        for node_id in self._op_nodes(op):
            self.node_ops[node_id].discard(op.op_id)
        op.copy_from = copy_from
        for node_id in self._op_nodes(op):
            self.node_ops[node_id].add(op.op_id)

    def _step_failed(self, op: Operation, why: str) -> None:
        node = self.nodes.get(op.node)
        if op.step != COPY and (node is None or node.gone):
            self._finish(op, f"skipped the last step: {op.node} is gone")
            return
        if op.step == ABORT:
            self._finish(
                op,
                f"rolled back (removing the partial copy on {op.node} abandoned: {why})",
                rolled_back=True,
            )
            return
        if op.step in (CLEANUP, GC) and op.attempt >= self.config.retries_max:
            self._finish(op, f"{op.step} on {op.node} abandoned: {why}")
            return
        self._issue(op, why, retry=True)

    def _roll_back(self, op: Operation, why: str) -> None:
        target = self.nodes.get(op.target)
        if target is None or target.gone:
            self._finish(op, f"rolled back: {why}", rolled_back=True)
            return
        op.step, op.node, op.attempt = ABORT, op.target, 0
        self._set_copy_from(op, "")
        self._note(
            (op.pid, op.op_id, op.target),
            f"{op.op_id} rolling back: {why}; removing the partial copy on {op.target}",
        )
        self._issue(op, why, retry=False)

    def _cutover(self, op: Operation) -> None:
        rec = self.parts[op.pid]
        replicas = [n for n in rec[_REPLICAS] if n != op.source]
        if op.target:
            replicas.append(op.target)
        self._set_replicas(op.pid, tuple(sorted(replicas)))
        if op.source and op.target:
            rec = self.parts[op.pid]
            left = (*(n for n in rec[_LEFT] if n != op.source and n != op.target), op.source)
            rec = _with(rec, _MOVED, self.tick_ms)
            self.parts[op.pid] = _with(rec, _LEFT, left[-LEFT_MAX:])
        self._note(
            (op.pid, op.op_id),
            f"{op.op_id} cutover: {op.pid} on {', '.join(sorted(replicas)) or 'no node'}",
        )
        source = self.nodes.get(op.source)
        if source is None or source.gone:
            self._finish(
                op, "done" if not op.source else f"done ({op.source} is gone, nothing to clean up)"
            )
            return
        op.step, op.node, op.attempt = CLEANUP, op.source, 0
        self._set_copy_from(op, "")
        self._issue(op, "", retry=False)

    def _set_replicas(self, pid: str, replicas: tuple[str, ...]) -> None:
        rec = self.parts[pid]
        old = rec[_REPLICAS]
        for node_id in old:
            if node_id not in replicas:
                self.node_parts[node_id].discard(pid)
                self.node_heat[node_id] -= rec[_HEAT]
        for node_id in replicas:
            if node_id not in old:
                self.node_parts[node_id].add(pid)
                self.node_heat[node_id] += rec[_HEAT]
        self.heat_total += rec[_HEAT] * (len(replicas) - len(old))
        self.parts[pid] = _with(rec, _REPLICAS, replicas)
        self._recheck(pid)
        for node_id in old:
            if node_id not in replicas:
                self._maybe_decommissioned(node_id)

    def _finish(self, op: Operation, why: str, *, rolled_back: bool = False) -> None:
        del self.ops[op.op_id]
        self.op_of_pid.pop(op.pid, None)
        nodes = self._op_nodes(op)
        for node_id in nodes:
            self.node_ops[node_id].discard(op.op_id)
        self._note((op.pid, op.op_id, *nodes), f"{op.op_id} {why}")
        if rolled_back:
            self._dirty(fresh=False)
        for node_id in nodes:
            self._maybe_decommissioned(node_id)

    def ack(self, node_id: str, action_id: str, token: int, ok: bool, detail: str) -> Value:
        """An agent's answer to an action; a lower token than the action's is refused."""
        _check_id("node_id", node_id)
        op_id, _, _ = _check_id("action_id", action_id).rpartition("#")
        op = self.ops.get(op_id)
        if op is None:
            raise CommandRejected("unknown_action", f"no operation in flight for {action_id}")
        if token < op.token:
            raise CommandRejected("stale_token", f"token {token} is older than {op.token}")
        if op.action_id != action_id or token != op.token:
            raise CommandRejected(
                "unknown_action",
                f"{action_id} is not the current action of {op.op_id} ({op.action_id})",
            )
        if node_id != op.node:
            raise CommandRejected("wrong_node", f"{action_id} runs on {op.node}, not {node_id}")
        if not ok:
            why = (
                f"{node_id} reported failure: {detail[:200]}"
                if detail
                else f"{node_id} reported failure"
            )
            if op.step == ABORT:
                self._finish(op, f"rolled back ({why})", rolled_back=True)
            else:
                self._step_failed(op, why)
            return {"op": op_id, "step": op.step if op_id in self.ops else "finished"}
        if op.step == COPY:
            self._note((op.pid, op.op_id, node_id), f"{op.op_id} copy on {node_id} caught up")
            self._cutover(op)
        elif op.step == CLEANUP:
            self._finish(op, f"done: {op.pid} removed from {node_id}")
        elif op.step == GC:
            self._finish(op, f"done: the orphan copy of {op.pid} removed from {node_id}")
        else:
            self._finish(op, f"rolled back: partial copy removed from {node_id}", rolled_back=True)
        return {"op": op_id, "step": op.step if op_id in self.ops else "finished"}

    def cancel_move(self, op_id: str, reason: str) -> Value:
        """The operator cancels one move while it copies: rolled back like a failed copy (the
        abort is a new action with a new token, so a late ack of the copy is refused), the
        reason journaled. Asked again while it rolls back: the same answer. Once cut over,
        the move is finishing (its source is being cleaned up): refused as ``too_late``."""
        op = self.ops.get(_check_id("operation", op_id))
        if op is None:
            raise CommandRejected("not_in_flight", f"no move {op_id} in flight")
        if op.step == CLEANUP:
            raise CommandRejected(
                "too_late", f"{op_id} is past its cutover; the source is being cleaned up"
            )
        if op.step == COPY:
            why = "cancelled by the operator" + (f": {reason[:200]}" if reason else "")
            self._roll_back(op, why)
        return {"op": op_id, "step": op.step if op_id in self.ops else "finished"}

    # ------------------------------------------------------------------ dispatch

    def pristine(self) -> bool:
        """Nothing was ever asked of the fleet: no node, partition, request or decision. A
        pristine fleet is left out of snapshots (so is everything that ticks cannot change)."""
        return not (
            self.nodes
            or self.parts
            or self.requests
            or self.journal
            or self.ops
            or self.queue
            or self.dirty_index
            or self.plan_index
            or self.plan_more
        )

    def execute(self, command: Any, index: int, tick_ms: int) -> Value:
        """Apply one fleet command (a `coreplane.core.commands` Fleet* instance) at log
        `index` and committed tick time `tick_ms`."""
        self.index, self.tick_ms = index, tick_ms
        tag = command.TAG
        if tag == 50:
            return self.report(command.to_body(), index)
        if tag == 51:
            return self.plan(command.base_index, command.moves, command.splits, index, command.more)
        if tag == 47:
            return self.ack(
                command.node_id, command.action_id, command.token, command.ok, command.detail
            )
        if tag == 48:
            return self.cancel_move(command.operation, command.reason)
        if tag == 40:
            return self.create_partition(command.pid, command.rf, command.heat)
        if tag == 41:
            return self.set_rf(command.pid, command.rf)
        if tag == 42:
            return self.delete_partition(command.pid)
        if tag == 52:
            return self.request(command.kind, command.subject, command.zone, index)
        if tag == 53:
            return self.request_done(command.request_id, command.ok, command.result, index)
        if tag == 54:
            return self.orphans(command.orphans, index)
        admin = _ADMIN_BY_TAG.get(tag)
        if admin is not None:
            return self.set_admin(command.node_id, admin)
        raise CommandRejected("unknown_command", f"fleet tag {tag}")

    # ------------------------------------------------------------------ views (read-only)

    def node_view(self, node_id: str) -> dict[str, Value] | None:
        node = self.nodes.get(node_id)
        if node is None:
            return None
        return {
            "id": node_id,
            "state": node.state,
            "liveness": node.liveness,
            "liveness_since_ms": node.liveness_since_ms,
            "admin": node.admin,
            "admin_since_ms": node.admin_since_ms,
            "zone": node.zone,
            "weight": node.weight,
            "slots": node.slots,
            "silent_since_ms": None if node.silent_since_ms < 0 else node.silent_since_ms,
            "replicas": len(self.node_parts[node_id]),
            "heat": self.node_heat[node_id],
            "size_bytes": sum(self.sizes.get(p, 0) for p in self.node_parts[node_id]),
            "operations": sorted(self.node_ops[node_id]),
        }

    def partition_view(self, pid: str) -> dict[str, Value] | None:
        rec = self.parts.get(pid)
        if rec is None:
            return None
        live = self._live_count(rec[_REPLICAS])
        rf = rec[_RF]
        health = (
            "healthy"
            if live == rf == len(rec[_REPLICAS])
            else "unavailable"
            if live <= rf // 2
            else "under_replicated"
            if live < rf
            else "over_replicated"
        )
        op_id = self.op_of_pid.get(pid)
        return {
            "id": pid,
            "rf": rf,
            "heat": rec[_HEAT],
            "size_bytes": self.sizes.get(pid),  # None: never reported
            "replicas": list(rec[_REPLICAS]),
            "live_replicas": live,
            "health": health,
            "split_candidate": bool(rec[_SPLIT]),
            "operation": None if op_id is None else self.ops[op_id].view(),
        }

    def actions(self, node_id: str) -> list[dict[str, Value]]:
        """Pending actions for one node, in operation-id order."""
        out = []
        for op_id in sorted(self.node_ops.get(node_id, ())):
            op = self.ops[op_id]
            if op.node == node_id:
                out.append(
                    {
                        "id": op.action_id,
                        "kind": op.kind,
                        "partition": op.pid,
                        "source": op.copy_from if op.step == COPY else "",
                        "token": op.token,
                        "operation": op_id,
                    }
                )
        return out

    def explain(self, thing: str, limit: int = 100) -> list[dict[str, Value]]:
        """The journaled decisions that name `thing`, oldest first (the newest `limit`)."""
        hits = [e for e in self.journal if thing in e[2]]
        return [
            {"index": e[0], "tick_ms": e[1], "subjects": list(e[2]), "text": e[3]}
            for e in hits[-limit:]
        ]

    def capture(self) -> Callable[[], dict[str, Any]]:
        """A consistent view for the solver, taken in pointer copies on the apply thread."""
        nodes = [
            (nid, n.zone, n.weight, n.slots, n.liveness, n.admin) for nid, n in self.nodes.items()
        ]
        parts = self.parts.copy()
        sizes = self.sizes.copy()
        inflight = [(op.pid, op.source, op.target, op.step) for op in self.ops.values()]
        index, tick_ms = self.index, self.tick_ms

        def build() -> dict[str, Any]:
            return {
                "index": index,
                "tick_ms": tick_ms,
                "nodes": sorted(nodes),
                "parts": parts,
                "sizes": sizes,
                "inflight": sorted(inflight),
            }

        return build

    # ------------------------------------------------------------------ snapshot

    def to_plain(self) -> dict[str, Value] | None:
        return self.snapshot_capture()()

    def snapshot_capture(self) -> Callable[[], dict[str, Value] | None]:
        """Pointer copies on the apply thread (records are immutable tuples; nodes, operations
        and journal rows are copied small); the thunk builds the plain form anywhere (None
        for a pristine fleet)."""
        if self.pristine():
            return lambda: None
        nodes = [self.nodes[n].to_plain(n) for n in self.nodes]
        parts = self.parts.copy()
        sizes = self.sizes.copy()
        ops = [op.to_plain() for op in self.ops.values()]
        queue = list(self.queue)
        journal = list(self.journal)
        requests = [[rid, *row] for rid, row in self.requests.items()]
        scalars = [
            self.dirty_index,
            self.plan_index,
            self.plan_more,
            self.dirty_by_plan,
            self.grace_until_ms,
            self.tick_ms,
            self.index,
            self.solve_backoff_ms,
            self.solve_after_ms,
        ]

        def build() -> dict[str, Value]:
            plain: dict[str, Value] = {
                "nodes": sorted(nodes),
                "parts": [
                    [
                        pid,
                        rec[_RF],
                        rec[_HEAT],
                        list(rec[_REPLICAS]),
                        rec[_SPLIT],
                        rec[_CREATED],
                        rec[_MOVED],
                        list(rec[_LEFT]),
                    ]
                    for pid, rec in sorted(parts.items())
                ],
                "ops": sorted(ops),
                "queue": [list(m) for m in queue],
                "journal": [[i, t, list(s), x] for i, t, s, x in journal],
                "requests": sorted(requests),
                "scalars": scalars,
            }
            if sizes:  # left out until reported, so snapshots from before sizes are unchanged
                plain["sizes"] = [[pid, sizes[pid]] for pid in sorted(sizes)]
            return plain

        return build

    @classmethod
    def from_plain(cls, plain: Value, config: FleetConfig | None = None) -> FleetMachine:
        machine = cls(config)
        try:
            for row in plain["nodes"]:
                (
                    node_id,
                    zone,
                    weight,
                    slots,
                    reg,
                    liveness,
                    lsince,
                    admin,
                    asince,
                    silent,
                    gen,
                ) = row
                machine.nodes[node_id] = FleetNode(
                    zone, weight, slots, reg, liveness, lsince, admin, asince, silent, gen
                )
            for pid, rf, heat, replicas, split, created, moved, *left in plain["parts"]:
                left_nodes = tuple(left[0]) if left else ()  # none before the return cooldown
                machine.parts[pid] = (rf, heat, tuple(replicas), split, created, moved, left_nodes)
            for pid, size_bytes in plain.get("sizes", []):
                machine.sizes[pid] = size_bytes
            for row in plain["ops"]:
                machine.ops[row[0]] = Operation(*row)
            machine.queue = deque((p, s, t) for p, s, t in plain["queue"])
            machine.journal = deque((i, t, tuple(s), x) for i, t, s, x in plain["journal"])
            machine.requests = {row[0]: list(row[1:]) for row in plain["requests"]}
            scalars = list(plain["scalars"])
            scalars += [0] * (9 - len(scalars))  # a snapshot from before the solve back-off
            (
                machine.dirty_index,
                machine.plan_index,
                machine.plan_more,
                machine.dirty_by_plan,
                machine.grace_until_ms,
                machine.tick_ms,
                machine.index,
                machine.solve_backoff_ms,
                machine.solve_after_ms,
            ) = scalars
            machine._derive()
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"snapshot fleet section is malformed: {exc!r}") from exc
        require(
            all(n in machine.nodes for p in machine.parts.values() for n in p[_REPLICAS]),
            "snapshot fleet: a replica on an unknown node",
        )
        require(
            all(pid in machine.parts for pid in machine.sizes),
            "snapshot fleet: a size for an unknown partition",
        )
        return machine


_COOLDOWN: Final = "moved recently (rebalance cooldown)"
_RETURN: Final = "a move back to a node it left (return cooldown)"
_NO_SOURCE: Final = "no live replica to copy from"
# Drops that a new solve cannot fix (only a later change can, and that change dirties anyway).
_QUIET: Final = frozenset({_COOLDOWN, _RETURN, _NO_SOURCE})
_ADMIN_BY_TAG: Final = {43: CORDONED, 44: ACTIVE, 45: DRAINING, 46: DECOMMISSIONING}


def _as_list(value: Value, field: str) -> list[Value]:
    if type(value) is not list:
        raise CommandRejected("bad_argument", f"{field} must be a list")
    return value


def _fields(item: Value, n: int, field: str) -> list[Value]:
    if type(item) is not list or len(item) != n:
        raise CommandRejected("bad_argument", f"each of {field} must be a list of {n}")
    return item

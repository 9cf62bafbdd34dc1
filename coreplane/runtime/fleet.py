"""`cp.fleet`: the fleet brain seen through one ControlPlane (DESIGN.md section 7).

Three faces:

- **desired state** (any node; proposals go through the engine, which forwards them to the
  leader, as `kv.put` does): `create_partition`, `set_rf`, `delete_partition`, `cordon`,
  `uncordon`, `drain`, `decommission`; and `cancel_move` (one move, by the operator);
- **the agent protocol**: `heartbeat` (leader soft state, never a log entry: a follower raises
  `NotLeader` with the leader's id), `actions` (a read), `ack` (a replicated write, fenced by
  the action's token);
- **views**: `node`, `nodes`, `partition`, `partitions`, `operations`, `explain`; linearizable
  (ReadIndex) by default, ``stale_ok=True`` reads this replica.

And the leader's work, run from `ControlPlane._step` on the runtime thread while this node leads
(`leader_step`): once per committed tick it turns its soft state into one `FleetReport` of
*changes* only (registrations, "silent since t", "heard again", heat past the hysteresis, lost
replicas); when the fleet's worklist asks for a plan it captures the fleet at index i (pointer
copies under the state lock), builds the placement problem and solves it off the Raft thread (a
worker thread; ``solver="inline"`` for the single-threaded simulation), then proposes the plan
with i. Everything it decides is derived again from replicated state on every step, so a step
cut short (a failover, a blocked proposal) is simply run again.

A new leader knows nobody's last heartbeat: it counts every node as heard at the tick time it
took over, so nobody looks silent before `silent_after_ms` of its own leadership (and apply
declares nobody suspect or dead before `suspect_after_ms` of it).

Tick time is read only from the state machine (`StateMachine.tick_ms`), never from a clock.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coreplane import placement
from coreplane.core import commands as C
from coreplane.core.codec import Value
from coreplane.core.machines.fleet import SIZE_BYTES_MAX
from coreplane.core.reconcile import plan_moves, problem_from_capture, trusted_problem
from coreplane.errors import InvalidArgument, NotLeader

if TYPE_CHECKING:
    from coreplane.core.state import StateMachine
    from coreplane.runtime.controlplane import ControlPlane

__all__ = ["Action", "Fleet"]

logger = logging.getLogger(__name__)

_ID_MAX = 256
_HEAT_MAX = 1 << 40


@dataclass(frozen=True, slots=True)
class Action:
    """Work for one agent: `kind` is ``add_replica`` (copy `partition` from `source`; an empty
    source means create it empty) or ``remove_replica``; `token` fences it (keep the highest
    token seen per partition and refuse lower ones); `operation` is the operation's id."""

    id: str
    kind: str
    partition: str
    source: str
    token: int
    operation: str


def _check_id(field: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > _ID_MAX:
        raise InvalidArgument(field, f"must be a non-empty str of at most {_ID_MAX} characters")
    return value


def _check_int(field: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(field, f"must be an int in [{lo}, {hi}]")
    return value


class Fleet:
    """The fleet facade and the leader's fleet work for one ControlPlane; thread-safe.

    Options (plain attributes, leader-side only, never replicated): `silent_after_ms` (2 s: a
    node not heard for this long is committed as silent; apply then decides suspect and dead),
    `heat_smoothing` (8: reports feed an integer moving average of weight 1/8 per partition),
    `heat_hysteresis_pct` (20: the average is committed when it moved this much from the
    committed value) and `heat_min_delta` (absolute floor), `solve_interval_ms` (500 ms of tick
    time between solves), `plan_moves_max` (moves per proposed plan), `solver` ("thread" or
    "inline"), `on_split_candidate(pid)` (called on the leader, once per flagged partition);
    `size_hysteresis_pct` (10) and `size_min_delta_bytes` (1 MiB): a reported partition size is
    committed when it moved this much from the committed one (the first report at once).

    Constructor: `cp` is the ControlPlane it serves (the leader work reads only its public
    `node_id`, `leader_id`, `is_leader()` and `leadership_token()`); `state` and `state_lock`
    are its live state machine and the lock apply holds; `proposer(command, timeout_s)` is how
    the leader's own entries (reports, plans, provider answers) go into the log, by default
    the ControlPlane's internal path, which marks the entry internal and ends this pass of the
    leader work. A driver without a ControlPlane (the fleet bench applies every proposal to a
    `StateMachine` itself) passes its own: it may return, and the pass goes on.
    """

    def __init__(
        self,
        cp: ControlPlane,
        *,
        provider: Any = None,
        state: StateMachine,
        state_lock: threading.Lock,
        proposer: Callable[[C.Command, float], None] | None = None,
    ) -> None:
        self._cp = cp
        self._propose: Callable[[C.Command, float], None] = proposer or (
            lambda command, timeout_s: cp._propose_internal(command, timeout_s=timeout_s)
        )
        # The ControlPlane's live state machine and its lock (restored in place, never
        # replaced): fleet reads copy what they need under the lock and never mutate.
        self._sm = state
        self._sm_lock = state_lock
        self.provider = provider
        self.silent_after_ms = 2_000
        self.heat_hysteresis_pct = 20
        self.heat_smoothing = 8
        self.heat_min_delta = 2
        self.size_hysteresis_pct = 10
        self.size_min_delta_bytes = 1 << 20
        self.solve_interval_ms = 500
        self.plan_moves_max = 2_000
        seams = getattr(cp, "_seams", None)  # a threadless node (simulation) solves inline
        self.solver = "thread" if seams is None or seams.threaded else "inline"
        self.on_split_candidate: Callable[[str], None] | None = None
        self.nodes_soft_max = 100_000
        self._lock = threading.Lock()
        self._lead_token: int | None = None
        self._lead_start_ms = 0
        self._heard: dict[str, int] = {}  # node -> tick time of its newest heartbeat
        self._specs: dict[str, tuple[str, int, int]] = {}  # node -> (zone, weight, slots)
        self._heat: dict[str, int] = {}  # pid -> newest reported heat
        self._heat_changed: set[str] = set()
        self._lost: set[tuple[str, str]] = set()
        self._orphans: dict[str, dict[str, int]] = {}  # node -> {pid: reported since (tick ms)}
        self._orphan_tick = -1
        self._size: dict[str, int] = {}  # pid -> newest size reported
        self._size_by: dict[str, str] = {}  # pid -> the node that reported it
        self._size_changed: set[str] = set()
        self._batch_tick = -1
        self._solve_after_ms = 0
        self._backoff_ms = 0
        self._solved_at_ms = 0
        self._solved_index = 0  # the dirty index the newest solve answered
        self._solving: _SolveJob | None = None
        self._solve_status: dict[str, Any] | None = None
        self._solve_logged: tuple[Any, int] = (None, 0)  # (what was logged, tick ms)
        self.solve_log_interval_ms = 60_000
        self._splits_seen: set[str] = set()
        self._zones_short: tuple[int, int] = (0, 0)  # (zones that can take replicas, max rf)
        self._provider_inflight: set[str] = set()
        self._provider_tick = -1
        self._provider_results: list[tuple[str, bool, str]] = []
        self.stats = {"reports": 0, "report_bytes": 0, "plans": 0, "solves": 0, "heartbeats": 0}

    # ------------------------------------------------------------------ desired state

    def create_partition(
        self, pid: str, rf: int = 3, heat: int = 1, *, timeout_s: float | None = None
    ) -> Value:
        """Ask for partition `pid` with `rf` replicas; idempotent for the same rf."""
        cmd = C.FleetCreatePartition(
            pid=_check_id("pid", pid),
            rf=_check_int("rf", rf, 1, 64),
            heat=_check_int("heat", heat, 0, _HEAT_MAX),
        )
        return self._cp.call_command(cmd, timeout_s=timeout_s)

    def set_rf(self, pid: str, rf: int, *, timeout_s: float | None = None) -> Value:
        cmd = C.FleetSetRF(pid=_check_id("pid", pid), rf=_check_int("rf", rf, 1, 64))
        return self._cp.call_command(cmd, timeout_s=timeout_s)

    def delete_partition(self, pid: str, *, timeout_s: float | None = None) -> Value:
        return self._cp.call_command(
            C.FleetDeletePartition(pid=_check_id("pid", pid)), timeout_s=timeout_s
        )

    def cancel_move(
        self, operation: str, reason: str = "", *, timeout_s: float | None = None
    ) -> Value:
        """Cancel one move while it copies (rolled back through the fenced action protocol,
        `reason` journaled); CommandRejected("too_late") after its cutover,
        ("not_in_flight") when there is no such move."""
        if not isinstance(reason, str) or len(reason) > 1000:
            raise InvalidArgument("reason", "must be a str of at most 1000 characters")
        cmd = C.FleetCancelMove(operation=_check_id("operation", operation), reason=reason)
        return self._cp.call_command(cmd, timeout_s=timeout_s)

    def cordon(self, node_id: str, *, timeout_s: float | None = None) -> Value:
        return self._admin(C.FleetCordon, node_id, timeout_s)

    def uncordon(self, node_id: str, *, timeout_s: float | None = None) -> Value:
        return self._admin(C.FleetUncordon, node_id, timeout_s)

    def drain(self, node_id: str, *, timeout_s: float | None = None) -> Value:
        return self._admin(C.FleetDrain, node_id, timeout_s)

    def decommission(self, node_id: str, *, timeout_s: float | None = None) -> Value:
        return self._admin(C.FleetDecommission, node_id, timeout_s)

    def _admin(self, cls: Any, node_id: str, timeout_s: float | None) -> Value:
        return self._cp.call_command(
            cls(node_id=_check_id("node_id", node_id)), timeout_s=timeout_s
        )

    # ------------------------------------------------------------------ agent protocol

    def heartbeat(
        self,
        node_id: str,
        *,
        zone: str,
        weight: int = 1,
        slots: int = 1 << 20,
        heat: dict[str, int] | None = None,
        lost: tuple[str, ...] | list[str] = (),
        sizes: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """Record a node's heartbeat on the leader (soft state; the first one registers it).

        `heat` maps partitions it serves to their heat (integer milli-units), `lost` names
        replicas it lost, `sizes` maps partitions it serves to their size in bytes. Raises
        `NotLeader` (with the leader's id) on any other node."""
        _check_id("node_id", node_id)
        _check_id("zone", zone)
        _check_int("weight", weight, 1, 1 << 20)
        _check_int("slots", slots, 0, 1 << 30)
        cp = self._cp
        token = cp.leadership_token()
        if token is None or not cp.is_leader():
            raise NotLeader(cp.leader_id)
        tick_ms = self._sm.tick_ms  # an int read: atomic
        # Dict reads of immutable records: safe without the state lock (old or new, not torn).
        parts = self._sm.fleet.parts
        with self._lock:
            if node_id not in self._heard and len(self._heard) >= self.nodes_soft_max:
                raise InvalidArgument("node_id", "too many nodes heartbeating")
            self.stats["heartbeats"] += 1
            self._heard[node_id] = tick_ms
            self._specs[node_id] = (zone, weight, slots)
            orphans: dict[str, int] = {}
            if heat:
                # An integer moving average per partition (weight 1/heat_smoothing), so noise
                # in single samples never reaches the log; every replica's report is a sample.
                # A copy no replica set holds is no sample (it serves nothing): it is an orphan
                # candidate, reported since the first heartbeat that named it.
                reported, k = self._heat, self.heat_smoothing
                since_of = self._orphans.get(node_id, {})
                for pid, value in heat.items():
                    rec = parts.get(pid)
                    if rec is None or node_id not in rec[2]:
                        if type(pid) is str and 0 < len(pid) <= _ID_MAX:
                            orphans[pid] = since_of.get(pid, tick_ms)
                        continue
                    old = reported.get(pid)
                    if old == value:
                        continue
                    _check_int(f"heat[{pid!r}]", value, 0, _HEAT_MAX)
                    new = value if old is None else old + (value - old) // k
                    if new != old:
                        reported[pid] = new
                        self._heat_changed.add(pid)
            if orphans:
                self._orphans[node_id] = orphans
            else:
                self._orphans.pop(node_id, None)
            for pid in lost:
                self._lost.add((node_id, _check_id("lost", pid)))
            if sizes is not None and not isinstance(sizes, dict):
                raise InvalidArgument("sizes", "must map partition ids to sizes in bytes")
            if sizes:
                known = self._size
                for pid, value in sizes.items():
                    if known.get(pid) == value:
                        continue  # the common case, checked before anything else (as heat)
                    _check_int(f"sizes[{_check_id('sizes', pid)!r}]", value, 0, SIZE_BYTES_MAX)
                    known[pid] = value
                    self._size_by[pid] = node_id
                    self._size_changed.add(pid)
        return {"leader": cp.node_id, "token": token, "tick_ms": tick_ms}

    def actions(
        self, node_id: str, *, stale_ok: bool = False, timeout_s: float | None = None
    ) -> list[Action]:
        """Pending actions for `node_id` (a read; linearizable unless `stale_ok`)."""
        rows = self._cp._read_state(
            lambda sm: sm.fleet.actions(node_id), stale_ok=stale_ok, timeout_s=timeout_s
        )
        return [
            Action(r["id"], r["kind"], r["partition"], r["source"], r["token"], r["operation"])
            for r in rows
        ]

    def ack(
        self,
        node_id: str,
        action_id: str,
        token: int,
        ok: bool = True,
        detail: str = "",
        *,
        timeout_s: float | None = None,
    ) -> Value:
        """Report an action done (or failed, `ok=False` with `detail`); replicated and fenced:
        CommandRejected("stale_token") for an action a newer one replaced."""
        cmd = C.FleetAck(
            node_id=_check_id("node_id", node_id),
            action_id=_check_id("action_id", action_id),
            token=_check_int("token", token, 0, 2**63 - 1),
            ok=bool(ok),
            detail=str(detail)[:1000],
        )
        return self._cp.call_command(cmd, timeout_s=timeout_s)

    # ------------------------------------------------------------------ views

    def _read(self, fn: Callable[[Any], Any], stale_ok: bool, timeout_s: float | None) -> Any:
        return self._cp._read_state(lambda sm: fn(sm.fleet), stale_ok=stale_ok, timeout_s=timeout_s)

    def node(
        self, node_id: str, *, stale_ok: bool = False, timeout_s: float | None = None
    ) -> dict[str, Any] | None:
        return self._read(lambda f: f.node_view(node_id), stale_ok, timeout_s)

    def nodes(
        self, *, stale_ok: bool = False, timeout_s: float | None = None
    ) -> list[dict[str, Any]]:
        return self._read(lambda f: [f.node_view(n) for n in sorted(f.nodes)], stale_ok, timeout_s)

    def partition(
        self, pid: str, *, stale_ok: bool = False, timeout_s: float | None = None
    ) -> dict[str, Any] | None:
        return self._read(lambda f: f.partition_view(pid), stale_ok, timeout_s)

    def partitions(
        self, *, stale_ok: bool = False, timeout_s: float | None = None
    ) -> list[dict[str, Any]]:
        return self._read(
            lambda f: [f.partition_view(p) for p in sorted(f.parts)], stale_ok, timeout_s
        )

    def operations(
        self, *, stale_ok: bool = False, timeout_s: float | None = None
    ) -> list[dict[str, Any]]:
        return self._read(lambda f: [f.ops[o].view() for o in sorted(f.ops)], stale_ok, timeout_s)

    def explain(
        self,
        thing: str,
        *,
        limit: int = 100,
        stale_ok: bool = False,
        timeout_s: float | None = None,
    ) -> list[dict[str, Any]]:
        """Committed decisions naming a node, partition or operation id: index, tick_ms, text."""
        return self._read(lambda f: f.explain(thing, limit), stale_ok, timeout_s)

    def dry_run_inputs(self, *, timeout_s: float | None = None) -> tuple[Any, Any, list[Any]]:
        """What a dry run (`api.fleet_routes.plan_change`) starts from, read linearizably: the
        fleet's capture (a thunk, as `FleetMachine.capture` returns), its config, and its
        journal as ``{"tick_ms", "subjects", "text"}`` dicts, oldest first."""
        return self._cp._read_state(
            lambda sm: (
                sm.fleet.capture(),
                sm.fleet.config,
                [{"tick_ms": e[1], "subjects": e[2], "text": e[3]} for e in sm.fleet.journal],
            ),
            timeout_s=timeout_s,
        )

    def split_candidates(
        self, *, stale_ok: bool = False, timeout_s: float | None = None
    ) -> list[str]:
        return self._read(lambda f: sorted(f.splits), stale_ok, timeout_s)

    # ------------------------------------------------------------------ leader work

    def leader_step(self) -> None:
        """The leader's fleet work; runtime thread, only while this node leads."""
        cp = self._cp
        token = cp.leadership_token()
        if token is None:
            return
        sm = self._sm
        with self._lock:
            if token != self._lead_token:
                self._take_over(token, sm.tick_ms)
        if sm.tick_n != self._batch_tick:
            self._batch_tick = sm.tick_n
            report = self._report()
            if report is not None:
                self.stats["reports"] += 1
                self.stats["report_bytes"] += len(C.encode_internal(report))
                self._propose(report, 2.0)
        if sm.tick_n != self._orphan_tick:
            self._orphan_tick = sm.tick_n
            orphans = self._orphan_report()
            if orphans:
                self._propose(C.FleetOrphans(orphans=orphans), 2.0)
        if self.provider is not None:
            self._provider_step(token, sm.tick_n)
        self._plan_step()
        self._split_callbacks()

    def _take_over(self, token: int, tick_ms: int) -> None:
        """A new leadership: forget soft state; everybody counts as heard now."""
        self._lead_token = token
        self._lead_start_ms = tick_ms
        self._heard.clear()
        self._specs.clear()
        self._heat.clear()
        self._heat_changed.clear()
        self._lost.clear()
        self._orphans.clear()
        self._orphan_tick = -1
        self._size.clear()
        self._size_by.clear()
        self._size_changed.clear()
        self._batch_tick = -1
        self._solve_after_ms = 0
        self._solved_index = 0
        self._solving = None
        self._provider_inflight.clear()
        self._provider_results.clear()
        self._provider_tick = -1

    def _report(self) -> C.FleetReport | None:
        """The changes between this leader's soft state and the committed fleet, or None.

        The state lock is held only for copies and for the few partitions whose heat or loss
        was reported; the scan over every node runs outside it (apply is not held up)."""
        with self._sm_lock:
            fleet = self._sm.fleet
            now = self._sm.tick_ms
            items = list(fleet.nodes.items())  # C-speed copy; fields are read below, unlocked
            with self._lock:
                heat = self._heat_report(fleet)
                lost = sorted(
                    [n, p] for n, p in self._lost if p in fleet.parts and n in fleet.parts[p][2]
                )
                self._lost = {(n, p) for n, p in lost}
                sizes = self._size_report(fleet)
        with self._lock:
            specs = dict(self._specs)
            last_heard = dict(self._heard)
        # A field apply changes meanwhile is read old or new, never torn: at worst this batch
        # misses a change the next tick's batch carries.
        liveness = [
            (n, node.silent_since_ms, node.admin, node.zone, node.weight, node.slots)
            for n, node in items
        ]
        known = {row[0]: row[3:] for row in liveness}
        nodes = [[n, *spec] for n, spec in sorted(specs.items()) if known.get(n) != spec]
        heard, silent = [], []
        start = self._lead_start_ms
        for node_id, silent_since, admin, *_spec in sorted(liveness):
            if admin == "decommissioned":
                continue
            last = last_heard.get(node_id)
            if silent_since >= 0:
                if last is not None and last > silent_since:
                    heard.append(node_id)
            elif now - (start if last is None else last) >= self.silent_after_ms:
                silent.append([node_id, start if last is None else last])
        if not (nodes or heard or silent or heat or lost or sizes):
            return None
        return C.FleetReport(
            nodes=nodes, heard=heard, silent=silent, heat=heat, lost=lost, sizes=sizes
        )

    def _orphan_report(self) -> list[list[Any]]:
        """Orphan candidates reported for at least the grace that are orphans in the committed
        state now (apply checks again). A candidate proposed starts its grace again, so it is
        proposed again only if its agent still reports it a whole grace later: after a removal
        the next heartbeat drops it, and a removal is never asked for twice."""
        if not self._orphans:
            return []
        out: list[list[Any]] = []
        with self._sm_lock:
            fleet = self._sm.fleet
            now, cfg = self._sm.tick_ms, fleet.config
            room = min(cfg.moves_in_flight_max - len(fleet.ops), cfg.orphans_per_entry_max)
            with self._lock:
                for node_id in sorted(self._orphans):
                    node = fleet.nodes.get(node_id)
                    if node is None or node.liveness != "alive" or node.admin == "decommissioned":
                        continue
                    # The throttles apply checks: what would be skipped waits here, unproposed.
                    node_room = cfg.moves_in_flight_per_node - len(fleet.node_ops[node_id])
                    candidates = self._orphans[node_id]
                    for pid in sorted(candidates):
                        if room <= 0:
                            return out
                        if node_room <= 0:
                            break
                        since = candidates[pid]
                        if now - since < cfg.orphan_grace_ms or pid in fleet.op_of_pid:
                            continue
                        rec = fleet.parts.get(pid)
                        if (rec is not None and node_id in rec[2]) or pid in fleet.under:
                            continue
                        out.append([node_id, pid, since])
                        candidates[pid] = now
                        room -= 1
                        node_room -= 1
        return out

    def _heat_report(self, fleet: Any) -> list[list[Any]]:
        """Averages that moved past the hysteresis from the committed heat (state lock held)."""
        heat = []
        for pid in sorted(self._heat_changed):
            rec = fleet.parts.get(pid)
            if rec is None:
                continue
            value = self._heat[pid]
            delta = abs(value - rec[1])
            if delta >= self.heat_min_delta and (
                delta * 100 >= self.heat_hysteresis_pct * max(rec[1], 1)
            ):
                heat.append([pid, value])
        self._heat_changed.clear()
        return heat

    def _size_report(self, fleet: Any) -> list[list[Any]]:
        """Sizes that moved past the hysteresis from the committed size (state lock held). A
        copy in progress is not a size: the target of a copy in flight is not listened to."""
        sizes, later = [], set()
        for pid in sorted(self._size_changed):
            if pid not in fleet.parts:
                self._size.pop(pid, None)
                self._size_by.pop(pid, None)
                continue
            value, node_id = self._size[pid], self._size_by[pid]
            op = fleet.ops.get(fleet.op_of_pid.get(pid, ""))
            if op is not None and op.step == "copy" and op.target == node_id:
                later.add(pid)  # looked at again once the copy is over
                continue
            committed = fleet.sizes.get(pid)
            delta = abs(value - (committed or 0))
            if committed is None or (
                delta >= self.size_min_delta_bytes
                and delta * 100 >= self.size_hysteresis_pct * max(committed, 1)
            ):
                sizes.append([pid, value])
        self._size_changed = later
        return sizes

    def _plan_step(self) -> None:
        cp = self._cp
        job = self._solving
        if job is not None:
            if not job.done.is_set():
                return
            self._solving = None
            self._solved(job)
            return
        with self._sm_lock:
            fleet = self._sm.fleet
            now = self._sm.tick_ms
            if not fleet.needs_plan():
                return
            if now < self._solve_after_ms:
                # A change in the fleet itself since the last solve (not the plan's own stale
                # moves) ends this leader's back-off: the solve interval alone holds it then.
                fresh = fleet.dirty_index > self._solved_index and not fleet.dirty_by_plan
                if not fresh or now < self._solved_at_ms + self.solve_interval_ms:
                    return
            view = fleet.capture()
            per_node = fleet.config.moves_in_flight_per_node
            by_plan = fleet.dirty_by_plan
            view_index = fleet.dirty_index
        # A solve asked for by the previous plan's own stale moves backs off (x2, up to 30 s):
        # the solver and apply's per-move checks disagreeing must not become a solve loop.
        self._backoff_ms = (
            min(max(self._backoff_ms * 2, self.solve_interval_ms), 30_000)
            if by_plan
            else self.solve_interval_ms
        )
        self._solve_after_ms = now + self._backoff_ms
        self._solved_at_ms, self._solved_index = now, view_index
        self.stats["solves"] += 1
        job = _SolveJob(view, per_node, self.plan_moves_max, now)
        if self.solver == "inline":
            job.run()
            self._solved(job)
            return
        self._solving = job
        threading.Thread(target=job.run, name=f"coreplane-solve-{cp.node_id}", daemon=True).start()

    def _solved(self, job: _SolveJob) -> None:
        """A finished solve: note what the solver could not do (one line, rate-limited: an
        infeasible problem is a normal state, e.g. an RF above the zones before the nodes
        registered, and is solved again on every change), then propose its plan."""
        self._zones_short = job.zones_short
        if job.index >= 0:
            self._solve_status = {
                "index": job.index,
                "tick_ms": job.tick_ms,
                "feasible": not job.reason,
                "reason": job.reason,
                "left_out": list(job.left_out),
            }
        if job.reason:
            key = _NAMES.sub("", job.reason.partition(": ")[2] or job.reason)  # the kind
            last_key, last_ms = self._solve_logged
            if key != last_key or job.tick_ms - last_ms >= self.solve_log_interval_ms:
                self._solve_logged = (key, job.tick_ms)
                logger.log(
                    logging.WARNING if job.nodes else logging.INFO,
                    "fleet plan at index %d %s",
                    job.index,
                    job.reason,
                )
        elif job.plan is not None:
            self._solve_logged = (None, 0)  # the next infeasibility is news again
        if job.plan is not None:
            self.stats["plans"] += 1
            self._propose(job.plan, 5.0)

    def solve_status(self) -> dict[str, Any] | None:
        """The newest solve this node ran as leader (None before its first): its base
        `index`, `tick_ms`, whether the plan was `feasible`, the solver's `reason` when it was
        not (or what it `left_out` to place the rest). Leader soft state, not replicated."""
        status = self._solve_status
        return None if status is None else {**status, "left_out": list(status["left_out"])}

    def _provider_step(self, token: int, tick_n: int) -> None:
        """Ask for nodes the placement lacks, decommission what the fleet released, call the
        provider for pending requests (worker threads; inline in simulation) and commit its
        answers. Request ids come from the replicated state, so after a failover the new
        leader calls again with the same id and the provider returns its first answer."""
        if self._provider_results:  # one per pass: a proposal ends the pass
            request_id, ok, result = self._provider_results.pop(0)
            self._provider_inflight.discard(request_id)  # still pending later: call again
            self._propose(C.FleetProviderResult(request_id=request_id, ok=ok, result=result), 2.0)
        if tick_n == self._provider_tick:
            return
        self._provider_tick = tick_n
        zones, rf_max = self._zones_short
        with self._sm_lock:
            fleet = self._sm.fleet
            asked = {(r[0], r[1]) for r in fleet.requests.values() if r[3] != "failed"}
            wanted = [("provision", f"zone-{z}") for z in range(zones + 1, rf_max + 1)]
            wanted += [
                ("decommission", n)
                for n in sorted(fleet.nodes)
                if fleet.nodes[n].admin == "decommissioned"
            ]
            pending = fleet.pending_requests()
        for request_id, kind, subject, zone in pending:
            if request_id in self._provider_inflight:
                continue
            self._provider_inflight.add(request_id)
            call = _ProviderCall(self, request_id, kind, subject, zone, token)
            if self.solver == "inline":
                call.run()
            else:
                threading.Thread(
                    target=call.run, name=f"coreplane-provider-{request_id}", daemon=True
                ).start()
        for kind, subject in wanted:
            if (kind, subject) not in asked:
                self._propose(C.FleetProviderRequest(kind=kind, subject=subject), 2.0)

    def _split_callbacks(self) -> None:
        with self._sm_lock:
            splits = self._sm.fleet.splits
            new = sorted(splits - self._splits_seen)
            if new or len(splits) != len(self._splits_seen):
                self._splits_seen = set(splits)
        callback = self.on_split_candidate
        if callback is None:
            return
        for pid in new:
            try:
                callback(pid)
            except Exception:
                logger.exception("on_split_candidate callback failed")


class _ProviderCall:
    """One call to the host's provider, off the runtime thread; the answer is committed by the
    leader's next step (`FleetProviderResult`)."""

    def __init__(
        self, fleet: Fleet, request_id: str, kind: str, subject: str, zone: str, token: int
    ) -> None:
        self.fleet, self.request_id, self.kind = fleet, request_id, kind
        self.subject, self.zone, self.token = subject, zone, token

    def run(self) -> None:
        provider = self.fleet.provider
        try:
            if self.kind == "provision":
                spec = {"reason": self.subject}
                node_id = provider.provision(
                    self.zone or None, spec, self.request_id, token=self.token
                )
                answer = (True, str(node_id))
            else:
                provider.decommission(self.subject, self.request_id, token=self.token)
                answer = (True, "")
        except Exception as exc:  # noqa: BLE001 - the host's failure is committed as such
            answer = (False, f"{type(exc).__name__}: {exc}")
        self.fleet._provider_results.append((self.request_id, *answer))


_NAMED = re.compile(r"partition '([^']+)'")
_NAMES = re.compile(r"'[^']*'|\d+")  # what varies between two reasons of one kind
_SKIP_MAX = 16


def _solve_around(problem: placement.Problem) -> tuple[placement.Plan, list[tuple[str, str]]]:
    """Solve; when one partition makes the whole problem infeasible (no free slot in a free
    zone for it), leave that partition out and solve again, up to `_SKIP_MAX` times, so one
    unplaceable partition does not hold back the repair of all the others."""
    skipped: list[tuple[str, str]] = []
    while True:
        plan = placement.solve(problem)
        match = _NAMED.search(plan.reason) if not plan.feasible else None
        if match is None or len(skipped) >= _SKIP_MAX:
            return plan, skipped
        pid = match.group(1)
        skipped.append((pid, plan.reason))
        problem = trusted_problem(  # a subset of a trusted problem: no re-validation
            problem.nodes,
            tuple(p for p in problem.partitions if p.id != pid),
            {k: v for k, v in problem.assignment.items() if k != pid},
            moves_in_flight_per_node=problem.moves_in_flight_per_node,
        )


class _SolveJob:
    """One solve off the Raft thread: capture -> problem -> plan -> FleetPlan.

    A problem the solver cannot fully answer is an expected state, not an error: `reason`
    says why (empty when the plan is feasible and complete) and `left_out` names the
    partitions left out to place the rest; the leader logs it once (`Fleet._solved`). An
    `InvalidArgument` from the translation (a bound of the placement model) is such a reason
    too and proposes an empty plan, so the machine backs off and journals it. Anything else
    is a bug: logged with its traceback, no plan."""

    def __init__(
        self, view: Callable[[], dict[str, Any]], per_node: int, moves_max: int, tick_ms: int = 0
    ) -> None:
        self._view = view
        self._per_node = per_node
        self._moves_max = moves_max
        self.tick_ms = tick_ms
        self.index = -1
        self.nodes = 0  # nodes in the captured fleet
        self.reason = ""
        self.left_out: tuple[str, ...] = ()
        self.plan: C.FleetPlan | None = None
        self.zones_short: tuple[int, int] = (0, 0)
        self.done = threading.Event()

    def run(self) -> None:
        try:
            view = self._view()
            self.index, self.nodes = int(view["index"]), len(view["nodes"])
            self._run(view)
        except InvalidArgument as exc:
            self.reason = f"infeasible: {exc}"
            self.plan = C.FleetPlan(base_index=self.index, moves=[], splits=[], more=False)
        except Exception:
            logger.exception("fleet solve failed")
            self.reason = ""
            self.plan = None
        finally:
            self.done.set()

    def _run(self, view: dict[str, Any]) -> None:
        # No Partition cache across solves: 100k cached objects would lengthen every GC
        # pass of this process, apply included (measured: 60 ms Tick apply during a heal).
        solve = problem_from_capture(view, moves_in_flight_per_node=self._per_node)
        parts = view["parts"]
        self.zones_short = (solve.zones, max((parts[p][0] for p in solve.capped), default=0))
        plan, skipped = _solve_around(solve.problem)
        if skipped:
            self.left_out = tuple(p for p, _ in skipped)
            self.reason = f"leaves out {', '.join(self.left_out)}: {skipped[0][1]}"
        if not plan.feasible:
            self.reason = f"infeasible: {plan.reason}"
            self.plan = C.FleetPlan(base_index=solve.index, moves=[], splits=[], more=False)
            return
        zone_of = {node.id: node.zone for node in solve.problem.nodes}
        moves, more = plan_moves(plan, self._moves_max, solve.capped, zone_of)
        self.plan = C.FleetPlan(
            base_index=solve.index, moves=moves, splits=list(plan.split_candidates), more=more
        )

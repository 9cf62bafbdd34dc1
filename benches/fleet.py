"""The fleet brain's costs: tick apply, liveness traffic, detect-to-plan, plan apply, healing
quality, oscillation and exactly-once over a simulated day of churn.

All runs are seeded and in-process. The leader's real fleet work (`coreplane.runtime.fleet.Fleet`:
heartbeat soft state, change batches, the solver) runs against a stand-in ControlPlane that
applies every proposal to a `StateMachine` at the next log index, so apply costs are measured
on the real apply path and liveness traffic is the bytes the real leader code proposes. Time is
tick time, advanced by the driver (no sleeping); wall clocks measure only CPU costs.

Keys (targets from issue 12):
- `tick_apply_us_p50` / `_p99`: apply of one Tick entry in steady state, 1k nodes / 100k
  partitions at rf=3 (placed directly, as a restored snapshot would hold them), agents
  heartbeating every 1 s with steady heat, ticks every 200 ms (target p99 <= 1 ms);
- `liveness_entries_per_s` / `liveness_bytes_per_s`: FleetReport entries the leader commits
  with 10k agents heartbeating every 1 s with +-10% heat noise and a node flapping (silent
  15 s) every 10 s (targets <= 50 entries/s, <= 100 KB/s);
- `detect_to_plan_s`: from the committed dead decision to the plan's commit on a 1k/100k fleet
  = one runtime step (20 ms) + capture + problem + solve + plan apply, each measured (target
  <= 1 s); the components are reported too;
- `plan_apply_ms`: the apply of one ~1,500-move FleetPlan (five nodes dead), decode included
  (target <= 20 ms); `heal_moves_over_lb`: that plan's moves over the placement lower bound;
  `tick_apply_us_p99_during_heal`: Tick apply while that plan's operations run (agents ack
  every action one tick after it is issued);
- `oscillating_moves`, `exactly_once_violations`: a simulated day (86,400 ticks of 1 s) of
  churn on 60 nodes / 1,800 partitions: nodes die for good and are replaced, nodes flap, heat is
  noisy with hot spots moving every two hours; a move undone later by a rebalance (a replica of
  p going a -> b and later b -> a) is oscillation (`undone_by_repair` counts the reversals a
  repair made because b died: not the controller's choice); a lost replica repaired twice, or a
  duplicate replica, is an exactly-once violation (targets 0 and 0).
Anchor: `anchor_tick_decode_us`, a raw msgpack decode of the same Tick bytes plus a dict store.
"""

from __future__ import annotations

import gc
import os
import random
import threading
import time
from collections import Counter
from typing import Any

import msgpack

from coreplane import placement
from coreplane.core import commands as C
from coreplane.core.machines.fleet import FleetConfig, FleetMachine
from coreplane.core.reconcile import plan_moves, problem_from_capture
from coreplane.core.state import StateMachine
from coreplane.runtime.fleet import Fleet
from coreplane.testing.fleet import completed_moves, started_moves, undone_moves


class _StandIn:
    """What `Fleet`'s leader work needs of a ControlPlane: its id, leadership and a token.

    Proposals do not go through it: the driver gives `Fleet` its own `proposer`, which keeps
    the entries for the driver to apply at the next log indexes."""

    def __init__(self) -> None:
        self.node_id = "cp1"
        self.leader_id = "cp1"
        self.token: int | None = 1
        self.proposed: list[bytes] = []

    def is_leader(self) -> bool:
        return True

    def leadership_token(self) -> int | None:
        return self.token

    def propose(self, command: C.Command, timeout_s: float) -> None:
        self.proposed.append(C.encode_internal(command))


class Driver:
    """A fleet in tick time: one StateMachine, the real leader code, agents as heartbeats."""

    def __init__(
        self, config: FleetConfig, *, nodes: int, zones: int, partitions: int, rf: int = 3
    ) -> None:
        self.sm = StateMachine(fleet=config)
        self.cp = _StandIn()
        self.fleet_rt = Fleet(
            self.cp,  # type: ignore[arg-type]  # the leader work reads only public members
            state=self.sm,
            state_lock=threading.Lock(),
            proposer=self.cp.propose,
        )
        self.fleet_rt.solver = "inline"
        self.index = 0
        self.tick_n = 0
        self.tick_ms = 0
        self.apply_us: dict[str, list[float]] = {}
        self.proposed_bytes: Counter[str] = Counter()
        self.proposed_count: Counter[str] = Counter()
        self.apply(C.Leader("cp1", 1))
        self.tick()
        self.node_ids = [f"n{i:05d}" for i in range(nodes)]
        self.zone_of = {n: f"z{i % zones}" for i, n in enumerate(self.node_ids)}
        self.apply(
            C.FleetReport([[n, self.zone_of[n], 1, 1 << 20] for n in self.node_ids], [], [], [], [])
        )
        self._place(partitions, rf, zones)

    def _place(self, partitions: int, rf: int, zones: int) -> None:
        """Partitions spread round-robin over zones and nodes (a valid, balanced placement),
        loaded as a restored snapshot would hold them (`FleetMachine.from_plain`)."""
        by_zone: dict[str, list[str]] = {}
        for n in self.node_ids:
            by_zone.setdefault(self.zone_of[n], []).append(n)
        zone_names = sorted(by_zone)
        plain = self.sm.fleet.to_plain()
        assert plain is not None  # the nodes are registered
        rows = plain["parts"]
        for i in range(partitions):
            replicas = []
            for k in range(rf):
                members = by_zone[zone_names[(i + k) % zones]]
                replicas.append(members[(i // zones + k) % len(members)])
            rows.append([f"p{i:06d}", rf, 1_000, sorted(replicas), 0, self.index, -1, []])
        self.sm.fleet = FleetMachine.from_plain(plain, self.sm.fleet.config)

    def apply(self, command: C.Command | bytes) -> Any:
        if isinstance(command, bytes):
            data = command
        elif command.TAG in C.INTERNAL_TAGS:
            data = C.encode_internal(command)
        else:
            data = C.encode(command)
        self.index += 1
        kind = type(C.decode(data)).__name__
        start = time.perf_counter()
        result = self.sm.apply(data, self.index)
        self.apply_us.setdefault(kind, []).append((time.perf_counter() - start) * 1e6)
        return result

    def tick(self, step_ms: int = 200) -> None:
        self.tick_n += 1
        self.tick_ms += step_ms
        self.apply(C.Tick(self.tick_n, step_ms))

    def leader_step(self) -> None:
        self.fleet_rt.leader_step()
        proposed, self.cp.proposed = self.cp.proposed, []
        for data in proposed:
            kind = type(C.decode(data)).__name__
            self.proposed_bytes[kind] += len(data)
            self.proposed_count[kind] += 1
            self.apply(data)

    def heartbeat(self, node_id: str, heat: dict[str, int]) -> None:
        self.fleet_rt.heartbeat(node_id, zone=self.zone_of[node_id], slots=1 << 20, heat=heat)

    def ack_all(self, down: set[str]) -> None:
        fleet = self.sm.fleet
        for node_id in sorted(fleet.node_ops):
            if node_id in down or not fleet.node_ops[node_id]:
                continue
            for action in fleet.actions(node_id):
                self.apply(
                    C.FleetAck(
                        node_id,
                        action["id"],
                        action["token"],
                        True,
                        "",
                        client_id=f"agent/{node_id}",
                        seq=self.index,
                    )
                )


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _held(driver: Driver) -> dict[str, dict[str, int]]:
    fleet = driver.sm.fleet
    return {n: dict.fromkeys(sorted(fleet.node_parts[n]), 1_000) for n in driver.node_ids}


def steady_ticks(nodes: int, partitions: int, seconds: int) -> dict[str, Any]:
    cfg = FleetConfig()
    d = Driver(cfg, nodes=nodes, zones=4, partitions=partitions)
    held = _held(d)
    d.apply_us.clear()
    gc.collect()
    for t in range(seconds * 5):
        phase = t % 5
        for i in range(phase, nodes, 5):
            n = d.node_ids[i]
            d.heartbeat(n, held[n])
        d.tick()
        d.leader_step()
    ticks = d.apply_us["Tick"]
    return {
        "tick_apply_us_p50": _pct(ticks, 0.5),
        "tick_apply_us_p99": _pct(ticks, 0.99),
        "tick_apply_us_max": max(ticks),
        "ticks": len(ticks),
        "reports_in_steady_state": d.proposed_count["FleetReport"],
    }


def liveness(agents: int, partitions: int, seconds: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    cfg = FleetConfig(nodes_max=max(10_000, agents))
    d = Driver(cfg, nodes=agents, zones=8, partitions=partitions)
    held = _held(d)
    silent_until: dict[str, int] = {}
    for t in range(seconds * 5):
        now_s = t // 5
        if t % 50 == 0:  # every 10 s a node goes silent for 15 s
            silent_until[rng.choice(d.node_ids)] = now_s + 15
        for i in range(t % 5, agents, 5):
            n = d.node_ids[i]
            if silent_until.get(n, -1) > now_s:
                continue
            heat = {p: h + rng.randrange(-h // 10, h // 10 + 1) for p, h in held[n].items()}
            d.heartbeat(n, heat)
        d.tick()
        d.leader_step()
    entries = d.proposed_count["FleetReport"]
    data = d.proposed_bytes["FleetReport"]
    return {
        "liveness_entries_per_s": entries / seconds,
        "liveness_bytes_per_s": data / seconds,
        "liveness_agents": agents,
        "liveness_seconds": seconds,
        "dead_declared": sum(1 for n in d.sm.fleet.nodes.values() if n.liveness == "dead"),
    }


def heal(nodes: int, partitions: int, dead: int, heal_ticks: int) -> dict[str, Any]:
    """Kill `dead` nodes of a placed fleet; time capture, problem, solve and plan apply."""
    cfg = FleetConfig(suspect_after_ms=5_000, dead_after_ms=30_000)
    d = Driver(cfg, nodes=nodes, zones=4, partitions=partitions)
    victims = d.node_ids[:: max(1, nodes // dead)][:dead]
    d.apply(C.FleetReport([], [], [[v, d.tick_ms] for v in victims], [], []))
    for _ in range(200):
        d.tick()
        if all(d.sm.fleet.nodes[v].liveness == "dead" for v in victims):
            break
    fleet = d.sm.fleet
    t0 = time.perf_counter()
    view = fleet.capture()
    t1 = time.perf_counter()
    solve = problem_from_capture(view(), moves_in_flight_per_node=cfg.moves_in_flight_per_node)
    t2 = time.perf_counter()
    plan = placement.solve(solve.problem)
    t3 = time.perf_counter()
    moves, more = plan_moves(plan, 2_000, solve.capped, {n.id: n.zone for n in solve.problem.nodes})
    entry = C.encode_internal(C.FleetPlan(solve.index, moves, list(plan.split_candidates), more))
    metrics = plan.metrics
    del plan, solve, view  # the leader drops them too: they must not weigh on GC below
    gc.collect()
    t4 = time.perf_counter()
    result = d.apply(entry)
    t5 = time.perf_counter()
    assert result.ok, result
    # Then heal: ticks while operations run (agents acknowledge each action a tick later).
    d.apply_us["Tick"] = []
    for _ in range(heal_ticks):
        d.tick()
        d.ack_all(set(victims))
        if not d.sm.fleet.ops and not d.sm.fleet.queue:
            break
    during = d.apply_us["Tick"]
    return {
        "plan_moves": len(moves),
        "plan_apply_ms": (t5 - t4) * 1e3,
        "tick_apply_us_p99_during_heal": _pct(during, 0.99),
        "heal_ticks": len(during),
        "heal_queue_left": len(d.sm.fleet.queue),
        "heal_moves_over_lb": metrics.moves_over_lb,
        "heal_lower_bound": metrics.lower_bound,
        "capture_ms": (t1 - t0) * 1e3,
        "problem_ms": (t2 - t1) * 1e3,
        "solve_ms": (t3 - t2) * 1e3,
        "solver_backend": placement.BACKEND,
        "plan_entry_bytes": len(entry),
        "detect_to_plan_s": 0.020 + (t1 - t0) + (t2 - t1) + (t3 - t2) + (t5 - t4),
    }


def day_of_churn(nodes: int, partitions: int, seconds: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    cfg = FleetConfig(
        suspect_after_ms=5_000,
        dead_after_ms=30_000,
        copy_timeout_ms=60_000,
        moves_in_flight_per_node=2,
        moves_in_flight_max=32,
        journal_max=1 << 20,
    )
    d = Driver(cfg, nodes=nodes, zones=3, partitions=partitions)
    base = {p: 1_000 for p in d.sm.fleet.parts}
    pids = sorted(base)
    hot: str | None = None
    down: set[str] = set()
    flap_until: dict[str, int] = {}
    spare = 0
    dead_for_good: list[str] = []
    for s in range(seconds):
        if s % 7_200 == 0:  # a hot spot moves every two hours
            if hot is not None:
                base[hot] = 1_000
            hot = rng.choice(pids)
            base[hot] = 20_000
        if s % 1_800 == 900:  # a node dies for good; a new one joins
            victim = rng.choice(sorted(n for n in d.node_ids if n not in down))
            down.add(victim)
            dead_for_good.append(victim)
            spare += 1
            new = f"x{spare:04d}"
            d.node_ids.append(new)
            d.zone_of[new] = d.zone_of[victim]
        if s % 600 == 300:  # a node flaps for 10 s
            flap_until[rng.choice(sorted(n for n in d.node_ids if n not in down))] = s + 10
        fleet = d.sm.fleet
        for n in d.node_ids:  # each agent every 1 s
            if n in down or flap_until.get(n, -1) > s:
                continue
            heat = {
                p: base[p] + rng.randrange(-base[p] // 3, base[p] // 3 + 1)
                for p in sorted(fleet.node_parts.get(n, ()))
            }
            d.heartbeat(n, heat)
        d.tick(1_000)
        d.leader_step()
        d.ack_all(down | {n for n, u in flap_until.items() if u > s})
    fleet = d.sm.fleet
    repairs = Counter(
        (pid, src) for _i, pid, src, _t in completed_moves(fleet, "repair") if src in dead_for_good
    )
    duplicates = sum(1 for r in fleet.parts.values() if len(set(r[2])) != len(r[2]))
    return {
        # A move the controller undid by its own choice (a rebalance back) is an oscillation; a
        # replica put back on the node it left because the node it went to died is a repair.
        "oscillating_moves": len(undone_moves(fleet, "rebalance")),
        "undone_by_repair": len(undone_moves(fleet, "repair")),
        "exactly_once_violations": sum(c - 1 for c in repairs.values() if c > 1) + duplicates,
        "churn_moves": len(started_moves(fleet)),
        "churn_repairs": len(repairs),
        "churn_nodes_dead": len(dead_for_good),
        "churn_seconds": seconds,
        "churn_under_replicated_at_end": len(fleet.under),
    }


def anchor_tick_decode_us(n: int = 20_000) -> float:
    data = [C.encode_internal(C.Tick(i + 1, 200)) for i in range(n)]
    store: dict[int, Any] = {}
    start = time.perf_counter()
    for i, entry in enumerate(data):
        store[i & 1023] = msgpack.unpackb(entry)
    return (time.perf_counter() - start) / n * 1e6


def run(*, json_out: str | None, smoke: bool) -> dict[str, Any]:
    if smoke:
        sizes = {
            "nodes": 50,
            "partitions": 2_000,
            "seconds": 10,
            "agents": 200,
            "live_partitions": 2_000,
            "live_seconds": 30,
            "dead": 2,
            "churn_nodes": 15,
            "churn_partitions": 150,
            "churn_seconds": 3_600,
            "heal_ticks": 100,
        }
    else:
        sizes = {
            "nodes": 1_000,
            "partitions": 100_000,
            "seconds": 60,
            "agents": 10_000,
            "live_partitions": 100_000,
            "live_seconds": 120,
            "dead": 5,
            "churn_nodes": 60,
            "churn_partitions": 1_800,
            "churn_seconds": 86_400,
            "heal_ticks": 600,
        }
    summary: dict[str, Any] = {}
    summary.update(steady_ticks(sizes["nodes"], sizes["partitions"], sizes["seconds"]))
    summary.update(
        liveness(sizes["agents"], sizes["live_partitions"], sizes["live_seconds"], seed=7)
    )
    summary.update(heal(sizes["nodes"], sizes["partitions"], sizes["dead"], sizes["heal_ticks"]))
    summary.update(
        day_of_churn(
            sizes["churn_nodes"], sizes["churn_partitions"], sizes["churn_seconds"], seed=11
        )
    )
    anchor = anchor_tick_decode_us()
    summary["anchor_tick_decode_us"] = anchor
    summary["load_avg_1m_at_end"] = os.getloadavg()[0]  # a shared machine inflates p99s
    summary["tick_apply_p99_over_anchor"] = summary["tick_apply_us_p99"] / anchor
    return {"bench": "fleet", "params": {"smoke": smoke, **sizes}, "summary": summary}

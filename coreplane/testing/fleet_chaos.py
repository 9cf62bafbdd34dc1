"""Seeded fleet chaos: storage agents and control-plane faults on a `SimCluster`, then checks.

`run_fleet_schedule(seed)` is one experiment, a pure function of its arguments:

1. a three-node control plane and a `FleetWorld` of 6..9 storage agents in 3..4 zones, 8..16
   partitions at rf 2..3, bootstrapped to RF;
2. *chaos*: faults at random moments: agents crash (some lose their disk), come back or stay
   dead; agent-to-leader partitions; replicas lost; slow copies; the leader crashed or
   isolated mid-operation (failover); control-plane crashes and partitions; clock drift, and
   wall-clock jumps on followers (a jump of the leader's clock moves tick time itself until
   tick time is leader-monotonic, issue 10); drains, uncordons and RF changes from an admin;
3. *heal*: faults stop, control-plane nodes restart, crashed agents stay dead (their replicas
   must be re-created); within `RESTORE_MS` every partition must be back at RF;
4. checks: the cluster's own invariants (one leader per term, fencing, log agreement, equal
   state hashes) and the fleet's: no duplicate replica; no committed replica without its data
   (a cutover before the copy caught up); no replica deleted while the state still counts it
   (remove before add); no node declared dead while its agent was heard within half of
   dead_after (death after a failover); every repair of a dead node's replica exactly once;
   RF restored within the bound; then, within `ORPHANS_MS`, no running agent holds a copy no
   replica set counts (orphans garbage-collected).

`FLEET_CANARIES` are two deliberate bugs the checks must catch: ``remove_before_add`` (a move
cuts over as it starts, before its copy) and ``dead_on_failover`` (a new leader treats nodes it
never heard as silent since time 0, with no grace).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from coreplane.core import commands as C
from coreplane.core.machines.fleet import COPY, FleetConfig, FleetMachine
from coreplane.runtime.fleet import Fleet
from coreplane.testing.cluster import SimCluster
from coreplane.testing.fleet import FleetWorld, completed_moves, started_moves

__all__ = [
    "FLEET_CANARIES",
    "RESTORE_MS",
    "FleetScheduleResult",
    "catch_fleet",
    "run_fleet_schedule",
]

RESTORE_MS = 120_000
CFG = FleetConfig(
    suspect_after_ms=3_000,
    dead_after_ms=8_000,
    copy_timeout_ms=6_000,
    cleanup_timeout_ms=4_000,
    moves_in_flight_per_node=2,
    moves_in_flight_max=16,
    orphan_grace_ms=10_000,
)
ORPHANS_MS = CFG.orphan_grace_ms + 30_000  # after RF is restored, orphan copies are gone
AGENT_FAULTS = ("agent_crash", "agent_wipe", "agent_cut", "lose_replica", "slow_copies")
CP_FAULTS = ("crash_leader", "isolate_leader", "crash", "partition", "drift", "jump_follower")
ADMIN = ("drain", "uncordon", "set_rf")


@dataclass
class FleetScheduleResult:
    seed: int
    canaries: list[str]
    violations: list[dict[str, Any]]
    faults: list[str]
    partitions: int
    agents: int
    moves_completed: int
    repairs: int
    orphans_removed: int
    restore_ms: int
    lost_by_faults: list[str]  # lost every copy, or RF unreachable with the zones left
    sim_seconds: float
    wall_seconds: float
    replay: str

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _RemoveBeforeAdd(FleetMachine):
    """Canary: a move cuts over as it starts, before its copy caught up."""

    def _start(self, pid: str, source: str, target: str, copy_from: str) -> None:
        super()._start(pid, source, target, copy_from)
        op = self.ops.get(self.op_of_pid.get(pid, ""))
        if op is not None and op.step == COPY and op.source:
            self._cutover(op)


class _NoGrace(FleetMachine):
    """Canary (with `_ForgetfulLeader`): no grace for a new leader."""

    def on_leader(self, index: int, tick_ms: int) -> None:
        self.index, self.tick_ms = index, tick_ms


class _ForgetfulLeader(Fleet):
    """Canary: a new leader treats nodes it has not heard yet as silent since time 0."""

    def _take_over(self, token: int, tick_ms: int) -> None:
        super()._take_over(token, tick_ms)
        self._lead_start_ms = 0


def _canary_hook(names: tuple[str, ...]) -> Callable[[Any], None] | None:
    """Install the canaries' buggy machine and leader code on each node as it is built."""
    if not names:
        return None

    def hook(node: Any) -> None:
        sm = node.state
        if "remove_before_add" in names:
            sm.fleet = _RemoveBeforeAdd(sm.fleet.config)
        if "dead_on_failover" in names:
            sm.fleet = _NoGrace(sm.fleet.config)
            node.fleet = _ForgetfulLeader(node, provider=node.fleet.provider)

    return hook


def replay_fleet_command(seed: int, canaries: tuple[str, ...] = ()) -> str:
    flags = "".join(f" --canary {c}" for c in canaries)
    return f"python -m coreplane.testing.chaos --replay-fleet {seed}{flags}"


def run_fleet_schedule(
    seed: int,
    *,
    canaries: tuple[str, ...] = (),
    chaos_ms: tuple[int, int] = (20_000, 40_000),
    fault_gap_ms: tuple[int, int] = (1_000, 4_000),
    agent_faults: tuple[str, ...] = AGENT_FAULTS,
    cp_faults: tuple[str, ...] = CP_FAULTS,
    admin: tuple[str, ...] = ADMIN,
) -> FleetScheduleResult:
    """One seeded fleet experiment; see the module docstring."""
    wall0 = time.perf_counter()
    with SimCluster(
        seed, fleet_config=CFG, keep_trace=False, node_hook=_canary_hook(canaries)
    ) as c:
        rng = c.rng
        faults: list[str] = []
        if not c.run_until(c.converged, 10_000):
            c.violate("liveness", "no leader within 10 s")
        world = FleetWorld(c)
        zones = rng.randrange(3, 5)
        agents = rng.randrange(6, 10)
        for i in range(agents):
            world.add_agent(f"s{i}", f"z{i % zones}")
        world.run(2_000)
        parts = rng.randrange(8, 17)
        rf = rng.randrange(2, 4)
        seq = [0]

        def admin_cmd(cmd: Any) -> None:
            seq[0] += 1
            cmd = type(cmd)(**{**cmd.to_body(), "client_id": "admin", "seq": seq[0]})
            c.command("admin", cmd, lambda op: None)

        for i in range(parts):
            admin_cmd(C.FleetCreatePartition(f"p{i}", rf=rf))
        if not world.run_until_converged(60_000):
            c.violate("fleet_bootstrap", "not at rf 60 s after creation")
        world.dead_after_ms = CFG.dead_after_ms
        dead_for_good: set[str] = set()
        chaos_end = c.now + rng.randrange(*chaos_ms) * 1000
        menu = [*agent_faults, *cp_faults, *admin]
        restarts: list[Callable[[], None]] = []
        while c.now < chaos_end:
            world.run(rng.randrange(*fault_gap_ms))
            fault = rng.choice(menu)
            faults.append(fault)
            end = _inject(c, world, fault, zones, rf, admin_cmd, dead_for_good)
            if end is not None:
                restarts.append(end)
        for end in restarts:
            end()
        c.heal()
        for node_id in c.node_ids:
            c.set_drift(node_id, 0)
            c.restart(node_id)
        for agent in world.agents.values():
            agent.slowness, agent.cut_until_us = 1, 0
        for node_id in sorted(world.agents):  # the admin's drains end too
            admin_cmd(C.FleetUncordon(node_id))
        t0 = c.now

        def recoverable(fleet: Any) -> set[str]:
            """Partitions that can be at RF: a running agent of their committed replica set
            still holds them (else every copy was lost to injected faults), and enough zones
            have a running, active node (drains the admin left in place can make RF
            unreachable; coreplane then keeps what it has)."""
            zones = {
                node.zone
                for n, node in fleet.nodes.items()
                if node.eligible and n in world.agents and world.agents[n].up
            }
            return {
                p
                for p, rec in fleet.parts.items()
                if rec[0] <= len(zones)
                and any(
                    world.agents[n].up and p in world.agents[n].held
                    for n in rec[2]
                    if n in world.agents
                )
            }

        def restored_now() -> bool:
            fleet = world.fleet_state()
            if fleet is None or fleet.ops or fleet.queue or fleet.needs_plan():
                return False
            alive = recoverable(fleet)
            return all(
                fleet.partition_view(p)["health"] == "healthy" or p not in alive
                for p in fleet.parts
            )

        restored = False
        while not restored and c.now - t0 < RESTORE_MS * 1000:
            world.run(250)
            restored = restored_now()
        restore_ms = (c.now - t0) // 1000
        lost_by_faults: list[str] = []  # lost every copy, or RF unreachable with the zones left
        fleet = world.fleet_state()
        if fleet is not None:
            alive = recoverable(fleet)
            lost_by_faults = sorted(p for p in fleet.parts if p not in alive)
        if not restored:
            if fleet is None:
                c.violate("fleet_rf_not_restored", "no control-plane node runs")
            else:
                stuck = sorted(
                    p
                    for p in fleet.parts
                    if p not in lost_by_faults and fleet.partition_view(p)["health"] != "healthy"
                )
                if stuck:
                    c.violate(
                        "fleet_rf_not_restored",
                        f"not at rf {RESTORE_MS} ms after faults stopped: {stuck[:5]}",
                    )
        if restored and fleet is not None:
            _check_orphans(c, world, set(lost_by_faults))
        c.run_until(c.converged, 10_000)
        c.check_hashes()
        c.sample_hashes()
        fleet = world.fleet_state()
        completed = completed_moves(fleet) if fleet is not None else []
        repaired = completed_moves(fleet, "repair") if fleet is not None else []
        repairs = Counter((pid, src) for _i, pid, src, _t in repaired if src in dead_for_good)
        for (pid, src), count in sorted(repairs.items()):
            if count > 1:
                c.violate("fleet_repair_twice", f"{pid} lost on {src} re-created {count} times")
        return FleetScheduleResult(
            seed=seed,
            canaries=sorted(canaries),
            violations=[
                {"invariant": v.invariant, "at_us": v.at_us, "detail": v.detail}
                for v in c.violations
            ],
            faults=faults,
            partitions=parts,
            agents=agents,
            moves_completed=len(completed),
            repairs=len(repairs),
            orphans_removed=len(started_moves(fleet, "gc")) if fleet is not None else 0,
            restore_ms=restore_ms,
            lost_by_faults=lost_by_faults,
            sim_seconds=c.now / 1e6,
            wall_seconds=time.perf_counter() - wall0,
            replay=replay_fleet_command(seed, canaries),
        )


def _check_orphans(c: SimCluster, world: FleetWorld, lost: set[str]) -> None:
    """Within `ORPHANS_MS` after RF is restored, every running agent holds only replicas its
    replica sets count: a copy left by a node declared dead and back, a rolled-back move or
    an abandoned removal was garbage-collected (partitions lost to faults aside)."""

    def left() -> list[str]:
        fleet = world.fleet_state()
        if fleet is None:
            return ["no control-plane node runs"]
        return [
            f"{pid} on {node_id}"
            for node_id, agent in sorted(world.agents.items())
            if agent.up
            for pid in sorted(agent.held - fleet.node_parts.get(node_id, set()) - lost)
        ]

    t0 = c.now
    while left() and c.now - t0 < ORPHANS_MS * 1000:
        world.run(500)
    orphans = left()
    if orphans:
        c.violate("fleet_orphan_left", f"{ORPHANS_MS} ms after RF was restored: {orphans[:5]}")


def _inject(
    c: SimCluster,
    world: FleetWorld,
    fault: str,
    zones: int,
    rf: int,
    admin_cmd: Callable[[Any], None],
    dead_for_good: set[str],
) -> Callable[[], None] | None:
    """Start one fault; returns what ends it at heal time (None: nothing to end)."""
    rng = c.rng
    up = sorted(n for n, a in world.agents.items() if a.up)
    leader = c.leader()
    if fault in ("agent_crash", "agent_wipe"):
        # Keep at least one agent per zone up, so partitions stay placeable.
        zone_up = Counter(world.agents[n].zone for n in up)
        candidates = [n for n in up if zone_up[world.agents[n].zone] > 1]
        if not candidates:
            return None
        victim = rng.choice(candidates)
        world.crash(victim, wipe=fault == "agent_wipe")
        if rng.random() < 0.5:
            dead_for_good.add(victim)
            return None
        back_ms = rng.randrange(500, 15_000)
        c.at(back_ms, world.restart, victim)
        return lambda: world.restart(victim)
    if fault == "agent_cut" and up:
        world.cut(rng.choice(up), rng.randrange(500, 6_000))
        return None
    if fault == "lose_replica" and up:
        victim = rng.choice(up)
        held = sorted(world.agents[victim].held)
        if held:
            world.lose(victim, rng.choice(held))
        return None
    if fault == "slow_copies" and up:
        victim = rng.choice(up)
        world.slow(victim, rng.randrange(2, 8))
        return lambda: world.slow(victim, 1)
    if fault in ("crash_leader", "crash"):
        target = leader if fault == "crash_leader" and leader else rng.choice(c.node_ids)
        c.crash(target)
        c.at(rng.randrange(300, 4_000), c.restart, target)
        return lambda: c.restart(target)
    if fault == "isolate_leader" and leader:
        c.isolate(leader)
        c.at(rng.randrange(300, 4_000), c.heal)
        return c.heal
    if fault == "partition":
        ids = list(c.node_ids)
        rng.shuffle(ids)
        c.partition(sorted(ids[:1]))
        c.at(rng.randrange(300, 4_000), c.heal)
        return c.heal
    if fault == "drift":
        victim = rng.choice(c.node_ids)
        c.set_drift(victim, rng.randrange(-10_000, 10_001))
        return lambda: c.set_drift(victim, 0)
    if fault == "jump_follower":
        followers = [n for n in c.node_ids if n != leader]
        c.jump_clock(rng.choice(followers), rng.choice((-1, 1)) * rng.randrange(1, 60_000))
        return None
    if fault == "drain" and up:
        admin_cmd(C.FleetDrain(rng.choice(up)))
        return None
    if fault == "uncordon":
        admin_cmd(C.FleetUncordon(rng.choice(sorted(world.agents))))
        return None
    if fault == "set_rf":
        admin_cmd(C.FleetSetRF(f"p{rng.randrange(8)}", rng.randrange(2, min(zones, 3) + 1)))
        return None
    return None


def _control(name: str) -> Callable[[int, bool], list[str]]:
    def run(seed: int, on: bool) -> list[str]:
        kwargs: dict[str, Any] = {}
        if name == "dead_on_failover":
            kwargs = {"agent_faults": (), "cp_faults": ("crash_leader",), "admin": ()}
        else:
            kwargs = {"agent_faults": ("agent_crash",), "cp_faults": (), "admin": ("drain",)}
        result = run_fleet_schedule(
            seed, canaries=(name,) if on else (), chaos_ms=(15_000, 20_000), **kwargs
        )
        return sorted({v["invariant"] for v in result.violations})

    return run


FLEET_CANARIES: dict[str, Callable[[int, bool], list[str]]] = {
    "dead_on_failover": _control("dead_on_failover"),
    "remove_before_add": _control("remove_before_add"),
}


def catch_fleet(
    name: str, *, seed: int = 0, seeds_max: int = 10
) -> tuple[bool, int | None, tuple[str, ...]]:
    """Run the canary on seeds until a violation appears whose control (canary off) is clean:
    (caught, seed, invariants)."""
    scenario = FLEET_CANARIES[name]
    for i in range(seeds_max):
        found = scenario(seed + i, True)
        if found and not scenario(seed + i, False):
            return True, seed + i, tuple(found)
    return False, None, ()

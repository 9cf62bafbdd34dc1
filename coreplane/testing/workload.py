"""Seeded chaos schedules: clients, lock holders and faults on a `SimCluster`, then the checks.

`run_schedule(seed, nodes=3)` is one complete experiment, a pure function of its arguments:

1. wait for the first leader;
2. *chaos*: KV clients (linearizable reads, unique-valued writes, CAS) and lock clients (lease,
   acquire by CAS, act on a fenced model resource, keep-alive) run while faults are injected:
   partitions (random split, isolated node, isolated leader, one-way cut), crash and restart
   (any node, the leader), process pauses, clock drift and wall-clock jumps (up to a day, on
   the leader too), lossy,
   duplicating, reordering and slow network windows, and (``bitflips=True``) bit flips;
3. *heal*: faults stop, crashed nodes restart, and the cluster must elect a leader and
   converge within `CONVERGE_MS`;
4. final linearizable reads of every key, then the checks: linearizability per key, equal
   state hashes, acknowledged writes applied everywhere, plus the invariants checked online.

The result is plain data (`ScheduleResult`); `replay_command` says how to run it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from coreplane.core import commands as C
from coreplane.testing.cluster import NetworkConfig, Op, SimCluster
from coreplane.testing.linearizability import Verdict
from coreplane.testing.node import Canaries

__all__ = ["CONVERGE_MS", "FAULTS", "ScheduleResult", "replay_command", "run_schedule"]

CONVERGE_MS = 20_000
FAULTS = (
    "partition",
    "isolate",
    "isolate_leader",
    "cut",
    "crash",
    "crash_leader",
    "pause",
    "pause_leader",
    "drift",
    "jump",
    "jump_day",
    "flaky",
    "slow",
)
LOCK_KEY = "lock/resource"
LOCK_TTL_MS = 1_000


@dataclass
class ScheduleResult:
    """What one schedule did and found; plain data (JSON-ready through `asdict`)."""

    seed: int
    nodes: int
    journal: str
    canaries: list[str]
    violations: list[dict[str, Any]]
    ops_checked: int
    ops_total: int
    ops_unknown_outcome: int
    unknown_results: int  # checker budget exhausted (never counted as a pass)
    sim_seconds: float
    wall_seconds: float
    faults: list[str]
    leader_actions: int
    lock_actions: int
    trace_hash: str
    replay: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and self.unknown_results == 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def replay_command(
    seed: int, nodes: int, journal: str = "memory", canaries: tuple[str, ...] = ()
) -> str:
    flags = "".join(f" --canary {c}" for c in canaries)
    return (
        f"python -m coreplane.testing.chaos --replay {seed} --nodes {nodes} "
        f"--journal {journal}{flags}"
    )


class _KVClient:
    """Issues one operation at a time: read, write (unique value) or CAS on a random key."""

    def __init__(
        self, cluster: SimCluster, name: str, keys: list[str], think_ms: tuple[int, int]
    ) -> None:
        self.c, self.name, self.keys, self.think_ms = cluster, name, keys, think_ms
        self.seq = 0
        self.known: dict[str, tuple[bytes | None, int]] = {}
        self.running = True

    def start(self) -> None:
        self.c.at(self.c.rng.randrange(*self.think_ms), self.issue)

    def issue(self) -> None:
        if not self.running:
            return
        c, rng = self.c, self.c.rng
        key = rng.choice(self.keys)
        roll = rng.random()
        self.seq += 1
        value = f"{self.name}.{self.seq}".encode()
        if roll < 0.4:
            op = c.get(self.name, key)
        elif roll < 0.8 or key not in self.known:
            op = c.put(self.name, self.seq, key, value)
        else:
            op = c.cas(self.name, self.seq, key, self.known[key], value)
        op.then = self.done
        if op.done:
            self.done(op)
            return
        c.at(2_500, self.timeout, op)

    def timeout(self, op: Op) -> None:
        if not op.done:
            self.c._finish(op, unknown=True)

    def done(self, op: Op) -> None:
        if op.kind == "read" and not op.unknown:
            self.known[op.key] = (None, 0) if op.result is None else op.result
        elif op.kind == "write" and not op.unknown and op.result is not None:
            self.known[op.key] = (op.arg, int(op.result))
        if op.then is self.done:
            op.then = None
        if self.running:
            self.c.at(self.c.rng.randrange(*self.think_ms), self.issue)


class _LockClient:
    """Lease, acquire by CAS on revision 0, act with the revision as fencing token.

    A paused lock client (a GC pause longer than the lease) acts once more with its old token
    when it wakes: the fenced resource must refuse it.
    """

    def __init__(self, cluster: SimCluster, name: str, resource: dict[str, Any]) -> None:
        self.c, self.name, self.resource = cluster, name, resource
        self.seq = 0
        self.lease_id = 0
        self.token: int | None = None
        self.paused_until = 0
        self.running = True
        self.actions = 0
        self.last_keepalive_ms = 0.0

    def _send(self, command: Any, then: Callable[[Op], None]) -> None:
        self.seq += 1
        command = type(command)(**{**command.to_body(), "client_id": self.name, "seq": self.seq})

        def handle(op: Op) -> None:
            if self.c.now < self.paused_until:  # a paused process handles nothing
                self.c.at_us(self.paused_until - self.c.now, handle, op)
                return
            then(op)

        op = self.c.command(self.name, command, handle, kind="lock")
        if not op.done:
            self.c.at(2_500, self._timeout, op)

    def _timeout(self, op: Op) -> None:
        if not op.done:
            self.c._finish(op, unknown=True)

    def _later(self, ms: int, fn: Callable[[], None]) -> None:
        if self.running:
            self.c.at_us(max(ms * 1000, self.paused_until - self.c.now, 1), fn)

    def start(self) -> None:
        self._later(self.c.rng.randrange(50, 500), self.acquire)

    def pause(self, ms: int) -> None:
        """A GC pause just before using the resource: it acts first thing when it resumes."""
        self.paused_until = self.c.now + ms * 1000
        self.c.record("client_pause", self.name, ms)
        if self.token is not None:
            self.c.at_us(ms * 1000, self.act)

    def acquire(self) -> None:
        self.token = None
        self._send(C.LeaseGrant(ttl_ms=LOCK_TTL_MS), self._granted)

    def _granted(self, op: Op) -> None:
        if op.unknown or not op.result.ok:
            self._later(200, self.acquire)
            return
        self.lease_id = int(op.result.value)
        self._send(
            C.Cas(
                key=LOCK_KEY,
                expected_mod_revision=0,
                value=self.name.encode(),
                lease_id=self.lease_id,
            ),
            self._acquired,
        )

    def _acquired(self, op: Op) -> None:
        if op.unknown or not op.result.ok:
            self._later(self.c.rng.randrange(100, 400), self.acquire)
            return
        self.token = int(op.result.value)
        self.c.record("lock_acquired", self.name, self.token)
        self.act()

    def act(self) -> None:
        """Use the resource with the token (a side effect outside the cluster)."""
        if self.token is None or not self.running:
            return
        if self.c.now < self.paused_until:
            self._later(0, self.act)
            return
        self.actions += 1
        res = self.resource
        if self.token < res["max"]:
            if self.c.canaries.unfenced_lock:
                self.c.violate(
                    "lock_fencing",
                    f"{self.name} acted with token {self.token} "
                    f"after token {res['max']} (two holders acted)",
                )
            self.c.record("lock_refused", self.name, self.token)
            self.token = None  # refused: the holder learns it lost the lock
            self._later(100, self.acquire)
            return
        res["max"] = self.token
        res["accepted"] += 1
        if self.actions % 3 == 0:
            self._send(C.LeaseKeepAlive(lease_id=self.lease_id), self._kept)
        elif self.actions % 11 == 0:
            self._send(C.LeaseRevoke(lease_id=self.lease_id), lambda op: None)
            self.token = None
            self._later(300, self.acquire)
            return
        self._later(100, self.act)

    def _kept(self, op: Op) -> None:
        if self.token is not None and not op.unknown and not op.result.ok:
            self.token = None  # the lease expired: the lock is gone
            self._later(100, self.acquire)


def _pick_group(cluster: SimCluster) -> list[str]:
    ids = list(cluster.node_ids)
    cluster.rng.shuffle(ids)
    return sorted(ids[: cluster.rng.randrange(1, len(ids) // 2 + 1)])


def _inject(cluster: SimCluster, fault: str, lockers: list[_LockClient]) -> Callable[[], None]:
    """Start one fault now; returns what ends it."""
    c, rng = cluster, cluster.rng
    victim = rng.choice(c.node_ids)
    leader = c.leader() or victim
    if fault == "partition":
        c.partition(_pick_group(c))
        return c.heal
    if fault in ("isolate", "isolate_leader"):
        c.isolate(leader if fault == "isolate_leader" else victim)
        return c.heal
    if fault == "cut":
        other = rng.choice([n for n in c.node_ids if n != leader])
        src, dst = (leader, other) if rng.random() < 0.5 else (other, leader)
        c.cut(src, dst)
        return c.heal
    if fault in ("crash", "crash_leader"):
        target = leader if fault == "crash_leader" else victim
        c.crash(target)
        return lambda: c.restart(target)
    if fault in ("pause", "pause_leader"):
        target = leader if fault == "pause_leader" else victim
        c.pause(target, rng.randrange(50, 1_500))
        if lockers and rng.random() < 0.5:
            holders = [lk for lk in lockers if lk.token is not None] or lockers
            rng.choice(holders).pause(rng.randrange(1_200, 3_000))
        return lambda: None
    if fault == "drift":
        c.set_drift(victim, rng.randrange(-10_000, 10_001))
        return lambda: c.set_drift(victim, 0)
    if fault == "jump":
        c.jump_clock(victim, rng.choice((-1, 1)) * rng.randrange(1, 60_000))
        return lambda: None
    if fault == "jump_day":  # an NTP step, a VM restored from a day-old image, a typo
        c.jump_clock(leader, rng.choice((-1, 1)) * 86_400_000)
        return lambda: None
    if fault == "flaky":
        c.net.drop = rng.random() * 0.2
        c.net.duplicate = rng.random() * 0.1
        c.net.reorder = rng.random() < 0.5
        c.record("flaky", round(c.net.drop, 3), round(c.net.duplicate, 3), c.net.reorder)
        return lambda: _calm(c)
    if fault == "slow":
        c.net.extra_delay_us_max = rng.randrange(1_000, 25_000)
        c.record("slow", c.net.extra_delay_us_max)
        return lambda: _calm(c)
    if fault == "bitflip":
        c.flip_bit(victim)
        return lambda: None
    raise ValueError(f"unknown fault {fault!r}")


def _calm(c: SimCluster) -> None:
    c.net.drop = c.net.duplicate = 0.0
    c.net.reorder = False
    c.net.extra_delay_us_max = 0
    c.record("calm")


def run_schedule(
    seed: int,
    nodes: int = 3,
    *,
    journal: str = "memory",
    canaries: tuple[str, ...] = (),
    chaos_ms: tuple[int, int] = (6_000, 10_000),
    kv_clients: int = 3,
    think_ms: tuple[int, int] = (10, 100),
    faults: tuple[str, ...] = FAULTS,
    fault_gap_ms: tuple[int, int] = (200, 1_500),
    fault_len_ms: tuple[int, int] = (100, 2_500),
    lock_clients: int = 2,
    bitflips: bool = False,
    max_steps_per_key: int = 500_000,
) -> ScheduleResult:
    """One seeded experiment; see the module docstring."""
    wall0 = time.perf_counter()
    flags = Canaries(**dict.fromkeys(canaries, True))
    cluster = SimCluster(
        seed, nodes, journal=journal, canaries=flags, network=NetworkConfig(), keep_trace=False
    )
    notes: list[str] = []
    fault_log: list[str] = []
    try:
        rng = cluster.rng
        if not cluster.run_until(cluster.converged, 10_000):
            cluster.violate("liveness", "no leader within 10 s of a fault-free start")
        keys = [f"k{i}" for i in range(rng.randrange(6, 12))]
        clients = [_KVClient(cluster, f"c{i}", keys, think_ms) for i in range(kv_clients)]
        resource = {"max": 0, "accepted": 0}
        lockers = [_LockClient(cluster, f"lock{i}", resource) for i in range(lock_clients)]
        for client in [*clients, *lockers]:
            client.start()
        chaos_end = cluster.now + rng.randrange(*chaos_ms) * 1000

        def sample() -> None:
            cluster.sample_hashes()
            if cluster.now < chaos_end:
                cluster.at(500, sample)

        cluster.at(500, sample)
        menu = list(faults) + (["bitflip"] if bitflips else [])
        while cluster.now < chaos_end:
            cluster.run_for(rng.randrange(*fault_gap_ms))
            if cluster.now >= chaos_end:
                break
            fault = rng.choice(menu)
            fault_log.append(fault)
            end = _inject(cluster, fault, lockers)
            cluster.run_for(rng.randrange(*fault_len_ms))
            end()
        # heal: faults stop, the cluster must converge
        cluster.heal()
        _calm(cluster)
        for node_id in cluster.node_ids:
            cluster.set_drift(node_id, 0)
            cluster.restart(node_id)
        for locker in lockers:
            locker.running = False
            locker.paused_until = 0
        for client in clients:
            client.running = False
        if not cluster.run_until(cluster.converged, CONVERGE_MS):
            cluster.violate(
                "convergence",
                f"no leader and converged state {CONVERGE_MS} ms after faults stopped",
            )
        cluster.run_until(lambda: all(op.done for op in cluster.ops), 5_000)
        finals = [cluster.get("final", key, via=cluster.leader()) for key in keys]
        cluster.run_until(lambda: all(op.done for op in finals), 5_000)
        cluster.run_until(cluster.converged, 5_000)
        cluster.check_hashes()
        cluster.sample_hashes()
        cluster.check_acknowledged()
        verdict, checked, _ = cluster.check_linearizable(max_steps_per_key)
        unknown_results = 1 if verdict is Verdict.UNKNOWN else 0
        if unknown_results:
            notes.append("checker budget exhausted")
        kv_ops = [op for op in cluster.ops if op.kind in ("read", "write", "cas")]
        return ScheduleResult(
            seed=seed,
            nodes=nodes,
            journal=journal,
            canaries=sorted(canaries),
            violations=[
                {"invariant": v.invariant, "at_us": v.at_us, "detail": v.detail}
                for v in cluster.violations
            ],
            ops_checked=checked,
            ops_total=len(kv_ops),
            ops_unknown_outcome=sum(1 for op in kv_ops if op.unknown),
            unknown_results=unknown_results,
            sim_seconds=cluster.now / 1e6,
            wall_seconds=time.perf_counter() - wall0,
            faults=fault_log,
            leader_actions=cluster.leader_actions,
            lock_actions=resource["accepted"],
            trace_hash=cluster.trace_hash(),
            replay=replay_command(seed, nodes, journal, canaries),
            notes=notes,
        )
    finally:
        cluster.close()

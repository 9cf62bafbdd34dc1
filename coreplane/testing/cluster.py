"""`SimCluster(seed)`: whole clusters of real ControlPlane nodes on a simulated network and clock.

One process, one thread, one seeded ``random.Random``: every choice (message delays, drops,
duplicates, connection detection, election timeouts through pysyncobj's patched `random`,
client timing) comes from it, and simulated time is integer microseconds, so the same seed
gives the same event trace in any process under any ``PYTHONHASHSEED`` (pysyncobj iterates
sets of nodes; the network therefore draws its randomness for a node's outgoing messages in
(destination, send order), never in set order).

The loop is discrete-event: a node *wakes* (``doTick``) every `AUTO_TICK_US`, and at once when
a message or a proposal arrives for it, as pysyncobj's poller would; its *runtime* (the
ControlPlane leader work) steps every `RUNTIME_STEP_US`. Faults are methods (`partition`,
`crash`, `pause`, ...) callable between runs or scheduled with `at`. Client operations are
asynchronous: `put`/`cas`/`get` return an `Op` that completes (or becomes unknown) later in
simulated time; `history()` gives them to the linearizability checker.

Invariants are checked online (one leader per term, the lease, fencing, log agreement, tick
time) and at `check()` (linearizability per key, state hashes, acknowledged writes,
convergence). Violations are collected, never raised mid-run, so a run always reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import os
import random
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from coreplane.core import commands as C
from coreplane.core.state import Applied
from coreplane.errors import InvalidArgument
from coreplane.raft import engine as E
from coreplane.raft.simnet import SimDisk, SimEnvironment, crash_journal
from coreplane.runtime.controlplane import BARRIER_MACHINE
from coreplane.testing.linearizability import Operation, Verdict, check_kv
from coreplane.testing.node import Canaries, SimNode

__all__ = ["AUTO_TICK_US", "RUNTIME_STEP_US", "NetworkConfig", "Op", "SimCluster", "Violation"]

AUTO_TICK_US = 20_000
RUNTIME_STEP_US = 20_000
SECRET = b"coreplane-simulation-secret!"
WALL_EPOCH_US = 1_780_000_000_000_000
_WAKE, _RUNTIME, _DELIVER, _LINK, _CALL = range(5)


@dataclass(slots=True)
class NetworkConfig:
    """Message behaviour: base delay range, and fault probabilities (0 = off)."""

    delay_us_min: int = 200
    delay_us_max: int = 3_000
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: bool = False  # False: each link delivers in order (TCP-like)
    extra_delay_us_max: int = 0


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant: what, when (simulated µs), and the evidence."""

    invariant: str
    at_us: int
    detail: str


@dataclass(slots=True)
class Op:
    """A client operation in flight or finished; `unknown` if its outcome was never learned."""

    client: str
    kind: str
    key: str
    arg: Any
    call_us: int
    via: str
    ret_us: int | None = None
    result: Any = None
    done: bool = False
    unknown: bool = False
    index: int | None = None  # log index of an acknowledged write
    then: Callable[[Op], None] | None = None  # called once the op finished


@dataclass(slots=True)
class _Clock:
    """A node's clocks: monotonic with drift (ppm); wall = monotonic + an offset that jumps."""

    base_real: int
    base_local: int
    wall_offset_us: int
    ppm: int = 0

    def local(self, now: int) -> int:
        return self.base_local + (now - self.base_real) * (1_000_000 + self.ppm) // 1_000_000

    def set_ppm(self, now: int, ppm: int) -> None:
        self.base_local, self.base_real, self.ppm = self.local(now), now, ppm


@dataclass(slots=True)
class _Slot:
    node_id: str
    address: str
    data_dir: str
    disk: SimDisk | None
    clock: _Clock
    node: SimNode | None = None
    gen: int = 0
    wake_at: int = -1
    runtime_at: int = -1
    blocked_deadline: int = 0
    paused_until: int = 0
    last_tick_at: int = 0
    tick_ms_seen: int = 0
    applied_seen: int = 0
    corrupt: bool = False
    inflight: list[Op] = field(default_factory=list)


class _SimClock:
    """The runtime's clock seam (`Seams.clock`): the monotonic clock of whichever node the
    cluster is running, with that node's drift."""

    def __init__(self, cluster: SimCluster) -> None:
        self._c = cluster

    def monotonic(self) -> float:
        return self._c._local_us() / 1_000_000


class SimCluster:
    """A cluster of `SimNode`s driven by one seed; see the module docstring.

    ``SimCluster(seed, nodes=3, *, journal="memory"|"lmdb", canaries=Canaries(),
    network=NetworkConfig(), log_compaction_min_entries=200, machines=())``.
    `machines` is a sequence of ``(name, machine)`` registered on every node (user machines;
    `machine` is an object, or a dict of ``apply=``/``on_tick=``/``initial=`` functions);
    `fleet_config` (a `FleetConfig`) is given to every node's fleet machine; `node_hook(node)`
    runs on every node built (also on restarts), before it starts (the fleet canaries use it).
    Use as a context manager, or call `close()`: it restores pysyncobj's globals and removes
    the temporary data dirs.
    """

    def __init__(
        self,
        seed: int,
        nodes: int = 3,
        *,
        journal: str = "memory",
        canaries: Canaries | None = None,
        network: NetworkConfig | None = None,
        log_compaction_min_entries: int = 200,
        machines: tuple[tuple[str, Any], ...] = (),
        keep_trace: bool = True,
        fleet_config: Any = None,
        node_hook: Callable[[SimNode], None] | None = None,
    ) -> None:
        if not isinstance(seed, int):
            raise InvalidArgument("seed", "must be an int")
        if nodes not in (1, 3, 5, 7):
            raise InvalidArgument("nodes", "must be 1, 3, 5 or 7")
        if journal not in ("memory", "lmdb"):
            raise InvalidArgument("journal", "must be 'memory' or 'lmdb'")
        self.seed = seed
        self.rng = random.Random(seed)
        self._raft_rng = random.Random(seed * 7919 + 1)
        self.canaries = canaries or Canaries()
        self.net = network or NetworkConfig()
        self.journal_mode = journal
        self.now = 0
        self._seq = 0
        self._heap: list[tuple[int, int, int, Any, Any, Any]] = []
        self.trace: list[tuple[Any, ...]] = []
        self._keep_trace = keep_trace
        self._digest = hashlib.blake2b(digest_size=16)
        self.violations: list[Violation] = []
        self.ops: list[Op] = []
        self._current: _Slot | None = None
        self._options = {
            "log_compaction_min_entries": log_compaction_min_entries,
            "tick_interval_ms": 100,
            "election_timeout_ms": (300, 700),
            "heartbeat_ms": 50,
            "propose_timeout_s": 3.0,
        }
        if fleet_config is not None:
            self._options["fleet_config"] = fleet_config
        self._machines = tuple(machines)
        self.fleet_provider: Any = None  # given to each node's fleet at boot (testing.fleet)
        self._node_hook = node_hook
        self._tmp = tempfile.mkdtemp(prefix="coreplane-sim-")
        ids = [f"n{i}" for i in range(1, nodes + 1)]
        self.slots: dict[str, _Slot] = {}
        for i, node_id in enumerate(ids):
            data_dir = os.path.join(self._tmp, node_id)
            os.makedirs(data_dir)
            clock = _Clock(
                0,
                self.rng.randrange(1_000_000, 50_000_000),
                WALL_EPOCH_US + self.rng.randrange(-5_000, 5_000),
            )
            self.slots[node_id] = _Slot(
                node_id,
                f"127.0.0.1:{17000 + i}",
                data_dir,
                SimDisk() if journal == "memory" else None,
                clock,
            )
        self.node_ids = ids
        self._reach = {(a, b): True for a in ids for b in ids if a != b}
        self._view = dict.fromkeys(self._reach, False)
        self._link_pending: set[tuple[str, str]] = set()
        self._last_delivery: dict[tuple[str, str], int] = {}
        self._env = SimEnvironment(self._local_s, self._raft_rng.random)
        self._simclock = _SimClock(self)
        # invariant state
        self._leader_of_term: dict[int, str] = {}
        self._log_crc: dict[int, int] = {}
        self._hash_at: dict[int, tuple[str, str]] = {}
        self._gained: list[tuple[int, int, str, int]] = []  # (t, token, node, term)
        self._established: tuple[int, int] = (0, 0)  # newest (token, t)
        self.resource_tokens: list[tuple[int, str, int]] = []  # accepted (token, node, t)
        self._resource_max = 0
        self.leader_actions = 0
        self._transports: dict[str, Any] = {}
        self._outbox: list[tuple[str, str, int, bytes]] = []
        self._closed = False
        with self._running():
            for node_id in ids:
                self._boot(self.slots[node_id])

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for slot in self.slots.values():
            if slot.node is not None:
                with contextlib.suppress(Exception):
                    crash_journal(slot.node.journal)
                slot.node = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> SimCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        try:
            with self._env:
                yield
        finally:
            self._current = None

    def _local_us(self) -> int:
        slot = self._current
        return self.now if slot is None else slot.clock.local(self.now)

    def _local_s(self) -> float:
        return self._local_us() / 1_000_000

    def _wall_us(self) -> int:
        slot = self._current
        if slot is None:
            return WALL_EPOCH_US + self.now
        return slot.clock.local(self.now) + slot.clock.wall_offset_us

    def _push(self, t: int, kind: int, a: Any = None, b: Any = None, c: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, a, b, c))

    def record(self, *event: Any) -> None:
        """Append one plain tuple to the event trace (and the running digest)."""
        item = (self.now, *event)
        self._digest.update(repr(item).encode())
        if self._keep_trace:
            self.trace.append(item)

    def trace_hash(self) -> str:
        """Digest of the whole event trace so far: equal seeds give equal digests."""
        return self._digest.hexdigest()

    def violate(self, invariant: str, detail: str) -> None:
        self.violations.append(Violation(invariant, self.now, detail))
        self.record("violation", invariant)

    # ------------------------------------------------------------------ nodes
    def _boot(self, slot: _Slot) -> None:
        peers = {s.node_id: s.address for s in self.slots.values() if s is not slot}
        self._current = slot
        try:
            node = SimNode(
                slot.node_id,
                slot.address,
                peers,
                slot.data_dir,
                SECRET,
                hub=self,
                disk=slot.disk,
                clock=self._simclock,
                on_propose=self._on_runtime_propose,
                on_apply=self._on_apply,
                canaries=self.canaries,
                **self._options,
            )
            for name, machine in self._machines:
                if isinstance(machine, dict):  # plain functions: apply=, on_tick=, initial=
                    node.register_machine(name, **machine)
                else:
                    node.register_machine(name, machine)
            node.fleet.provider = self.fleet_provider
            if self._node_hook is not None:
                self._node_hook(node)
            node.on_leadership(lambda gained, token, s=slot: self._on_leadership(s, gained, token))
            node.start()
        except Exception as exc:  # noqa: BLE001 - e.g. CorruptData from a flipped bit
            slot.corrupt = True
            self.record("boot_failed", slot.node_id, type(exc).__name__)
            return
        finally:
            self._current = None
        slot.node = node
        slot.gen += 1
        slot.tick_ms_seen = slot.applied_seen = 0
        slot.last_tick_at = self.now
        slot.wake_at = slot.runtime_at = -1
        slot.blocked_deadline = 0
        self._wake(slot, self.now + self.rng.randrange(0, AUTO_TICK_US))
        self._schedule_runtime(slot, self.now + self.rng.randrange(0, RUNTIME_STEP_US))
        self._relink()

    def _wake(self, slot: _Slot, t: int) -> None:
        if slot.node is None:
            return
        if slot.wake_at < self.now or t < slot.wake_at:
            slot.wake_at = t
            self._push(t, _WAKE, slot.node_id, slot.gen)

    def _schedule_runtime(self, slot: _Slot, t: int) -> None:
        if slot.node is None:
            return
        if slot.runtime_at < self.now or t < slot.runtime_at:
            slot.runtime_at = t
            self._push(t, _RUNTIME, slot.node_id, slot.gen)

    def _eps(self) -> int:
        return self.rng.randrange(50, 400)

    def _on_runtime_propose(self, node: SimNode, timeout_s: float) -> None:
        slot = self.slots[node.node_id]
        slot.blocked_deadline = self.now + int(timeout_s * 1_000_000)
        self._wake(slot, self.now + self._eps())

    def _tick(self, slot: _Slot, *, reschedule: bool = True) -> None:
        node = slot.node
        assert node is not None
        self._current = slot
        try:
            node.tick_engine(0)
        except Exception as exc:  # noqa: BLE001 - a node that fails stops, as the runtime does
            self.record("tick_failed", slot.node_id, type(exc).__name__)
            self._current = None
            self._halt(slot, f"tick failed: {exc!r}")
            return
        slot.last_tick_at = self.now
        engine = node.engine
        if node.fatal is not None:
            self._current = None
            self._halt(slot, f"fatal: {node.fatal!r}")
            return
        raft_leader = getattr(engine, "raft_role_is_leader", engine.is_leader)
        if raft_leader():
            term = engine.term()
            holder = self._leader_of_term.get(term)
            if holder is None:
                self._leader_of_term[term] = slot.node_id
                self.record("leader", slot.node_id, term)
            elif holder != slot.node_id:
                self.violate(
                    "one_leader_per_term", f"term {term}: {holder} and {slot.node_id} both lead"
                )
        if slot.blocked_deadline and node.step_ready:  # its proposal answered: step again
            self._schedule_runtime(slot, self.now + self._eps())
        if slot.inflight:
            self._resolve_reads(slot)
        self._current = None
        if reschedule:
            poller = engine._poller
            transport = self._transports.get(slot.node_id)
            busy = (
                poller.delivered
                or (transport is not None and transport.sim_pending())
                or engine.apply_backlog() > 0  # the tick stopped at its apply budget
            )
            self._wake(slot, self.now + (self._eps() if busy else AUTO_TICK_US))

    def _runtime(self, slot: _Slot) -> None:
        node = slot.node
        assert node is not None
        if slot.blocked_deadline:
            if not node.step_ready and self.now < slot.blocked_deadline:
                self._schedule_runtime(slot, min(slot.blocked_deadline, self.now + RUNTIME_STEP_US))
                return
            slot.blocked_deadline = 0
        if self.now - slot.last_tick_at > AUTO_TICK_US and not self.canaries.lease_unchecked:
            self._tick(slot, reschedule=False)  # re-check the lease before acting
            if slot.node is None:
                return
        # The canary acts on the token it held before this step, without asking the engine.
        stale = node.leadership_token() if self.canaries.lease_unchecked else None
        self._current = slot
        try:
            node.step()
            if node.fatal is None:
                token = stale if stale is not None else node.fencing_token
                if token is not None:
                    self._leader_act(slot, token)
        finally:
            self._current = None
        if node.fatal is not None:
            self._halt(slot, f"fatal: {node.fatal!r}")
            return
        self._schedule_runtime(slot, self.now + RUNTIME_STEP_US)

    def _halt(self, slot: _Slot, why: str) -> None:
        """A node whose engine or apply failed stops, as the runtime stops it. That is a
        detected bug (an InvariantViolation), so it is reported, never restarted."""
        self.record("halt", slot.node_id)
        self.violate("node_halted", f"{slot.node_id}: {why}")
        self._drop_node(slot)
        slot.corrupt = True

    # ------------------------------------------------------------------ leadership and fencing
    def _on_leadership(self, slot: _Slot, gained: bool, token: int | None) -> None:
        node = slot.node
        term = node.engine.term() if node is not None and node._engine is not None else -1
        self.record("leadership", slot.node_id, gained, token, term)
        if not gained or token is None:
            return
        for _t_prev, tok_prev, node_prev, term_prev in self._gained:
            if (term_prev < term) != (tok_prev < token) and term_prev != term:
                self.violate(
                    "fencing_token_order",
                    f"{node_prev} term {term_prev} token {tok_prev} vs {slot.node_id} "
                    f"term {term} token {token}",
                )
                break
        self._gained.append((self.now, token, slot.node_id, term))
        if token > self._established[0]:
            self._established = (token, self.now)
        self._leader_act(slot, token)

    def _leader_act(self, slot: _Slot, token: int) -> None:
        """A side effect of leadership, sent to a model resource with the fencing token."""
        self.leader_actions += 1
        newest, since = self._established
        if token < newest and since < self.now:
            self.violate(
                "leader_lease",
                f"{slot.node_id} acted with token {token} at "
                f"{self.now} us after the leader with token {newest} was established "
                f"at {since} us",
            )
        if token < self._resource_max and not self.canaries.unfenced_lock:
            return  # a fenced resource refuses a lower token
        if token < self._resource_max:
            self.violate(
                "fencing_resource",
                f"resource accepted token {token} after {self._resource_max} from {slot.node_id}",
            )
        if token != self._resource_max:
            self.resource_tokens.append((token, slot.node_id, self.now))
        self._resource_max = max(self._resource_max, token)

    # ------------------------------------------------------------------ apply hook
    def _on_apply(self, node: SimNode, data: bytes, index: int) -> None:
        crc = zlib.crc32(data)
        seen = self._log_crc.setdefault(index, crc)
        if seen != crc:
            self.violate(
                "log_agreement", f"{node.node_id} applied a different entry at index {index}"
            )
        slot = self.slots[node.node_id]
        if index <= slot.applied_seen:
            self.violate(
                "applied_regressed",
                f"{node.node_id} applied index {index} after "
                f"{slot.applied_seen} (its state went back in time)",
            )
        slot.applied_seen = index
        tick_ms = node.state.tick_ms
        if tick_ms < slot.tick_ms_seen:
            self.violate(
                "tick_time_monotonic",
                f"{node.node_id}: tick time went from "
                f"{slot.tick_ms_seen} to {tick_ms} at index {index}",
            )
        slot.tick_ms_seen = tick_ms
        self._check_cluster_time(node.node_id, tick_ms, index)

    def _check_cluster_time(self, node_id: str, tick_ms: int, index: int) -> None:
        """Cluster time may run ahead of real (simulated) time only by the clocks' drift bound
        (2%) plus one tick interval per leadership, whatever any node's wall clock says: a
        clock stepped by a day must not expire a lease early."""
        allowed_ms = self.now * 102 // 100_000 + 2 * self._options["tick_interval_ms"] * (
            len(self._leader_of_term) + 1
        )
        if tick_ms > allowed_ms:
            self.violate(
                "cluster_time_rate",
                f"{node_id}: tick time {tick_ms} ms at index "
                f"{index} after {self.now // 1000} ms of real time",
            )

    # ------------------------------------------------------------------ the network (hub)
    def attach(self, node_id: str, transport: Any) -> None:
        self._transports[node_id] = transport

    def detach(self, node_id: str) -> None:
        self._transports.pop(node_id, None)

    def send(self, src: str, dst: str, payload: bytes) -> None:
        """Called by a node's transport; held until the node's step ends (see `_flush_sends`)."""
        self._outbox.append((src, dst, len(self._outbox), payload))

    def _flush_sends(self) -> None:
        """Draw each message's fate in (source, destination, send order): pysyncobj sends in
        the iteration order of a set of nodes, which differs between processes."""
        if not self._outbox:
            return
        outbox, self._outbox = sorted(self._outbox), []
        for src, dst, _, payload in outbox:
            self._transmit(src, dst, payload)

    def _transmit(self, src: str, dst: str, payload: bytes) -> None:
        net, rng = self.net, self.rng
        if not self._reach[(src, dst)]:
            return
        if net.drop and rng.random() < net.drop:
            return
        copies = 2 if net.duplicate and rng.random() < net.duplicate else 1
        for _ in range(copies):
            delay = rng.randrange(net.delay_us_min, net.delay_us_max + 1)
            if net.extra_delay_us_max:
                delay += rng.randrange(0, net.extra_delay_us_max + 1)
            t = self.now + delay
            if not net.reorder:
                t = max(t, self._last_delivery.get((src, dst), 0))
                self._last_delivery[(src, dst)] = t
            dst_slot = self.slots[dst]
            self._push(t, _DELIVER, (src, dst), dst_slot.gen, payload)

    def _deliver(self, src: str, dst: str, gen: int, payload: bytes) -> None:
        slot = self.slots[dst]
        if slot.node is None or slot.gen != gen or not self._reach[(src, dst)]:
            return
        transport = self._transports.get(dst)
        if transport is None:
            return
        transport.sim_receive(src, payload)
        self._wake(slot, max(self.now, slot.paused_until))

    def _desired_link(self, a: str, b: str) -> bool:
        up = self.slots[a].node is not None and self.slots[b].node is not None
        return up and (self._reach[(a, b)] or self._reach[(b, a)])

    def _relink(self, *, fast: bool = False) -> None:
        """Schedule each node's view of its links to follow the topology, after a delay."""
        for pair in sorted(self._reach):
            if pair in self._link_pending or self._desired_link(*pair) == self._view[pair]:
                continue
            a, b = pair
            if self._desired_link(a, b):
                delay = self.rng.randrange(5_000, 250_000)
            elif self.slots[b].node is None or fast:
                delay = self.rng.randrange(500, 20_000)  # the peer's kernel resets the socket
            else:
                delay = self.rng.randrange(100_000, 1_000_000)  # a timeout notices
            self._link_pending.add(pair)
            self._push(self.now + delay, _LINK, a, b)

    def _link(self, a: str, b: str) -> None:
        self._link_pending.discard((a, b))
        want = self._desired_link(a, b)
        if want != self._view[(a, b)]:
            self._view[(a, b)] = want
            transport = self._transports.get(a)
            if transport is not None:
                transport.sim_link(b, want)
                self._wake(self.slots[a], max(self.now, self.slots[a].paused_until))
        self._relink()

    # ------------------------------------------------------------------ running
    def run_for(self, ms: int) -> None:
        """Advance simulated time by `ms` milliseconds."""
        self.run_until(None, ms)

    def run_until(self, predicate: Callable[[], bool] | None, timeout_ms: int) -> bool:
        """Run until `predicate()` holds (checked after each event) or `timeout_ms` passes."""
        end = self.now + int(timeout_ms) * 1000
        with self._running():
            while self._heap and self._heap[0][0] <= end:
                t, _, kind, a, b, c = heapq.heappop(self._heap)
                self.now = t
                self._dispatch(kind, a, b, c)
                self._flush_sends()
                if predicate is not None and predicate():
                    return True
            self.now = end
        return predicate is not None and predicate()

    def _dispatch(self, kind: int, a: Any, b: Any, c: Any) -> None:
        if kind == _DELIVER:
            self._deliver(a[0], a[1], b, c)
        elif kind == _WAKE:
            slot = self.slots[a]
            if slot.node is None or slot.gen != b or slot.wake_at != self.now:
                return
            if slot.paused_until > self.now:
                slot.wake_at = -1
                lag = 5_000 if self.canaries.lease_unchecked else 0  # the runtime runs first
                self._wake(slot, slot.paused_until + lag)
                return
            slot.wake_at = -1
            self._tick(slot)
        elif kind == _RUNTIME:
            slot = self.slots[a]
            if slot.node is None or slot.gen != b or slot.runtime_at != self.now:
                return
            if slot.paused_until > self.now:
                slot.runtime_at = -1
                self._schedule_runtime(slot, slot.paused_until)
                return
            slot.runtime_at = -1
            self._runtime(slot)
        elif kind == _LINK:
            self._link(a, b)
        else:
            a(*b) if b else a()

    def at(self, delay_ms: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` after `delay_ms` of simulated time (faults, client logic)."""
        self.at_us(int(delay_ms * 1000), fn, *args)

    def at_us(self, delay_us: int, fn: Callable[..., Any], *args: Any) -> None:
        """`at` in microseconds."""
        self._push(self.now + max(0, int(delay_us)), _CALL, fn, args, None)

    # ------------------------------------------------------------------ faults
    def partition(self, *groups: list[str]) -> None:
        """Symmetric partition into `groups`; nodes not named form one more group."""
        named = {n for g in groups for n in g}
        rest = [n for n in self.node_ids if n not in named]
        side = {n: i for i, g in enumerate([*groups, rest]) for n in g}
        for a, b in self._reach:
            self._reach[(a, b)] = side[a] == side[b]
        self.record("partition", tuple(tuple(sorted(g)) for g in groups))
        self._relink()

    def isolate(self, node_id: str) -> None:
        self.partition([node_id])

    def cut(self, src: str, dst: str) -> None:
        """Asymmetric: messages from `src` to `dst` are lost; the reverse still flows."""
        self._reach[(src, dst)] = False
        self.record("cut", src, dst)
        self._relink()

    def heal(self) -> None:
        for pair in self._reach:
            self._reach[pair] = True
        self.record("heal")
        self._relink()

    def leader(self) -> str | None:
        """The node that is leader at the highest term right now, if any."""
        best: tuple[int, str] | None = None
        with self._running():
            for node_id in self.node_ids:
                node = self.slots[node_id].node
                self._current = self.slots[node_id]
                if node is not None and node.engine.is_leader():
                    cand = (node.engine.term(), node_id)
                    best = cand if best is None or cand > best else best
        return None if best is None else best[1]

    def ask(self, node_id: str, fn: Callable[[SimNode], Any]) -> Any:
        """`fn(node)` with the node's simulated clock in force (its lease reads the clock)."""
        slot = self.slots[node_id]
        if slot.node is None:
            return None
        with self._running():
            self._current = slot
            return fn(slot.node)

    def crash(self, node_id: str) -> None:
        """kill -9: memory is gone, the disk keeps what was flushed; in-flight ops are unknown."""
        slot = self.slots[node_id]
        if slot.node is None:
            return
        self.record("crash", node_id)
        self._drop_node(slot)

    def _drop_node(self, slot: _Slot) -> None:
        node = slot.node
        if node is None:
            return
        crash_journal(node.journal)
        self._transports.pop(slot.node_id, None)
        slot.node = None
        slot.gen += 1
        slot.paused_until = 0
        for op in slot.inflight:
            self._finish(op, unknown=True)
        slot.inflight = []
        for pair in self._reach:
            if slot.node_id in pair:
                self._view[pair] = False if pair[0] == slot.node_id else self._view[pair]
        self._relink(fast=True)

    def restart(self, node_id: str) -> None:
        """Start a crashed node again from its disk (a no-op if it runs or its disk is bad)."""
        slot = self.slots[node_id]
        if slot.node is not None or slot.corrupt:
            return
        self.record("restart", node_id)
        for peer in self.node_ids:
            if peer != node_id:
                self._view[(node_id, peer)] = False
        with self._running():
            self._boot(slot)

    def pause(self, node_id: str, ms: int) -> None:
        """Freeze the process (GC, SIGSTOP): no ticks, no runtime; its clock runs on."""
        slot = self.slots[node_id]
        if slot.node is None:
            return
        slot.paused_until = max(slot.paused_until, self.now + ms * 1000)
        self.record("pause", node_id, ms)

    def set_drift(self, node_id: str, ppm: int) -> None:
        """The node's clocks run `ppm` parts per million fast (negative: slow)."""
        self.slots[node_id].clock.set_ppm(self.now, ppm)
        self.record("drift", node_id, ppm)

    def jump_clock(self, node_id: str, ms: int) -> None:
        """The node's wall clock jumps by `ms` (NTP step); its monotonic clock does not."""
        self.slots[node_id].clock.wall_offset_us += ms * 1000
        self.record("jump", node_id, ms)

    def flip_bit(self, node_id: str) -> bool:
        """Flip one bit of one stored entry on the node's simulated disk."""
        disk = self.slots[node_id].disk
        if disk is None:
            return False
        flipped = disk.flip_bit(self.rng.randrange(1 << 30), self.rng.randrange(1 << 16))
        self.record("flip_bit", node_id, flipped)
        return flipped

    # ------------------------------------------------------------------ clients
    def _alive(self) -> list[str]:
        return [n for n in self.node_ids if self.slots[n].node is not None]

    def _propose(
        self,
        op: Op,
        data: bytes,
        on_done: Callable[[Op, Any, int], None],
        *,
        batchable: bool = False,
    ) -> None:
        slot = self.slots[op.via]
        node = slot.node
        if node is None:
            self._finish(op, unknown=True)
            return
        slot.inflight.append(op)
        self.record("call", op.client, op.kind, op.key, op.via)

        def callback(result: Any, code: int) -> None:
            if op.done:
                return
            with contextlib.suppress(ValueError):
                slot.inflight.remove(op)
            on_done(op, result, code)

        if slot.paused_until > self.now:  # a paused process reads its socket on resume
            self.at_us(slot.paused_until - self.now, self._submit, slot, data, callback, batchable)
            return
        self._submit(slot, data, callback, batchable)

    def _submit(
        self,
        slot: _Slot,
        data: bytes,
        callback: Callable[[Any, int], None],
        batchable: bool = False,
    ) -> None:
        node = slot.node
        if node is None:
            return  # crashed meanwhile: `_drop_node` made the op unknown
        with self._running():
            self._current = slot
            if batchable:  # KV writes queued together share a log entry, as in production
                node.engine.propose(data, callback, batchable=True)
            else:
                node.engine.propose(data, callback)
        self._flush_sends()
        self._wake(slot, max(self.now + self._eps(), slot.paused_until))

    def _finish(self, op: Op, *, result: Any = None, unknown: bool = False) -> None:
        if op.done:
            return
        op.done, op.unknown, op.ret_us, op.result = True, unknown, self.now, result
        self.record("return", op.client, op.kind, op.key, "?" if unknown else repr(result))
        callback = op.then
        if callback is not None:
            callback(op)

    def _new_op(self, client: str, kind: str, key: str, arg: Any, via: str | None) -> Op:
        alive = self._alive()
        target = via if via is not None else (self.rng.choice(alive) if alive else self.node_ids[0])
        op = Op(client, kind, key, arg, self.now, target)
        self.ops.append(op)
        return op

    def put(self, client: str, seq: int, key: str, value: bytes, *, via: str | None = None) -> Op:
        op = self._new_op(client, "write", key, value, via)
        data = C.encode(C.Put(key=key, value=value, client_id=client, seq=seq))
        self._propose(op, data, self._write_done, batchable=True)
        return op

    def cas(
        self,
        client: str,
        seq: int,
        key: str,
        expected: tuple[bytes | None, int],
        value: bytes,
        *,
        via: str | None = None,
    ) -> Op:
        """CAS on mod revision; for the checker, `expected` is (value, its revision)."""
        op = self._new_op(client, "cas", key, (expected[0], value), via)
        data = C.encode(
            C.Cas(
                key=key, expected_mod_revision=expected[1], value=value, client_id=client, seq=seq
            )
        )
        self._propose(op, data, self._write_done, batchable=True)
        return op

    def command(
        self,
        client: str,
        command: C.Command,
        on_done: Callable[[Op], None],
        *,
        via: str | None = None,
        kind: str = "command",
    ) -> Op:
        """Any replicated command; `on_done(op)` runs when it applied (``op.result`` is the
        `Applied`) or became unknown. Not part of the KV history."""
        op = self._new_op(client, kind, "", None, via)
        op.then = on_done

        def done(op: Op, result: Any, code: int) -> None:
            ok = code == E.FAIL.SUCCESS and isinstance(result, Applied)
            self._finish(op, result=result if ok else None, unknown=not ok)

        self._propose(op, C.encode(command), done)
        return op

    def _write_done(self, op: Op, result: Any, code: int) -> None:
        if code != E.FAIL.SUCCESS or not isinstance(result, Applied):
            self._finish(op, unknown=True)
            return
        node = self.slots[op.via].node
        op.index = node.state.applied_index if node is not None else None
        if op.kind == "write":
            self._finish(op, result=result.value if result.ok else None, unknown=not result.ok)
        elif result.ok:
            self._finish(op, result=True)
        elif result.code == "compare_failed":
            self._finish(op, result=False)
        else:
            self._finish(op, unknown=True)

    def get(self, client: str, key: str, *, via: str | None = None, stale: bool = False) -> Op:
        """A linearizable read as the runtime does it (a log barrier, then the local state);
        ``stale=True`` (or the stale_read canary) reads the local replica at once."""
        op = self._new_op(client, "read", key, None, via)
        node = self.slots[op.via].node
        if node is None:
            self._finish(op, unknown=True)
            return op
        if stale or self.canaries.stale_read:
            self.record("call", op.client, op.kind, op.key, op.via)
            self._finish(op, result=self._read_local(node, key))
            return op
        slot = self.slots[op.via]
        slot.inflight.append(op)
        self.record("call", op.client, op.kind, op.key, op.via)
        request = getattr(node.engine, "request_read_index", None)
        if request is None:  # an engine without ReadIndex: a log barrier, as runtimes did
            slot.inflight.remove(op)
            data = C.encode(C.UserCommand(machine=BARRIER_MACHINE, body=None))
            self._propose(op, data, self._barrier_done)
            return op

        def on_index(index: Any, code: int) -> None:
            if op.done:
                return
            if code != E.FAIL.SUCCESS or index is None:
                with contextlib.suppress(ValueError):
                    slot.inflight.remove(op)
                self._finish(op, unknown=True)
                return
            op.index = int(index)  # answered once applied here (`_resolve_reads`)
            self._resolve_reads(slot)

        def ask() -> None:
            if slot.node is not node or op.done:
                return
            with self._running():
                self._current = slot
                request(on_index)
            self._flush_sends()
            self._wake(slot, max(self.now + self._eps(), slot.paused_until))

        if slot.paused_until > self.now:  # a paused process reads its socket on resume
            self.at_us(slot.paused_until - self.now, ask)
        else:
            ask()
        return op

    def _resolve_reads(self, slot: _Slot) -> None:
        """Answer reads whose read index is now applied on their node, as the runtime does."""
        node = slot.node
        if node is None:
            return
        applied = node.engine.raftLastApplied
        for op in [o for o in slot.inflight if o.kind == "read" and o.index is not None]:
            if op.index is not None and applied >= op.index:
                slot.inflight.remove(op)
                self._finish(op, result=self._read_local(node, op.key))

    @staticmethod
    def _read_local(node: SimNode, key: str) -> tuple[bytes, int] | None:
        return node.state.kv.get(key)

    def _barrier_done(self, op: Op, result: Any, code: int) -> None:
        node = self.slots[op.via].node
        if code != E.FAIL.SUCCESS or node is None:
            self._finish(op, unknown=True)
            return
        self._finish(op, result=self._read_local(node, op.key))

    def history(self) -> list[Operation]:
        """Finished KV operations for the checker: read results are values only."""
        out = []
        for op in self.ops:
            if not op.done or op.kind not in ("read", "write", "cas"):
                continue
            result = op.result
            if op.kind == "read" and not op.unknown:
                result = None if result is None else result[0]
            out.append(
                Operation(
                    client=op.client,
                    call=op.call_us,
                    ret=None if op.unknown else op.ret_us,
                    kind=op.kind,
                    key=op.key,
                    arg=op.arg,
                    result=result,
                )
            )
        return out

    # ------------------------------------------------------------------ end-of-run checks
    def converged(self) -> bool:
        """All running nodes applied the same index, with a leader established at its term."""
        running = [self.slots[n].node for n in self.node_ids if self.slots[n].node is not None]
        if not running:
            return False
        leader = self.leader()
        if leader is None or self.ask(leader, lambda n: n.fencing_token) is None:
            return False
        commit = self.slots[leader].node.engine.raftCommitIndex  # type: ignore[union-attr]
        return all(
            n.engine.raftLastApplied == commit and n.engine.raftCommitIndex == commit
            for n in running
        )

    def check_hashes(self) -> None:
        seen: dict[int, tuple[str, str]] = {}
        for node_id in self.node_ids:
            node = self.slots[node_id].node
            if node is None:
                continue
            index, digest = node.state_hash()
            other = seen.setdefault(index, (node_id, digest))
            if other[1] != digest:
                self.violate("state_hash", f"{other[0]} and {node_id} differ at index {index}")

    def sample_hashes(self) -> None:
        """Record each running node's (applied index, state hash); any two nodes seen at the
        same index, now or at another time, must agree."""
        for node_id in self.node_ids:
            node = self.slots[node_id].node
            if node is None:
                continue
            index, digest = node.state_hash()
            other = self._hash_at.setdefault(index, (node_id, digest))
            if other[1] != digest:
                self.violate("state_hash", f"{other[0]} and {node_id} differ at index {index}")

    def check_acknowledged(self) -> None:
        """Every acknowledged write's entry is in the agreed log and applied everywhere."""
        applied = [
            slot.node.state.applied_index for slot in self.slots.values() if slot.node is not None
        ]
        low = min(applied) if applied else 0
        for op in self.ops:
            acked = op.kind in ("write", "cas") and op.done and not op.unknown
            if acked and op.index and op.index > low:
                self.violate(
                    "acknowledged_write_lost",
                    f"{op.client} {op.kind} {op.key} acked at index {op.index}, "
                    f"a replica applied only {low}",
                )
                return

    def check_linearizable(self, max_steps_per_key: int = 200_000) -> tuple[Verdict, int, str]:
        result = check_kv(self.history(), max_steps_per_key=max_steps_per_key)
        if result.verdict is Verdict.VIOLATION:
            self.violate("linearizability", f"key {result.key}: {result.detail}")
        return result.verdict, result.ops_checked, str(result.key)

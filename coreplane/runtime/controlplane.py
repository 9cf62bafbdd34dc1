"""`ControlPlane`: one node of the replicated brain, embedded in a host process.

Wires the pure core (`StateMachine`) to the raft adapter (`RaftEngine`) and runs the leader's
work on a runtime thread of its own: establishing leadership (a `Leader` entry whose index is
the fencing token), stamping time (`Tick` entries), and telling the host when leadership is
gained or lost. Threads start here and nowhere below.

Why the shapes:
- every proposal carries ``(client_id, seq)`` fixed before the first attempt; a retry after
  LEADER_CHANGED, UNKNOWN_OUTCOME or a timeout re-sends the same bytes and the core's sessions
  apply it once. pysyncobj's failure codes never mean "not applied", so they are never surfaced
  as "your write failed": only a deadline turns into `Unavailable` (outcome unknown);
- linearizable reads use ReadIndex (no log entry): the leader confirms it still leads (its
  check-quorum lease, or a quorum round of heartbeats) and hands out its commit index; a follower
  asks the leader for it; the read runs once this replica applied that index. ``stale_ok=True``
  reads the local replica, and `stale_read_bound` says how far behind it may be. (The barrier
  machine stays registered: logs written by earlier versions contain barrier entries.)
- a leader acts (ticks, stepdowns, `fencing_token`, `on_leadership`) only while its lease
  holds (`RaftEngine.is_leader`); a node whose engine failed for good stops and says why in
  `status().error` instead of lingering as a silent non-voter;
- the engine is constructed on the runtime thread, because pysyncobj's tick thread stops when
  the thread that built it exits; the host may call `start()` from any thread;
- pysyncobj callbacks run on its tick thread: ours only record and wake, never block;
- durable by default: the Raft log, term/vote and snapshots live in one LMDB journal in the data
  dir, flushed (fsync) before any message leaves the node; the journal and the data dir's
  identity are checked at construction, so a foreign or damaged dir is refused before start.

Only `coreplane.errors` types leave this module's public methods.
"""

from __future__ import annotations

import _thread
import collections
import contextlib
import dataclasses
import errno
import gc
import logging
import math
import operator
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from coreplane.core import codec
from coreplane.core import commands as C
from coreplane.core.address import endpoint_key, parse_address
from coreplane.core.codec import Value
from coreplane.core.machines.fleet import FleetConfig
from coreplane.core.machines.kv import Limits
from coreplane.core.machines.user import Machine
from coreplane.core.state import BATCHABLE_TAGS, Applied, StateMachine, check_limits
from coreplane.errors import (
    CommandRejected,
    CoreplaneError,
    InvalidArgument,
    InvariantViolation,
    StorageFull,
    Unavailable,
)
from coreplane.raft import engine as E
from coreplane.runtime.config import NodeConfig, check_node_id, validate_config
from coreplane.runtime.datadir import DataDir, cluster_fingerprint
from coreplane.runtime.fleet import Fleet
from coreplane.runtime.observations import ROWS_MAX, Observations, observe
from coreplane.runtime.pipeline import Pipeline, ProposalFuture, _unwrap_int
from coreplane.runtime.quotas import QuotaConfig, Quotas
from coreplane.runtime.seams import Clock, Seams, SystemClock
from coreplane.runtime.sessions import SessionLanes, Ticket
from coreplane.runtime.status import NodeStatus, PeerStatus, StaleReadBound
from coreplane.runtime.view import StateView

__all__ = ["BARRIER_MACHINE", "KV", "STEPDOWN_MACHINE", "ControlPlane", "LeadershipCallback"]

logger = logging.getLogger(__name__)

BARRIER_MACHINE = "coreplane.barrier"
STEPDOWN_MACHINE = "coreplane.stepdown"
LeadershipCallback = Callable[[bool, "int | None"], None]
_RETRY_CODES = {
    E.FAIL.QUEUE_FULL,
    E.FAIL.MISSING_LEADER,
    E.FAIL.DISCARDED,
    E.FAIL.NOT_LEADER,
    E.FAIL.LEADER_CHANGED,
    E.FAIL.UNKNOWN_OUTCOME,
}


def _barrier_apply(state: Value, body: Value, ctx: Any) -> tuple[Value, Value]:
    """A no-op entry: once it is applied locally, every earlier write is too."""
    return state, ctx.index


def _stepdown_apply(state: Value, body: Value, ctx: Any) -> tuple[Value, Value]:
    """Record "node X should hand over leadership" at this index; the leader acts on it."""
    if not isinstance(body, dict) or not isinstance(body.get("node"), str):
        raise CommandRejected("bad_stepdown", "body must be {'node': str}")
    return [body["node"], ctx.index], ctx.index


OWN_WRITES_MAX = 65_536  # decoded own KV writes kept for apply (see ControlPlane._own_writes)
# A Put's fields in the order `codec.encode_scalars` takes them (sorted: what `C.encode` does)
_PUT_NAMES = tuple(sorted(C.Put.TYPES))
_PUT_VALUES = operator.attrgetter(*_PUT_NAMES)
_U63 = 2**63 - 1


_SESSION_FIELDS: dict[type, tuple[Callable[[Any], tuple[Any, ...]], int, int] | None] = {}


def _with_client(command: C.Command, client_id: str, seq: int) -> C.Command:
    """``dataclasses.replace(command, client_id=, seq=)`` in a third of its time (it runs for
    every write): the fields read by one attrgetter, the new command built positionally."""
    cls = type(command)
    how = _SESSION_FIELDS.get(cls, False)
    if how is False:
        fields = dataclasses.fields(cls)
        names = tuple(f.name for f in fields)
        how = None
        if not any(f.kw_only for f in fields):
            how = (operator.attrgetter(*names), names.index("client_id"), names.index("seq"))
        _SESSION_FIELDS[cls] = how
    if how is None:
        return dataclasses.replace(command, client_id=client_id, seq=seq)
    get, at_client, at_seq = how
    values = list(get(command))
    values[at_client], values[at_seq] = client_id, seq
    made: C.Command = cls(*values)
    return made


def _check_int(field: str, value: object, lo: int, hi: int) -> int:
    """An integer option in [lo, hi]; bools, floats and strings are refused, never int()-ed."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, f"must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise InvalidArgument(field, f"must be in [{lo}, {hi}], got {value}")
    return value


def _check_seconds(field: str, value: object, *, zero_ok: bool = False) -> float:
    """A finite, non-negative duration in seconds (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(field, f"must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_ok):
        raise InvalidArgument(field, f"must be a finite number of seconds > 0, got {value!r}")
    return seconds


def register_builtins(sm: StateMachine) -> None:
    """The runtime's own machines, registered alike by every node and by `replay`."""
    sm.register(BARRIER_MACHINE, apply=_barrier_apply)
    sm.register(STEPDOWN_MACHINE, apply=_stepdown_apply)


class _Attempt:
    """One proposal's outcome, filled in on the tick thread.

    The waiter blocks on a bare lock the callback releases, not on a `threading.Event`: an
    Event is a Condition in Python code, and with 256 writer threads its wait/notify
    bookkeeping was over half of the leader's GIL time (py-spy --gil); a lock's acquire and
    release are single C calls."""

    __slots__ = ("_lock", "code", "fired", "result")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self.result: Any = None
        self.code: int | None = None
        self.fired = False

    def __call__(self, result: Any, code: int) -> None:
        self.result, self.code, self.fired = result, code, True
        try:  # noqa: SIM105 - not contextlib.suppress: an object per write
            self._lock.release()
        except RuntimeError:  # a second callback for the same attempt
            pass

    def wait(self, timeout_s: float) -> bool:
        """True once the callback ran; False after `timeout_s` without it."""
        return self._lock.acquire(timeout=max(0.0, timeout_s))


# How many completed `kv.put` callers may be awake at once (`_Baton`). Measured with 256
# writer threads on 2 cores, 3 voters in one machine (/tmp-style A/B, same run, 4 phases
# each): width 1 gave 3.7-8.7k writes/s at 21-40 writes per batch entry, 8 gave 8.1-8.9k
# (86-106), 16 gave 9.7-11.7k (111-115), 32 gave 10.2-12.1k (119-121), 64 no better (9.8-
# 12.2k). One at a time left the GIL idle while each woken caller waited for a CPU (py-spy
# --gil: ~40% of the leader's samples idle in the wait), and the small batches that slow
# chain made cost every replica ~35 us of CPU per write, against ~22 at width 32.
BATON_WIDTH = 32


class _Baton:
    """Wakes the synchronous writers whose writes completed a few at a time, not all at once.

    A batch entry completes hundreds of `kv.put` callers in one callback loop on the tick
    thread. Releasing every caller's lock there made them all runnable at once while the tick
    thread still held the GIL: each woke in the kernel, found the GIL taken and slept on it
    again, and hundreds of threads contended with the tick thread for the GIL. Now at most
    `width` callers hold a baton: the callback wakes a caller only while fewer hold one, else
    queues it; a holder passes its baton to the next queued caller when its `propose`
    returns (or before a retry's backoff). A baton whose holder never returns (it gave up
    waiting just as its write completed) is passed on by the tick thread after a whole tick
    without moving.

    One baton (width 1) was the first design: the fewest threads awake, but the chain of
    hand-overs then paced the whole node. Each hand-over waits for the kernel to run the
    woken thread, with the GIL idle meanwhile, and the writes trickling back from that chain
    made small batch entries that cost every replica more per write (`BATON_WIDTH`).

    Passing a baton later, just before the holder blocked on its next write, made one fewer
    context switch for a loop of writes but stalled the others of a batch whenever the holder
    did not write again soon (a thread pool: up to two idle ticks, p50 at 1,000 writes/s went
    from 10 to 64 ms); passing on return was also cheaper per write in A/B runs."""

    __slots__ = ("_gen", "_guard", "_held", "_local", "_ready", "_seen", "_width")

    def __init__(self, width: int = BATON_WIDTH) -> None:
        if width < 1:
            raise InvalidArgument("width", f"must be at least 1, got {width!r}")
        self._guard = _thread.allocate_lock()
        self._ready: collections.deque[_BatonAttempt] = collections.deque()
        self._width = width
        self._held: set[int] = set()  # the generations of the batons held now
        self._gen = 0  # bumped at every hand-over: a stale pass is ignored
        self._seen: set[int] = set()  # the generations held at the tick thread's previous tick
        self._local = threading.local()  # .owed: the generation this thread holds, or None

    def completed(self, attempt: _BatonAttempt) -> None:
        """Tick thread (the write's callback): wake its caller now, or queue it."""
        with self._guard:
            held = self._held
            if len(held) >= self._width:
                self._ready.append(attempt)
                return
            gen = self._gen = self._gen + 1
            held.add(gen)
            attempt.gen = gen
        attempt.wake()

    def _pass(self, gen: int) -> None:
        with self._guard:
            held = self._held
            if gen not in held:
                return  # already passed on (the tick did it)
            held.discard(gen)
            if not self._ready:
                return
            attempt = self._ready.popleft()
            gen = self._gen = self._gen + 1
            held.add(gen)
            attempt.gen = gen
        attempt.wake()

    def woke(self, attempt: _BatonAttempt) -> None:
        """The caller of `attempt` woke holding a baton (its generation)."""
        self._local.owed = attempt.gen

    def pass_on(self) -> None:
        """A caller done waiting (its `propose` returns, or it backs off to retry): pass on
        the baton it holds, if any."""
        gen = getattr(self._local, "owed", None)
        if gen is not None:
            self._local.owed = None
            self._pass(gen)

    def holders(self) -> int:
        """How many batons are held now (diagnostics and tests)."""
        return len(self._held)

    def tick(self) -> None:
        """Tick thread: pass on every baton that did not move since the previous tick."""
        held = self._held
        if held:
            for gen in sorted(held & self._seen):
                self._pass(gen)
        self._seen = set(held)


class _BatonAttempt(_Attempt):
    """An `_Attempt` whose caller is woken through a `_Baton` (the `kv.put` hot path)."""

    __slots__ = ("baton", "gen")

    def __init__(self, baton: _Baton) -> None:  # _Attempt's, inlined (one per write)
        self._lock = lock = _thread.allocate_lock()
        lock.acquire()
        self.result: Any = None
        self.code: int | None = None
        self.fired = False
        self.baton = baton
        self.gen = 0

    def __call__(self, result: Any, code: int) -> None:
        first = not self.fired
        self.result, self.code, self.fired = result, code, True
        if first:
            self.baton.completed(self)

    def wake(self) -> None:
        try:  # noqa: SIM105 - not contextlib.suppress: an object per write
            self._lock.release()
        except RuntimeError:
            pass

    def wait(self, timeout_s: float) -> bool:
        if not self._lock.acquire(timeout=max(0.0, timeout_s)):
            return False
        self.baton.woke(self)
        return True


class _Waiting:
    """The leader work's proposal in flight, and when to stop waiting for it."""

    __slots__ = ("attempt", "deadline")

    def __init__(self, attempt: _Attempt, deadline: float) -> None:
        self.attempt = attempt
        self.deadline = deadline


class _Yield(Exception):
    """Ends a pass of the leader work after it proposed an entry (see `ControlPlane.step`)."""


class KV:
    """The built-in key-value machine seen through one ControlPlane; thread-safe."""

    def __init__(self, cp: ControlPlane) -> None:
        self._cp = cp

    def put(
        self, key: str, value: bytes, *, lease_id: int = 0, timeout_s: float | None = None
    ) -> int:
        """Write and wait until committed and applied here; returns the new mod revision."""
        cp = self._cp
        ticket = cp._ticket()
        try:
            deadline = time.monotonic() + cp._timeout(timeout_s)
        except BaseException:
            ticket()
            raise
        data = cp._put_bytes(key, value, lease_id, ticket)
        try:
            applied = cp._propose_until(data, deadline, True)
        finally:
            ticket()
            cp._baton.pass_on()
        return int(applied.unwrap())

    def put_async(
        self, key: str, value: bytes, *, lease_id: int = 0, timeout_s: float | None = None
    ) -> ProposalFuture[int]:
        """`put` without waiting: a future of the mod revision (``.result()`` or ``await``).
        Same checks, retries and exactly-once session as `put`; see `coreplane.runtime.pipeline`
        for the ordering of writes in flight."""
        cp = self._cp
        ticket = cp._ticket()
        try:
            timeout, pipeline = cp._pipeline_for(timeout_s)
        except BaseException:
            ticket()
            raise
        data = cp._put_bytes(key, value, lease_id, ticket)
        return pipeline.submit(data, timeout, _unwrap_int, ticket, batchable=True)

    def delete(self, key: str, *, timeout_s: float | None = None) -> int:
        """Delete; returns 1 if the key existed, else 0."""
        return int(self._cp.call_command(C.Delete(key=key), timeout_s=timeout_s))

    def cas(
        self,
        key: str,
        expected_mod_revision: int,
        value: bytes,
        *,
        lease_id: int = 0,
        timeout_s: float | None = None,
    ) -> int:
        """Compare-and-set on mod revision (0: absent); CommandRejected("compare_failed")."""
        return int(
            self._cp.call_command(
                C.Cas(
                    key=key,
                    expected_mod_revision=expected_mod_revision,
                    value=value,
                    lease_id=lease_id,
                ),
                timeout_s=timeout_s,
            )
        )

    def get(
        self, key: str, *, stale_ok: bool = False, timeout_s: float | None = None
    ) -> tuple[bytes, int] | None:
        """(value, mod_revision) or None; linearizable (ReadIndex) unless `stale_ok`, which
        reads this replica as it is (see `get_stale` for the bound on how old it may be)."""
        if not isinstance(key, str):
            raise InvalidArgument("key", "must be a str")
        got: tuple[bytes, int] | None = self._cp._read_state(
            lambda sm: sm.kv.get(key), stale_ok=stale_ok, timeout_s=timeout_s
        )
        return got

    def get_async(
        self, key: str, *, stale_ok: bool = False, timeout_s: float | None = None
    ) -> ProposalFuture[tuple[bytes, int] | None]:
        """`get` holding no thread while it waits: a future (``.result()`` or ``await``);
        see `ControlPlane.read_async`."""
        if not isinstance(key, str):
            raise InvalidArgument("key", "must be a str")
        got: ProposalFuture[tuple[bytes, int] | None] = self._cp._read_state_async(
            lambda sm: sm.kv.get(key), stale_ok=stale_ok, timeout_s=timeout_s
        )
        return got

    def get_stale(self, key: str) -> tuple[tuple[bytes, int] | None, StaleReadBound]:
        """A local read and its staleness bound (`ControlPlane.stale_read_bound`)."""
        bound = self._cp.stale_read_bound()
        return self.get(key, stale_ok=True), bound

    def range(
        self, prefix: str, *, limit: int = 0, stale_ok: bool = False, timeout_s: float | None = None
    ) -> list[tuple[str, bytes, int]]:
        """Keys with `prefix` in key order as (key, value, mod_revision)."""
        if not isinstance(prefix, str):
            raise InvalidArgument("prefix", "must be a str")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidArgument("limit", f"must be an integer >= 0 (0: no limit), got {limit!r}")
        items: list[tuple[str, bytes, int]] = self._cp._read_state(
            lambda sm: sm.kv.range(prefix, limit), stale_ok=stale_ok, timeout_s=timeout_s
        )
        return items


class ControlPlane:
    """One voter of a coreplane cluster: replicated KV, user machines, fenced leadership.

    ``ControlPlane(node_id, address, peers, data_dir, secret, *, ...)``: `address` is the
    ``ip:port`` this node listens on (bound exactly); `peers` maps every other voter's id to
    its address and must match the membership recorded in an existing `data_dir`; `secret`
    (>= 16 bytes) authenticates every peer frame and is never logged. Keyword options:
    `tick_interval_ms` (leader's Tick period), `election_timeout_ms` (min, max),
    `heartbeat_ms`, `propose_timeout_s` (default deadline of a write or linearizable read),
    `log_compaction_min_entries`/`log_compaction_min_time_s` (50,000 entries by default, or
    the number of keys if larger; etcd snapshots every 100,000: a snapshot encodes the whole
    state, which at thousands of writes/s every 5,000 entries meant a full-state encode every
    second or two, and with a fixed count its cost per write grows with the state), `durability`
    ("fsync" or "relaxed": may lose the last batch on power loss, never on a process crash),
    `limits`. Timing: election timeout 300..700 ms and heartbeat 50 ms by default; a leader
    acts only while its check-quorum lease (~274 ms from the newest quorum-acknowledged
    heartbeat) holds, and a leader killed outright is replaced in ~0.3..0.5 s (see
    `coreplane.raft.engine` for the clocks and margins).
    Construction checks everything and opens the journal but starts nothing: call `start()`
    (or use ``with``), and `stop()` to release the data dir.
    """

    def __init__(
        self,
        node_id: str,
        address: str,
        peers: dict[str, str],
        data_dir: str | os.PathLike[str],
        secret: bytes,
        *,
        tick_interval_ms: int = 200,
        election_timeout_ms: tuple[int, int] = (300, 700),
        heartbeat_ms: int = 50,
        propose_timeout_s: float = 10.0,
        log_compaction_min_entries: int = 50_000,
        log_compaction_min_time_s: int = 300,
        durability: str = "fsync",
        limits: Limits | None = None,
        seams: Seams | None = None,
        quota_config: QuotaConfig | None = None,
        fleet_config: FleetConfig | None = None,
        provider: Any = None,
    ) -> None:
        _check_int("tick_interval_ms", tick_interval_ms, 1, 3_600_000)
        self._propose_timeout_s = _check_seconds("propose_timeout_s", propose_timeout_s)
        if self._propose_timeout_s > 24 * 3600:
            raise InvalidArgument("propose_timeout_s", "must be at most one day")
        if durability not in ("fsync", "relaxed"):
            raise InvalidArgument("durability", "must be 'fsync' or 'relaxed'")
        if not isinstance(election_timeout_ms, (tuple, list)) or len(election_timeout_ms) != 2:
            raise InvalidArgument("election_timeout_ms", "must be (min_ms, max_ms)")
        lo = _check_int("election_timeout_ms", election_timeout_ms[0], 1, 60_000)
        hi = _check_int("election_timeout_ms", election_timeout_ms[1], 1, 60_000)
        _check_int("heartbeat_ms", heartbeat_ms, 1, 60_000)
        self._timing = E.EngineTiming(
            election_timeout_ms_min=lo,
            election_timeout_ms_max=hi,
            heartbeat_ms=heartbeat_ms,
            connection_timeout_ms=max(1000, hi),
        )
        self._timing.validate()
        # how long one attempt may go unanswered (`_attempt_s`; read by every kv.put)
        self._attempt_s_value = max(1.0, 3 * self._timing.election_timeout_ms_max / 1000)
        _check_int("log_compaction_min_entries", log_compaction_min_entries, 2, 2**40)
        _check_int("log_compaction_min_time_s", log_compaction_min_time_s, 0, 365 * 24 * 3600)
        if seams is not None and not isinstance(seams, Seams):
            raise InvalidArgument("seams", "must be a coreplane.runtime.seams.Seams")
        self._seams = seams or Seams()
        self._clock: Clock = self._seams.clock or SystemClock()
        if limits is not None and not isinstance(limits, Limits):
            raise InvalidArgument(
                "limits", f"must be a coreplane Limits, got {type(limits).__name__}"
            )
        self._tick_interval_s = tick_interval_ms / 1000
        self._compaction = (log_compaction_min_entries, log_compaction_min_time_s)
        self._durability = durability
        # Last: it creates the data dir, so a call refused for another field leaves no trace.
        self._config: NodeConfig = validate_config(
            node_id=node_id, address=address, peers=peers, data_dir=data_dir, secret=secret
        )
        self._fingerprint = cluster_fingerprint(self._config.secret)
        # Locked (released by stop(), or below if anything is refused) and checked here.
        self._datadir = DataDir.open(
            self._config.data_dir,
            node_id=self._config.node_id,
            secret=self._config.secret,
            members=self._config.members,
        )
        try:
            self._transport_class = self._make_transport_class()
            # Opened (and verified: identity, checksums) here so a bad data dir is refused now.
            try:
                self._journal: Any = (self._seams.journal_factory or E.open_journal)(
                    self._datadir.lmdb_path,
                    node_id=self._config.node_id,
                    cluster_id=self._fingerprint,
                    durability=durability,
                    create=not self._datadir.journal_created,
                )
            except InvalidArgument as exc:  # e.g. the same data dir open twice in this process
                raise InvalidArgument("data_dir", exc.reason) from None
            try:
                self._datadir.mark_journal_created()  # from now on, losing it is refused
            except BaseException:
                self._journal.close()
                raise
        except BaseException:
            self._datadir.release()
            raise

        self._sm = StateMachine(limits=limits, fleet=fleet_config)
        # what apply decides by, for status(): fixed for this node's life (a restore keeps both)
        self._apply_config = {
            "limits": dataclasses.asdict(self._sm.limits),
            "fleet": dataclasses.asdict(self._sm.fleet.config),
        }
        register_builtins(self._sm)
        self._stepdown_handled = 0
        self._sm_lock = threading.Lock()
        self.kv = KV(self)
        self.quotas = Quotas(self, quota_config)  # global rate limits (runtime/quotas.py)
        # the fleet brain (runtime/fleet.py); it reads the live state under its lock (apply-side
        # captures, the leader's fleet work), so it is handed both here
        self.fleet = Fleet(self, provider=provider, state=self._sm, state_lock=self._sm_lock)

        self._client_id = self._seams.client_id or f"{self._config.node_id}/{os.urandom(6).hex()}"
        self._lanes: SessionLanes | None = None  # built on first use, from _client_id
        # This node's own KV writes in flight, by their bytes: apply here takes the command
        # from this map instead of decoding the bytes again (a third of a write's apply).
        # Bounded: cleared when full (a miss only means decoding as any replica does).
        self._own_writes: dict[bytes, C.Command] = {}
        self._seq_lock = threading.Lock()

        self._engine: E.RaftEngine | None = None
        self._pipeline: Pipeline | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopping = threading.Event()
        self._start_error: BaseException | None = None
        self._fatal: BaseException | None = None

        self._callbacks: list[LeadershipCallback] = []
        self._callbacks_lock = threading.Lock()
        self._led_term: int | None = None
        self._emitted_token: int | None = None
        self._next_tick_at = 0.0
        self._first_worker = 0  # which leader worker a pass starts with (`_step`)
        self._tick_mono: float | None = None  # monotonic time of this leader's last tick
        self._tick_sent: tuple[int, float] | None = None  # (n, monotonic) of the tick in flight
        self._waiting: _Waiting | None = None  # the leader work's proposal in flight
        self._applied_cond = threading.Condition()
        self._baton = _Baton()  # wakes the kv.put callers of a batch a few at a time

    def __repr__(self) -> str:
        return (
            f"ControlPlane(node_id={self._config.node_id!r}, "
            f"address={self._config.address!r}, data_dir={self._config.data_dir!r})"
        )

    # ------------------------------------------------------------------------ lifecycle

    @property
    def node_id(self) -> str:
        return self._config.node_id

    @property
    def address(self) -> str:
        return self._config.address

    def register_machine(self, name: str, machine: Machine | None = None, **functions: Any) -> None:
        """Register a user machine (a `Machine`, or its parts as ``apply=``, ``on_tick=``,
        ``initial=``); every node must register the same ones, before start()."""
        if self._thread is not None:
            raise InvalidArgument("name", "register machines before start()")
        if name in (BARRIER_MACHINE, STEPDOWN_MACHINE):
            raise InvalidArgument("name", f"{name!r} is reserved")
        with self._sm_lock:
            self._sm.register(name, machine, **functions)

    def start(self) -> None:
        """Start the engine and the runtime thread; returns once the node listens.

        A ControlPlane runs once: start() while running is a no-op, and after stop() or a
        failed start() it raises (the data dir was released; construct a new one)."""
        if self._stopping.is_set() or self._start_error is not None:
            raise InvalidArgument(
                "start",
                "this ControlPlane was stopped or failed to start; "
                "construct a new one on the same data dir",
            )
        if self._thread is not None or self._engine is not None:
            return
        if not self._seams.threaded:  # a driver ticks the engine and steps the runtime
            self._engine = self._make_engine()
            self._started.set()
            return
        self._thread = threading.Thread(
            target=self._run, name=f"coreplane-{self.node_id}", daemon=True
        )
        self._thread.start()
        self._started.wait()
        if self._start_error is None:
            self._pipeline = Pipeline(
                self._require_engine,
                frozenset(_RETRY_CODES),
                attempt_s=self._attempt_s(),
                name=self.node_id,
            )
        if self._start_error is not None:
            err = self._start_error
            self._thread.join(timeout=5)
            if isinstance(err, CoreplaneError):
                raise err
            raise Unavailable(f"engine failed to start: {err}") from err

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop ticking, close sockets and files; the data dir is left consistent."""
        self._stopping.set()
        try:
            self._stop_engine(timeout_s)
        finally:
            self._fail_async_reads("the control plane stopped")

    def _fail_async_reads(self, reason: str) -> None:
        reads = getattr(self, "_async_reads", None)
        if reads is not None:
            reads.fail_all(reason)

    def _stop_engine(self, timeout_s: float) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
        if not self._seams.threaded and self._engine is not None:
            engine, self._engine = self._engine, None
            try:
                engine.destroy()  # autoTick off: destroys now, closing the journal after a flush
            finally:
                self._close_storage()
            return
        if self._thread is None:  # never started: only the journal is open (close is idempotent)
            self._close_storage()
            return
        self._thread.join(timeout=timeout_s)

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _make_transport_class(self) -> type:
        """The authenticated wire, bound to this node; journal synced before any send."""
        cfg = self._config
        if self._seams.transport_factory is not None:
            return self._seams.transport_factory(cfg.node_id, self._flush_journal)
        try:
            return E.make_transport_class(
                node_id=cfg.node_id,
                secret=cfg.secret,
                listen=cfg.address,
                peers=cfg.peers,
                on_before_send=self._flush_journal,
            )
        except InvalidArgument as exc:
            field = {"listen": "address"}.get(exc.field, exc.field)
            raise InvalidArgument(field, exc.reason) from None

    def _flush_journal(self) -> None:
        """Before any message leaves: make the journal durable, except on the leader, whose
        own entries are synced at the end of the same tick, in parallel with the followers'
        syncs and before the next tick can count them towards a commit (Raft §10.2.1)."""
        engine = self._engine
        if engine is not None and engine.may_send_before_sync():
            return
        journal = self._journal
        flush = getattr(journal, "flush", None)
        if flush is not None:
            flush()

    def _make_engine(self) -> E.RaftEngine:
        cfg = self._config
        conf = E.build_conf(
            timing=self._timing,
            journal_file=None,
            dump_file=E.snapshot_marker_path(self._datadir.lmdb_path),
            log_compaction_min_entries=self._compaction[0],
            log_compaction_min_time_s=self._compaction[1],
            bind_address=cfg.address,
            auto_tick=self._seams.threaded,
        )
        engine = E.RaftEngine(
            self_node=E.PeerNode(cfg.node_id, cfg.address),
            other_nodes=[
                E.PeerNode(nid, addr)
                for nid, addr in self._datadir.members.items()
                if nid != cfg.node_id
            ],
            conf=conf,
            apply_fn=self._apply,
            apply_batch_fn=self._apply_batch,
            transport_class=self._transport_class,
            journal=self._journal,
            snapshot_source=_SnapshotSource(self),
        )
        engine.addOnTickCallback(self._on_engine_tick)
        return engine

    def _on_engine_tick(self) -> None:
        """Tick thread, after apply: wake readers waiting for an applied index; pass on a
        writers' baton that did not move for a tick (`_Baton`)."""
        self._baton.tick()
        with self._applied_cond:
            self._applied_cond.notify_all()

    def _run(self) -> None:
        try:
            self._engine = self._make_engine()
            if not self._engine.wait_bound():
                self._engine.destroy_synchronous()
                raise Unavailable(f"cannot listen on {self.address}: {_bind_problem(self.address)}")
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
            self._start_error = exc
            self._close_storage()
            self._started.set()
            return
        self._started.set()
        try:
            while not self._stopping.is_set():
                engine_error = self._engine.fatal_error()
                if engine_error is not None and self._fatal is None:
                    self._fatal = engine_error
                if self._fatal is not None:
                    logger.error("node %s stops: %s", self.node_id, self._fatal)
                    break
                waiting = self._waiting
                if waiting is not None and not waiting.attempt.fired:
                    left = waiting.deadline - self._clock.monotonic()
                    if left > 0:
                        waiting.attempt.wait(min(left, 0.02))
                        continue
                try:
                    self.step()
                except Exception:
                    logger.exception("runtime step failed on %s", self.node_id)
                if self._waiting is None:
                    self._stopping.wait(0.02)
        finally:
            self._stopping.set()
            if self._pipeline is not None:
                self._pipeline.close()
            self._lose_leadership()
            try:
                self._engine.wait_snapshot_writer(5.0)
                self._engine.destroy_synchronous()  # closes the journal after a last flush
            except Exception:
                logger.exception("engine destroy failed on %s", self.node_id)
            finally:
                self._close_storage()
                fatal = self._fatal
                self._fail_async_reads(
                    "the control plane stopped"
                    if fatal is None
                    else f"node stopped after a fatal error: {fatal}"
                )

    def _close_storage(self) -> None:
        """Close the journal (idempotent), then release the data dir lock."""
        try:
            self._journal.close()
        except Exception:
            logger.exception("journal close failed on %s", self.node_id)
        finally:
            self._datadir.release()

    # ------------------------------------------------------------------------ apply (tick thread)

    def _apply(self, data: bytes, index: int) -> Applied:
        observer = self._seams.on_apply
        with self._sm_lock:
            try:
                result = self._sm.apply(data, index, self._own_writes.pop(data, None))
            except Exception as exc:
                self._apply_failed(exc, index)
                raise
        if observer is not None:
            observer(data, index)
        return result

    def _apply_failed(self, exc: Exception, index: int) -> None:
        """Never let pysyncobj advance past an entry we could not apply: the caller re-raises,
        which keeps its applied index where it is, and the runtime thread stops the node."""
        if self._fatal is None:
            self._fatal = (
                exc
                if isinstance(exc, InvariantViolation)
                else InvariantViolation(f"apply failed at index {index}: {exc!r}")
            )

    def _apply_batch(self, entries: list[bytes], index: int) -> list[Applied]:
        """A batch entry (several KV writes proposed together; see `RaftEngine.propose`)."""
        observer = self._seams.on_apply
        with self._sm_lock:
            try:
                own = self._own_writes
                results = self._sm.apply_batch(entries, index, [own.pop(e, None) for e in entries])
            except Exception as exc:
                self._apply_failed(exc, index)
                raise
        if observer is not None:
            observer(E.join_batch(entries), index)
        return results

    # ------------------------------------------------------------------------ leader work

    def step(self) -> bool:
        """One pass of this node's leader work (establish, tick, hand over, the fleet's work);
        never blocks. The runtime thread calls it; a threadless driver (``Seams(threaded=
        False)``) calls it itself. A pass that proposes an entry ends there: until that entry
        answered or its deadline passed, `step` returns False without doing anything, and the
        next pass starts from the top (the work re-derives everything from replicated state).
        """
        waiting = self._waiting
        if waiting is not None:
            if not waiting.attempt.fired and self._clock.monotonic() < waiting.deadline:
                return False
            self._waiting = None
        if self._engine is None or self._stopping.is_set() or self._fatal is not None:
            return True
        try:
            self._step()
        except _Yield:
            return False
        return True

    @property
    def step_ready(self) -> bool:
        """Whether `step` would do work now: no proposal of the leader work is in flight, or
        it has been answered (a threadless driver's cue to call `step` again)."""
        waiting = self._waiting
        return waiting is None or waiting.attempt.fired

    def tick_engine(self, timeout_s: float = 0.0) -> None:
        """Threadless driving: one Raft tick (poll messages up to `timeout_s`, timers, apply)."""
        if self._seams.threaded:
            raise InvalidArgument("tick_engine", "only with Seams(threaded=False)")
        self._require_engine().doTick(timeout_s)

    def _step(self) -> None:
        engine = self._engine
        assert engine is not None
        self._persist_members(engine)
        if not engine.is_leader():
            self._lose_leadership()
            return
        term = engine.term()
        if self._led_term != term:
            self._lose_leadership()
            self._establish(engine, term)
            return
        self._maybe_step_down(engine)
        # Each worker proposes at most one entry per pass (and yields). They take turns: the
        # pass after one proposed starts with the next, so when every commit takes longer
        # than a tick interval (a tick always due) the fleet and quota work still get theirs.
        workers = (self._tick_if_due, self.fleet.leader_step, self.quotas.leader_step)
        first = self._first_worker
        for turn in range(len(workers)):
            k = (first + turn) % len(workers)
            try:
                workers[k]()
            except _Yield:
                self._first_worker = (k + 1) % len(workers)
                raise

    def _tick_if_due(self) -> None:
        now = self._clock.monotonic()
        if now >= self._next_tick_at:
            self._next_tick_at = now + self._tick_interval_s
            self._propose_tick(now)

    def _propose_tick(self, now: float) -> None:
        """Advance cluster time by this leader's monotonic time since its last committed tick,
        at most two intervals (a paused or starved leader slows cluster time down, never
        speeds it up); a new leader's first tick is one interval after the last committed one.
        No wall clock is read, so a clock stepped by a day moves nothing."""
        with self._sm_lock:
            n = self._sm.tick_n + 1
        sent = self._tick_sent
        if sent is not None and n > sent[0]:  # our previous tick committed
            self._tick_mono = sent[1]
        interval_ms = round(self._tick_interval_s * 1000)
        last = self._tick_mono
        elapsed_ms = interval_ms if last is None else round((now - last) * 1000)
        elapsed_ms = max(0, min(elapsed_ms, 2 * interval_ms))
        self._tick_sent = (n, now)
        self._propose_internal(
            C.Tick(n=n, elapsed_ms=elapsed_ms), timeout_s=self._tick_interval_s * 5
        )

    def _propose_internal(self, command: C.Command, *, timeout_s: float) -> None:
        """The runtime's own path into the log: internal commands (ticks, leader entries and
        the leader's other decisions) carry the marker that `propose` refuses to forward.

        Never returns: the pass of the leader work ends here (`_Yield`) and `step` runs it
        again from the top once the entry answered or `timeout_s` passed."""
        engine = self._require_engine()
        attempt = _Attempt()
        engine.propose(C.encode_internal(command), attempt)
        self._waiting = _Waiting(attempt, self._clock.monotonic() + timeout_s)
        hook = self._seams.on_runtime_propose
        if hook is not None:
            hook(timeout_s)
        raise _Yield

    def _maybe_step_down(self, engine: E.RaftEngine) -> None:
        """Hand over leadership when a stepdown entry committed during this leadership (after
        its Leader entry) names this node; older requests were for an earlier term."""
        with self._sm_lock:
            request = self._sm.machine_states.get(STEPDOWN_MACHINE)
        since = max(self._stepdown_handled, self._emitted_token or 0)
        if isinstance(request, list) and request[0] == self.node_id and request[1] > since:
            self._stepdown_handled = request[1]
            engine.transfer_leadership(lambda _result, _code: None)

    def _establish(self, engine: E.RaftEngine, term: int) -> None:
        """Commit a Leader entry for this term; its index is the fencing token."""
        token = self._token_for(term)
        if token is None:  # not yet applied here (a retry must not mint a second token)
            self._propose_internal(
                C.Leader(node_id=self.node_id, term=term),
                timeout_s=self._timing.election_timeout_ms_max / 1000 * 3,
            )
        if engine.is_leader() and engine.term() == term:
            self._led_term = term
            self._next_tick_at = 0.0
            self._tick_mono = self._tick_sent = None
            self._emitted_token = token
            self._emit(True, token)

    def _token_for(self, term: int) -> int | None:
        with self._sm_lock:
            sm = self._sm
            if sm.leader_node == self.node_id and sm.leader_term == term:
                return sm.leader_token
        return None

    def _lose_leadership(self) -> None:
        self.quotas.lost_leadership()
        if self._emitted_token is None:
            self._led_term = None
            return
        token, self._emitted_token, self._led_term = self._emitted_token, None, None
        self._emit(False, token)

    def _emit(self, gained: bool, token: int | None) -> None:
        with self._callbacks_lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(gained, token)
            except Exception:
                logger.exception("on_leadership callback failed")

    def _persist_members(self, engine: E.RaftEngine) -> None:
        try:
            nodes = engine.members()
        except RuntimeError:  # a set changed under us on the tick thread; next step
            return
        members = {str(n.id): str(getattr(n, "address", "")) for n in nodes}
        if members != self._datadir.members:
            self._datadir.save_members(members, self._fingerprint)

    # ------------------------------------------------------------------------ proposals

    def _require_engine(self) -> E.RaftEngine:
        engine = self._engine
        fatal = self._fatal or (engine.fatal_error() if engine is not None else None)
        if fatal is not None:
            raise Unavailable(f"node stopped after a fatal error: {fatal}")
        if engine is None or self._stopping.is_set():
            raise Unavailable("the control plane is not running")
        return engine

    def _attempt(
        self, data: bytes, timeout_s: float, batchable: bool = False
    ) -> tuple[Any, int | None]:
        """Propose once; (result, fail code) or (None, None) if no answer in time."""
        engine = self._require_engine()
        attempt = _BatonAttempt(self._baton)
        if batchable:
            engine.propose(data, attempt, batchable=True)
        else:
            engine.propose(data, attempt)
        if not attempt.wait(timeout_s):
            return None, None
        return attempt.result, attempt.code

    def propose(self, command: C.Proposable, *, timeout_s: float | None = None) -> Applied:
        """Replicate one command and return how it applied (a refusal is not raised).

        Commands with a ``client_id`` field get this node's client id and a fresh seq if they
        carry none. The same bytes are re-sent until applied or the deadline passes.
        """
        return self._propose(command, timeout_s, None)

    def _propose(
        self, command: C.Proposable, timeout_s: float | None, ticket: Ticket | None
    ) -> Applied:
        """`propose`; with `ticket`, `command` already carries that session seq."""
        try:
            deadline = time.monotonic() + self._timeout(timeout_s)
        except BaseException:
            if ticket is not None:
                ticket()
            raise
        data, release, batchable = self._proposal(command, ticket)
        try:
            return self._propose_until(data, deadline, batchable)
        finally:
            if release is not None:
                release()
            self._baton.pass_on()

    def _propose_until(self, data: bytes, deadline: float, batchable: bool = False) -> Applied:
        attempt_s = self._attempt_s_value
        backoff_s = 0.02
        baton = self._baton
        while True:
            self._refuse_if_storage_full()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(
                    "no commit before the deadline; the outcome is unknown "
                    "(propose() the same command bytes again to retry safely)"
                )
            # `_attempt`, inlined (every kv.put runs it)
            engine = self._require_engine()
            attempt = _BatonAttempt(baton)
            if batchable:
                engine.propose(data, attempt, batchable=True)
            else:
                engine.propose(data, attempt)
            if attempt.wait(remaining if remaining < attempt_s else attempt_s):
                code = attempt.code
                if code == E.FAIL.SUCCESS:
                    result = attempt.result
                    if isinstance(result, Applied):
                        return result
                    raise InvariantViolation(f"engine returned {type(result).__name__}")
                if code == E.FAIL.REQUEST_DENIED:
                    raise CommandRejected("request_denied", "the leader refused the proposal")
                if code not in _RETRY_CODES:
                    raise Unavailable(f"proposal failed with engine code {code}")
            baton.pass_on()  # nobody waits on this caller's backoff
            time.sleep(min(backoff_s * (0.5 + random.random()), max(0.0, remaining)))
            backoff_s = min(backoff_s * 2, 0.2)

    def _refuse_if_storage_full(self) -> None:
        """Writes wait for disk space (etcd's NOSPACE alarm): the journal retries every tick and
        the node resumes by itself; reads and elections it can serve go on."""
        engine = self._engine
        if engine is not None and engine.storage_full():
            raise StorageFull(
                f"node {self.node_id}: the journal in {self._config.data_dir} "
                "cannot be written (disk or map full); writes resume by "
                "themselves once space is freed (the outcome of an earlier "
                "attempt of this command is unknown: retry the same bytes)"
            )

    def _proposal(
        self, command: object, ticket: Ticket | None = None
    ) -> tuple[bytes, Callable[[], None] | None, bool]:
        """The bytes to propose for a host's command, after every check apply would make on
        its own: internal commands and the runtime's marker are refused (only the runtime
        ticks and establishes leaders), and so is anything over a size limit. The second item
        releases the session seq the command was given (call it once the write completed);
        the third says whether it may share a log entry with others (`BATCHABLE_TAGS`).
        With `ticket` (`_ticket`), `command` already carries its session: it is released
        here if the command is refused, else returned as the release."""
        release: Callable[[], None] | None = ticket
        if ticket is not None:
            decoded: C.Command = command  # type: ignore[assignment]
            try:
                data = C.encode(decoded)
            except BaseException:
                ticket()
                raise
        elif isinstance(command, (bytes, bytearray, memoryview)):
            data = bytes(command)
            if len(data) > self._sm.limits.entry_bytes_max:
                raise InvalidArgument(
                    "limits.entry_bytes_max",
                    f"the command is {len(data)} bytes, over the "
                    f"{self._sm.limits.entry_bytes_max}-byte limit",
                )
            decoded = C.check_proposable(data)
        elif isinstance(command, C._Base):
            if command.TAG in C.INTERNAL_TAGS:
                C.encode(command)  # raises InvalidArgument: internal commands are the runtime's
            decoded, release = self._with_session(command)
            try:
                data = C.encode(decoded)
            except BaseException:
                if release is not None:
                    release()
                raise
        else:
            raise InvalidArgument(
                "command",
                f"{type(command).__name__} is not a command "
                "(a coreplane.core.commands type or its bytes)",
            )
        try:
            check_limits(decoded, len(data), self._sm.limits)
        except BaseException:
            if release is not None:
                release()
            raise
        batchable = decoded.TAG in BATCHABLE_TAGS
        if batchable:
            own = self._own_writes
            if len(own) >= OWN_WRITES_MAX:
                own.clear()
            own[data] = decoded
        return data, release, batchable

    def _put_bytes(self, key: object, value: object, lease_id: object, ticket: Ticket) -> bytes:
        """`_proposal` of a `Put` carrying `ticket`'s session: the bytes to propose. A put
        whose fields are plainly fine (an ASCII key, bytes, an integer lease id, all within
        the limits) is encoded without the generic checks, which would all pass (`C.encode`
        gives the same bytes: its fields are packed the same way, sorted); anything else
        takes `_proposal`, which raises what a bad field deserves and releases the ticket."""
        command = C.Put(key, value, lease_id, ticket.client_id, ticket.seq)  # type: ignore[arg-type]
        limits = self._sm.limits
        if (
            type(key) is str
            and type(value) is bytes
            and type(lease_id) is int
            and 0 < len(key) <= limits.key_bytes_max
            and key.isascii()
            and len(value) <= limits.value_bytes_max
            and 0 <= lease_id <= _U63
            and ticket.client_id.isascii()
        ):
            try:
                data = codec.encode_scalars(C.Put.TAG, _PUT_NAMES, _PUT_VALUES(command))
            except BaseException:
                ticket()
                raise
            if len(data) <= limits.entry_bytes_max:
                own = self._own_writes
                if len(own) >= OWN_WRITES_MAX:
                    own.clear()
                own[data] = command
                return data
        return self._proposal(command, ticket)[0]

    def _attempt_s(self) -> float:
        """How long one attempt may go unanswered before the same bytes are sent again."""
        return self._attempt_s_value

    def _timeout(self, timeout_s: object) -> float:
        """A caller's deadline in seconds: None means the configured default, 0 means now."""
        if timeout_s is None:
            return self._propose_timeout_s
        if type(timeout_s) is float and 0.0 <= timeout_s < math.inf:  # plainly fine (NaN is not)
            return timeout_s
        return _check_seconds("timeout_s", timeout_s, zero_ok=True)

    def propose_async(
        self,
        command: C.Proposable,
        *,
        timeout_s: float | None = None,
        transform: Callable[[Applied], Any] | None = None,
    ) -> ProposalFuture[Any]:
        """`propose` pipelined: returns at once with a future of the `Applied` (or of
        ``transform(applied)``), usable with ``.result()`` or ``await``. Bad commands raise
        here, before anything is proposed; everything after is in the future."""
        return self._propose_async(command, timeout_s, transform, None)

    def _pipeline_for(self, timeout_s: float | None) -> tuple[float, Pipeline]:
        """A pipelined write's checked timeout and the running pipeline, or the error the
        write gets now (not running, stopping, storage full)."""
        timeout = self._timeout(timeout_s)
        pipeline = self._pipeline
        if pipeline is None or self._stopping.is_set():
            self._require_engine()
            raise Unavailable("the control plane is not running")
        self._refuse_if_storage_full()
        return timeout, pipeline

    def _propose_async(
        self,
        command: C.Proposable,
        timeout_s: float | None,
        transform: Callable[[Applied], Any] | None,
        ticket: Ticket | None,
    ) -> ProposalFuture[Any]:
        """`propose_async`; with `ticket`, `command` already carries that session seq."""
        try:
            timeout, pipeline = self._pipeline_for(timeout_s)
        except BaseException:
            if ticket is not None:
                ticket()
            raise
        data, release, batchable = self._proposal(command, ticket)
        return pipeline.submit(data, timeout, transform, release, batchable=batchable)

    def call_command(self, command: C.Command, *, timeout_s: float | None = None) -> Value:
        """`propose` and unwrap: the value, or CommandRejected(code)."""
        return self.propose(command, timeout_s=timeout_s).unwrap()

    def call(self, machine: str, body: Value, *, timeout_s: float | None = None) -> Value:
        """Run a command on a registered user machine; its result or CommandRejected(code)."""
        return self.call_command(C.UserCommand(machine=machine, body=body), timeout_s=timeout_s)

    def _with_session(self, command: C.Command) -> tuple[C.Command, Callable[[], None] | None]:
        """The command with this node's session and a fresh seq (see `SessionLanes`) unless
        it carries its own; and what releases that seq once the write completed."""
        fields: Any = command  # every client command has client_id and seq (commands.py)
        if "client_id" not in fields.TYPES or fields.client_id:
            return command, None
        ticket = self._ticket()
        with_session: C.Command = _with_client(command, ticket.client_id, ticket.seq)
        return with_session, ticket

    def _ticket(self) -> Ticket:
        """A fresh session seq of this node (`SessionLanes`); call it once the write is done."""
        lanes = self._lanes
        if lanes is None:
            with self._seq_lock:
                if self._lanes is None:
                    self._lanes = SessionLanes(self._client_id)
                lanes = self._lanes
        ticket = lanes.take(timeout_s=self._propose_timeout_s)
        if ticket is None:
            raise Unavailable("too many writes in flight on this node")
        return ticket

    # ------------------------------------------------------------------------ reads

    def read(
        self,
        fn: Callable[[StateView], Any],
        *,
        stale_ok: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        """Run ``fn(view)`` on this replica's state and return its result: linearizable
        (ReadIndex) unless `stale_ok`. `view` is a read-only `StateView`, valid during the
        call only; apply waits while `fn` runs, so keep it short."""
        if not callable(fn):
            raise InvalidArgument("fn", "must be callable")
        return self._read_state(
            lambda sm: fn(StateView(sm)), stale_ok=stale_ok, timeout_s=timeout_s
        )

    def _read_state(
        self,
        fn: Callable[[StateMachine], Any],
        *,
        stale_ok: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        """`read` for the runtime's own facades, on the live state machine (never mutate)."""
        if not stale_ok:
            self._wait_read_index(timeout_s)
        else:
            self._require_engine()
        with self._sm_lock:
            return fn(self._sm)

    def read_async(
        self,
        fn: Callable[[StateView], Any],
        *,
        stale_ok: bool = False,
        timeout_s: float | None = None,
    ) -> ProposalFuture[Any]:
        """`read` holding no thread while it waits: a future of ``fn(view)`` (``.result()``
        or ``await``). `fn` runs on the thread that finds its read index applied: the
        caller's (a leader holding its lease, or `stale_ok`), else the Raft tick thread, so
        it must be as short as `read` asks (coreplane/runtime/async_reads.py)."""
        if not callable(fn):
            raise InvalidArgument("fn", "must be callable")
        return self._read_state_async(
            lambda sm: fn(StateView(sm)), stale_ok=stale_ok, timeout_s=timeout_s
        )

    def _read_state_async(
        self,
        fn: Callable[[StateMachine], Any],
        *,
        stale_ok: bool = False,
        timeout_s: float | None = None,
    ) -> ProposalFuture[Any]:
        """`read_async` for the runtime's own facades, on the live state machine."""
        from coreplane.runtime.async_reads import MAKE_LOCK, AsyncReads  # apart from `read`

        deadline = time.monotonic() + self._timeout(timeout_s)
        engine = self._require_engine()
        sm, sm_lock = self._sm, self._sm_lock

        def run(read: Callable[[], Any]) -> Any:
            with sm_lock:
                return read()

        if stale_ok:
            future: ProposalFuture[Any] = ProposalFuture()
            future.set_running_or_notify_cancel()
            try:
                future.set_result(run(lambda: fn(sm)))
            except BaseException as exc:  # noqa: BLE001 - the future carries it
                future.set_exception(exc)
            return future
        reads: AsyncReads | None = getattr(self, "_async_reads", None)
        if reads is None or reads.engine is not engine:
            with MAKE_LOCK:  # one AsyncReads per engine, made by the first read
                reads = getattr(self, "_async_reads", None)
                if reads is None or reads.engine is not engine:
                    reads = AsyncReads(engine, run, self._stopping)
                    self._async_reads = reads
        return reads.submit(lambda: fn(sm), deadline)

    def _wait_read_index(self, timeout_s: float | None) -> int:
        """Get a confirmed read index from the leader, then wait until it is applied here."""
        deadline = time.monotonic() + self._timeout(timeout_s)
        backoff_s = 0.005
        while True:
            engine = self._require_engine()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable("no leader confirmed a read index before the deadline")
            attempt = _Attempt()
            engine.request_read_index(attempt)
            if attempt.wait(remaining) and attempt.code == E.FAIL.SUCCESS:
                index = int(attempt.result)
                with self._applied_cond:
                    while engine.applied_index() < index:
                        left = deadline - time.monotonic()
                        if left <= 0 or self._stopping.is_set():
                            raise Unavailable(f"read index {index} not applied here in time")
                        self._applied_cond.wait(min(left, 0.05))
                return index
            time.sleep(min(backoff_s * (0.5 + random.random()), max(0.0, remaining)))
            backoff_s = min(backoff_s * 2, 0.1)

    def stale_read_bound(self) -> StaleReadBound:
        """How far behind a ``stale_ok=True`` read here may be (see `StaleReadBound`)."""
        engine = self._require_engine()
        st = engine.safe_status()
        applied = engine.applied_index()
        known = max(int(st.get("commit_idx") or 0), int(st.get("leader_commit_idx") or 0))
        return StaleReadBound(
            applied_index=applied,
            known_commit_index=known,
            entries_behind_min=max(0, known - applied),
            ms_since_leader_heard=int(engine.ms_since_leader_heard()),
        )

    def machine_state(self, name: str, *, stale_ok: bool = False) -> Value:
        """The replicated state of a registered user machine."""
        return self.read(lambda view: view.machine_state(name), stale_ok=stale_ok)

    def state_hash(self) -> tuple[int, str]:
        """(applied index of the core, state hash): replicas agree at equal indexes."""
        with self._sm_lock:
            return self._sm.applied_index, self._sm.state_hash()

    # ------------------------------------------------------------------------ leadership

    def is_leader(self) -> bool:
        """Leader holding its check-quorum lease: false before another can be elected."""
        engine = self._engine
        return bool(engine is not None and not self._stopping.is_set() and engine.is_leader())

    def transfer_leadership(self, *, timeout_s: float | None = None) -> str:
        """Planned restart: hand leadership to the most caught-up follower; the new leader's
        id. This node stops acting as leader at once. No-op (its id) when not leader."""
        deadline = time.monotonic() + self._timeout(timeout_s)
        while time.monotonic() < deadline:
            engine = self._require_engine()
            leader = self.leader_id
            if leader is not None and leader != self.node_id:
                return leader
            if engine.is_leader():
                engine.transfer_leadership(lambda _result, _code: None)
                end = min(
                    deadline, time.monotonic() + 2 * self._timing.election_timeout_ms_max / 1000
                )
                while time.monotonic() < end and self.leader_id in (self.node_id, None):
                    time.sleep(0.01)
            else:
                time.sleep(0.02)
        raise Unavailable("leadership was not handed over before the deadline")

    @property
    def leader_id(self) -> str | None:
        """The current leader's id as this node knows it; None when unknown or stopped."""
        engine = self._engine
        if engine is None or self._stopping.is_set():
            return None
        node = engine.leader_node()
        return None if node is None else str(node.id)

    @property
    def fencing_token(self) -> int | None:
        """The index of this leader's Leader entry while it leads and is established."""
        engine = self._engine
        term = self._led_term
        if engine is None or term is None or not engine.is_leader() or engine.term() != term:
            return None
        return self._token_for(term)

    def leadership_token(self) -> int | None:
        """The token this node's `on_leadership` callbacks were given for its current
        leadership (the index of its Leader entry), None once they were told it ended. A plain
        read, no lock and no engine call (for hot paths such as fleet heartbeats); pair it
        with `is_leader()` where leading *now* matters, or use `fencing_token`."""
        return self._emitted_token

    def on_leadership(self, callback: LeadershipCallback) -> None:
        """callback(gained, token) on the runtime thread: gained=True once established with
        its fencing token; gained=False with the token that is no longer valid.

        If the lease lapses and comes back within the same term (a starved CPU, a slow quorum),
        the host sees False then True with the same token: no other leader can have acted in
        between (that needs a higher term, hence a higher token), so the token stays valid."""
        if not callable(callback):
            raise InvalidArgument("callback", "must be callable")
        with self._callbacks_lock:
            self._callbacks.append(callback)

    def wait_for_leader(self, *, timeout_s: float = 10.0) -> str:
        """Block until a leader is established (its Leader entry applied here); its id."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            engine = self._require_engine()
            leader = self.leader_id
            if leader is not None:
                with self._sm_lock:
                    established = (
                        self._sm.leader_node == leader and self._sm.leader_term == engine.term()
                    )
                if established:
                    return leader
            time.sleep(0.02)
        raise Unavailable(f"no leader established within {timeout_s} s")

    # ------------------------------------------------------------------------ membership

    def members(self) -> dict[str, str]:
        """Voters as this node knows them, id -> address."""
        return dict(self._datadir.members)

    def add_voter(self, node_id: str, address: str, *, timeout_s: float | None = None) -> None:
        """Add one voter and wait until this node sees it; no-op if it is already a voter."""
        check_node_id(node_id, "node_id")
        parse_address(address, "address")
        known = self._datadir.members.get(node_id)
        if known is not None and known != address:
            raise InvalidArgument("address", f"{node_id!r} is already a voter at {known}")
        key = endpoint_key(address)
        for other_id, other_address in sorted(self._datadir.members.items()):
            if other_id != node_id and endpoint_key(other_address) == key:
                # A second id on one endpoint is a phantom voter: it raises the quorum and no
                # config can reconstruct either node afterwards.
                raise InvalidArgument(
                    "address", f"{address} is already voter {other_id!r}'s address"
                )
        self._change_membership(E.PeerNode(node_id, address), add=True, timeout_s=timeout_s)

    def remove_voter(self, node_id: str, *, timeout_s: float | None = None) -> None:
        """Remove one voter, from any node; no-op if it is not a voter.

        A pysyncobj leader cannot remove itself, so when `node_id` leads, a committed stepdown
        entry first makes it hand leadership to its most caught-up follower. Removing this node
        itself is confirmed when the other voters disconnect it (the leader drops it from the
        wire as soon as the change is appended, so no commit reaches it)."""
        address = self._datadir.members.get(node_id)
        if address is None:
            return
        deadline = time.monotonic() + self._timeout(timeout_s)
        while self.leader_id in (node_id, None):
            if time.monotonic() >= deadline:
                raise Unavailable(f"{node_id} did not hand over leadership before the deadline")
            if self.leader_id == node_id:
                self.call_command(
                    C.UserCommand(machine=STEPDOWN_MACHINE, body={"node": node_id}),
                    timeout_s=max(0.1, deadline - time.monotonic()),
                )
            wait_s = min(1.0, max(0.0, deadline - time.monotonic()))
            end = time.monotonic() + wait_s
            while self.leader_id in (node_id, None) and time.monotonic() < end:
                time.sleep(0.02)
        self._change_membership(
            E.PeerNode(node_id, address), add=False, timeout_s=max(0.1, deadline - time.monotonic())
        )

    def _change_membership(self, node: E.PeerNode, *, add: bool, timeout_s: float | None) -> None:
        deadline = time.monotonic() + self._timeout(timeout_s)
        while time.monotonic() < deadline:
            engine = self._require_engine()
            present = any(n.id == node.id for n in engine.members())
            if present == add:
                return
            attempt = _Attempt()
            if add:
                engine.add_voter(node, attempt)
            else:
                engine.remove_voter(node, attempt)
            attempt.wait(max(0.0, min(1.0, deadline - time.monotonic())))
            if (
                node.id == self.node_id
                and not add
                and (attempt.code == E.FAIL.SUCCESS or not engine.connected_peers())
            ):
                return  # pysyncobj never drops itself from its own view (see remove_voter)
            time.sleep(0.05)  # denied while another change or the leader's no-op is in flight
        raise Unavailable("membership change not confirmed before the deadline")

    # ------------------------------------------------------------------------ status

    def observations(self, *, rows_max: int = ROWS_MAX) -> Observations:
        """What coreplane.obs reads (health, diagnose, metrics): the Raft engine's own
        observations and this replica's fleet views and totals (`Observations`); any thread,
        no quorum, nothing proposed. `rows_max` bounds each list of fleet views (0: totals)."""
        if isinstance(rows_max, bool) or not isinstance(rows_max, int) or rows_max < 0:
            raise InvalidArgument("rows_max", "must be an int >= 0")
        return observe(self, rows_max)

    def status(self) -> NodeStatus:
        """Role, term, commit/applied index, leader, peers, fencing token, cluster time."""
        engine = self._engine
        with self._sm_lock:
            core = {
                "core_applied_index": self._sm.applied_index,
                "tick_ms": self._sm.tick_ms,
                "tick_n": self._sm.tick_n,
                "kv_bytes": self._sm.kv.stored_bytes,
                "kv_bytes_max": self._sm.limits.kv_bytes_max,
            }
        core["apply_config"] = {part: dict(fields) for part, fields in self._apply_config.items()}
        fatal = self._fatal or (engine.fatal_error() if engine is not None else None)
        base: dict[str, Any] = {
            "node_id": self.node_id,
            "address": self.address,
            **core,
            "error": None if fatal is None else str(fatal),
        }
        if engine is None or self._stopping.is_set() or fatal is not None:
            return NodeStatus(role="stopped", **base)
        st = engine.safe_status()
        peers = {
            nid: PeerStatus(addr, st.get(f"partner_node_status_server_{nid}") == 2)
            for nid, addr in sorted(self._datadir.members.items())
            if nid != self.node_id
        }
        return NodeStatus(
            **base,
            role=E.ROLE_NAMES.get(st.get("state", -1), "unknown"),
            term=st.get("raft_term"),
            commit_index=st.get("commit_idx"),
            applied_index=st.get("last_applied"),
            leader=self.leader_id,
            has_quorum=st.get("has_quorum"),
            log_len=st.get("log_len"),
            peers=peers,
            fencing_token=self.fencing_token,
            lease_remaining_ms=_lease_ms(engine.lease_remaining_s()),
            raft=dict(engine.counters()),
            storage_full=bool(engine.storage_full()),
        )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while a snapshot is decoded into a state: msgpack builds a list per KV row,
    and the collections those allocations set off walked the growing heap again and again
    (300k keys: the decode took 0.28-0.96 s with GC, 0.13-0.16 s without; the restore as a
    whole 1.05-1.5 s, 0.7-0.84 s). The one collection after it finds the rows freed by their
    reference counts. Only undone if it was done here: a host that turned GC off keeps it off.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _bind_problem(address: str) -> str:
    """Why this node cannot listen, in words: bind the address once more and read the error."""
    host, port = parse_address(address, "address")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "the port is in use (another process, or this node already running?)"
        if exc.errno == errno.EADDRNOTAVAIL:
            return f"{host} is not an address of this machine"
        if exc.errno == errno.EACCES:
            return f"permission denied for port {port}"
        return str(exc)
    return "the listener did not come up in time"


def _lease_ms(remaining_s: float) -> int | None:
    """The leader's lease left in ms; None when it never ends (a one-voter cluster)."""
    if math.isinf(remaining_s):
        return None
    return max(0, int(remaining_s * 1000))


class _SnapshotSource:
    """The engine's view of the core state for log compaction (tick thread)."""

    def __init__(self, cp: ControlPlane) -> None:
        self._cp = cp

    def snapshot_view(self) -> Callable[[], bytes]:
        with self._cp._sm_lock:
            return self._cp._sm.snapshot_view()

    def restore(self, data: bytes) -> None:
        with self._cp._sm_lock, _gc_paused():
            self._cp._sm.restore(data)

    def size_hint(self) -> int:
        """Keys in the state (read without the lock: a len is atomic; a hint, not a fact)."""
        return len(self._cp._sm.kv.keys)

"""The pysyncobj engine adapter: one SyncObj subclass, its config, its journal and snapshots.

This is the only place the runtime touches pysyncobj. The engine knows the core only through
two seams: ``apply_fn(data: bytes, index: int) -> result`` called in log order on the tick
thread, and a `SnapshotSource` (``snapshot() -> bytes`` / ``restore(bytes)``) used when the log
is compacted or a snapshot arrives from the leader. Commands are opaque codec bytes here.

Why the shape:
- coreplane's entries are their own command type (`ENTRY_COMMAND_TYPE`, after pysyncobj's
  four): the type byte, then the codec bytes, applied by `_SyncObj__doApplyCommand`. Upstream's
  `@replicated` methods would wrap every command in a pickled ``(funcID, args)`` tuple and
  unwrap it on every replica (measured: about a fifth of a loaded leader's GIL time); the codec
  bytes already say what they are;
- the core's state is never pickled: with an `LmdbJournal`, pysyncobj's Serializer is replaced
  (through `seams.journal_factory`) by `serialization.SnapshotSerializer`, which stores the
  source's bytes in LMDB next to the log and streams them to lagging followers; pysyncobj's own
  ``__dict__`` capture is ignored (attributes set before ``SyncObj.__init__`` are not in it);
- group commit: the journal is flushed at the end of every tick and, on followers and
  candidates, before the wire sends anything (the transport's ``on_before_send``: a reply or a
  vote promises durability); a leader's AppendEntries leave before its own sync, which ends the
  same tick, before the next tick can count the leader's copy (`may_send_before_sync`);
- snapshots from the leader that end at or below this node's commit index are refused (Raft
  §7), and a snapshot that cannot be loaded stops the engine (pysyncobj only logged it);
- pysyncobj's private behaviour is corrected in one place, `engine_overrides` (pinned by source
  hash in `seams`): log safety (truncate only on a term conflict, never a committed entry),
  a check-quorum lease with leader stickiness, fast failover on a dropped leader connection,
  adaptive batching with a fair send loop, and a tick that fails for good stops the node;
- linearizable reads use ReadIndex (`request_read_index`): the leader answers with its commit
  index once it has committed an entry of its term and either holds a valid lease or a quorum
  acknowledged a heartbeat sent after the index was taken; a follower asks the leader;
- the engine stays constructible with ``auto_tick=False`` and an injected transport class and
  journal, so a simulation can drive ``doTick()`` by hand.

Clocks: every Raft decision reads `monotonic_s()` (``pysyncobj.syncobj.monotonicTime`` looked
up at call time, so a simulated clock reaches it): the leader's lease and its send stamps, a
follower's stickiness window (its own clock), the failover shortcut, read-index deadlines.
pysyncobj itself uses the same global for election and heartbeat timers. Nothing here reads the
wall clock; the runtime stamps wall time into Tick entries.

Timing (defaults, 127.0.0.1): heartbeat 50 ms; election timeout 300..700 ms; a voter ignores
vote requests for 300 ms after it heard its leader; the leader's lease is
``300 * (1 - DRIFT_MAX) - auto_tick_ms`` = 274 ms from the send time of the newest heartbeat a
quorum acknowledged, so a partitioned leader stops acting at least ~26 ms (plus any clock
drift up to 2 %) before anyone else can be elected. A follower that sees its leader's
connection drop calls an election right after its 300 ms window (+0..100 ms spread) instead of
a full election timeout later; followers wake for their election deadline rather than at the
next 20 ms tick, and when the survivors' elections still collide (a split vote, or a candidate
whose log is behind a voter's), the voter with the more complete log, or the larger node id,
stands again at once (`_cp_should_stand`): no second random timeout (kill -9 -> first commit:
max 0.39 s over 14 kills, was 0.9-1.0 s). A planned restart hands leadership over first
(`transfer_leadership`, Raft TimeoutNow), during which the old leader stops acting at once.

Must not import coreplane.runtime (layers point down).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import queue as _queue
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.config import FAIL_REASON
from pysyncobj.fast_queue import FastQueue
from pysyncobj.node import Node
from pysyncobj.transport import TCPTransport

from coreplane.errors import InvalidArgument, InvariantViolation, StorageFull
from coreplane.raft import seams, serialization
from coreplane.raft.engine_overrides import (
    APPLY_BUDGET_MS,
    APPLY_ENTRIES_MAX,
    DRIFT_MAX,
    ConflictAwareLog,
    RaftOverrides,
    monotonic_s,
    stamping_transport,
)
from coreplane.raft.journal import LatencyHistogram, LmdbJournal, snapshot_marker_path
from coreplane.raft.wire import PeerNode, make_transport_class

__all__ = [
    "BATCH_COMMAND_TYPE",
    "ENTRY_COMMAND_TYPE",
    "FAIL",
    "EngineTiming",
    "PeerNode",
    "RaftEngine",
    "SnapshotSource",
    "build_conf",
    "join_batch",
    "make_transport_class",
    "monotonic_s",
    "open_journal",
    "snapshot_marker_path",
    "split_batch",
]

logger = logging.getLogger(__name__)

ROLE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}
ENTRY_COMMAND_TYPE = b"\x10"  # first byte of a coreplane entry; pysyncobj's types are 0..3
BATCH_COMMAND_TYPE = b"\x11"  # first byte of an entry holding several coreplane commands
BATCH_BYTES_MAX = 32 * 1024  # under pysyncobj's 64 KiB send batch: a batch is never chunked
BATCH_COMMANDS_MAX = 512
_unpack_u32 = struct.Struct(">I").unpack_from  # a batch command's length prefix
_REGULAR_COMMAND_TYPE = b"\x00"  # pysyncobj _COMMAND_TYPE.REGULAR: a pickled @replicated call


class FAIL:
    """pysyncobj's FAIL_REASON codes, re-exported so the runtime never imports pysyncobj."""

    SUCCESS = FAIL_REASON.SUCCESS
    QUEUE_FULL = FAIL_REASON.QUEUE_FULL
    MISSING_LEADER = FAIL_REASON.MISSING_LEADER
    DISCARDED = FAIL_REASON.DISCARDED
    NOT_LEADER = FAIL_REASON.NOT_LEADER
    LEADER_CHANGED = FAIL_REASON.LEADER_CHANGED
    REQUEST_DENIED = FAIL_REASON.REQUEST_DENIED
    UNKNOWN_OUTCOME = FAIL_REASON.UNKNOWN_OUTCOME


def join_batch(commands: list[bytes]) -> bytes:
    """A batch entry's payload: each command's codec bytes after its 4-byte length."""
    parts: list[bytes] = []
    append = parts.append
    for c in commands:  # no concatenation per command: one copy, in the join
        append(len(c).to_bytes(4, "big"))
        append(c)
    return b"".join(parts)


def split_batch(payload: bytes) -> list[bytes]:
    """The commands of a batch entry's payload (`join_batch`), in order. Only this engine
    writes batches and the journal checksums every entry, so a payload that does not split
    is a bug or corruption: `InvariantViolation` (the node stops, as for any failed apply).

    Every replica runs this for every write: one `unpack_from` and one slice of the bytes a
    command (a memoryview's slice, then its copy, cost twice as much)."""
    if type(payload) is not bytes:
        payload = bytes(payload)
    out: list[bytes] = []
    i, n = 0, len(payload)
    while i < n:
        if i + 4 > n:
            raise InvariantViolation(f"a batch entry does not split at byte {i} of {n}")
        (size,) = _unpack_u32(payload, i)
        i += 4
        if size == 0 or i + size > n:
            raise InvariantViolation(f"a batch entry does not split at byte {i - 4} of {n}")
        end = i + size
        out.append(payload[i:end])
        i = end
    if not out:
        raise InvariantViolation("an empty batch entry")
    return out


class _BatchCallback:
    """One batch entry's callback: hands each proposal its own result (or the failure), after
    noting each one's commit latency (`started`: when it was proposed; None: not timed)."""

    __slots__ = ("callbacks", "latency", "started")

    def __init__(
        self,
        callbacks: list[Callable[[Any, int], None]],
        started: list[float] | None = None,
        latency: LatencyHistogram | None = None,
    ) -> None:
        self.callbacks = callbacks
        self.started = started
        self.latency = latency

    def __call__(self, result: Any, code: int) -> None:
        callbacks = self.callbacks
        if code == FAIL.SUCCESS:
            if not isinstance(result, list) or len(result) != len(callbacks):
                raise InvariantViolation(
                    f"a batch of {len(callbacks)} applied as {type(result).__name__}"
                )
            started, latency = self.started, self.latency
            if started is not None and latency is not None:
                now = monotonic_s()  # once per batch, not per proposal (`_Timed`)
                observe = latency.observe
                for at in started:
                    observe(now - at)
            for callback, one in zip(callbacks, result, strict=True):
                callback(one, code)
        else:
            for callback in callbacks:
                callback(None, code)


class _Timed:
    """A proposal's callback that notes its commit latency first (one object per proposal:
    a closure was five for the cyclic GC)."""

    __slots__ = ("callback", "latency", "started")

    def __init__(
        self, callback: Callable[[Any, int], None], latency: LatencyHistogram, started: float
    ) -> None:
        self.callback, self.latency, self.started = callback, latency, started

    def __call__(self, result: Any, code: int) -> None:
        if code == FAIL.SUCCESS:  # committed and applied here: the caller's latency
            self.latency.observe(monotonic_s() - self.started)
        self.callback(result, code)


class _BatchingQueue(FastQueue):  # type: ignore[misc]
    """pysyncobj's proposal queue, handing out each run of queued batchable proposals as
    one batch entry (`join_batch`) when the tick thread drains it, order kept.

    A batchable proposal is queued as a 3-tuple ``(codec bytes, callback, proposed at)``
    (`RaftEngine.propose`), anything else as pysyncobj's ``(typed command, callback)``: no
    type byte put in front and taken off again (two copies per write), and no wrapper object
    per write. Coalescing happens in `get_nowait`, under the queue's lock, so every batchable
    item gets its entry type before it leaves the queue. A run is cut at `BATCH_COMMANDS_MAX`
    commands or `BATCH_BYTES_MAX` bytes; a run of one leaves as a plain entry (an idle node
    writes exactly what it wrote before batching existed)."""

    def __init__(self, size_max: int, latency: LatencyHistogram | None = None) -> None:
        super().__init__(size_max)
        self.stats = [0, 0]  # [batch entries handed out, commands in them]
        self.latency = latency if latency is not None else LatencyHistogram()

    def get_nowait(self) -> tuple[bytes, Any]:
        with self._FastQueue__lock:
            items = self._FastQueue__queue
            if not items:
                raise _queue.Empty()
            item = items.popleft()
            if len(item) == 2:
                return item  # type: ignore[no-any-return]
            command, callback, at = item
            run = [command]
            callbacks = [callback]
            started = [at]
            size = len(command) + 4
            while items and len(run) < BATCH_COMMANDS_MAX:
                item = items[0]
                if len(item) == 2 or size + len(item[0]) + 4 > BATCH_BYTES_MAX:
                    break
                items.popleft()
                command, callback, at = item
                run.append(command)
                callbacks.append(callback)
                started.append(at)
                size += len(command) + 4
        if len(run) == 1:
            return ENTRY_COMMAND_TYPE + run[0], _Timed(callbacks[0], self.latency, started[0])
        self.stats[0] += 1
        self.stats[1] += len(run)
        entry = BATCH_COMMAND_TYPE + join_batch(run)
        return entry, _BatchCallback(callbacks, started, self.latency)


class SnapshotSource(Protocol):
    """What the engine needs from the state it replicates to compact the log.

    `snapshot_view` runs on the tick thread at exactly the snapshot's index and must be cheap
    (capture, not encode); the bytes it promises are produced on the snapshot writer thread.
    """

    def snapshot_view(self) -> Callable[[], bytes]: ...

    def restore(self, data: bytes) -> None: ...


class SizedSnapshotSource(SnapshotSource, Protocol):
    """A source that also says how large a snapshot of it is, in write-sized units (e.g. its
    key count): the engine then compacts after max(`logCompactionMinEntries`, that many)
    writes, so a snapshot's cost stays proportional to the writes it covers."""

    def size_hint(self) -> int: ...


@dataclass(frozen=True, slots=True)
class EngineTiming:
    """Raft timing in milliseconds; defaults suit 127.0.0.1 and fast failover.

    pysyncobj's own defaults (30 s leader fallback, 5 s reconnect) are far too slow for a
    control plane: a partitioned leader would keep acting for 30 s.
    """

    election_timeout_ms_min: int = 300
    election_timeout_ms_max: int = 700
    heartbeat_ms: int = 50
    auto_tick_ms: int = 20
    connection_timeout_ms: int = 1000
    reconnect_ms: int = 200
    # check-quorum lease, from the send time of the newest heartbeat a quorum acknowledged.
    # Voters ignore vote requests for election_timeout_ms_min after hearing their leader, so the
    # lease is that window shortened by the clock drift bound and a tick (see engine_overrides).
    leader_lease_ms: int = 0  # 0 = election_timeout_ms_min * (1 - DRIFT_MAX) - auto_tick_ms
    # a follower whose leader's connection drops calls an election after its stickiness window
    # plus a random 0..failover_spread_ms (not a full election timeout later)
    failover_spread_ms: int = 100

    def validate(self) -> None:
        """Raise InvalidArgument on timings pysyncobj would reject with a bare assert."""
        if self.heartbeat_ms <= 0 or self.auto_tick_ms <= 0:
            raise InvalidArgument("heartbeat_ms", "heartbeat_ms and auto_tick_ms must be positive")
        if self.election_timeout_ms_min <= 3 * self.heartbeat_ms:
            raise InvalidArgument("election_timeout_ms", "min must exceed 3 x heartbeat_ms")
        if self.election_timeout_ms_max <= self.election_timeout_ms_min:
            raise InvalidArgument("election_timeout_ms", "max must exceed min")
        if self.connection_timeout_ms < self.election_timeout_ms_max:
            raise InvalidArgument("timing", "connection_timeout_ms must be >= election max")

    @property
    def lease_ms(self) -> int:
        return lease_ms_for(
            self.election_timeout_ms_min, self.auto_tick_ms, self.heartbeat_ms, self.leader_lease_ms
        )


def lease_ms_for(
    election_ms_min: float, auto_tick_ms: float, heartbeat_ms: float, wanted_ms: float = 0
) -> int:
    """The longest safe lease: inside the voters' stickiness window on a slow clock."""
    safe = int(election_ms_min * (1 - DRIFT_MAX) - auto_tick_ms)
    floor = int(2 * heartbeat_ms + 1)  # pysyncobj needs it above the heartbeat period
    lease = min(safe, int(wanted_ms)) if wanted_ms else safe
    return max(floor, lease)


def build_conf(
    *,
    timing: EngineTiming,
    journal_file: str | None,
    dump_file: str | None,
    on_state_changed: Callable[[int, int], None] | None = None,
    auto_tick: bool = True,
    log_compaction_min_entries: int = 5000,
    log_compaction_min_time_s: int = 300,
    bind_address: str | None = None,
    bind_retries: int = 15,
) -> SyncObjConf:
    """A validated SyncObjConf. With an LmdbJournal, `dump_file` is its snapshot marker."""
    timing.validate()
    if log_compaction_min_entries < 2:
        raise InvalidArgument("log_compaction_min_entries", "must be >= 2")
    conf = SyncObjConf(
        autoTick=auto_tick,
        autoTickPeriod=timing.auto_tick_ms / 1000,
        raftMinTimeout=timing.election_timeout_ms_min / 1000,
        raftMaxTimeout=timing.election_timeout_ms_max / 1000,
        appendEntriesPeriod=timing.heartbeat_ms / 1000,
        connectionTimeout=timing.connection_timeout_ms / 1000,
        connectionRetryTime=timing.reconnect_ms / 1000,
        leaderFallbackTimeout=timing.lease_ms / 1000,
        journalFile=journal_file,
        bindAddress=bind_address,
        fullDumpFile=dump_file,
        dynamicMembershipChange=True,
        logCompactionMinEntries=log_compaction_min_entries,
        logCompactionMinTime=log_compaction_min_time_s,
        onStateChanged=on_state_changed,
        commandsWaitLeader=True,
        # Send each proposal at once (and wake the poller through a pipe) instead of waiting
        # for the next heartbeat: a control plane wants latency, not bulk throughput.
        appendEntriesUseBatch=False,
        bindRetryTime=0.1,
        maxBindRetries=bind_retries,  # then waitBinded() fails instead of waiting forever
        useFork=False,
    )
    try:
        conf.validate()
    except AssertionError as exc:
        raise InvalidArgument("timing", "rejected by pysyncobj's config check") from exc
    return conf


# ---------------------------------------------------------------------------------- engine


def open_journal(
    path: str, *, node_id: str, cluster_id: str, durability: str = "fsync", create: bool = True
) -> LmdbJournal:
    """The node's LMDB journal (log, term/vote, snapshots); CorruptData if foreign/damaged,
    or (``create=False``) if no journal is there although one was created."""
    return LmdbJournal(
        path, node_id=node_id, cluster_id=cluster_id, durability=durability, create=create
    )


@contextlib.contextmanager
def _journal_installed(
    journal: Any | None,
    capture: Callable[[], Callable[[], bytes]] | None,
    restore: Callable[[bytes], None] | None,
    on_load_error: Callable[[BaseException], None] | None = None,
    commit_index: Callable[[], int] | None = None,
) -> Iterator[seams.Installed | None]:
    """Give the SyncObj built inside this block `journal` and, with it, snapshots in LMDB.

    pysyncobj catches and only logs any error while loading a snapshot, then runs on with
    whatever state it had; `on_load_error` hears of it first (the engine then stops)."""
    if journal is None:
        yield None
        return

    def serializer_factory(j: Any, _file: Any, batch: int, *_rest: Any) -> Any:
        serializer = serialization.SnapshotSerializer(
            j, capture=capture, restore=restore, transmission_batch_bytes=batch
        )
        if on_load_error is not None:
            load = serializer.deserialize

            def deserialize() -> Any:
                try:
                    return load()
                except Exception as exc:
                    on_load_error(exc)
                    raise

            serializer.deserialize = deserialize
        if commit_index is not None:
            serializer.setTransmissionData = _refusing_stale_snapshots(
                serializer.setTransmissionData, commit_index
            )
        return serializer

    with seams.journal_factory(
        lambda _path: journal, serializer_factory=serializer_factory
    ) as installed:
        yield installed


def _refusing_stale_snapshots(
    set_data: Callable[[Any], bool], commit_index: Callable[[], int]
) -> Callable[[Any], bool]:
    """Refuse a snapshot from the leader that ends at or below this node's commit index.

    pysyncobj installs any snapshot it is sent with ``clearJournal=True``: a follower sent an
    older snapshot (the leader walked ``nextIndex`` back past its compacted start) dropped
    committed entries and went back in time. Raft §7: such a follower already holds
    everything in it and keeps its log; the leader then resumes from the snapshot's end."""
    chunks: list[bytes] = []

    def set_transmission(data: Any) -> bool:
        if isinstance(data, tuple) and len(data) == 3 and isinstance(data[0], bytes):
            chunk, first, last = data
            if first:
                chunks.clear()
            chunks.append(chunk)
            if last:
                blob = b"".join(chunks)
                chunks.clear()
                index = _snapshot_last_index(blob)
                if index is not None and index <= commit_index():
                    logger.warning(
                        "refused a snapshot ending at %d: committed up to %d here",
                        index,
                        commit_index(),
                    )
                    return False
        return set_data(data)

    return set_transmission


def compaction_rank(self_node: Node | str, other_nodes: Iterable[Node | str]) -> tuple[int, int]:
    """(this voter's place among all voters' ids in sorted order, how many voters)."""
    ids = sorted({_node_id(n) for n in other_nodes} | {_node_id(self_node)})
    return ids.index(_node_id(self_node)), len(ids)


def _node_id(node: Node | str) -> str:
    return node if isinstance(node, str) else str(node.id)


def staggered_threshold(threshold: int, rank: int, voters: int) -> int:
    """`threshold` stretched by rank/(2 x voters): voter r of n compacts every T(1 + r/2n)
    writes. Every voter used to compact at the same index, so all replicas encoded a
    snapshot at once (each ~1 s of CPU at 200k keys) on machines they may share, and every
    replica's writes slowed together; with distinct periods the snapshots fall apart and only
    rarely coincide again. Compaction is each node's own affair: nothing replicated depends
    on when it happens."""
    if voters <= 1:
        return threshold
    return threshold + threshold * rank // (2 * voters)


def _snapshot_last_index(blob: bytes) -> int | None:
    try:
        parts = serialization.decode(blob)
        return int(parts[1][1])
    except Exception:  # noqa: BLE001 - malformed: the serializer itself refuses it
        return None


ReadCallback = Callable[["int | None", int], None]  # (read index, FAIL code)


class RaftEngine(RaftOverrides, SyncObj):
    """pysyncobj SyncObj whose log holds coreplane entries (codec bytes) and upstream's own.

    `apply_fn(data, index)` runs on the tick thread in log order; its return value is handed
    to the proposer's callback on the node that proposed (results never cross the wire).
    `is_leader()` is true only while the check-quorum lease holds.
    """

    def __init__(
        self,
        *,
        self_node: Node | str,
        other_nodes: Iterable[Node | str],
        conf: SyncObjConf,
        apply_fn: Callable[[bytes, int], Any],
        apply_batch_fn: Callable[[list[bytes], int], list[Any]] | None = None,
        transport_class: type | None = None,
        journal: Any | None = None,
        snapshot_source: SnapshotSource | None = None,
        node_class: type = PeerNode,
        apply_budget_ms: float = APPLY_BUDGET_MS,
        apply_entries_max: int = APPLY_ENTRIES_MAX,
    ) -> None:
        """With `journal` (an LmdbJournal), snapshots of `snapshot_source` are stored in it
        (conf.fullDumpFile must be its marker path); without, conf's own hooks apply.

        One tick applies at most `apply_entries_max` committed entries and starts none after
        `apply_budget_ms` of applying; the rest follows in the next ticks, right after each
        tick's poll (a restart's replay no longer silences the node: `engine_overrides` 9.)."""
        other_nodes = list(other_nodes)  # read twice below
        # Set before SyncObj.__init__: excluded from pysyncobj's own snapshot capture.
        self._apply_fn = apply_fn
        self._apply_batch_fn = apply_batch_fn  # None: this engine never writes batches
        self._cp_batched_extra = 0  # writes in batch entries beyond one each, since compaction
        self._cp_batch_queue: _BatchingQueue | None = None  # set once SyncObj is built
        if journal is not None:
            journal = ConflictAwareLog(journal)  # truncate on term conflicts only (Raft §5.3)
        self._cp_journal = journal
        self._cp_installed: list[Any] = []
        stick_s = float(conf.raftMinTimeout)
        lease_s = (
            lease_ms_for(
                stick_s * 1000,
                conf.autoTickPeriod * 1000,
                conf.appendEntriesPeriod * 1000,
                conf.leaderFallbackTimeout * 1000,
            )
            / 1000
        )
        self._cp_init_overrides(
            stick_s=stick_s,
            lease_s=lease_s,
            failover_spread_s=min(0.1, conf.raftMaxTimeout - stick_s),
            log=journal,
            apply_budget_s=apply_budget_ms / 1000,
            apply_entries_max=apply_entries_max,
        )
        self._cp_read_queue: collections.deque[ReadCallback] = collections.deque()
        self._cp_tick_calls: collections.deque[Callable[[], None]] = collections.deque()
        self._cp_leader_reads: list[list[Any]] = []  # [taken_at, index|None, callback, deadline]
        self._cp_remote_reads: dict[int, tuple[ReadCallback, float, Any]] = {}
        self._cp_read_ids = itertools.count(1)
        self._cp_read_timeout_s = 2 * float(conf.raftMaxTimeout)
        # Observability (coreplane.obs): proposal -> callback latency on this node, and the
        # terms and leaders this node saw, stamped with monotonic_s(); bounded.
        self._cp_commit_latency = LatencyHistogram()
        self._cp_terms: collections.deque[tuple[float, int]] = collections.deque(maxlen=256)
        self._cp_seen: tuple[int, Any] | None = None  # (term, leader) at the last tick
        self._cp_leader_changes = 0
        self._cp_first_leader_at: float | None = None  # when this node first knew a leader
        serialization.install()  # idempotent; nothing pysyncobj stores or sends is pickled
        kwargs: dict[str, Any] = {
            "nodeClass": node_class,
            "transportClass": stamping_transport(transport_class or TCPTransport),
        }
        capture = restore = None
        self._cp_compaction_base = int(conf.logCompactionMinEntries)
        self._cp_compaction_rank = compaction_rank(self_node, other_nodes)
        self._cp_snapshot_size = 0  # the size hint at this node's last snapshot, taken or loaded
        self._cp_size_hint: Callable[[], int] | None = getattr(snapshot_source, "size_hint", None)
        if journal is not None and snapshot_source is not None:
            capture = snapshot_source.snapshot_view  # tick thread: capture; writer: encode
            restore = snapshot_source.restore
            if self._cp_size_hint is not None:
                self._cp_conf = conf
                self._cp_scale_compaction()
                capture, restore = self._cp_sized(capture, restore, self._cp_size_hint)

        def on_load_error(exc: BaseException) -> None:
            if self._cp_fatal is None:
                self._cp_fatal = InvariantViolation(f"snapshot could not be loaded: {exc!r}")
                logger.critical("engine stops: %s", self._cp_fatal)

        with _journal_installed(
            journal, capture, restore, on_load_error, lambda: int(self.raftCommitIndex)
        ) as installed:
            super().__init__(self_node, list(other_nodes), conf, **kwargs)
        if installed is not None:
            self._cp_installed.append(installed)
        if apply_batch_fn is not None:  # nothing is queued yet: proposals start after this
            self._cp_batch_queue = _BatchingQueue(conf.commandsQueueSize, self._cp_commit_latency)
            self._SyncObj__commandsQueue = self._cp_batch_queue
        self.addOnTickCallback(self._cp_reads_tick)
        # Resolved once: the group commit runs at the end of every tick.
        self._cp_journal_flush = getattr(journal, "flush", None)  # a memory journal has none
        if journal is not None:
            self.addOnTickCallback(self._cp_group_commit)

    def _cp_scale_compaction(self) -> None:
        """Compact after max(configured entries, the size hint at this node's last snapshot)
        writes. A snapshot encodes the whole state: every 50,000 writes at 250k keys that was
        ~15 us of CPU per write on every replica, more than following the write itself; with
        the threshold growing with the state it is a bounded share (a restart then replays at
        most about as many writes as the snapshot it loads holds keys, over several ticks that
        each answer messages: `engine_overrides` 9.).

        The size at the last snapshot, not the size now: writes that add keys grow the state
        as fast as they count towards the threshold, so under inserts alone "more writes
        than keys now" never came true once past the configured count, and the log grew
        without bound (a restart replayed all of it). Against the last snapshot's size, the
        next one comes once the writes since match it: at most a doubling of the state.
        Each voter also stretches the threshold by its rank (`staggered_threshold`), so the
        replicas do not all encode a snapshot at the same index. pysyncobj reads the
        threshold from its conf at each check, and so does `_cp_count_towards_compaction`;
        it changes only when a snapshot is taken or loaded (`_cp_sized`)."""
        self._cp_conf.logCompactionMinEntries = staggered_threshold(
            max(self._cp_compaction_base, self._cp_snapshot_size), *self._cp_compaction_rank
        )

    def _cp_sized(
        self,
        capture: Callable[[], Callable[[], bytes]],
        restore: Callable[[bytes], None],
        size_hint: Callable[[], int],
    ) -> tuple[Callable[[], Callable[[], bytes]], Callable[[bytes], None]]:
        """`capture` and `restore` that note the state's size at a snapshot taken or loaded
        and rescale the compaction threshold (`_cp_scale_compaction`)."""

        def sized_capture() -> Callable[[], bytes]:
            self._cp_snapshot_size = size_hint()
            self._cp_scale_compaction()
            return capture()

        def sized_restore(data: bytes) -> None:
            restore(data)
            self._cp_snapshot_size = size_hint()
            self._cp_scale_compaction()

        return sized_capture, sized_restore

    def _cp_group_commit(self) -> None:
        """Sync the journal; wake the next tick at once if the leader's copy now decides a
        commit. pysyncobj counts the leader's copy at the start of a tick, and without a wake a
        single-voter group (or a leader whose followers already acked) waited for the poll
        timeout: a write took 21 ms on a one-node group, 1.0 ms with the wake (p50)."""
        wrote = bool(getattr(self._cp_journal, "dirty", True))
        if self._cp_journal_flush is not None:
            try:
                self._cp_journal_flush()
            except StorageFull as exc:  # retried next tick; a leader stops leading (overrides)
                self._cp_step_down_unsynced(exc)
                return
        if wrote and self._isLeader() and self._cp_own_copy_decides():
            self._cp_wake()

    def _cp_own_copy_decides(self) -> bool:
        """True if entries past the commit index have a quorum once this leader counts."""
        commit = int(self.raftCommitIndex)
        if self._SyncObj__getCurrentLogIndex() <= commit:  # type: ignore[attr-defined]
            return False
        others = list(self._SyncObj__otherNodes)  # type: ignore[attr-defined]
        match = self._SyncObj__raftMatchIndex  # type: ignore[attr-defined]
        acked = sum(1 for node in others if match.get(node, 0) > commit)
        return 2 * (acked + 1) > len(others) + 1

    def wait_snapshot_writer(self, timeout_s: float = 10.0) -> bool:
        """Let a running snapshot write finish (shutdown); True if none is running."""
        for installed in self._cp_installed:
            waiter = getattr(installed.serializer, "wait", None)
            if waiter is not None and not waiter(timeout_s):
                return False
        return True

    def _SyncObj__doApplyCommand(self, command: bytes) -> Any:
        """Apply one committed entry: ours go to `apply_fn`, upstream's to upstream."""
        kind = command[:1]
        if kind == ENTRY_COMMAND_TYPE:
            # pysyncobj increments raftLastApplied right after this call returns.
            return self._apply_fn(bytes(command[1:]), self.raftLastApplied + 1)
        if kind == BATCH_COMMAND_TYPE:
            if self._apply_batch_fn is None:
                raise InvariantViolation(
                    f"entry {self.raftLastApplied + 1} is a batch and this engine has no "
                    "apply_batch_fn"
                )
            entries = split_batch(bytes(command[1:]))
            self._cp_count_towards_compaction(len(entries))
            return self._apply_batch_fn(entries, self.raftLastApplied + 1)
        if kind == _REGULAR_COMMAND_TYPE:  # only @replicated methods write these; we have none
            raise InvariantViolation(
                f"entry {self.raftLastApplied + 1} is a pysyncobj @replicated call, which "
                "coreplane never writes: this log was not written by this version"
            )
        return SyncObj._SyncObj__doApplyCommand(self, command)  # type: ignore[attr-defined]

    def _cp_count_towards_compaction(self, writes: int) -> None:
        """pysyncobj compacts the log after `logCompactionMinEntries` entries; a batch entry
        holds many writes, so without this a log of batches grew 100x more writes between
        snapshots, and a restarted node replayed them all in one tick (seconds without
        answering votes: a kill -9 of the next leader then took 2.5-5.7 s to fail over; the
        replay is now also cut into per-tick chunks, `engine_overrides` 9.).
        Count a batch as its writes: past the threshold, ask for a compaction."""
        self._cp_batched_extra += writes - 1
        threshold = int(self.conf.logCompactionMinEntries)
        if len(self._SyncObj__raftLog) + self._cp_batched_extra > threshold:  # type: ignore[attr-defined]
            self._cp_batched_extra = 0
            self.forceLogCompaction()

    def propose(
        self, data: bytes, callback: Callable[[Any, int], None], *, batchable: bool = False
    ) -> None:
        """Queue codec bytes for replication; callback(result, fail_code) on the tick thread.

        `batchable` (the caller's promise that applying the command does not depend on its
        log index: see `apply_batch_fn`): proposals that are queued together when the tick
        thread drains the queue go into one log entry, so a deep queue costs one entry, one
        journal record and one wire item per batch instead of per proposal. A proposal alone
        in the queue is written as a plain entry.

        A batchable proposal is queued here directly (what `_applyCommand` does, without its
        wrapper object and type byte per write): the tick thread is woken only when the queue
        was empty, since it drains the whole queue (`engine_overrides`)."""
        queue = self._cp_batch_queue
        if batchable and queue is not None:
            items = queue._FastQueue__queue
            item = (data, callback, monotonic_s())  # not under the lock: no Python call there
            with queue._FastQueue__lock:
                size_max = queue._FastQueue__maxSize
                full = size_max > 0 and len(items) >= size_max
                was_empty = not items
                if not full:
                    items.append(item)
            if full:
                self._SyncObj__callErrCallback(FAIL.QUEUE_FULL, callback)  # type: ignore[attr-defined]
            elif was_empty:
                self._cp_notify()
        else:
            timed = _Timed(callback, self._cp_commit_latency, monotonic_s())
            self._applyCommand(data, timed, ENTRY_COMMAND_TYPE[0])

    def batch_stats(self) -> tuple[int, int]:
        """(batch entries this node wrote, commands in them): how much coalescing happened."""
        queue = self._SyncObj__commandsQueue  # type: ignore[attr-defined]
        stats = getattr(queue, "stats", (0, 0))
        return int(stats[0]), int(stats[1])

    def _cp_watch_term(self) -> None:
        """Tick thread: note a new term or leader (two int compares per tick)."""
        seen = (int(self.raftCurrentTerm), self._getLeader())
        last = self._cp_seen
        if last is None or seen[0] != last[0]:
            self._cp_terms.append((monotonic_s(), seen[0]))
        if last is not None and seen[1] is not None and seen[1] != last[1]:
            self._cp_leader_changes += 1
            if self._cp_first_leader_at is None:
                self._cp_first_leader_at = monotonic_s()
        self._cp_seen = seen

    # -------------------------------------------------------------------- ReadIndex

    def request_read_index(self, callback: ReadCallback) -> None:
        """Any thread: callback(index, SUCCESS) once reading at `index` is linearizable, i.e.
        after this call the leader had committed `index` and was still leader; else
        callback(None, code) with a retryable code. Runs on the tick thread."""
        fast = self._cp_lease_read_index()
        if fast is not None:
            callback(fast, FAIL.SUCCESS)
            return
        self._cp_read_queue.append(callback)
        self._cp_wake()

    def _cp_lease_read_index(self) -> int | None:
        """The commit index if this leader holds its lease and committed in its term."""
        noop = self._SyncObj__noopIDx  # type: ignore[attr-defined]
        if noop is None or self.lease_remaining_s() <= 0:
            return None
        commit = int(self.raftCommitIndex)
        return commit if commit >= noop else None

    def _cp_wake(self) -> None:
        notifier = getattr(self, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            with contextlib.suppress(OSError):
                notifier.notify()

    def _cp_reads_tick(self) -> None:
        self._cp_watch_term()
        while self._cp_tick_calls:
            self._cp_tick_calls.popleft()()
        now = monotonic_s()
        while self._cp_read_queue:
            self._cp_start_read(self._cp_read_queue.popleft(), now)
        if self._cp_leader_reads:
            self._cp_resolve_reads(now)
        if self._cp_remote_reads:
            leader = self._getLeader()
            for rid, (callback, deadline, asked) in list(self._cp_remote_reads.items()):
                if now > deadline or leader != asked:
                    del self._cp_remote_reads[rid]
                    callback(None, FAIL.LEADER_CHANGED)

    def _cp_start_read(self, callback: ReadCallback, now: float) -> None:
        if self._isLeader():
            self._cp_leader_reads.append([now, None, callback, now + self._cp_read_timeout_s])
            self._cp_resolve_reads(now)
            return
        leader = self._getLeader()
        if leader is None:
            callback(None, FAIL.MISSING_LEADER)
            return
        rid = next(self._cp_read_ids)
        self._cp_remote_reads[rid] = (callback, now + self._cp_read_timeout_s, leader)
        self._SyncObj__transport.send(leader, {"type": "cp_read_index", "rid": rid})

    def _cp_resolve_reads(self, now: float) -> None:
        """Answer leader reads whose leadership is confirmed (lease, or a quorum round)."""
        reads, self._cp_leader_reads = self._cp_leader_reads, []
        if not self._isLeader():
            for read in reads:
                read[2](None, FAIL.NOT_LEADER)
            return
        noop = self._SyncObj__noopIDx  # type: ignore[attr-defined]
        commit = int(self.raftCommitIndex)
        established = noop is not None and commit >= noop
        lease_ok = self.lease_remaining_s() > 0
        confirmed_since = self._cp_lease_start()
        waiting = []
        for read in reads:
            taken_at, index, callback, deadline = read
            if now > deadline:
                callback(None, FAIL.UNKNOWN_OUTCOME)
            elif index is None and not established:
                waiting.append(read)
            elif index is None:
                read[0], read[1] = now, commit
                if lease_ok:
                    callback(commit, FAIL.SUCCESS)
                else:
                    waiting.append(read)
            elif confirmed_since >= taken_at:  # a quorum acked a heartbeat sent after it
                callback(index, FAIL.SUCCESS)
            else:
                waiting.append(read)
        self._cp_leader_reads = waiting
        if waiting and not lease_ok:
            self._SyncObj__newAppendEntriesTime = 0.0  # heartbeat now, not in up to 50 ms

    def _cp_on_custom(self, node: Any, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "cp_read_index":
            rid = message["rid"]
            transport = self._SyncObj__transport  # type: ignore[attr-defined]

            def reply(index: int | None, code: int) -> None:
                transport.send(
                    node, {"type": "cp_read_index_resp", "rid": rid, "index": index, "code": code}
                )

            self._cp_start_read(reply, monotonic_s())
        elif kind == "cp_read_index_resp":
            pending = self._cp_remote_reads.pop(message["rid"], None)
            if pending is not None:
                index = message.get("index")
                pending[0](None if index is None else int(index), int(message["code"]))

    # -------------------------------------------------------------------- read-only views
    # Methods, not properties: SyncObj.__init__ getattr()s every name in dir(self) while
    # looking for replicated methods, before its own attributes exist.

    def is_leader(self) -> bool:
        """Raft leader holding its check-quorum lease (engine_overrides): safe to act."""
        return bool(self._isLeader()) and self.lease_remaining_s() > 0

    def may_send_before_sync(self) -> bool:
        """True on a leader: its AppendEntries may leave before its own journal sync.

        pysyncobj counts the leader's copy towards a commit only at the start of a tick, and
        the journal is flushed at the end of every tick (and right after the no-op a new
        leader appends), so the leader's copy is durable before it counts. Followers and
        candidates must sync first: their replies and votes promise durability. So must a
        leader whose journal is full: it is about to step down (`storage_full`)."""
        return bool(self._isLeader()) and not self.storage_full()

    def storage_full(self) -> bool:
        """True while the journal cannot be written (disk or map full): proposals are refused
        with `StorageFull`, nothing unsynced is sent, and the first successful flush clears
        it (the journal retries every tick)."""
        return bool(getattr(self._cp_journal, "storage_full", False))

    def raft_role_is_leader(self) -> bool:
        """pysyncobj's own role, lease or not (diagnostics and tests)."""
        return bool(self._isLeader())

    def applied_index(self) -> int:
        return int(self.raftLastApplied)

    def apply_backlog(self) -> int:
        """Committed entries not applied here yet (a restart's replay, a far-behind follower):
        the next tick goes on with them at once (see `engine_overrides` 9.)."""
        return max(0, int(self.raftCommitIndex) - int(self.raftLastApplied))

    def ms_since_leader_heard(self) -> int | None:
        """0 on a leader with its lease; else ms since the last append from a leader (None:
        never heard one)."""
        if self.is_leader():
            return 0
        heard = self._cp_heard_at
        return None if heard == -float("inf") else int((monotonic_s() - heard) * 1000)

    def counters(self) -> dict[str, int]:
        """What the overrides did: votes ignored, stale resets clamped, truncations, ..."""
        out = dict(self._cp_counters)
        log = self._cp_log
        if log is not None:
            out["deferred_truncations"] = log.deferred_truncations
            out["conflict_truncations"] = log.conflict_truncations
        return out

    def leader_node(self) -> Node | None:
        return self._getLeader()

    # -------------------------------------------------------------------- observability

    def observations(self) -> dict[str, Any]:
        """What coreplane.obs reads at scrape time, plain data, any thread: the journal's
        stats and flush latency, commit latency, terms seen (age in seconds, term; newest
        last), leader changes seen, the wire's counters and failed authentications by peer,
        and ``batches`` (``{"entries", "commands"}``: `batch_stats`)."""
        now = monotonic_s()
        journal = self._cp_journal
        out: dict[str, Any] = {
            "commit_latency": self._cp_commit_latency.snapshot(),
            "terms": [(now - at, term) for at, term in list(self._cp_terms)],
            "leader_changes": self._cp_leader_changes,
            # None until this node knew a leader: elections before it are start-up, not churn
            "first_leader_age_s": None
            if self._cp_first_leader_at is None
            else now - self._cp_first_leader_at,
            "journal": None,
            "flush_latency": None,
            "wire": {},
            "auth_failures": {},
            # on a leader: seconds since each follower last echoed a heartbeat stamp, and its
            # match index; a connected follower that stops echoing is cut off
            "ack_age_s": {},
            # batch entries this node wrote as leader and the proposals in them (coalescing)
            "batches": dict(zip(("entries", "commands"), self.batch_stats(), strict=True)),
        }
        if self._isLeader():
            acks = dict(self._cp_acks)
            others = list(self._SyncObj__otherNodes)  # type: ignore[attr-defined]
            match = dict(self._SyncObj__raftMatchIndex)  # type: ignore[attr-defined]
            out["ack_age_s"] = {
                str(n.id): None if n not in acks else now - acks[n] for n in others
            }  # None: no echo this leadership
            out["match_index"] = {str(n.id): int(match.get(n, 0)) for n in others}
        if journal is not None:
            stats = getattr(journal, "stats", None)
            hist = getattr(journal, "flush_latency", None)
            with contextlib.suppress(Exception):  # a closed journal has no stats
                out["journal"] = stats() if stats is not None else None
            out["flush_latency"] = hist.snapshot() if hist is not None else None
        transport = getattr(self, "_SyncObj__transport", None)
        for name, key in (("stats", "wire"), ("auth_failures", "auth_failures")):
            fn = getattr(transport, name, None)
            if fn is not None:
                out[key] = dict(fn())
        return out

    def term(self) -> int:
        return int(self._getTerm())

    def safe_status(self) -> dict[str, Any]:
        """getStatus() read from another thread; retried if a dict changes under it."""
        for _ in range(5):
            try:
                return dict(self.getStatus())
            except RuntimeError:  # "dictionary changed size during iteration"
                continue
        return {}

    def add_voter(self, node: Node, callback: Callable[[Any, int], None]) -> None:
        self.addNodeToCluster(node, callback=callback)

    def remove_voter(self, node: Node, callback: Callable[[Any, int], None]) -> None:
        self.removeNodeFromCluster(node, callback=callback)

    def transfer_leadership(self, callback: Callable[[Any, int], None]) -> None:
        """Hand leadership to the most caught-up follower (Raft TimeoutNow); leader only.

        This leader stops acting at once (its lease is revoked for two election timeouts):
        the voters will elect the target without waiting for their stickiness to run out."""
        self.revoke_lease(2 * float(self.conf.raftMaxTimeout))

        def done(result: Any, code: int) -> None:
            if code != FAIL.SUCCESS:
                self.revoke_lease(-1.0)  # nothing was sent: act again
            callback(result, code)

        # pysyncobj's transport is not thread-safe: send from the tick thread.
        self._cp_tick_calls.append(lambda: self.transferLeadership(None, callback=done))
        self._cp_wake()

    def wait_bound(self) -> bool:
        """Block until the transport listens, or its bind retries ran out (False)."""
        try:
            self.waitBinded()
        except Exception:  # noqa: BLE001 - pysyncobj raises SyncObjException('BindError')
            return False
        return True

    def connected_peers(self) -> list[Node]:
        """Voters this node has a live connection to."""
        return [n for n in self.otherNodes if self.isNodeConnected(n)]

    def members(self) -> set[Node]:
        """Voters as this node sees them, itself included."""
        return {*self.otherNodes, self.selfNode}

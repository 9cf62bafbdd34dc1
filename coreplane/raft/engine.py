"""The pysyncobj engine adapter: one SyncObj subclass, its config, its journal and snapshots.

This is the only place the runtime touches pysyncobj. The engine knows the core only through
two seams: ``apply_fn(data: bytes, index: int) -> result`` called in log order on the tick
thread, and a `SnapshotSource` (``snapshot() -> bytes`` / ``restore(bytes)``) used when the log
is compacted or a snapshot arrives from the leader. Commands are opaque codec bytes here.

Why the shape:
- exactly one replicated entry point (`apply_entry`), because pysyncobj numbers replicated
  methods by their sorted names; one name means one id forever;
- the core's state is never pickled: with an `LmdbJournal`, pysyncobj's Serializer is replaced
  (through `seams.journal_factory`) by `serialization.SnapshotSerializer`, which stores the
  source's bytes in LMDB next to the log and streams them to lagging followers; pysyncobj's own
  ``__dict__`` capture is ignored (attributes set before ``SyncObj.__init__`` are not in it);
- group commit: the journal is flushed before the wire sends anything (the transport's
  ``on_before_send``) and at the end of every tick;
- no private (name-mangled) pysyncobj method is overridden; only its public and single-underscore
  methods are called (`getStatus`, `_isLeader`, `_getLeader`, `_getTerm`, `transferLeadership`).
  One upstream behaviour is corrected from outside: the journal is wrapped in
  `engine_overrides.ConflictAwareLog`, so a follower truncates its log only on a term conflict;
- the engine stays constructible with ``auto_tick=False`` and an injected transport class and
  journal, so a simulation can drive ``doTick()`` by hand.

Must not import coreplane.runtime (layers point down).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.node import Node

from coreplane.errors import InvalidArgument
from coreplane.raft import seams, serialization
from coreplane.raft.engine_overrides import ConflictAwareLog
from coreplane.raft.journal import LmdbJournal, snapshot_marker_path
from coreplane.raft.wire import PeerNode, make_transport_class

__all__ = [
    "FAIL",
    "EngineTiming",
    "PeerNode",
    "RaftEngine",
    "SnapshotSource",
    "build_conf",
    "make_transport_class",
    "open_journal",
    "snapshot_marker_path",
]

logger = logging.getLogger(__name__)

ROLE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}


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


class SnapshotSource(Protocol):
    """What the engine needs from the state it replicates to compact the log.

    `snapshot_view` runs on the tick thread at exactly the snapshot's index and must be cheap
    (capture, not encode); the bytes it promises are produced on the snapshot writer thread.
    """

    def snapshot_view(self) -> Callable[[], bytes]: ...

    def restore(self, data: bytes) -> None: ...


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
    # check-quorum: a leader that has not heard from a quorum for this long steps down. Shorter
    # than the minimum election timeout by a heartbeat and a tick, so a partitioned leader
    # stops acting before the majority side can have elected a new one.
    leader_lease_ms: int = 0  # 0 = election_timeout_ms_min - heartbeat_ms - auto_tick_ms

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
        if self.leader_lease_ms:
            return self.leader_lease_ms
        floor = 2 * self.heartbeat_ms + 1  # pysyncobj needs it above the heartbeat period
        return max(floor, self.election_timeout_ms_min - self.heartbeat_ms - self.auto_tick_ms)


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


def open_journal(path: str, *, node_id: str, cluster_id: str,
                 durability: str = "fsync") -> LmdbJournal:
    """The node's LMDB journal (log, term/vote, snapshots); CorruptData if foreign/damaged."""
    return LmdbJournal(path, node_id=node_id, cluster_id=cluster_id, durability=durability)


@contextlib.contextmanager
def _journal_installed(
    journal: Any | None,
    capture: Callable[[], Callable[[], bytes]] | None,
    restore: Callable[[bytes], None] | None,
) -> Iterator[seams.Installed | None]:
    """Give the SyncObj built inside this block `journal` and, with it, snapshots in LMDB."""
    if journal is None:
        yield None
        return

    def serializer_factory(j: Any, _file: Any, batch: int, *_rest: Any) -> Any:
        return serialization.SnapshotSerializer(j, capture=capture, restore=restore,
                                                transmission_batch_bytes=batch)

    with seams.journal_factory(lambda _path: journal,
                               serializer_factory=serializer_factory) as installed:
        yield installed


class RaftEngine(SyncObj):
    """pysyncobj SyncObj with one replicated entry point taking codec bytes.

    `apply_fn(data, index)` runs on the tick thread in log order; its return value is handed
    to the proposer's callback on the node that proposed (results never cross the wire).
    """

    def __init__(
        self,
        *,
        self_node: Node | str,
        other_nodes: Iterable[Node | str],
        conf: SyncObjConf,
        apply_fn: Callable[[bytes, int], Any],
        transport_class: type | None = None,
        journal: Any | None = None,
        snapshot_source: SnapshotSource | None = None,
        node_class: type = PeerNode,
    ) -> None:
        """With `journal` (an LmdbJournal), snapshots of `snapshot_source` are stored in it
        (conf.fullDumpFile must be its marker path); without, conf's own hooks apply."""
        # Set before SyncObj.__init__: excluded from pysyncobj's own snapshot capture.
        self._apply_fn = apply_fn
        if journal is not None:
            journal = ConflictAwareLog(journal)  # truncate on term conflicts only (Raft §5.3)
        self._cp_journal = journal
        self._cp_installed: list[Any] = []
        serialization.install()  # idempotent; nothing pysyncobj stores or sends is pickled
        kwargs: dict[str, Any] = {"nodeClass": node_class}
        if transport_class is not None:
            kwargs["transportClass"] = transport_class
        capture = restore = None
        if journal is not None and snapshot_source is not None:
            source = snapshot_source

            capture = source.snapshot_view  # tick thread: capture; writer thread: encode
            restore = source.restore
        with _journal_installed(journal, capture, restore) as installed:
            super().__init__(self_node, list(other_nodes), conf, **kwargs)
        if installed is not None:
            self._cp_installed.append(installed)
        if journal is not None:
            self.addOnTickCallback(journal.flush)  # group commit at the end of every tick

    def wait_snapshot_writer(self, timeout_s: float = 10.0) -> bool:
        """Let a running snapshot write finish (shutdown); True if none is running."""
        for installed in self._cp_installed:
            waiter = getattr(installed.serializer, "wait", None)
            if waiter is not None and not waiter(timeout_s):
                return False
        return True

    @replicated
    def apply_entry(self, data: bytes) -> Any:
        """The one replicated method: apply codec bytes at the entry's log index."""
        # pysyncobj increments raftLastApplied right after this call returns.
        return self._apply_fn(bytes(data), self.raftLastApplied + 1)

    def propose(self, data: bytes, callback: Callable[[Any, int], None]) -> None:
        """Queue codec bytes for replication; callback(result, fail_code) on the tick thread."""
        self.apply_entry(data, callback=callback)

    # -------------------------------------------------------------------- read-only views
    # Methods, not properties: SyncObj.__init__ getattr()s every name in dir(self) while
    # looking for replicated methods, before its own attributes exist.

    def is_leader(self) -> bool:
        return bool(self._isLeader())

    def leader_node(self) -> Node | None:
        return self._getLeader()

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
        """Hand leadership to the most caught-up follower (Raft TimeoutNow); leader only."""
        self.transferLeadership(None, callback=callback)

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

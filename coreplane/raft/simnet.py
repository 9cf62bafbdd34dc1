"""pysyncobj on a simulated network, clock and disk: the raft half of `coreplane.testing`.

A simulation drives real `RaftEngine`s (``autoTick=False``, ``doTick()`` by hand) in one thread.
Everything pysyncobj would otherwise take from the machine is swapped here, and only for as
long as a `SimEnvironment` is entered:

- ``pysyncobj.syncobj.monotonicTime`` -> the simulated clock of the node being stepped;
- ``pysyncobj.syncobj.random`` -> the simulation's seeded ``random.Random`` (election timeouts);
- ``pysyncobj.syncobj.createPoller`` -> `SimPoller`, whose ``poll`` hands the node the messages
  the simulated network delivered to it (where a real poller would read sockets);
- ``pysyncobj.syncobj.PIPE_NOTIFIER_ENABLED`` -> False (no pipes; the harness wakes the node);
- ``coreplane.raft.serialization.threading`` -> a shim whose threads run inline, so a snapshot
  is written at a deterministic point instead of on a writer thread.

`SimTransport` is pysyncobj's transport seam: messages are encoded with the real wire codec
(`serialization.dumps`), handed to a *hub* (the simulated network, which lives in
`coreplane.testing` and decides delays, drops and partitions) and decoded on delivery.

`SimDisk` / `SimJournal` implement pysyncobj's journal interface (and the snapshot interface of
`LmdbJournal`) in memory with the durability of a real disk: writes are "written" until
`flush` makes them durable; `SimDisk.crash()` keeps only what was durable. Switches reproduce
storage bugs on purpose (the canaries of `coreplane.testing`): ``fsync=False`` never makes
anything durable, ``vote_durable=False`` persists term and vote only once a second.

Owns: module-global swaps of pysyncobj for simulation. Imports pysyncobj and raft modules only.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pysyncobj.syncobj
from pysyncobj.transport import Transport

from coreplane.errors import CorruptData, InvariantViolation
from coreplane.raft import serialization
from coreplane.raft.journal import Entry, Snapshot

__all__ = [
    "SimDisk",
    "SimEnvironment",
    "SimJournal",
    "SimPoller",
    "SimTransport",
    "crash_journal",
    "make_sim_transport_class",
]


# ------------------------------------------------------------------------ environment


class _InlineThread:
    """A thread that runs its target in ``start()``: snapshot writes at a fixed point."""

    def __init__(self, target: Callable[[], None], name: str = "", daemon: bool = True) -> None:
        self._target = target

    def start(self) -> None:
        self._target()

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        return None


class _InlineThreading:
    Thread = _InlineThread


class SimPoller:
    """pysyncobj's poller during a simulation: no file descriptors; `poll` drains the inbox."""

    def __init__(self) -> None:
        self.drain: Callable[[], int] | None = None
        self.delivered = 0

    def subscribe(self, descr: Any, callback: Any, eventMask: int) -> None:
        return None

    def unsubscribe(self, descr: Any) -> None:
        return None

    def poll(self, timeout: float) -> None:
        self.delivered = self.drain() if self.drain is not None else 0


class _Random:
    """Stands in for the `random` module inside pysyncobj.syncobj."""

    def __init__(self, source: Callable[[], float]) -> None:
        self.random = source


class SimEnvironment:
    """Swap pysyncobj's clock, randomness and poller while entered; re-entrant; restores all.

    `clock()` returns the simulated monotonic time in seconds of the node being stepped;
    `random()` returns floats in [0, 1) from the simulation's seeded generator.
    """

    def __init__(self, clock: Callable[[], float], random: Callable[[], float]) -> None:
        self._swaps: dict[tuple[Any, str], Any] = {
            (pysyncobj.syncobj, "monotonicTime"): clock,
            (pysyncobj.syncobj, "random"): _Random(random),
            (pysyncobj.syncobj, "createPoller"): lambda _kind=None: SimPoller(),
            (pysyncobj.syncobj, "PIPE_NOTIFIER_ENABLED"): False,
            (serialization, "threading"): _InlineThreading,
        }
        self._saved: dict[tuple[Any, str], Any] = {}
        self._depth = 0

    def __enter__(self) -> SimEnvironment:
        if self._depth == 0:
            serialization.install()
            for (module, name), value in self._swaps.items():
                self._saved[(module, name)] = getattr(module, name)
                setattr(module, name, value)
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            for (module, name), value in self._saved.items():
                setattr(module, name, value)
            self._saved.clear()


# ------------------------------------------------------------------------ transport


class SimTransport(Transport):  # type: ignore[misc]
    """An in-memory transport: sends go to the hub, deliveries arrive in `poll`.

    The hub (``hub.attach(node_id, transport)``, ``hub.send(src, dst, payload)``,
    ``hub.detach(node_id)``) calls `sim_receive` and `sim_link` on it.
    """

    hub: Any = None
    node_id: str = ""
    on_before_send: Callable[[], None] | None = None

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        self._peers: dict[str, Any] = {str(n.id): n for n in otherNodes}
        self._connected: set[str] = set()
        self._inbox: list[tuple[str, str, Any]] = []
        self.sent = 0
        poller = getattr(syncObj, "_poller", None)
        if not isinstance(poller, SimPoller):
            raise InvariantViolation("SimTransport needs a SimEnvironment to be entered")
        poller.drain = self._drain
        self.hub.attach(self.node_id, self)

    # pysyncobj's interface
    def tryGetReady(self) -> None:
        return None

    @property
    def ready(self) -> bool:
        return True

    def waitReady(self) -> None:
        return None

    def addNode(self, node: Any) -> None:
        self._peers[str(node.id)] = node

    def dropNode(self, node: Any) -> None:
        self._peers.pop(str(node.id), None)
        if str(node.id) in self._connected:
            self._connected.discard(str(node.id))
            self._onNodeDisconnected(node)

    def send(self, node: Any, message: Any) -> bool:
        peer = str(node.id)
        if peer not in self._connected:
            return False
        if self.on_before_send is not None:
            self.on_before_send()  # group commit: durable before anything leaves
        self.hub.send(self.node_id, peer, serialization.dumps(message))
        self.sent += 1
        return True

    def destroy(self) -> None:
        self.hub.detach(self.node_id)

    # the hub's interface
    def sim_receive(self, src: str, payload: bytes) -> None:
        self._inbox.append(("m", src, payload))

    def sim_link(self, peer: str, up: bool) -> None:
        self._inbox.append(("c", peer, up))

    def sim_pending(self) -> int:
        return len(self._inbox)

    def connected(self) -> list[str]:
        return sorted(self._connected)

    def _drain(self) -> int:
        inbox, self._inbox = self._inbox, []
        delivered = 0
        for kind, src, item in inbox:
            node = self._peers.get(src)
            if node is None:
                continue
            if kind == "c":
                if item and src not in self._connected:
                    self._connected.add(src)
                    self._onNodeConnected(node)
                elif not item and src in self._connected:
                    self._connected.discard(src)
                    self._onNodeDisconnected(node)
                continue
            if src not in self._connected:
                continue  # a message from before the connection dropped
            delivered += 1
            self._onMessageReceived(node, serialization.loads(item))
        return delivered


def make_sim_transport_class(
    hub: Any, node_id: str, on_before_send: Callable[[], None] | None = None
) -> type:
    """A `SimTransport` subclass bound to one hub and node, for ``transportClass=``."""
    return type(
        "BoundSimTransport",
        (SimTransport,),
        {
            "hub": hub,
            "node_id": node_id,
            "on_before_send": staticmethod(on_before_send) if on_before_send is not None else None,
        },
    )


# ------------------------------------------------------------------------ disk and journal


def _crc(entry: Entry) -> int:
    return zlib.crc32(entry[0], zlib.crc32(b"%d:%d" % (entry[1], entry[2])))


@dataclass
class SimDisk:
    """What survives a crash: the durable log (with checksums), term/vote, commit, snapshot.

    Bit flips land here (`flip_bit`) and are found by the checksum when the journal reopens.
    """

    first: int = 1
    log: list[tuple[bytes, int, int, int]] = field(default_factory=list)  # + crc
    term: int = 0
    voted_for: Any = None
    commit: int = 1
    snapshot: Snapshot | None = None
    opened: int = 0

    def flip_bit(self, position: int, bit: int) -> bool:
        """Flip one bit of the command of the stored entry at list `position`; False if none."""
        if not self.log:
            return False
        pos = position % len(self.log)
        command, idx, term, crc = self.log[pos]
        if not command:
            return False
        data = bytearray(command)
        data[bit // 8 % len(data)] ^= 1 << (bit % 8)
        self.log[pos] = (bytes(data), idx, term, crc)
        return True


class SimJournal:
    """pysyncobj's journal over a `SimDisk`: memory is what was written, the disk what synced.

    ``fsync=False`` (a canary) makes `flush` a no-op; ``vote_durable=False`` (a canary) keeps
    term and vote out of `flush` and `setCurrentTerm`, persisting them once a second only.
    `marker_path` is the file pysyncobj checks at its first tick to load the snapshot.
    """

    def __init__(
        self,
        disk: SimDisk,
        *,
        marker_path: str | None = None,
        fsync: bool = True,
        vote_durable: bool = True,
    ) -> None:
        self.disk = disk
        self.fsync = fsync
        self.vote_durable = vote_durable
        self.marker_path = marker_path
        disk.opened += 1
        for command, idx, term, crc in disk.log:
            if _crc((command, idx, term)) != crc:
                raise CorruptData(f"simulated journal entry {idx} failed its checksum")
        self._first = disk.first
        self._log: list[Entry] = [(c, i, t) for c, i, t, _ in disk.log]
        self._term, self._voted_for, self._commit = disk.term, disk.voted_for, disk.commit
        self._snapshot = disk.snapshot
        self._dirty_pos: int | None = None  # first list position not yet on disk
        self._rewrite = False  # the prefix moved: rewrite the whole disk log at flush
        self._meta_dirty = False
        if self._snapshot is not None:
            self._apply_snapshot_floor(self._snapshot)
        self._touch_marker()

    def _apply_snapshot_floor(self, snap: Snapshot) -> None:
        """As `LmdbJournal` at open: keep the log from the snapshot's boundary, or reset to it."""
        prev, last = snap.prev_entry, snap.last_entry
        pos = prev[1] - self._first
        if (
            pos >= 0
            and pos + 1 < len(self._log)
            and self._log[pos] == prev
            and self._log[pos + 1] == last
        ):
            if pos:
                del self._log[:pos]
                self._first = prev[1]
                self._rewrite = True
            return
        self._log, self._first, self._rewrite = [prev, last], prev[1], True

    def _touch_marker(self) -> None:
        if self.marker_path is None:
            return
        exists = os.path.exists(self.marker_path)
        if self._snapshot is not None and not exists:
            os.makedirs(os.path.dirname(self.marker_path), exist_ok=True)
            with open(self.marker_path, "wb"):
                pass
        elif self._snapshot is None and exists:
            os.remove(self.marker_path)

    # ------------------------------------------------------------ reads
    def __len__(self) -> int:
        return len(self._log)

    def __getitem__(self, item: Any) -> Any:
        return self._log[item]

    def __iter__(self) -> Any:
        return iter(self._log)

    # ------------------------------------------------------------ writes
    def _dirty(self, pos: int) -> None:
        if self._dirty_pos is None or pos < self._dirty_pos:
            self._dirty_pos = pos

    def add(self, command: bytes, idx: int, term: int) -> None:
        if isinstance(command, str):
            command = command.encode("utf-8")
        if self._log and idx != self._log[-1][1] + 1:
            raise InvariantViolation(f"journal append of index {idx} after {self._log[-1][1]}")
        if not self._log:
            self._first = idx
            self._rewrite = True
        self._dirty(len(self._log))
        self._log.append((bytes(command), idx, term))

    def clear(self) -> None:
        self._log = []
        self._rewrite = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if entryFrom >= len(self._log):
            return
        entryFrom = max(0, entryFrom)
        del self._log[entryFrom:]
        self._dirty(entryFrom)

    def deleteEntriesTo(self, entryTo: int) -> None:
        if entryTo <= 0:
            return
        entryTo = min(entryTo, len(self._log))
        del self._log[:entryTo]
        if self._log:
            self._first = self._log[0][1]
        self._rewrite = True

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self._commit = raftCommitIndex

    def getRaftCommitIndex(self) -> int:
        return self._commit

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        """Durable at once (a vote goes out right after), unless the vote canary is on."""
        self._term, self._voted_for = term, votedForNodeId
        self._meta_dirty = True
        if self.vote_durable:
            self.flush()

    def getCurrentTerm(self) -> int:
        return self._term

    def getVotedForNodeId(self) -> Any:
        return self._voted_for

    def onOneSecondTimer(self) -> None:
        self.flush()
        if not self.vote_durable and self.fsync:
            self.disk.term, self.disk.voted_for = self._term, self._voted_for
            self._meta_dirty = False

    def flush(self) -> None:
        """Make everything written so far durable (the group commit's fsync)."""
        if not self.fsync:
            return
        disk = self.disk
        if self._rewrite:
            disk.log = [(c, i, t, _crc((c, i, t))) for c, i, t in self._log]
            disk.first = self._first
        elif self._dirty_pos is not None:
            pos = self._dirty_pos
            del disk.log[pos:]
            disk.log.extend((c, i, t, _crc((c, i, t))) for c, i, t in self._log[pos:])
        self._rewrite, self._dirty_pos = False, None
        disk.commit = self._commit
        if self._meta_dirty and self.vote_durable:
            disk.term, disk.voted_for = self._term, self._voted_for
            self._meta_dirty = False

    @property
    def dirty(self) -> bool:
        return self._rewrite or self._dirty_pos is not None or self._meta_dirty

    # ------------------------------------------------------------ snapshots (LmdbJournal's)
    def save_snapshot(self, payload: bytes, *, last_entry: Entry, prev_entry: Entry) -> bool:
        """Store a snapshot durably (as LmdbJournal does); False if a later one is stored."""
        current = self._snapshot
        if current is not None and current.last_entry[1] > last_entry[1]:
            return False
        snap = Snapshot(bytes(payload), tuple(last_entry), tuple(prev_entry))  # type: ignore[arg-type]
        self._snapshot = snap
        if self.fsync:
            self.disk.snapshot = snap
        self._touch_marker()
        return True

    def load_snapshot(self) -> Snapshot | None:
        return self._snapshot

    def close(self) -> None:
        """A clean shutdown flushes; a crash is `SimDisk` without this call."""
        self.flush()

    def _destroy(self) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        return {
            "first_index": self._first,
            "entries": len(self._log),
            "durable_entries": len(self.disk.log),
        }


def crash_journal(journal: Any) -> None:
    """Drop a journal as kill -9 would: nothing written since the last flush reaches disk.

    A `SimJournal` is simply forgotten (its `SimDisk` keeps what was durable); an
    `LmdbJournal` closes its environment without the flush that `close` would do.
    """
    from coreplane.raft.journal import LmdbJournal

    inner = getattr(journal, "_journal", journal)  # unwrap ConflictAwareLog
    if isinstance(inner, LmdbJournal):
        inner.abandon()  # no final flush; its lock goes as the OS would drop it

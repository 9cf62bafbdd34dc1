"""Every place coreplane reaches into pysyncobj 0.3.17 beyond its public API, in one module.

pysyncobj has no constructor argument for the journal or the snapshot serializer: `SyncObj.
__init__` calls the module globals ``pysyncobj.syncobj.createJournal(conf.journalFile)`` and
``pysyncobj.syncobj.Serializer(...)`` once each, before its tick thread starts. `journal_factory`
swaps those names for the duration of one constructor, under a process-wide lock so that two
nodes built at once in one process (tests, simulations) cannot pick up each other's journal.
The pickle swap lives in `serialization.install`; this module records what it replaces too.

`UPSTREAM` pins the source of every upstream function whose behaviour these swaps and the
journal's interface rely on (sha256 of ``inspect.getsource``); `check_upstream` reports what
changed, and a test fails on any difference, so a pysyncobj upgrade is a deliberate act.

Owns: module-global swaps and private-name overrides of pysyncobj. Imports pysyncobj only.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pysyncobj.fast_queue
import pysyncobj.journal
import pysyncobj.pickle
import pysyncobj.serializer
import pysyncobj.syncobj
import pysyncobj.tcp_connection
import pysyncobj.version

from coreplane.errors import InvalidArgument, InvariantViolation

__all__ = ["PINNED_VERSION", "UPSTREAM", "Installed", "check_upstream", "journal_factory"]

PINNED_VERSION = "0.3.17"

# name -> sha256 of inspect.getsource(object) in pysyncobj 0.3.17 as installed here.
# What each one is to us:
#   syncobj.createJournal .......... swapped by journal_factory
#   serializer.Serializer .......... swapped by journal_factory(serializer_factory=...)
#   journal.Journal ................ the interface LmdbJournal implements
#   pickle (module) ................ dumps/loads/dump/load replaced by serialization.install
#   SyncObj.__init__ ............... calls createJournal before Serializer, once each
#   SyncObj._onTick ................ loads the dump iff os.path.isfile(conf.fullDumpFile)
#   SyncObj.__loadDumpFile ......... the snapshot tuple (data, last, prev, cluster) it expects
#   SyncObj.__tryLogCompaction ..... serialize()/checkSerializing() protocol, deleteEntriesTo
#   SyncObj.__getEntries ........... slices the journal with list positions
#   SyncObj.__deleteEntriesFrom/To . positions, not Raft indexes
#   SyncObj.__setCurrentTerm ....... journal.setCurrentTerm before any vote is sent
#   SyncObj.__doApplyCommand ....... pickle.loads of commands
#   SyncObj.__parseChangeClusterRequest  pickle.loads of membership changes
#   SyncObj.__onMessageReceived .... pickle.loads of large entries, setTransmissionData
#   SyncObj.__sendAppendEntries .... pickle.dumps of large entries, getTransmissionData
#   TcpConnection.send / __processParseMessage  zlib(pickle(message)) frames
# Overridden or relied on by engine_overrides (lease, log safety, batching, no wedge):
#   SyncObj.__onBecomeLeader / __onNodeDisconnected / __setState / _checkCommandsToApply /
#     _applyCommand overridden; FastQueue's private deque and lock are used by the
#     _applyCommand override
#   SyncObj.__doChangeCluster / __getPrevLogIndexTerm  called by the overrides
#   SyncObj._autoTickThread ........ logs and retries a failing tick (the wedge we bound)
#   SyncObj.transferLeadership ..... sends timeout_now; the target clears its flag before voting
#   SyncObj.__applyLogEntries ...... overridden (bounded per tick): it reads its entries with
#     one __getEntries call, iterates them once and bumps raftLastApplied inside the loop body,
#     after each entry's callbacks (ReadIndex waits; stopping the iteration stops cleanly)
#   SyncObj.__getEntries ........... overridden: the apply's own read comes back bounded
# One pinned hash per entry, each on the line below its name (kept out of the formatter).
# fmt: off
UPSTREAM: dict[str, str] = {
    "pysyncobj.syncobj.createJournal":
        "9ea9e463ae2a0b8bc28887a9cc9ec1f58b2b789c33a2f88973182d69a47d1169",
    "pysyncobj.serializer.Serializer":
        "b5577a63525f536df807e63fdab2f0ec7e1ae571578435d1d5b03f25ca7a346c",
    "pysyncobj.journal.Journal":
        "8375f2a66c8600e60941150f83d63fdc29c547bf8bc1aaca18edde38e12a7f03",
    "pysyncobj.pickle":
        "e9327780738065cec5d600484b936c91e7c13875206cb584d5ff7f5d0dc9c474",
    "SyncObj.__init__":
        "09df12cd7fd7d7270fee82c1a025acc1f3a68e98dafbad81be467947ab95cbf0",
    "SyncObj._onTick":
        "cc9eb08232d005ba4e21a33ec453e5d02fe3537dadebda8571406c57f65a3c37",
    "SyncObj.__loadDumpFile":
        "ec66e83905de703bcead2735be875e71870a6bbe271c854867611e555a90bbba",
    "SyncObj.__tryLogCompaction":
        "c2f8a0ec14cc7312e3ff41a16cde9be71ff0f908bd66aec9e2673d97a775be2c",
    "SyncObj.__getEntries":
        "e29c4b33293b21018d1124c7e5835748c4c8092f7ce4af9e86f24633ccec7e0e",
    "SyncObj.__deleteEntriesFrom":
        "3b23c411bb903d365575a2783d536e04c23bcf11cb7ddffa763915b4efd3831b",
    "SyncObj.__deleteEntriesTo":
        "b7b29988856a66b359c875b708f9dd8a056d29436507013592f5ec307e624faa",
    "SyncObj.__setCurrentTerm":
        "0ad5bf456ac06bd314d2dbc8991c6b6240e63bf33aaa975620aa84a7079d5f39",
    "SyncObj.__doApplyCommand":
        "1ea7aa506e950d0aecc7aa7ea750a6fc1164cbff9b208784fe4724dfe1ec91dc",
    "SyncObj.__parseChangeClusterRequest":
        "b2d5d695b12e592fd32dc956415884096f7d13cd8f7b2cf69d4b8d3c2bb0178f",
    "SyncObj.__onMessageReceived":
        "ddfe34b6c02821795146dc533fb7c0fcf6574a082a68a227b4c885c9e14be206",
    "SyncObj.__sendAppendEntries":
        "9cb9073128c392fa9e5efc4691420ba435bfafb4c74e83a34f931fa16aa760c6",
    "SyncObj.__onBecomeLeader":
        "5a3fd97bc17dc1cf3070b007538b6a8d46adb71f0b6523f3922dc953420645e8",
    "SyncObj.__onNodeDisconnected":
        "a81c0475ba2218cc4732ab756b39e64ec22e8d9f3ff5987bc34649f9a2536c95",
    "SyncObj._checkCommandsToApply":
        "a386a8079361d204f2c11f895416548c432a254671a9114258921c25108a966e",
    "SyncObj.__doChangeCluster":
        "247d4d4101b8cd3ce82232ec9cf69d3556c78df7e6d0002a277d38676e630350",
    "SyncObj.__getPrevLogIndexTerm":
        "6766914806ae2311c345dc6307143c7e379adea0f80e1887c226f8a95ad225af",
    "SyncObj.__setState":
        "2c1f239f7bd79b3945b63418b4f564c40c07893d3cf747af2ddd5c6a045093a8",
    "SyncObj._autoTickThread":
        "0edc1a54be46aed237703fca428ad482f0a8a626c1865cb12ba4e7b58946cc8d",
    "SyncObj.transferLeadership":
        "c3ac67963962d9aa847c52e6331403ca86596707869eced2438472b7ccd3fae2",
    "SyncObj.__applyLogEntries":
        "073db677773b5a2dddf17cc51f84ac8803ed456da0f0011e15240d6bd1600684",
    "SyncObj._applyCommand":
        "827f207d515b2d64cce9033f558ca15033e8886cd917b96a29c888327403bbe2",
    "SyncObj.__callErrCallback":
        "6037c14ef64c2763bde217077685c080da70a6f0a7823940793ac0e9e70e78ed",
    "pysyncobj.fast_queue.FastQueue":
        "0206b57b148b047d1335f1ccb06dbaa75e9bbb588c75fcf4147521e2ab738beb",
    "TcpConnection.send":
        "cb29077c32990abb055f388a1bad7fc94d1f2a20d9513698f09ebba8804520a6",
    "TcpConnection.__processParseMessage":
        "4ecbfdad3baa2eacb0ad8d561281110fa5b06a3cd1f221614c31e4dc6e5a32ae",
}
# fmt: on


def _targets() -> dict[str, Any]:
    sync_obj = pysyncobj.syncobj.SyncObj
    conn = pysyncobj.tcp_connection.TcpConnection
    return {
        "pysyncobj.syncobj.createJournal": pysyncobj.journal.createJournal,
        "pysyncobj.serializer.Serializer": pysyncobj.serializer.Serializer,
        "pysyncobj.journal.Journal": pysyncobj.journal.Journal,
        "pysyncobj.pickle": pysyncobj.pickle,
        "SyncObj.__init__": sync_obj.__init__,
        "SyncObj._onTick": sync_obj._onTick,
        "SyncObj.__loadDumpFile": sync_obj._SyncObj__loadDumpFile,
        "SyncObj.__tryLogCompaction": sync_obj._SyncObj__tryLogCompaction,
        "SyncObj.__getEntries": sync_obj._SyncObj__getEntries,
        "SyncObj.__deleteEntriesFrom": sync_obj._SyncObj__deleteEntriesFrom,
        "SyncObj.__deleteEntriesTo": sync_obj._SyncObj__deleteEntriesTo,
        "SyncObj.__setCurrentTerm": sync_obj._SyncObj__setCurrentTerm,
        "SyncObj.__doApplyCommand": sync_obj._SyncObj__doApplyCommand,
        "SyncObj.__parseChangeClusterRequest": sync_obj._SyncObj__parseChangeClusterRequest,
        "SyncObj.__onMessageReceived": sync_obj._SyncObj__onMessageReceived,
        "SyncObj.__sendAppendEntries": sync_obj._SyncObj__sendAppendEntries,
        "SyncObj.__onBecomeLeader": sync_obj._SyncObj__onBecomeLeader,
        "SyncObj.__onNodeDisconnected": sync_obj._SyncObj__onNodeDisconnected,
        "SyncObj._checkCommandsToApply": sync_obj._checkCommandsToApply,
        "SyncObj.__doChangeCluster": sync_obj._SyncObj__doChangeCluster,
        "SyncObj.__getPrevLogIndexTerm": sync_obj._SyncObj__getPrevLogIndexTerm,
        "SyncObj.__setState": sync_obj._SyncObj__setState,
        "SyncObj._autoTickThread": sync_obj._autoTickThread,
        "SyncObj.transferLeadership": sync_obj.transferLeadership,
        "SyncObj.__applyLogEntries": sync_obj._SyncObj__applyLogEntries,
        "SyncObj._applyCommand": sync_obj._applyCommand,
        "SyncObj.__callErrCallback": sync_obj._SyncObj__callErrCallback,
        "pysyncobj.fast_queue.FastQueue": pysyncobj.fast_queue.FastQueue,
        "TcpConnection.send": conn.send,
        "TcpConnection.__processParseMessage": conn._TcpConnection__processParseMessage,
    }


def source_hash(obj: Any) -> str:
    """sha256 of an object's source as Python sees it (module, class or function)."""
    return hashlib.sha256(inspect.getsource(obj).encode("utf-8")).hexdigest()


def current_hashes() -> dict[str, str]:
    """The hashes of the installed pysyncobj, for `UPSTREAM` and for a failing test's diff."""
    return {name: source_hash(obj) for name, obj in _targets().items()}


def check_upstream() -> list[str]:
    """What differs from the pinned pysyncobj; an empty list means every seam still holds."""
    problems = []
    version = pysyncobj.version.VERSION
    if version != PINNED_VERSION:
        problems.append(f"pysyncobj version {version}, pinned {PINNED_VERSION}")
    hashes = current_hashes()
    for name in sorted(set(UPSTREAM) | set(hashes)):
        if UPSTREAM.get(name) != hashes.get(name):
            problems.append(f"{name}: source changed (now {hashes.get(name)})")
    return problems


# ------------------------------------------------------------------------ construction swap


@dataclass
class Installed:
    """What one `journal_factory` block built: the journal and serializer SyncObj got."""

    journal: Any = None
    serializer: Any = None


_construct_lock = threading.Lock()
_active: Installed | None = None
_journal_fn: Callable[[str | None], Any] | None = None
_serializer_fn: Callable[..., Any] | None = None


def _swapped_create_journal(journal_file: str | None = None) -> Any:
    if _active is None or _journal_fn is None:
        raise InvariantViolation("createJournal swap called outside journal_factory")
    if _active.journal is not None:
        raise InvariantViolation("SyncObj.__init__ called createJournal twice")
    _active.journal = _journal_fn(journal_file)
    return _active.journal


def _swapped_serializer(*args: Any, **kwargs: Any) -> Any:
    if _active is None:
        raise InvariantViolation("Serializer swap called outside journal_factory")
    if _serializer_fn is None:
        _active.serializer = _original_serializer(*args, **kwargs)
    else:
        if _active.journal is None:
            raise InvariantViolation("SyncObj.__init__ built its Serializer before its journal")
        _active.serializer = _serializer_fn(_active.journal, *args, **kwargs)
    return _active.serializer


_original_create_journal = pysyncobj.syncobj.createJournal
_original_serializer = pysyncobj.syncobj.Serializer


@contextlib.contextmanager
def journal_factory(
    factory: Callable[[str | None], Any],
    *,
    serializer_factory: Callable[..., Any] | None = None,
) -> Iterator[Installed]:
    """Give the `SyncObj` constructed inside this block its own journal (and serializer).

    ``factory(conf.journalFile)`` returns the journal; ``serializer_factory(journal,
    fileName, transmissionBatchSize, tryUseFork, serializer, deserializer, serializeChecker)``,
    if given, returns the object used in place of pysyncobj's `Serializer` (see
    `serialization.SnapshotSerializer`). Construct exactly one SyncObj inside the block.
    Holds a process-wide lock, so concurrent constructions run one after the other.
    """
    global _active, _journal_fn, _serializer_fn
    if not callable(factory):
        raise InvalidArgument("factory", "must be callable")
    if serializer_factory is not None and not callable(serializer_factory):
        raise InvalidArgument("serializer_factory", "must be callable or None")
    with _construct_lock:
        installed = Installed()
        _active, _journal_fn, _serializer_fn = installed, factory, serializer_factory
        pysyncobj.syncobj.createJournal = _swapped_create_journal
        pysyncobj.syncobj.Serializer = _swapped_serializer
        try:
            yield installed
        finally:
            pysyncobj.syncobj.createJournal = _original_create_journal
            pysyncobj.syncobj.Serializer = _original_serializer
            _active = _journal_fn = _serializer_fn = None


class _AppliedReplayFilter(logging.Filter):
    """pysyncobj logs CRITICAL "state machine may have diverged" whenever a follower is sent
    entries it has already applied again (a lost ack, a leader resending after a timeout) and
    rewinds its log to re-add them. By Raft's log matching property the re-sent committed
    entries equal the applied ones, and coreplane's journal only moves its end for such a
    rewind (nothing applied is undone), so under normal load that line was a false alarm.
    It is kept, reworded, at DEBUG; a real divergence shows as a state-hash mismatch."""

    PREFIX = "truncating already-applied log entries"

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(self.PREFIX):
            record.msg = (
                "re-receiving already-applied entries from index %d (last applied: "
                "%d); committed entries are identical by Raft's log matching"
            )
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("pysyncobj.syncobj").isEnabledFor(logging.DEBUG)
        return True


def _install_log_filter() -> None:
    upstream_logger = logging.getLogger("pysyncobj.syncobj")
    if not any(isinstance(f, _AppliedReplayFilter) for f in upstream_logger.filters):
        upstream_logger.addFilter(_AppliedReplayFilter())


_install_log_filter()

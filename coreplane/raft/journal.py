"""The Raft log, term/vote and snapshots of one node in one LMDB environment.

pysyncobj keeps its log in an mmap file it never syncs and its term, vote and snapshot in
separate files written without fsync; a journal without its dump file loses the compacted state
on restart. `LmdbJournal` implements pysyncobj's journal interface (list positions, not Raft
indexes) on LMDB instead:

- **Group commit.** `add` only appends to an in-memory tail; `flush` writes everything since
  the last flush in one write transaction. With ``durability="fsync"`` (default) LMDB syncs the
  data and meta pages before the commit returns, so an entry is durable before any ack, vote or
  leader send that the caller makes after `flush`. ``"relaxed"`` skips the meta-page sync: the
  store stays consistent but a power loss may undo the last batch. `setCurrentTerm` flushes at
  once because a vote must never be sent before its term and vote are durable. The commit
  index (Raft volatile state, a hint here) never makes a sync of its own: it is written with
  the next batch, or by the one-second timer, or at close.
- **Checksums.** Each entry is stored as ``crc32(key, term, command) | term | command`` and
  verified whenever it is read from LMDB (and, by default, all of them at open); a mismatch or a
  hole raises `CorruptData` naming the index. The entry is never returned, so never applied.
- **Full map or disk.** `MapFullError` grows the map (doubling, up to `map_size_max_bytes`) and
  retries the same transaction; past the cap, or on ENOSPC, `flush` raises `StorageFull` and
  keeps the batch in memory. A failed transaction is aborted whole, so nothing half-written is
  visible, and the next `flush` retries it. `storage_full` says whether the last write failed
  that way (the engine refuses proposals and sends nothing unsynced while it is set; the next
  successful flush clears it).
- **Identity.** A record of format version, node id and cluster id; a data dir written by
  another node or cluster, by something that is not this journal, or with a damaged record is
  refused with `CorruptData` / `InvalidArgument` naming the path; it is never reset. With
  ``create=False`` (the caller knows a journal was created here) a missing or empty journal is
  refused too: an empty journal forgets the term and vote, so the node could vote twice.
- **One owner.** An exclusive ``flock`` on ``owner.lock`` (holding the owner's pid) is taken
  before LMDB is opened and held until `close`; a second opener, in any process, is refused
  with `InvalidArgument` naming that pid. Nothing is ever deleted by a journal that does not
  hold it, and the garbage sweep deletes only keys LMDB already held outside the live range
  at open, or keys this journal's own truncations made garbage: an opener with a stale view of
  the log end can no longer delete entries written after it looked.
- **Truncated files.** Before mapping ``data.mdb``, both of LMDB's meta pages are read and
  ``(last page + 1) x page size`` is checked against the file size; a shorter file (the map
  would raise SIGBUS in the host process) is refused with `CorruptData`.
- **Snapshots.** `save_snapshot` writes the snapshot in chunked transactions (so a tick-thread
  `flush` waits for at most one chunk) and publishes it in one final transaction together with
  its last included entries. That publish is what compacts the log: at the next open every
  entry below the snapshot is dropped, and a log that disagrees with the snapshot is reset to it
  (Raft's InstallSnapshot rule). Physical deletion of compacted keys happens in small batches
  inside later flushes.

Owns: the LMDB environment of one node. Imports lmdb and pysyncobj's journal base only; no
pickle, no msgpack (meta records go through core.codec).
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, overload

import lmdb
import pysyncobj.journal

from coreplane.core.codec import decode_value, encode_value
from coreplane.errors import (
    CorruptData,
    DecodeError,
    InvalidArgument,
    InvariantViolation,
    StorageFull,
    Unavailable,
)

__all__ = ["FORMAT_VERSION", "Entry", "LmdbJournal", "Snapshot", "snapshot_marker_path"]

logger = logging.getLogger(__name__)

Entry: TypeAlias = tuple[bytes, int, int]  # (command, Raft index, term), as pysyncobj uses it
T = TypeVar("T")

FORMAT_VERSION = 1
MIB = 1024 * 1024
SNAPSHOT_MARKER = "snapshot.present"
OWNER_LOCK = "owner.lock"
_OWN_FILES = frozenset({"data.mdb", "lock.mdb", SNAPSHOT_MARKER, OWNER_LOCK})
_KEY = struct.Struct(">Q")
_HEAD = struct.Struct(">IQ")  # crc32, term
_CRC = struct.Struct(">I")
_GARBAGE_PER_FLUSH = 4096  # compacted keys deleted per flush: bounds the tick-thread cost
_LAZY_SLICE_MIN = 64  # longer slices that miss the cache are read lazily
_LAZY_BLOCK = 256  # entries read per LMDB transaction when iterating a lazy slice
_SNAPSHOT_CHUNK_BYTES = 1 * MIB
_ENOSPC = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NEARLY_FULL_BYTES = 1 * MIB
_LMDB_CORRUPT = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.InvalidError,
    lmdb.VersionMismatchError,
    lmdb.PanicError,
    lmdb.BadTxnError,
)
# LMDB's on-disk meta page (lmdb/mdb.c, 64-bit): a 16-byte page header (pgno, pad, flags, ...),
# then MDB_meta: magic, version, address, mapsize, two MDB_db records of 48 bytes (the first's
# leading pad field is the page size), last used page number, transaction id.
_PAGE_HEAD = struct.Struct("=QHH")
_META_HEAD = struct.Struct("=II")
_META_PSIZE = struct.Struct("=I")
_META_TAIL = struct.Struct("=QQ")
_META_PSIZE_AT, _META_TAIL_AT = 16 + 24, 16 + 120
_P_META = 0x08
_MDB_MAGIC = 0xBEEFC0DE
_LOST_JOURNAL_RECOVERY = (
    "starting with an empty journal would forget this node's term and vote (it could vote "
    "twice in one term), so it is refused. Recovery: remove the node from the cluster "
    "(remove_voter on a healthy node), empty its data dir, and add it back as a new voter "
    "(add_voter) with the empty data dir; it catches up from the leader"
)


def snapshot_marker_path(path: str) -> str:
    """The file that exists iff the journal at `path` holds a snapshot.

    Point ``SyncObjConf.fullDumpFile`` at it: pysyncobj loads a snapshot at its first tick only
    if that file exists. The journal recreates it from LMDB at open, so it is never the truth.
    """
    return os.path.join(path, SNAPSHOT_MARKER)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A stored snapshot: opaque payload plus the last two entries it includes."""

    payload: bytes
    last_entry: Entry
    prev_entry: Entry


class _MapFull(Exception):
    """Internal: LMDB's map is full; the caller grows it or gives up."""


def _crc(key: bytes, term: int, command: bytes) -> int:
    return zlib.crc32(command, zlib.crc32(key + _KEY.pack(term)))


def _pack_entry(key: bytes, command: bytes, term: int) -> bytes:
    return _HEAD.pack(_crc(key, term, command), term) + command


def _unpack_entry(key: bytes, raw: bytes | None, idx: int) -> Entry:
    if raw is None:
        raise CorruptData(f"journal entry {idx} is missing")
    if len(raw) < _HEAD.size:
        raise CorruptData(f"journal entry {idx} is truncated")
    crc, term = _HEAD.unpack_from(raw)
    command = bytes(raw[_HEAD.size :])
    if _crc(key, term, command) != crc:
        raise CorruptData(f"journal entry {idx} failed its checksum")
    return command, idx, term


def _pack_meta(value: Any) -> bytes:
    body = encode_value(value)
    return _CRC.pack(zlib.crc32(body)) + body


def _unpack_meta(raw: bytes, what: str, path: str) -> Any:
    if len(raw) < _CRC.size or _CRC.unpack_from(raw)[0] != zlib.crc32(raw[_CRC.size :]):
        raise CorruptData(f"{path}: {what} record failed its checksum")
    try:
        return decode_value(raw[_CRC.size :])
    except DecodeError as exc:
        raise CorruptData(f"{path}: {what} record is not decodable: {exc}") from exc


def check_lmdb_file_size(data_file: str) -> None:
    """Refuse a ``data.mdb`` shorter than its own meta pages say (it would SIGBUS when mapped).

    Reads both meta pages with plain reads (never the map); each valid one names the last page
    in use and the page size; the file must hold ``last page + 1`` pages. A file too short to
    hold the two meta pages, or whose meta pages are not LMDB's, is left to LMDB to refuse
    (it reads them with ``pread``, which cannot fault)."""
    if struct.calcsize("P") != 8:  # the layout below is the 64-bit one
        return
    try:
        with open(data_file, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_META_TAIL_AT + _META_TAIL.size)
            if len(head) < _META_TAIL_AT + _META_TAIL.size:
                return
            psize = _META_PSIZE.unpack_from(head, _META_PSIZE_AT)[0]
            if psize < 512 or psize > 65536 or psize & (psize - 1):
                return  # not a page size: LMDB refuses the header itself
            f.seek(psize)
            pages = [head, f.read(_META_TAIL_AT + _META_TAIL.size)]
    except OSError as exc:
        raise CorruptData(f"{data_file}: cannot read LMDB's meta pages: {exc}") from exc
    for number, page in enumerate(pages):
        if len(page) < _META_TAIL_AT + _META_TAIL.size:
            raise CorruptData(
                f"{data_file} is truncated: {size} bytes cannot hold LMDB's two "
                f"meta pages of {psize} bytes"
            )
        flags = _PAGE_HEAD.unpack_from(page)[2]
        magic = _META_HEAD.unpack_from(page, 16)[0]
        if not flags & _P_META or magic != _MDB_MAGIC:
            continue  # LMDB refuses a bad meta page itself, before mapping anything
        last_page, txnid = _META_TAIL.unpack_from(page, _META_TAIL_AT)
        needed = (last_page + 1) * psize
        if needed > size:
            raise CorruptData(
                f"{data_file} is truncated: {size} bytes, but LMDB's meta page {number} "
                f"(transaction {txnid}) uses pages up to {last_page} of {psize} bytes "
                f"({needed} bytes); refusing to map it (restore the file or rebuild the node)"
            )


class LatencyHistogram:
    """Cumulative latency counts in fixed buckets (seconds), cheap enough for every flush.

    Written by one thread (the tick thread), read by any: plain int increments under the GIL,
    so a reader may see a count and a sum from adjacent observations, never a torn value. The
    bounds follow Prometheus' default latency buckets, finer below 5 ms where fsyncs land."""

    BOUNDS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

    __slots__ = ("counts", "max_s", "sum_s")

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS_S) + 1)  # the last bucket is +Inf
        self.sum_s = 0.0
        self.max_s = 0.0

    def observe(self, seconds: float) -> None:
        # the first bucket whose bound is >= seconds (one C call: this runs for every write)
        self.counts[bisect.bisect_left(self.BOUNDS_S, seconds)] += 1
        self.sum_s += seconds
        if seconds > self.max_s:
            self.max_s = seconds

    def snapshot(self) -> dict[str, Any]:
        """{"bounds_s", "counts" (per bucket, not cumulative; last is +Inf), "count", "sum_s",
        "max_s"}: plain data for metrics and health checks."""
        counts = list(self.counts)
        return {
            "bounds_s": list(self.BOUNDS_S),
            "counts": counts,
            "count": sum(counts),
            "sum_s": self.sum_s,
            "max_s": self.max_s,
        }


def _free_bytes(path: str) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _is_no_space(exc: BaseException, path: str | None = None) -> bool:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if (
        code in _ENOSPC
        or "No space left" in text
        or "Disk quota" in text
        or "File too large" in text
    ):
        return True
    # LMDB reports a short write as EIO ("TODO: Use which error code?" in mdb_page_flush):
    # on a nearly full filesystem that is a full disk, not a failing one.
    if path is not None and (code == errno.EIO or "Input/output error" in text):
        free = _free_bytes(path)
        return free is not None and free < _NEARLY_FULL_BYTES
    return False


@contextlib.contextmanager
def _translated(path: str, what: str) -> Iterator[None]:
    """Turn lmdb and OS errors into coreplane errors at the boundary."""
    try:
        yield
    except lmdb.MapFullError as exc:
        raise _MapFull() from exc
    except (lmdb.Error, OSError) as exc:
        if _is_no_space(exc, path):
            raise StorageFull(f"{path}: disk full while {what}: {exc}") from exc
        if isinstance(exc, _LMDB_CORRUPT):
            raise CorruptData(f"{path}: LMDB refused the data while {what}: {exc}") from exc
        raise Unavailable(f"{path}: storage error while {what}: {exc}") from exc


class _LazyEntries(Sequence[Entry]):
    """A slice of the log read on demand, so pysyncobj's open-ended slices stay cheap."""

    def __init__(self, journal: LmdbJournal, first_idx: int, count: int) -> None:
        self._journal = journal
        self._first_idx = first_idx
        self._count = count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, item: int) -> Entry: ...

    @overload
    def __getitem__(self, item: slice) -> list[Entry]: ...

    def __getitem__(self, item: int | slice) -> Entry | list[Entry]:
        if isinstance(item, slice):
            start, stop, step = item.indices(self._count)
            if step == 1:
                return self._journal._range(self._first_idx + start, max(0, stop - start))
            return [self._journal._entry(self._first_idx + i) for i in range(start, stop, step)]
        if item < 0:
            item += self._count
        if not 0 <= item < self._count:
            raise IndexError("log slice index out of range")
        return self._journal._entry(self._first_idx + item)

    def __iter__(self) -> Iterator[Entry]:
        for lo in range(0, self._count, _LAZY_BLOCK):
            yield from self._journal._range(
                self._first_idx + lo, min(_LAZY_BLOCK, self._count - lo)
            )


class LmdbJournal(pysyncobj.journal.Journal):  # type: ignore[misc]
    """pysyncobj's journal on LMDB, with group commit, checksums and snapshots.

    ``LmdbJournal(path, *, node_id, cluster_id=None, durability="fsync",
    map_size_bytes=64 MiB, map_size_max_bytes=8 GiB, cache_entries_max=4096,
    verify_on_open=True, create=True)``. `path` is a directory owned by this journal (created
    if missing, unless ``create=False``: then a journal must already be there).
    All methods are thread-safe; pysyncobj calls them on its tick thread, `save_snapshot` runs on
    a writer thread. Call `flush` before sending anything that depends on the log or the vote,
    and `close` (pysyncobj calls `_destroy`) when done.
    """

    def __init__(
        self,
        path: str,
        *,
        node_id: str,
        cluster_id: str | None = None,
        durability: str = "fsync",
        map_size_bytes: int = 64 * MIB,
        map_size_max_bytes: int = 8192 * MIB,
        cache_entries_max: int = 4096,
        verify_on_open: bool = True,
        create: bool = True,
    ) -> None:
        if not isinstance(path, str) or not path:
            raise InvalidArgument("path", "must be a non-empty directory path")
        if not isinstance(node_id, str) or not node_id:
            raise InvalidArgument("node_id", "must be a non-empty str")
        if cluster_id is not None and (not isinstance(cluster_id, str) or not cluster_id):
            raise InvalidArgument("cluster_id", "must be None or a non-empty str")
        if durability not in ("fsync", "relaxed"):
            raise InvalidArgument("durability", f"must be 'fsync' or 'relaxed', not {durability!r}")
        if not isinstance(map_size_bytes, int) or map_size_bytes < 64 * 1024:
            raise InvalidArgument("map_size_bytes", "must be an int of at least 64 KiB")
        if not isinstance(map_size_max_bytes, int) or map_size_max_bytes < map_size_bytes:
            raise InvalidArgument("map_size_max_bytes", "must be an int >= map_size_bytes")
        if not isinstance(cache_entries_max, int) or cache_entries_max < 2:
            raise InvalidArgument("cache_entries_max", "must be an int >= 2")
        self.path = path
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.durability = durability
        self._map_size_max = map_size_max_bytes
        self._cache_max = cache_entries_max
        self._lock = threading.RLock()
        self._closed = False
        # Logical log [first, first + n) and the in-memory tail that holds every unflushed entry.
        self._first = 1
        self._n = 0
        self._tail: list[Entry] = []
        self._tail_start = 1
        self._dirty_from: int | None = None  # smallest index not yet written to LMDB
        self._meta_dirty = False
        self._garbage = False  # keys outside [first, last] may exist in LMDB (set at open)
        self._full = False  # the last write failed with StorageFull
        self.flush_latency = LatencyHistogram()  # flushes that wrote: transaction + sync
        self._head: Entry | None = None  # entry at `first`: pysyncobj reads [0] constantly
        self._term = 0
        self._voted_for: str | int | None = None
        self._commit = 1
        self._commit_dirty = False  # the commit index moved since it was last written
        self._snapshot_gen = 0
        self._snapshot_gen_next = 0
        self._snapshot_writing: set[int] = set()
        self._snapshot_meta: dict[str, Any] | None = None
        self._create = create
        self._owner_fd: int | None = None
        self._check_dir()
        self._owner_fd = self._take_owner_lock()
        try:
            self._check_data_file()
            self._env = self._open_env(map_size_bytes)
        except BaseException:
            self._release_owner_lock()
            raise
        try:
            self._load(verify_on_open)
        except BaseException:
            self._env.close()
            self._release_owner_lock()
            raise

    # ------------------------------------------------------------------ open

    def _check_dir(self) -> None:
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise InvalidArgument("path", f"{self.path} exists and is not a directory")
        if not self._create and not os.path.isdir(self.path):
            raise CorruptData(
                f"{self.path}: the journal directory is missing although the "
                f"data dir records that a journal was created; "
                f"{_LOST_JOURNAL_RECOVERY}"
            )
        try:
            os.makedirs(self.path, exist_ok=True)
            foreign = sorted(set(os.listdir(self.path)) - _OWN_FILES)
        except OSError as exc:
            raise InvalidArgument("path", f"{self.path}: {exc}") from exc
        if foreign:
            raise CorruptData(
                f"{self.path} is not a coreplane journal directory "
                f"(unexpected files: {', '.join(foreign[:5])})"
            )

    def _take_owner_lock(self) -> int:
        """The journal's exclusive lock, pid recorded; before LMDB is opened or anything read."""
        lock_path = os.path.join(self.path, OWNER_LOCK)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise InvalidArgument("path", f"cannot create {lock_path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise InvalidArgument(
                    "path",
                    f"cannot lock {lock_path}: {exc} (a file "
                    "system without flock is not supported)",
                ) from exc
            mine = ", this process" if holder == str(os.getpid()) else ""
            raise InvalidArgument(
                "path", f"{self.path} is already open (locked by pid {holder or '(unknown)'}{mine})"
            ) from exc
        with contextlib.suppress(OSError):  # the pid only serves the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _release_owner_lock(self) -> None:
        fd, self._owner_fd = self._owner_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _check_data_file(self) -> None:
        data_file = os.path.join(self.path, "data.mdb")
        try:
            size = os.stat(data_file).st_size
        except FileNotFoundError:
            size = None
        except OSError as exc:
            raise CorruptData(f"{data_file}: {exc}") from exc
        if not self._create and not size:
            state = "missing" if size is None else "empty"
            raise CorruptData(
                f"{data_file} is {state} although the data dir records that a "
                f"journal was created; {_LOST_JOURNAL_RECOVERY}"
            )
        if size:
            check_lmdb_file_size(data_file)

    def _open_env(self, map_size: int) -> lmdb.Environment:
        try:
            return lmdb.open(
                self.path,
                map_size=map_size,
                subdir=True,
                max_dbs=3,
                sync=True,
                metasync=self.durability == "fsync",
                writemap=False,
                readahead=False,
                lock=True,
            )
        except lmdb.InvalidError as exc:
            raise CorruptData(f"{self.path}: data.mdb is not an LMDB file: {exc}") from exc
        except (lmdb.Error, OSError) as exc:
            if _is_no_space(exc):
                raise StorageFull(f"{self.path}: disk full opening the journal") from exc
            if "already open" in str(exc):
                raise InvalidArgument(
                    "path", f"{self.path} is already open in this process"
                ) from exc
            raise CorruptData(f"{self.path}: cannot open the journal: {exc}") from exc

    def _load(self, verify: bool) -> None:
        with _translated(self.path, "opening"):
            self._dbs = {name: self._env.open_db(name) for name in (b"log", b"meta", b"snap")}
            with self._env.begin() as txn:
                identity = txn.get(b"identity", db=self._dbs[b"meta"])
                meta = {
                    key: txn.get(key, db=self._dbs[b"meta"]) for key in (b"log", b"term", b"commit")
                }
                snap_raw = txn.get(b"current", db=self._dbs[b"snap"])
                has_entries = txn.stat(self._dbs[b"log"])["entries"] > 0
        if identity is None:
            if has_entries or any(v is not None for v in meta.values()) or snap_raw is not None:
                raise CorruptData(
                    f"{self.path}: journal data without an identity record "
                    "(foreign or damaged data dir); refusing to reuse it"
                )
            if not self._create:
                raise CorruptData(
                    f"{self.path}: the journal is empty although the data dir "
                    f"records that it was created; {_LOST_JOURNAL_RECOVERY}"
                )
            self._write_identity()
        else:
            self._check_identity(_unpack_meta(identity, "identity", self.path))
        if meta[b"term"] is not None:
            term, voted_for = self._checked(meta[b"term"], "term", list, 2)
            self._term, self._voted_for = term, voted_for
        if meta[b"commit"] is not None:
            self._commit = self._checked(meta[b"commit"], "commit", int)
        if meta[b"log"] is not None:
            self._first, self._n = self._checked(meta[b"log"], "log bounds", list, 2)
            self._tail_start = self._first + self._n
        if snap_raw is not None:
            self._snapshot_meta = self._checked_snapshot_meta(snap_raw)
            self._snapshot_gen = self._snapshot_meta["gen"]
            self._apply_snapshot_floor()
            self._touch_marker()
        self._garbage = self._has_keys_outside_live_range()
        if verify:
            self.verify()

    def _has_keys_outside_live_range(self) -> bool:
        """True if LMDB holds log keys outside [first, last]: garbage this journal recorded
        before (a bounded sweep left some) or a snapshot made at the last open."""
        with _translated(self.path, "opening"), self._env.begin(db=self._dbs[b"log"]) as txn:
            cursor = txn.cursor()
            if not cursor.first():
                return False
            if not self._n:
                return True
            low = _KEY.unpack(cursor.key())[0]
            cursor.last()
            high = _KEY.unpack(cursor.key())[0]
            return low < self._first or high > self._first + self._n - 1

    def _checked(self, raw: bytes, what: str, kind: type[T], size: int | None = None) -> T:
        value = _unpack_meta(raw, what, self.path)
        if not isinstance(value, kind) or (size is not None and len(value) != size):  # type: ignore[arg-type]
            raise CorruptData(f"{self.path}: {what} record has the wrong shape")
        return value

    def _checked_snapshot_meta(self, raw: bytes) -> dict[str, Any]:
        meta = self._checked(raw, "snapshot", dict)
        ints = all(type(meta.get(k)) is int and meta[k] >= 0 for k in ("gen", "size", "chunks"))
        entries = all(
            isinstance(meta.get(k), list)
            and len(meta[k]) == 3
            and isinstance(meta[k][0], bytes)
            and type(meta[k][1]) is int
            and type(meta[k][2]) is int
            for k in ("last", "prev")
        )
        if not (ints and entries and isinstance(meta.get("digest"), bytes)):
            raise CorruptData(f"{self.path}: snapshot record has the wrong shape")
        return meta

    def _write_identity(self) -> None:
        record = {"format": FORMAT_VERSION, "node_id": self.node_id, "cluster_id": self.cluster_id}
        with _translated(self.path, "writing the identity"), self._env.begin(write=True) as txn:
            txn.put(b"identity", _pack_meta(record), db=self._dbs[b"meta"])

    def _check_identity(self, record: Any) -> None:
        if not isinstance(record, dict) or "format" not in record:
            raise CorruptData(f"{self.path}: identity record has the wrong shape")
        if record["format"] != FORMAT_VERSION:
            raise CorruptData(
                f"{self.path}: journal format {record['format']!r}, this code "
                f"reads {FORMAT_VERSION}"
            )
        if record.get("node_id") != self.node_id:
            raise InvalidArgument(
                "node_id",
                f"{self.path} belongs to node {record.get('node_id')!r}, not {self.node_id!r}",
            )
        if record.get("cluster_id") != self.cluster_id:
            raise InvalidArgument(
                "cluster_id",
                f"{self.path} belongs to cluster "
                f"{record.get('cluster_id')!r}, not {self.cluster_id!r}",
            )

    def _apply_snapshot_floor(self) -> None:
        """Drop entries a published snapshot covers; reset a log that ends before it or
        contradicts it at its boundary (Raft's InstallSnapshot rule).

        A log that starts after the snapshot's boundary cannot be explained by any crash and
        is refused; a corrupt entry at the boundary propagates as `CorruptData` rather than
        triggering a reset, which could discard acknowledged entries after it.
        """
        prev, last = self._meta_entry("prev"), self._meta_entry("last")
        boundary = prev[1]
        log_last = self._first + self._n - 1
        if self._n and self._first > boundary:
            raise CorruptData(
                f"{self.path}: log starts at {self._first}, after the snapshot "
                f"boundary {boundary}: entries are missing"
            )
        if (
            self._n
            and boundary + 1 <= log_last
            and self._entry(boundary) == prev
            and self._entry(boundary + 1) == last
        ):
            if self._first < boundary:
                self._n -= boundary - self._first
                self._first = boundary
                self._tail_start = max(self._tail_start, boundary)
                self._head = None
                self._meta_dirty = True
            return
        logger.warning(
            "journal %s: log (%d..%d) ends before or contradicts snapshot at %d; "
            "reset to the snapshot",
            self.path,
            self._first,
            log_last,
            last[1],
        )
        self._n, self._tail, self._dirty_from, self._head = 0, [], None, None
        self._append(prev)
        self._append(last)

    def _meta_entry(self, key: str) -> Entry:
        assert self._snapshot_meta is not None
        command, idx, term = self._snapshot_meta[key]
        return bytes(command), int(idx), int(term)

    def verify(self) -> None:
        """Read and checksum every entry of the log; `CorruptData` names the first bad one."""
        with self._lock, _translated(self.path, "verifying"):
            last = self._first + self._n - 1
            stop = min(last, self._tail_start - 1)
            with self._env.begin(db=self._dbs[b"log"]) as txn:
                for idx in range(self._first, stop + 1):
                    key = _KEY.pack(idx)
                    _unpack_entry(key, txn.get(key), idx)

    # ------------------------------------------------------------------ reads

    def _entry(self, idx: int) -> Entry:
        with self._lock:
            if self._tail and idx >= self._tail_start:
                return self._tail[idx - self._tail_start]
            if idx == self._first and self._head is not None:
                return self._head
            key = _KEY.pack(idx)
            with _translated(self.path, "reading"), self._env.begin(db=self._dbs[b"log"]) as txn:
                entry = _unpack_entry(key, txn.get(key), idx)
            if idx == self._first:
                self._head = entry
            return entry

    def _range(self, first_idx: int, count: int) -> list[Entry]:
        """`count` entries from `first_idx`: the cached tail from memory, the rest from LMDB
        with one read transaction and one cursor, each entry checksummed."""
        with self._lock:
            out: list[Entry] = []
            stop = first_idx + count
            lmdb_stop = min(stop, self._tail_start) if self._tail else stop
            if first_idx < lmdb_stop:
                with (
                    _translated(self.path, "reading"),
                    self._env.begin(db=self._dbs[b"log"]) as txn,
                ):
                    cursor = txn.cursor()
                    idx = first_idx
                    if cursor.set_key(_KEY.pack(idx)):
                        for key, raw in cursor.iternext():
                            if idx >= lmdb_stop or key != _KEY.pack(idx):
                                break
                            out.append(_unpack_entry(key, raw, idx))
                            idx += 1
                    if idx < lmdb_stop:
                        _unpack_entry(_KEY.pack(idx), None, idx)  # raises: a hole in the log
            for idx in range(max(first_idx, lmdb_stop), stop):
                out.append(self._tail[idx - self._tail_start])
            return out

    @overload
    def __getitem__(self, item: int) -> Entry: ...

    @overload
    def __getitem__(self, item: slice) -> Sequence[Entry]: ...

    def __getitem__(self, item: int | slice) -> Entry | Sequence[Entry]:
        with self._lock:
            n = self._n
            if isinstance(item, slice):
                start, stop, step = item.indices(n)
                if step != 1:
                    return [self._entry(self._first + p) for p in range(start, stop, step)]
                count = max(0, stop - start)
                first_idx = self._first + start
                if count <= _LAZY_SLICE_MIN or (self._tail and first_idx >= self._tail_start):
                    return self._range(first_idx, count)
                return _LazyEntries(self, first_idx, count)
            if isinstance(item, bool) or not isinstance(item, int):
                raise TypeError("journal indices must be integers or slices")
            pos = item + n if item < 0 else item
            if not 0 <= pos < n:
                raise IndexError("journal index out of range")
            return self._entry(self._first + pos)

    def __len__(self) -> int:
        return self._n

    # ------------------------------------------------------------------ writes (memory only)

    def _append(self, entry: Entry) -> None:
        idx = entry[1]
        if not self._tail:
            self._tail_start = idx
        self._tail.append(entry)
        if self._dirty_from is None:
            self._dirty_from = idx
        if self._n == 0:
            self._first = idx
            self._head = entry
        self._n += 1
        self._meta_dirty = True

    def add(self, command: bytes, idx: int, term: int) -> None:
        """Append one entry in memory; it becomes durable at the next `flush`."""
        if isinstance(command, str):
            command = command.encode("utf-8")  # pysyncobj's to_bytes does the same
        if (
            not isinstance(command, (bytes, bytearray))
            or type(idx) is not int
            or type(term) is not int
            or idx < 0
            or term < 0
        ):
            raise InvalidArgument("entry", "must be (bytes, int index, int term)")
        with self._lock:
            self._require_open()
            if self._n and idx != self._first + self._n:
                raise InvariantViolation(
                    f"journal append of index {idx} after {self._first + self._n - 1}"
                )
            self._append((bytes(command), idx, term))

    def clear(self) -> None:
        """Empty the log (pysyncobj does this before adding a received snapshot's entries)."""
        with self._lock:
            self._n = 0
            self._tail, self._dirty_from, self._head = [], None, None
            self._tail_start = self._first
            self._meta_dirty = self._garbage = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Drop positions >= entryFrom (a conflicting suffix)."""
        with self._lock:
            if entryFrom >= self._n:
                return
            self._n = max(0, entryFrom)
            last = self._first + self._n - 1
            if self._tail:
                keep = max(0, last - self._tail_start + 1)
                del self._tail[keep:]
                if not self._tail:
                    self._tail_start = last + 1
            if self._dirty_from is not None and self._dirty_from > last:
                self._dirty_from = None
            if self._n == 0:
                self._head = None
            self._meta_dirty = self._garbage = True

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop positions < entryTo (a prefix a snapshot now covers)."""
        with self._lock:
            if entryTo <= 0:
                return
            entryTo = min(entryTo, self._n)
            self._first += entryTo
            self._n -= entryTo
            if self._tail and self._tail_start < self._first:
                del self._tail[: self._first - self._tail_start]
                self._tail_start = self._first
            if not self._tail:
                self._tail_start = self._first
            if self._dirty_from is not None:
                self._dirty_from = max(self._dirty_from, self._first)
            self._head = None
            self._meta_dirty = self._garbage = True

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        """Remember the commit index: a hint, written with the next flush that writes anything
        else (or by `onOneSecondTimer`/`close`), never a sync of its own.

        Raft keeps the commit index in volatile state; a stored one that lags only means a
        restarted node (or `replay`) applies a little less before it hears from the leader.
        Marking it dirty cost a second fsync per write on every node: the leader synced again
        after each commit, and a follower synced before answering the heartbeat that carried
        the new commit index, in series with the next entry's sync on the same thread (p50 at
        100 writes/s: two syncs per write instead of one)."""
        with self._lock:
            if raftCommitIndex != self._commit:
                self._commit = raftCommitIndex
                self._commit_dirty = True

    def getRaftCommitIndex(self) -> int:
        return self._commit

    def setCurrentTerm(self, term: int, votedForNodeId: str | int | None) -> None:
        """Store term and vote and flush now: pysyncobj sends the vote right after this."""
        with self._lock:
            self._term, self._voted_for = term, votedForNodeId
            self._meta_dirty = True
            self.flush()

    def getCurrentTerm(self) -> int:
        return self._term

    def getVotedForNodeId(self) -> str | int | None:
        return self._voted_for

    def onOneSecondTimer(self) -> None:
        """A safety net for callers that forget to flush, and where a commit index that moved
        since the last write is stored (at most one sync a second, and none when idle)."""
        with self._lock:
            if self._commit_dirty and not self._closed:
                self._meta_dirty = True
            self.flush()

    # ------------------------------------------------------------------ flush

    @property
    def dirty(self) -> bool:
        """True if `flush` has something to write."""
        return self._dirty_from is not None or self._meta_dirty

    @property
    def storage_full(self) -> bool:
        """True from a flush that failed with `StorageFull` until one succeeds."""
        return self._full

    def flush(self) -> None:
        """Write everything since the last flush in one transaction and sync it (group commit).

        Raises `StorageFull` (disk or map at its cap) with the batch kept in memory, so a later
        flush retries it; nothing of a failed batch is visible in LMDB.
        """
        with self._lock:
            self._require_open()
            if not self.dirty and not self._garbage:
                return
            started = time.monotonic()
            try:
                self._with_map_growth(self._flush_txn, "flushing the log")
            except StorageFull:
                if not self._full:
                    logger.error(
                        "journal %s: storage full; writes wait until space returns", self.path
                    )
                self._full = True
                raise
            self.flush_latency.observe(time.monotonic() - started)
            if self._full:
                logger.warning("journal %s: storage writable again", self.path)
            self._full = False
            self._dirty_from = None
            self._meta_dirty = self._commit_dirty = False
            if len(self._tail) > self._cache_max:
                drop = len(self._tail) - self._cache_max
                del self._tail[:drop]
                self._tail_start += drop

    def _flush_txn(self) -> None:
        """One write transaction: garbage deletions, then the batch, then the bounds.

        Deleting keys outside the live range is only safe together with the bounds that make
        them garbage, so both are in this one transaction.
        """
        log_db, meta_db = self._dbs[b"log"], self._dbs[b"meta"]
        last = self._first + self._n - 1
        with self._env.begin(write=True) as txn:
            garbage_left = self._delete_garbage(txn, log_db, last) if self._garbage else False
            if self._dirty_from is not None:
                for entry in self._tail[self._dirty_from - self._tail_start :]:
                    key = _KEY.pack(entry[1])
                    txn.put(key, _pack_entry(key, entry[0], entry[2]), db=log_db)
            if self._meta_dirty:
                txn.put(b"log", _pack_meta([self._first, self._n]), db=meta_db)
                txn.put(b"term", _pack_meta([self._term, self._voted_for]), db=meta_db)
                txn.put(b"commit", _pack_meta(self._commit), db=meta_db)
            elif self._commit_dirty:  # riding on a write that syncs anyway
                txn.put(b"commit", _pack_meta(self._commit), db=meta_db)
        self._garbage = garbage_left

    def _delete_garbage(self, txn: lmdb.Transaction, log_db: Any, last: int) -> bool:
        """Delete up to a bounded number of keys outside the live range; True if more remain."""
        budget = _GARBAGE_PER_FLUSH
        cursor = txn.cursor(db=log_db)
        low = _KEY.pack(self._first) if self._n else None
        if cursor.first():
            while budget and (low is None or cursor.key() < low):
                if not cursor.delete():
                    break
                budget -= 1
        if self._n and cursor.set_range(_KEY.pack(last + 1)):
            while budget and cursor.delete():
                budget -= 1
        return budget == 0

    def _with_map_growth(self, fn: Callable[[], T], what: str) -> T:
        """Run a write, growing the map on MapFullError up to the cap; then StorageFull."""
        while True:
            try:
                with _translated(self.path, what):
                    return fn()
            except _MapFull as exc:
                with _translated(self.path, "reading the map size"):
                    size = int(self._env.info()["map_size"])
                if size >= self._map_size_max:
                    raise StorageFull(
                        f"{self.path}: LMDB map full at {size} bytes "
                        f"(map_size_max_bytes={self._map_size_max})"
                    ) from exc
                new = min(self._map_size_max, size * 2)
                logger.warning("journal %s: growing the LMDB map %d -> %d", self.path, size, new)
                with _translated(self.path, "growing the map"):
                    self._env.set_mapsize(new)

    def set_map_size_max(self, map_size_max_bytes: int) -> None:
        """Raise (or lower) the map growth cap, e.g. after an operator freed disk space."""
        if not isinstance(map_size_max_bytes, int) or map_size_max_bytes < 64 * 1024:
            raise InvalidArgument("map_size_max_bytes", "must be an int of at least 64 KiB")
        self._map_size_max = map_size_max_bytes

    # ------------------------------------------------------------------ snapshots

    def save_snapshot(self, payload: bytes, *, last_entry: Entry, prev_entry: Entry) -> bool:
        """Store a snapshot and publish it atomically with its two last included entries.

        Safe to call from a writer thread: the payload goes in 1 MiB chunk transactions, each
        under the journal lock for a few milliseconds, and one final transaction publishes it.
        Publishing compacts the log below `prev_entry` at the next open; pysyncobj's own
        `deleteEntriesTo` drops the prefix in memory right after. Returns False (and stores
        nothing) if a snapshot of a later entry was published meanwhile, e.g. one installed
        from the leader while this one was being written.
        """
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise InvalidArgument("payload", "must be bytes")
        for name, entry in (("last_entry", last_entry), ("prev_entry", prev_entry)):
            if not (
                isinstance(entry, tuple)
                and len(entry) == 3
                and isinstance(entry[0], bytes)
                and type(entry[1]) is int
                and type(entry[2]) is int
            ):
                raise InvalidArgument(name, "must be (bytes, int, int)")
        if prev_entry[1] + 1 != last_entry[1]:
            raise InvalidArgument("prev_entry", "must directly precede last_entry")
        data = bytes(payload)
        with self._lock:
            self._require_open()
            gen = self._snapshot_gen_next = max(self._snapshot_gen, self._snapshot_gen_next) + 1
            self._snapshot_writing.add(gen)
        try:
            return self._write_snapshot(gen, data, last_entry, prev_entry)
        finally:
            with self._lock:
                self._snapshot_writing.discard(gen)

    def _write_snapshot(self, gen: int, data: bytes, last_entry: Entry, prev_entry: Entry) -> bool:
        snap_db = self._dbs[b"snap"]
        chunks = max(1, -(-len(data) // _SNAPSHOT_CHUNK_BYTES))
        for i in range(chunks):
            chunk = data[i * _SNAPSHOT_CHUNK_BYTES : (i + 1) * _SNAPSHOT_CHUNK_BYTES]
            key = b"d" + _KEY.pack(gen) + _CRC.pack(i)

            def put_chunk(key: bytes = key, chunk: bytes = chunk) -> None:
                with self._env.begin(write=True) as txn:
                    txn.put(key, chunk, db=snap_db)

            with self._lock:
                self._require_open()
                self._with_map_growth(put_chunk, "writing a snapshot")
        meta = {
            "gen": gen,
            "size": len(data),
            "chunks": chunks,
            "digest": hashlib.blake2b(data, digest_size=16).digest(),
            "last": list(last_entry),
            "prev": list(prev_entry),
        }

        current = self._snapshot_meta

        def publish(newer: bool) -> None:
            keep = {gen} if newer else {int(current["gen"])} if current else set()
            keep |= self._snapshot_writing - {gen}
            with self._env.begin(write=True) as txn:
                if newer:
                    txn.put(b"current", _pack_meta(meta), db=snap_db)
                cursor = txn.cursor(db=snap_db)
                if cursor.set_range(b"d"):  # superseded generations and abandoned writes
                    while cursor.key().startswith(b"d"):
                        if _KEY.unpack_from(cursor.key(), 1)[0] in keep:
                            if not cursor.next():
                                break
                        elif not cursor.delete():
                            break

        with self._lock:
            self._require_open()
            current = self._snapshot_meta
            newer = current is None or current["last"][1] <= last_entry[1]
            self._with_map_growth(lambda: publish(newer), "publishing a snapshot")
            if newer:
                self._snapshot_gen, self._snapshot_meta = gen, meta
        if newer:
            self._touch_marker()
        return newer

    def load_snapshot(self) -> Snapshot | None:
        """The published snapshot, verified against its digest; `CorruptData` if damaged."""
        with self._lock:
            meta = self._snapshot_meta
            if meta is None:
                return None
            parts = []
            with (
                _translated(self.path, "reading a snapshot"),
                self._env.begin(db=self._dbs[b"snap"]) as txn,
            ):
                for i in range(int(meta["chunks"])):
                    raw = txn.get(b"d" + _KEY.pack(int(meta["gen"])) + _CRC.pack(i))
                    if raw is None:
                        raise CorruptData(f"{self.path}: snapshot chunk {i} is missing")
                    parts.append(raw)
            data = b"".join(parts)
            if (
                len(data) != meta["size"]
                or hashlib.blake2b(data, digest_size=16).digest() != meta["digest"]
            ):
                raise CorruptData(f"{self.path}: snapshot {meta['gen']} failed its checksum")
            return Snapshot(data, self._meta_entry("last"), self._meta_entry("prev"))

    def _touch_marker(self) -> None:
        marker = snapshot_marker_path(self.path)
        if not os.path.exists(marker):
            try:
                with open(marker, "wb"):
                    pass
            except OSError as exc:  # derived state: recreated at the next open
                logger.warning("journal %s: cannot create %s: %s", self.path, marker, exc)

    # ------------------------------------------------------------------ lifecycle

    def _require_open(self) -> None:
        if self._closed:
            raise InvalidArgument("journal", f"{self.path} is closed")

    def close(self) -> None:
        """Flush what can be flushed and close the environment; idempotent."""
        with self._lock:
            if self._closed:
                return
            if self._commit_dirty:
                self._meta_dirty = True  # store the newest commit index on the way out
            try:
                self.flush()
            except StorageFull:
                logger.error(
                    "journal %s: closing with an unflushed batch (storage full)", self.path
                )
            finally:
                self._closed = True
                self._env.close()
                self._release_owner_lock()

    def abandon(self) -> None:
        """Close without the final flush, as a killed process would (simulated crashes): what
        was not flushed is lost, and the lock goes as the OS would drop it."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._env.close()
            self._release_owner_lock()

    def _destroy(self) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """Sizes for health checks and tests."""
        with self._lock, _translated(self.path, "reading stats"):
            info = self._env.info()
            free = _free_bytes(self.path)
            return {
                "first_index": self._first,
                "entries": self._n,
                "cached_entries": len(self._tail),
                "map_size_bytes": int(info["map_size"]),
                "last_page": int(info["last_pgno"]),
                "snapshot_gen": self._snapshot_gen,
                # for health checks: map use = (last_page + 1) * page_bytes against the cap
                "page_bytes": int(self._env.stat()["psize"]),
                "map_size_max_bytes": self._map_size_max,
                "disk_free_bytes": -1 if free is None else free,
            }

"""A node's data directory: who it belongs to, which voters it knows, where the files live.

A Raft node restarted against the wrong directory (another node's, another cluster's, a
half-written one) can vote twice or resurrect a removed log, so the directory carries an
identity file and a mismatch is refused, never "fixed" by starting empty. Layout:

- ``coreplane.meta``: JSON ``{"format", "node_id", "cluster", "members", "journal"}``;
  ``cluster`` is a keyed digest of the secret (it tells clusters apart without storing the
  secret); ``journal`` is true once the journal was created, so a journal deleted or emptied
  later is refused instead of silently recreated (an empty journal forgets the node's term and
  vote: it could vote twice in one term). Files written before the flag existed lack it and
  read as true (conservative);
- ``coreplane.lock``: an exclusive ``flock`` held from `DataDir.open` until `release` (the
  node's stop); the OS drops it when the process dies. It holds the owner's pid, so a second
  opener, in this or any process, is refused with `InvalidArgument` on ``data_dir`` naming it.
  Not `CorruptData`: nothing is damaged, two nodes were configured on one directory;
- ``journal.lmdb/``: the Raft log, term/vote and snapshots (`coreplane.raft.journal`, which
  checks its own identity and checksums and holds a lock of its own).

Recovery from a lost journal (``journal: true`` but no journal): the node must not rejoin with
an empty log. Remove it from the cluster (``remove_voter`` on a healthy node), empty its data
dir, and add it back as a new voter (``add_voter``) that catches up from the leader.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field

from coreplane.errors import CorruptData, InvalidArgument, StorageFull

__all__ = ["LOCK_FILE", "META_FILE", "DataDir"]

META_FILE = "coreplane.meta"
LOCK_FILE = "coreplane.lock"
FORMAT = 1


def cluster_fingerprint(secret: bytes) -> str:
    """Names the cluster by its secret without revealing it."""
    return hmac.new(secret, b"coreplane cluster fingerprint v1", hashlib.sha256).hexdigest()[:32]


def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _lock_dir(path: str) -> int:
    """Take the data dir's exclusive lock and record this pid in it; the open fd holds it.

    ``flock`` (not ``fcntl``/POSIX record locks): two opens in one process conflict too, and
    the lock belongs to the open file, so the OS drops it when the process dies. The file is
    never deleted: unlinking a lock file lets a third opener lock a new inode while a second
    one still waits on the old."""
    lock_path = os.path.join(path, LOCK_FILE)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise InvalidArgument("data_dir", f"cannot create the lock {lock_path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_holder(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise InvalidArgument(
                "data_dir",
                f"cannot lock {lock_path}: {exc} (a file system without flock is not supported)",
            ) from exc
        mine = " (this process)" if holder == str(os.getpid()) else ""
        raise InvalidArgument(
            "data_dir",
            f"{path} is in use by another coreplane node: locked by pid "
            f"{holder or '(unknown)'}{mine} ({lock_path}); stop that node first",
        ) from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:  # the pid is a courtesy for the error message; the flock is the lock
        pass
    return fd


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""


@dataclass(slots=True)
class DataDir:
    """The checked data directory of one node."""

    path: str
    node_id: str
    members: dict[str, str]
    fresh: bool
    journal_created: bool = False
    cluster: str = ""
    _lock_fd: int | None = field(default=None, repr=False)

    @property
    def lmdb_path(self) -> str:
        return os.path.join(self.path, "journal.lmdb")

    @classmethod
    def open(cls, path: str, *, node_id: str, secret: bytes, members: dict[str, str]) -> DataDir:
        """Lock, then create or check the directory; CorruptData for foreign/broken,
        InvalidArgument for a directory in use (``data_dir``) or peers that disagree with the
        membership recorded there. On any refusal the lock is released."""
        if not os.path.exists(os.path.join(path, META_FILE)):
            cls._refuse_foreign(path)  # before creating even the lock file in it
        fd = _lock_dir(path)
        try:
            return cls._open_locked(path, fd, node_id=node_id, secret=secret, members=members)
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _refuse_foreign(path: str) -> None:
        leftovers = sorted(set(os.listdir(path)) - {META_FILE + ".tmp", LOCK_FILE})
        if leftovers:
            raise CorruptData(
                f"data dir {path} is not empty but has no {META_FILE} (found "
                f"{', '.join(leftovers[:5])}): not a coreplane data dir; refusing to use it"
            )

    @classmethod
    def _open_locked(
        cls, path: str, fd: int, *, node_id: str, secret: bytes, members: dict[str, str]
    ) -> DataDir:
        meta_path = os.path.join(path, META_FILE)
        fingerprint = cluster_fingerprint(secret)
        if not os.path.exists(meta_path):
            cls._refuse_foreign(path)  # again, under the lock
            made = cls(
                path,
                node_id,
                dict(members),
                fresh=True,
                journal_created=False,
                cluster=fingerprint,
                _lock_fd=fd,
            )
            made._write_meta()
            return made
        try:
            with open(meta_path, "rb") as f:
                meta = json.loads(f.read().decode("utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError("unknown format")
            recorded = meta["members"]
            if not isinstance(recorded, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in recorded.items()
            ):
                raise ValueError("bad members")
            journal_created = meta.get("journal", True)  # absent: written before the flag
            if not isinstance(journal_created, bool):
                raise ValueError("bad journal flag")
        except (OSError, ValueError, KeyError) as exc:
            raise CorruptData(f"data dir {path}: {META_FILE} is unreadable ({exc})") from exc
        if meta.get("node_id") != node_id:
            raise CorruptData(
                f"data dir {path} belongs to node {meta.get('node_id')!r}, not {node_id!r}"
            )
        if not hmac.compare_digest(str(meta.get("cluster")), fingerprint):
            raise CorruptData(f"data dir {path} belongs to another cluster (secret differs)")
        if recorded != members:
            raise InvalidArgument(
                "peers",
                f"disagree with the data dir's membership {sorted(recorded.items())}; "
                f"given {sorted(members.items())}",
            )
        return cls(
            path,
            node_id,
            dict(recorded),
            fresh=False,
            journal_created=journal_created,
            cluster=fingerprint,
            _lock_fd=fd,
        )

    def _write_meta(self) -> None:
        meta = {
            "format": FORMAT,
            "node_id": self.node_id,
            "cluster": self.cluster,
            "members": dict(sorted(self.members.items())),
            "journal": self.journal_created,
        }
        meta_path = os.path.join(self.path, META_FILE)
        try:
            _write_atomic(meta_path, json.dumps(meta, sort_keys=True).encode())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"cannot write {meta_path}: {exc}") from exc
            raise InvalidArgument("data_dir", f"cannot write {meta_path}: {exc}") from exc

    def mark_journal_created(self) -> None:
        """Record (durably) that the journal exists: from now on, losing it is refused."""
        if not self.journal_created or "journal" not in self._recorded_keys():
            self.journal_created = True
            self._write_meta()

    def _recorded_keys(self) -> set[str]:
        try:
            with open(os.path.join(self.path, META_FILE), "rb") as f:
                meta = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError):
            return set()
        return set(meta) if isinstance(meta, dict) else set()

    def missing_journal_error(self, detail: str) -> CorruptData:
        """The refusal for a journal that existed and is gone, with the documented recovery."""
        return CorruptData(
            f"data dir {self.path}: the journal of node {self.node_id!r} is missing or empty "
            f"({detail}) although {META_FILE} records that it was created. Starting with an "
            "empty journal would forget this node's term and vote (it could vote twice in one "
            f"term), so it is refused. Recovery: remove node {self.node_id!r} from the cluster "
            "(remove_voter on a healthy node), empty this data dir, and add it back as a new "
            "voter (add_voter) with the empty data dir; it catches up from the leader."
        )

    def save_members(self, members: dict[str, str], secret_fingerprint: str) -> None:
        """Record a committed membership change so a restart is checked against it."""
        self.cluster = secret_fingerprint
        self.members = dict(members)
        self._write_meta()

    def release(self) -> None:
        """Drop the data dir lock (stop, or a refused construction); idempotent."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

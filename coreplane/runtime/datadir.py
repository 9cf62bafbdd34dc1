"""A node's data directory: who it belongs to, which voters it knows, where the files live.

A Raft node restarted against the wrong directory (another node's, another cluster's, a
half-written one) can vote twice or resurrect a removed log, so the directory carries an
identity file and a mismatch is refused, never "fixed" by starting empty. Layout:

- ``coreplane.meta``: JSON ``{"format", "node_id", "cluster", "members"}``; ``cluster`` is a
  keyed digest of the secret (it tells clusters apart without storing the secret);
- ``journal.lmdb/``: the Raft log, term/vote and snapshots (`coreplane.raft.journal`, which
  checks its own identity and checksums).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass

from coreplane.errors import CorruptData, InvalidArgument

__all__ = ["META_FILE", "DataDir"]

META_FILE = "coreplane.meta"
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


@dataclass(slots=True)
class DataDir:
    """The checked data directory of one node."""

    path: str
    node_id: str
    members: dict[str, str]
    fresh: bool

    @property
    def lmdb_path(self) -> str:
        return os.path.join(self.path, "journal.lmdb")

    @classmethod
    def open(cls, path: str, *, node_id: str, secret: bytes, members: dict[str, str]) -> DataDir:
        """Create or check the directory; CorruptData for foreign/broken, InvalidArgument for
        peers that disagree with the membership recorded there."""
        meta_path = os.path.join(path, META_FILE)
        fingerprint = cluster_fingerprint(secret)
        if not os.path.exists(meta_path):
            leftovers = sorted(set(os.listdir(path)) - {META_FILE + ".tmp"})
            if leftovers:
                raise CorruptData(
                    f"data dir {path} is not empty but has no {META_FILE} (found "
                    f"{', '.join(leftovers[:5])}): not a coreplane data dir; refusing to use it"
                )
            meta = {"format": FORMAT, "node_id": node_id, "cluster": fingerprint,
                    "members": dict(sorted(members.items()))}
            _write_atomic(meta_path, json.dumps(meta, sort_keys=True).encode())
            return cls(path, node_id, dict(members), fresh=True)
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
        return cls(path, node_id, dict(recorded), fresh=False)

    def save_members(self, members: dict[str, str], secret_fingerprint: str) -> None:
        """Record a committed membership change so a restart is checked against it."""
        meta = {"format": FORMAT, "node_id": self.node_id, "cluster": secret_fingerprint,
                "members": dict(sorted(members.items()))}
        _write_atomic(os.path.join(self.path, META_FILE), json.dumps(meta, sort_keys=True).encode())
        self.members = dict(members)

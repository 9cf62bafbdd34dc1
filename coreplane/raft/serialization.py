"""The replacement for pysyncobj's pickle: every frame, command, membership change and snapshot.

pysyncobj 0.3.17 routes every dump and load through its module `pysyncobj.pickle` (called as
``pickle.dumps(...)`` from syncobj.py, serializer.py and tcp_connection.py; journal.py binds
``loads``/``dumps`` at import). `install` swaps those functions, process-wide and idempotently,
for ones built on `coreplane.core.codec.encode_tree`/`decode_tree`: msgpack with tuples kept
apart from lists and an explicit allowlist of extension types (sets and pysyncobj node classes,
each rebuilt from plain data by a constructor we wrote). Pickle bytes, from a peer with or
without the cluster secret, from disk or from a snapshot, fail with `DecodeError`; nothing in
them can name a callable, so nothing runs.

Host-process manners: importing this module swaps nothing; the first `RaftEngine` built calls
`install` (so does the simulator), logs it once at INFO, and the swap lasts for the process.
It cannot be limited to coreplane's own SyncObj: pysyncobj looks ``pickle`` up as a module
global of syncobj.py at every call and takes no per-instance serializer, so any other SyncObj
in the host process gets this codec too (plain data only: no floats, no custom classes) and
cannot read a file journal or dump that stock pysyncobj pickled. The README's security section
says so to users; a per-instance swap would need a private copy of pysyncobj's modules, that is
a fork, which the pinned seams (`seams.UPSTREAM`) exist to avoid.

Owns: the codec hooks, the node class registry, `install`/`uninstall`. Must not import pickle,
msgpack (only through core.codec) or anything above raft.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import pysyncobj.journal
import pysyncobj.node
import pysyncobj.pickle

from coreplane.core.codec import MAX_DEPTH, MAX_ENCODED_BYTES, decode_tree, encode_tree
from coreplane.core.codec import SNAPSHOT_BYTES_MAX as SNAPSHOT_BYTES_MAX_HOST
from coreplane.errors import DecodeError, InvalidArgument
from coreplane.raft.nodes import PEER_NODE_EXT_CODE, PeerNode

__all__ = [
    "EXT_CODES_RESERVED",
    "SnapshotSerializer",
    "decode",
    "dump",
    "dumps",
    "encode",
    "install",
    "installed",
    "load",
    "loads",
    "register_node_class",
    "uninstall",
]

# Ext codes 1..15 are this module's; 16..127 are for node classes (16: coreplane's own PeerNode,
# registered below). Code 0 is codec's tuple marker.
_EXT_SET = 1
_EXT_FROZENSET = 2
_EXT_NODE = 3
_EXT_TCP_NODE = 4
EXT_CODES_RESERVED = range(0, 16)
_NODE_ATTRS_MAX = 16

ToPlain = Callable[[Any], Any]
FromPlain = Callable[[Any], Any]

_lock = threading.RLock()
_encoders: dict[type, tuple[int, ToPlain]] = {}
_decoders: dict[int, FromPlain] = {}
_originals: dict[str, Any] = {}


# ------------------------------------------------------------------------ node (de)construction


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, str, bytes))


def _node_id(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DecodeError(f"node id must be a str or int, got {type(value).__name__}")
    return value


def _public_attrs(node: pysyncobj.node.Node) -> dict[str, Any]:
    """The extra kwargs a Node was built with: public, plain scalars only."""
    attrs = {k: v for k, v in vars(node).items() if not k.startswith("_")}
    for key, value in attrs.items():
        if not _scalar(value):
            raise InvalidArgument(f"node.{key}", "node attributes must be plain scalars")
    return attrs


def _checked_attrs(value: Any) -> dict[str, Any]:
    """Validate decoded node attributes before they become `setattr` calls."""
    if not isinstance(value, dict) or len(value) > _NODE_ATTRS_MAX:
        raise DecodeError("node attributes must be a small map")
    for key, item in value.items():
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
            raise DecodeError(f"node attribute name {key!r} is not allowed")
        if key in ("id", "address", "host", "port", "ip") or not _scalar(item):
            raise DecodeError(f"node attribute {key!r} is not allowed")
    return value


def _node_to_plain(node: pysyncobj.node.Node) -> list[Any]:
    return [node.id, _public_attrs(node)]


def _node_from_plain(value: Any) -> pysyncobj.node.Node:
    if not isinstance(value, list) or len(value) != 2:
        raise DecodeError("Node must be [id, attrs]")
    return pysyncobj.node.Node(_node_id(value[0]), **_checked_attrs(value[1]))


def _tcp_node_to_plain(node: pysyncobj.node.TCPNode) -> list[Any]:
    return [node.address, _public_attrs(node)]


def _tcp_node_from_plain(value: Any) -> pysyncobj.node.TCPNode:
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], str):
        raise DecodeError("TCPNode must be [address, attrs]")
    address = value[0]
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or len(address) > 300:
        raise DecodeError(f"TCPNode address {address!r} is not host:port")
    return pysyncobj.node.TCPNode(address, **_checked_attrs(value[1]))


def _set_from_plain(value: Any) -> set[Any]:
    if not isinstance(value, list):
        raise DecodeError("set must hold an array")
    return set(value)  # unhashable members raise TypeError -> DecodeError in codec


def _frozenset_from_plain(value: Any) -> frozenset[Any]:
    return frozenset(_set_from_plain(value))


def _default_to_plain(node: Any) -> list[Any]:
    return [node.id, getattr(node, "address", None)]


def _default_from_plain(cls: type) -> FromPlain:
    def from_plain(value: Any) -> Any:
        if not isinstance(value, list) or len(value) != 2:
            raise DecodeError(f"{cls.__name__} must be [id, address]")
        node_id, address = _node_id(value[0]), value[1]
        if address is None:
            return cls(node_id)
        if not isinstance(address, str):
            raise DecodeError(f"{cls.__name__} address must be a str")
        return cls(node_id, address=address)

    return from_plain


def _register(cls: type, code: int, to_plain: ToPlain, from_plain: FromPlain) -> None:
    with _lock:
        known = _encoders.get(cls)
        if known is not None and known[0] == code:
            return  # idempotent: module reloads and repeated installs
        if known is not None:
            raise InvalidArgument("cls", f"{cls.__name__} already registered as ext {known[0]}")
        if code in _decoders:
            raise InvalidArgument("code", f"ext code {code} is already taken")
        _encoders[cls] = (code, to_plain)
        _decoders[code] = from_plain


def register_node_class(
    cls: type,
    code: int,
    *,
    to_plain: ToPlain | None = None,
    from_plain: FromPlain | None = None,
) -> None:
    """Admit one more `pysyncobj.node.Node` subclass to the wire and to snapshots.

    `code` is an ext code in 16..127, fixed forever (it is in stored snapshots and logs).
    By default a node travels as ``[id, address]`` and is rebuilt as ``cls(id, address=...)``
    (or ``cls(id)`` when the address is None); pass `to_plain`/`from_plain` otherwise. The
    class is matched exactly, so a subclass of a registered class is not admitted implicitly.
    """
    if not isinstance(cls, type) or not issubclass(cls, pysyncobj.node.Node):
        raise InvalidArgument("cls", "must be a pysyncobj.node.Node subclass")
    if isinstance(code, bool) or not isinstance(code, int) or not 16 <= code <= 127:
        raise InvalidArgument("code", f"must be an integer in 16..127, got {code!r}")
    _register(cls, code, to_plain or _default_to_plain, from_plain or _default_from_plain(cls))


_register(set, _EXT_SET, list, _set_from_plain)
_register(frozenset, _EXT_FROZENSET, list, _frozenset_from_plain)
_register(pysyncobj.node.Node, _EXT_NODE, _node_to_plain, _node_from_plain)
_register(pysyncobj.node.TCPNode, _EXT_TCP_NODE, _tcp_node_to_plain, _tcp_node_from_plain)
# The wire's node type, registered here (not by the wire) so that the serializer knows it before
# any frame, snapshot or membership entry is decoded, whichever module was imported first.
register_node_class(
    PeerNode, PEER_NODE_EXT_CODE, to_plain=PeerNode.to_plain, from_plain=PeerNode.from_plain
)


# ------------------------------------------------------------------------ the four functions


def encode(obj: Any, *, max_bytes: int = MAX_ENCODED_BYTES) -> bytes:
    """Bytes of a pysyncobj value (message, command, snapshot part); `InvalidArgument` if the
    value holds a type that is not allowlisted (floats included) or encodes over `max_bytes`."""
    with _lock:
        hooks = dict(_encoders)
    return encode_tree(obj, ext=hooks, max_bytes=max_bytes)


def decode(
    data: bytes | bytearray | memoryview | str, *, max_bytes: int = MAX_ENCODED_BYTES
) -> Any:
    """Decode bytes written by `encode`; anything else raises `DecodeError`, never runs code."""
    if isinstance(data, str):
        data = data.encode("utf-8")  # pysyncobj's to_bytes did the same for str
    with _lock:
        hooks = dict(_decoders)
    return decode_tree(data, ext=hooks, max_bytes=max_bytes, max_depth=MAX_DEPTH)


def dumps(obj: Any, protocol: int | None = None) -> bytes:
    """`pysyncobj.pickle.dumps` replacement; `protocol` is accepted and ignored."""
    return encode(obj)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """`pysyncobj.pickle.loads` replacement: no fallback unpickler, `DecodeError` on bad bytes."""
    return decode(data)


def dump(obj: Any, file: IO[bytes], protocol: int | None = None) -> None:
    """`pysyncobj.pickle.dump` replacement (pysyncobj writes gzip streams with it)."""
    file.write(encode(obj))


def load(file: IO[bytes]) -> Any:
    """`pysyncobj.pickle.load` replacement: reads at most the decode cap plus one byte."""
    try:
        data = file.read(MAX_ENCODED_BYTES + 1)
    except (OSError, EOFError, ValueError) as exc:  # gzip raises these on a bad stream
        raise DecodeError(f"cannot read serialized stream: {exc}") from exc
    return decode(data)


# ------------------------------------------------------------------------ install


_TARGETS: tuple[tuple[Any, str, Callable[..., Any]], ...] = (
    (pysyncobj.pickle, "dumps", dumps),
    (pysyncobj.pickle, "loads", loads),
    (pysyncobj.pickle, "dump", dump),
    (pysyncobj.pickle, "load", load),
    (pysyncobj.journal, "dumps", dumps),  # bound by `from .pickle import` at import time
    (pysyncobj.journal, "loads", loads),
)


def install() -> None:
    """Replace pysyncobj's pickle functions, process-wide. Idempotent and thread-safe."""
    with _lock:
        first = not _originals
        if first:
            for module, name, _ in _TARGETS:
                _originals[f"{module.__name__}.{name}"] = getattr(module, name)
        for module, name, replacement in _TARGETS:
            setattr(module, name, replacement)
    if first:  # a host that also uses pysyncobj directly should be able to find out why
        logging.getLogger(__name__).info(
            "replaced pysyncobj.pickle dumps/loads/dump/load process-wide: every SyncObj in "
            "this process now encodes with coreplane's msgpack codec (plain data only)"
        )


def uninstall() -> None:
    """Put pysyncobj's own functions back (tests only: a running cluster must never do this)."""
    with _lock:
        for module, name, _ in _TARGETS:
            original = _originals.get(f"{module.__name__}.{name}")
            if original is not None:
                setattr(module, name, original)
        _originals.clear()


def installed() -> bool:
    """True if every pysyncobj pickle call site resolves to this module's functions."""
    return all(getattr(module, name) is fn for module, name, fn in _TARGETS)


# ------------------------------------------------------------------------ snapshots


_SNAPSHOT_FORMAT = 1
_KIND_TREE = 0  # pysyncobj's own capture (SyncObj attributes, consumers), as a wire tree
_KIND_HOST = 1  # opaque bytes from the host's capture hook, handed back to its restore hook
_TRANSMIT_FORMAT = 1
# The host's snapshot (`codec.SNAPSHOT_BYTES_MAX`) plus this layer's envelope around it: the
# format, the kind, the member list and msgpack's headers (far below 1 MiB).
SNAPSHOT_ENVELOPE_BYTES = 1 << 20
SNAPSHOT_BYTES_MAX = SNAPSHOT_BYTES_MAX_HOST + SNAPSHOT_ENVELOPE_BYTES
_RETRY_MIN_S, _RETRY_MAX_S = 1.0, 60.0  # after a failed snapshot (see `_back_off`)

Capture = Callable[[], Callable[[], bytes]]


class SnapshotSerializer:
    """pysyncobj's `Serializer`, storing snapshots in the LMDB journal off the tick thread.

    Installed with ``seams.journal_factory(make_journal, serializer_factory=lambda j, *a:
    SnapshotSerializer(j, ...))``; set ``conf.fullDumpFile = journal.snapshot_marker_path(path)``
    so pysyncobj loads the stored snapshot at its first tick (the marker exists iff LMDB holds a
    snapshot). pysyncobj's protocol, kept: `serialize` starts a snapshot, `checkSerializing`
    reports it (then pysyncobj drops the prefix with `deleteEntriesTo`), `deserialize` returns
    ``(data, last_entry, prev_entry, cluster)``, and `getTransmissionData` /
    `setTransmissionData` stream a snapshot to a lagging follower in chunks.

    What runs where: with `capture` (``capture() -> thunk``; ``thunk() -> bytes``), the tick
    thread only calls `capture`, which must be cheap (e.g. take a reference to immutable state),
    and the writer thread runs the thunk, then writes and syncs LMDB. Without it, pysyncobj's own
    capture (a dict of SyncObj attributes) is mutable, so it is encoded on the tick thread and
    only the LMDB write and sync move off it. `restore(bytes)` runs on the tick thread when a
    snapshot is loaded. A received snapshot is validated before it is stored.
    """

    def __init__(
        self,
        journal: Any,
        *,
        capture: Capture | None = None,
        restore: Callable[[bytes], None] | None = None,
        transmission_batch_bytes: int = 256 * 1024,
        snapshot_bytes_max: int = SNAPSHOT_BYTES_MAX,
    ) -> None:
        if (capture is None) != (restore is None):
            raise InvalidArgument("capture", "capture and restore come together")
        if transmission_batch_bytes <= 0 or snapshot_bytes_max <= 0:
            raise InvalidArgument("transmission_batch_bytes", "sizes must be positive")
        self._journal = journal
        self._capture = capture
        self._restore = restore
        self._batch = transmission_batch_bytes
        self._max = snapshot_bytes_max
        self._thread: threading.Thread | _DoneThread | None = None
        self._failed: BaseException | None = None
        self._current_id: Any = None
        self._transmissions: dict[Any, list[Any]] = {}
        self._incoming: bytearray | None = None
        self.last_error: BaseException | None = None
        self._retry_at = 0.0  # monotonic s: no new snapshot before it, after a failure
        self._backoff_s = 0.0

    # ---------------------------------------------------------------- taking a snapshot

    def serialize(self, data: Any, id: Any) -> None:
        """Start a snapshot of ``(data, last_entry, prev_entry, cluster)``; returns at once."""
        if self._thread is not None:
            return
        if time.monotonic() < self._retry_at:
            # pysyncobj asks again at every tick once a compaction is due; after a failure
            # each try was a full-state encode on every replica, back to back.
            return
        self._current_id = id
        self._failed = None
        try:
            app, last_entry, prev_entry, cluster = data
            cluster_bytes = encode(set(cluster))
            if self._capture is not None:
                kind, thunk = _KIND_HOST, self._capture()
            else:
                state = encode(app)  # mutable: encode now, on the tick thread
                kind, thunk = _KIND_TREE, (lambda: state)
        except Exception as exc:  # noqa: BLE001 - reported through checkSerializing
            _log_error("snapshot capture failed", exc)
            self._failed = self.last_error = exc
            self._thread = _DoneThread()
            self._back_off()
            return

        def write() -> None:
            try:
                payload = encode(
                    [_SNAPSHOT_FORMAT, kind, thunk(), cluster_bytes], max_bytes=self._max
                )
                if not self._journal.save_snapshot(
                    payload, last_entry=tuple(last_entry), prev_entry=tuple(prev_entry)
                ):
                    # A later snapshot (from the leader) won: do not compact for this one.
                    self._failed = DecodeError("superseded by a later snapshot")
            except Exception as exc:  # noqa: BLE001 - reported through checkSerializing
                _log_error("snapshot write failed", exc)
                self._failed = self.last_error = exc
                self._back_off()
            else:
                self._backoff_s = 0.0

        self._thread = threading.Thread(target=write, name="coreplane-snapshot", daemon=True)
        self._thread.start()

    def _back_off(self) -> None:
        """Space the next attempt after a failure: 1 s, doubling to 60 s; a success resets."""
        self._backoff_s = min(_RETRY_MAX_S, max(_RETRY_MIN_S, self._backoff_s * 2))
        self._retry_at = time.monotonic() + self._backoff_s

    def checkSerializing(self) -> tuple[int, Any]:
        """pysyncobj polls this each tick: SERIALIZING, then SUCCESS or FAILED once."""
        from pysyncobj.config import SERIALIZER_STATE

        thread = self._thread
        if thread is None:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        if thread.is_alive():
            return SERIALIZER_STATE.SERIALIZING, self._current_id
        thread.join()
        self._thread = None
        if self._failed is not None:
            return SERIALIZER_STATE.FAILED, self._current_id
        self._transmissions.clear()  # a newer snapshot: restart transmissions from it
        return SERIALIZER_STATE.SUCCESS, self._current_id

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until a running snapshot write ends (tests, shutdown); True if none runs."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            return not thread.is_alive()
        return True

    # ---------------------------------------------------------------- loading

    def _decode_payload(self, payload: bytes) -> tuple[int, bytes, set[Any]]:
        parts = decode(payload, max_bytes=self._max)
        if not (
            isinstance(parts, list)
            and len(parts) == 4
            and parts[0] == _SNAPSHOT_FORMAT
            and parts[1] in (_KIND_TREE, _KIND_HOST)
            and isinstance(parts[2], bytes)
            and isinstance(parts[3], bytes)
        ):
            raise DecodeError("snapshot payload has the wrong layout")
        cluster = decode(parts[3])
        if not isinstance(cluster, set) or not all(
            isinstance(n, pysyncobj.node.Node) for n in cluster
        ):
            raise DecodeError("snapshot cluster must be a set of nodes")
        if parts[1] == _KIND_TREE:
            decode(parts[2], max_bytes=self._max)  # validate now; decoded again on load
        elif self._restore is None:
            raise DecodeError("snapshot holds host state but no restore hook is set")
        return parts[1], parts[2], cluster

    def deserialize(self) -> tuple[Any, Any, Any, Any]:
        """The stored snapshot as pysyncobj wants it; host state goes to `restore` first."""
        snap = self._journal.load_snapshot()
        if snap is None:
            raise DecodeError("no snapshot stored")
        kind, state, cluster = self._decode_payload(snap.payload)
        app = None
        if kind == _KIND_TREE:
            app = decode(state, max_bytes=self._max)
        else:
            assert self._restore is not None
            self._restore(state)
        return app, snap.last_entry, snap.prev_entry, cluster

    # ---------------------------------------------------------------- transmission

    def getTransmissionData(self, transmissionID: Any) -> tuple[bytes, bool, bool] | None:
        """The next chunk of the stored snapshot for one follower; None while writing one."""
        if self._thread is not None:
            return None
        state = self._transmissions.get(transmissionID)
        if state is None:
            snap = self._journal.load_snapshot()
            if snap is None:
                return None
            blob = encode([_TRANSMIT_FORMAT, snap.last_entry, snap.prev_entry, snap.payload])
            state = self._transmissions[transmissionID] = [blob, 0]
        blob, offset = state
        chunk = blob[offset : offset + self._batch]
        state[1] = offset + len(chunk)
        is_last = not chunk
        if is_last:
            self._transmissions.pop(transmissionID, None)
        return chunk, offset == 0, is_last

    def setTransmissionData(self, data: Any) -> bool:
        """Accumulate a chunk from the leader; True once a complete, valid snapshot is stored."""
        if not (
            isinstance(data, tuple)
            and len(data) == 3
            and isinstance(data[0], bytes)
            and isinstance(data[1], bool)
            and isinstance(data[2], bool)
        ):
            return False
        chunk, is_first, is_last = data
        if is_first:
            self._incoming = bytearray()
        if self._incoming is None:
            return False
        if len(self._incoming) + len(chunk) > self._max + 1024:
            self._incoming = None
            _log_error("snapshot from the leader is over the size cap", None)
            return False
        self._incoming += chunk
        if not is_last:
            return False
        blob, self._incoming = bytes(self._incoming), None
        try:
            parts = decode(blob, max_bytes=self._max + 1024)
            if not (
                isinstance(parts, list)
                and len(parts) == 4
                and parts[0] == _TRANSMIT_FORMAT
                and isinstance(parts[3], bytes)
            ):
                raise DecodeError("snapshot transmission has the wrong layout")
            last_entry, prev_entry = _entry(parts[1]), _entry(parts[2])
            self._decode_payload(parts[3])
        except DecodeError as exc:
            _log_error("snapshot from the leader refused", exc)
            return False
        return bool(
            self._journal.save_snapshot(parts[3], last_entry=last_entry, prev_entry=prev_entry)
        )

    def cancelTransmisstion(self, id: Any) -> None:
        self._transmissions.pop(id, None)


def _entry(value: Any) -> tuple[bytes, int, int]:
    if not (
        isinstance(value, tuple)
        and len(value) == 3
        and isinstance(value[0], bytes)
        and type(value[1]) is int
        and type(value[2]) is int
    ):
        raise DecodeError("snapshot entry must be (bytes, int, int)")
    return value


class _DoneThread:
    """Stands in for a writer thread that failed before it started."""

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        return None


def _log_error(message: str, exc: BaseException | None) -> None:
    logging.getLogger(__name__).error("%s: %s", message, exc)

"""The pickle replacement: round trips, refusal of pickle bytes, and the marker-file proofs.

A pickle payload whose ``__reduce__`` creates a marker file is fed to pysyncobj through every
path its own pickle module served: a TCP frame, a replicated log entry, a membership command,
a version command and a snapshot (file and in-memory). With `serialization.install()` the marker
never appears; the control test shows the same payload does create it through the stock module,
so a green run means the replacement is what stops it.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle  # tests only: builds the malicious payloads (the package never imports it)
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pysyncobj.journal
import pysyncobj.pickle
import pytest
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import Node, TCPNode
from pysyncobj.serializer import Serializer

from coreplane.errors import DecodeError, InvalidArgument
from coreplane.raft import seams, serialization
from coreplane.raft.journal import LmdbJournal


class _Marker:
    """Unpickling this calls ``open(path, "w")``: harmless, but visible as a new file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def _evil(path: Path) -> bytes:
    return pickle.dumps({"type": "append_entries", "x": _Marker(path)}, protocol=2)


@pytest.fixture()
def installed() -> Iterator[None]:
    serialization.install()
    yield
    serialization.uninstall()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------ round trips


def test_install_is_idempotent_and_reversible() -> None:
    serialization.uninstall()  # an engine built by an earlier test installs and never uninstalls
    stock = pysyncobj.pickle.loads
    assert stock.__module__ == "pysyncobj.pickle"
    serialization.install()
    serialization.install()
    assert serialization.installed()
    assert pysyncobj.pickle.loads is serialization.loads
    serialization.uninstall()
    assert pysyncobj.pickle.loads is stock
    assert not serialization.installed()


@pytest.mark.parametrize(
    "value",
    [
        {
            "type": "append_entries",
            "term": 3,
            "commit_index": 7,
            "prevLogIdx": 6,
            "prevLogTerm": 2,
            "entries": [(b"\x00abc", 7, 3), (b"\x01", 8, 3)],
        },
        {"type": "append_entries", "serialized": (b"chunk", True, False), "term": 1},
        ["add", "n2", Node("n2")],
        ["rem", "127.0.0.1:4001", TCPNode("127.0.0.1:4001")],
        (None, (b"\x01", 2, 1), (b"\x01", 1, 0), {Node("a"), TCPNode("127.0.0.1:1")}),
        (5, (1, 2), {"k": [1, (2, 3)]}),
        frozenset({1, 2}),
        "127.0.0.1:4001",
        b"\x00" * 32,
        7,
    ],
)
def test_pysyncobj_values_round_trip(value: Any) -> None:
    assert serialization.loads(serialization.dumps(value)) == value


def test_nodes_keep_their_class_and_attributes() -> None:
    node = TCPNode("127.0.0.1:4001", zone="a")
    back = serialization.loads(serialization.dumps([node, Node("x", rack=3)]))
    assert type(back[0]) is TCPNode and back[0].address == "127.0.0.1:4001"
    assert back[0].port == 4001 and back[0].zone == "a"
    assert type(back[1]) is Node and back[1].id == "x" and back[1].rack == 3


def test_dump_and_load_through_gzip_like_pysyncobj() -> None:
    value = (None, (b"\x01", 2, 1), (b"\x01", 1, 0), {TCPNode("127.0.0.1:1")})
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as g:
        serialization.dump(value, g)
    with gzip.GzipFile(fileobj=io.BytesIO(buf.getvalue()), mode="rb") as g:
        assert serialization.load(g) == value


@pytest.mark.parametrize("value", [1.5, {"a": 0.0}, object(), Node("x", bad=[1])])
def test_unregistered_types_are_refused_on_encode(value: Any) -> None:
    with pytest.raises(InvalidArgument):
        serialization.dumps(value)


def test_unregistered_node_subclass_is_refused() -> None:
    class Other(Node):
        pass

    with pytest.raises(InvalidArgument):
        serialization.dumps(Other("x"))


def test_register_node_class_round_trips_and_validates() -> None:
    class Peer(Node):
        def __init__(self, node_id: str, address: str | None = None) -> None:
            super().__init__(node_id)
            self.address = address

    serialization.register_node_class(Peer, 120)
    serialization.register_node_class(Peer, 120)  # idempotent
    back = serialization.loads(serialization.dumps({Peer("n1", "127.0.0.1:9")}))
    (peer,) = back
    assert type(peer) is Peer and peer.id == "n1" and peer.address == "127.0.0.1:9"
    with pytest.raises(InvalidArgument):
        serialization.register_node_class(Peer, 121)
    with pytest.raises(InvalidArgument):
        serialization.register_node_class(Node, 3)  # reserved range
    with pytest.raises(InvalidArgument):
        serialization.register_node_class(dict, 122)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        pickle.dumps([1, 2], protocol=2),
        pickle.dumps({"type": "x"}, protocol=4),
        serialization.dumps([1, 2]) + b"\x00",
        bytes([0xC7, 2, 99, 0x90, 0x90]),  # ext code 99: not registered
        bytes([0xCB]) + struct.pack(">d", 1.5),  # a float
        bytes([0xD4, 3, 0x01]),  # Node ext holding a bare int
    ],
)
def test_bad_bytes_raise_decode_error_only(data: bytes) -> None:
    with pytest.raises(DecodeError):
        serialization.loads(data)


def test_node_attribute_names_cannot_reach_dunders() -> None:
    forged = serialization.dumps(Node("x", ok=1)).replace(b"ok", b"__")
    with pytest.raises(DecodeError):
        serialization.loads(forged)


# ------------------------------------------------------------------------ marker proofs


def test_control_stock_pysyncobj_pickle_runs_the_payload(tmp_path: Path) -> None:
    """Without the replacement the payload executes: the marker tests below are meaningful."""
    serialization.uninstall()
    marker = tmp_path / "pwned"
    pysyncobj.pickle.loads(_evil(marker))
    assert marker.exists()


def test_payload_as_direct_call_to_every_module_function(installed: None, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = _evil(marker)
    with pytest.raises(DecodeError):
        pysyncobj.pickle.loads(payload)
    with pytest.raises(DecodeError):
        pysyncobj.pickle.load(io.BytesIO(payload))
    with pytest.raises(DecodeError):
        pysyncobj.journal.loads(payload)
    assert not marker.exists()


class _Counter(SyncObj):
    def __init__(
        self, self_addr: str, others: list[str], conf: SyncObjConf, transport: type | None = None
    ) -> None:
        kwargs = {} if transport is None else {"transportClass": transport}
        super().__init__(self_addr, others, conf, **kwargs)
        self.value = 0

    @replicated
    def incr(self, by: int) -> int:
        self.value += by
        return self.value

    @replicated
    def put(self, value: Any) -> None:
        self.last = value


def _conf(**kw: Any) -> SyncObjConf:
    base: dict[str, Any] = {
        "autoTick": False,
        "raftMinTimeout": 0.1,
        "raftMaxTimeout": 0.2,
        "appendEntriesPeriod": 0.02,
        "connectionRetryTime": 0.1,
    }
    base.update(kw)
    return SyncObjConf(**base)


def _tick_until(objs: list[SyncObj], done: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for obj in objs:
            obj.doTick(0.005)
        if done():
            return True
    return False


@pytest.mark.slow  # a real listening socket on 127.0.0.1
def test_payload_as_tcp_frame_is_dropped(installed: None, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    port = _free_port()
    obj = _Counter(f"127.0.0.1:{port}", [], _conf())
    try:
        frame = zlib.compress(_evil(marker), 3)
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(struct.pack("i", len(frame)) + frame)
            _tick_until([obj], lambda: False, seconds=0.3)
            sock.settimeout(0.5)
            try:
                closed = sock.recv(1) == b""
            except (TimeoutError, ConnectionResetError):
                closed = True
        assert closed
        assert not marker.exists()
    finally:
        obj.destroy()


def _leader(transport: type, **kw: Any) -> _Counter:
    """A one-node group on a socket-free transport, ticked until it leads."""
    obj = _Counter("127.0.0.1:4001", [], _conf(**kw), transport)
    assert _tick_until([obj], obj._isLeader)
    return obj


@pytest.mark.parametrize("kind", [0, 2, 3], ids=["regular", "membership", "version"])
def test_payload_as_committed_log_entry_is_never_applied(
    installed: None, tmp_path: Path, kind: int, recording_transport: Any
) -> None:
    marker = tmp_path / "pwned"
    obj = _leader(recording_transport, dynamicMembershipChange=True)
    try:
        log = obj._SyncObj__raftLog
        last_idx, term = log[-1][1], log[-1][2]
        log.add(bytes([kind]) + _evil(marker), last_idx + 1, term)
        with pytest.raises(DecodeError):
            for _ in range(50):
                obj.doTick(0.001)
        assert not marker.exists()
        assert obj.raftLastApplied <= last_idx
    finally:
        obj.destroy()


def test_payload_as_snapshot_file_is_never_loaded(
    installed: None, tmp_path: Path, recording_transport: Any
) -> None:
    marker = tmp_path / "pwned"
    dump = tmp_path / "dump.bin"
    with gzip.open(dump, "wb") as g:
        g.write(_evil(marker))
    obj = _Counter("127.0.0.1:4001", [], _conf(fullDumpFile=str(dump)), recording_transport)
    try:
        _tick_until([obj], lambda: False, seconds=0.2)  # first tick loads the dump file
        assert not marker.exists()
        assert obj.value == 0
    finally:
        obj.destroy()


def test_payload_as_snapshot_transmission_is_never_loaded(installed: None, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    serializer = Serializer(None, 1024, False, None, None, None)  # in-memory, as on followers
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as g:
        g.write(_evil(marker))
    assert serializer.setTransmissionData((buf.getvalue(), True, True))
    with pytest.raises(DecodeError):
        serializer.deserialize()
    assert not marker.exists()


# ------------------------------------------------------------------------ a real cluster


@pytest.mark.slow
def test_three_node_cluster_replicates_and_compacts_through_the_replacement(
    installed: None, tmp_path: Path
) -> None:
    """Elections, appends, membership, in-memory snapshots and their transmission all work."""
    ports = [_free_port() for _ in range(3)]
    addrs = [f"127.0.0.1:{p}" for p in ports]
    objs = [
        _Counter(
            a,
            [b for b in addrs if b != a],
            _conf(
                logCompactionMinEntries=20, logCompactionMinTime=0.2, dynamicMembershipChange=True
            ),
        )
        for a in addrs
    ]
    try:
        assert _tick_until(objs, lambda: any(o._isLeader() for o in objs))
        leader = next(o for o in objs if o._isLeader())
        for i in range(60):
            leader.incr(1)
            if i % 10 == 0:
                _tick_until(objs, lambda: False, seconds=0.05)
        assert _tick_until(objs, lambda: all(o.value == 60 for o in objs), seconds=10)
        status = leader.getStatus()
        assert serialization.loads(serialization.dumps(status)) == status
        assert _tick_until(objs, lambda: all(len(o._SyncObj__raftLog) < 40 for o in objs))
        # A large entry (pysyncobj streams it as dumps(entry) chunks), a version command and
        # a membership change (TCPNode inside the command) all pass through the replacement.
        value = (b"x" * 200_000, [1, (2, None)], {"k": True})
        leader.put(value)
        leader.setCodeVersion(0)
        spare = f"127.0.0.1:{_free_port()}"
        leader.addNodeToCluster(spare)
        assert _tick_until(objs, lambda: all(getattr(o, "last", None) == value for o in objs))

        def partners(count: int) -> Any:
            return lambda: all(o.getStatus()["partner_nodes_count"] == count for o in objs)

        assert _tick_until(objs, partners(3))
        leader.removeNodeFromCluster(spare)
        assert _tick_until(objs, partners(2))
    finally:
        for obj in objs:
            obj.destroy()
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------ snapshots in LMDB


def _journal(tmp_path: Path, name: str = "j") -> LmdbJournal:
    journal = LmdbJournal(str(tmp_path / name), node_id="n1", durability="relaxed")
    for i in range(1, 6):
        journal.add(b"\x00" + bytes([i]), i, 1)
    journal.flush()
    return journal


def _finish(serializer: serialization.SnapshotSerializer) -> int:
    assert serializer.wait(10)
    state, _ = serializer.checkSerializing()
    return int(state)


def test_snapshot_of_pysyncobj_state_round_trips_through_lmdb(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    try:
        ser = serialization.SnapshotSerializer(journal)
        cluster = {TCPNode("127.0.0.1:1"), TCPNode("127.0.0.1:2")}
        ser.serialize(({"value": 5, "log": [1, 2]}, journal[3], journal[2], cluster), 3)
        assert _finish(ser) == SERIALIZER_STATE.SUCCESS
        assert ser.checkSerializing()[0] == SERIALIZER_STATE.NOT_SERIALIZING
        app, last, prev, members = ser.deserialize()
        assert app == {"value": 5, "log": [1, 2]}
        assert (last, prev, members) == (journal[3], journal[2], cluster)
    finally:
        journal.close()


def test_capture_hook_runs_off_the_tick_thread(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    release = threading.Event()
    restored: list[bytes] = []

    def capture() -> Any:
        frozen = b"host state"  # a cheap reference on the tick thread

        def thunk() -> bytes:
            assert release.wait(10)  # the expensive part, on the writer thread
            return frozen

        return thunk

    try:
        ser = serialization.SnapshotSerializer(journal, capture=capture, restore=restored.append)
        ser.serialize((None, journal[1], journal[0], {Node("n1")}), 1)
        assert ser.checkSerializing()[0] == SERIALIZER_STATE.SERIALIZING  # tick went on
        assert ser.getTransmissionData("n2") is None  # nothing to stream while writing
        release.set()
        assert _finish(ser) == SERIALIZER_STATE.SUCCESS
        app, last, _, members = ser.deserialize()
        assert app is None and restored == [b"host state"] and members == {Node("n1")}
        assert last == journal[1]
    finally:
        release.set()
        journal.close()


def test_snapshot_failures_are_reported_not_raised(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    try:
        ser = serialization.SnapshotSerializer(journal)
        ser.serialize(({"x": 1.5}, journal[1], journal[0], set()), 1)  # a float: refused
        assert _finish(ser) == SERIALIZER_STATE.FAILED
        assert isinstance(ser.last_error, InvalidArgument)
        assert journal.load_snapshot() is None
    finally:
        journal.close()


def test_a_failed_snapshot_is_retried_after_a_backoff_not_at_every_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pysyncobj asks for a snapshot at every tick while compaction is due: after a failure
    that was a full-state encode per tick on every replica. Now the next try waits 1 s,
    doubling; a success resets the wait."""
    clock = [1000.0]
    monkeypatch.setattr(serialization.time, "monotonic", lambda: clock[0])
    journal = _journal(tmp_path)
    calls: list[int] = []
    fail = [True]

    def capture() -> Any:
        calls.append(1)

        def thunk() -> bytes:
            if fail[0]:
                raise InvalidArgument("value", "too large")
            return b"state"

        return thunk

    try:
        ser = serialization.SnapshotSerializer(journal, capture=capture, restore=lambda _: None)
        entry = (journal[1], journal[0], {Node("n1")})

        def attempt() -> int:
            ser.serialize((None, *entry), 1)
            return int(_finish(ser))

        assert attempt() == SERIALIZER_STATE.FAILED and len(calls) == 1
        for _ in range(50):  # ticks inside the backoff: no new attempt, nothing reported
            assert attempt() == SERIALIZER_STATE.NOT_SERIALIZING
        assert len(calls) == 1
        clock[0] += 1.0
        assert attempt() == SERIALIZER_STATE.FAILED and len(calls) == 2
        clock[0] += 1.5  # the second wait is 2 s
        assert attempt() == SERIALIZER_STATE.NOT_SERIALIZING and len(calls) == 2
        clock[0] += 0.5
        fail[0] = False
        assert attempt() == SERIALIZER_STATE.SUCCESS and len(calls) == 3
        assert attempt() == SERIALIZER_STATE.SUCCESS and len(calls) == 4  # no wait after one
    finally:
        journal.close()


def test_a_snapshot_over_the_command_size_cap_is_stored(tmp_path: Path) -> None:
    """A command is capped at 16 MiB; a snapshot has its own cap (`SNAPSHOT_BYTES_MAX`): a
    state past 16 MiB once failed every snapshot, so the log never compacted."""
    journal = _journal(tmp_path)
    big = os.urandom(20 * 1024 * 1024)
    restored: list[bytes] = []
    try:
        ser = serialization.SnapshotSerializer(
            journal, capture=lambda: lambda: big, restore=restored.append
        )
        ser.serialize((None, journal[1], journal[0], {Node("n1")}), 1)
        assert _finish(ser) == SERIALIZER_STATE.SUCCESS
        ser.deserialize()
        assert restored == [big]
    finally:
        journal.close()


def _stream(src: serialization.SnapshotSerializer, dst: serialization.SnapshotSerializer) -> bool:
    for _ in range(1000):
        chunk = src.getTransmissionData("dst")
        assert chunk is not None
        done = dst.setTransmissionData(serialization.loads(serialization.dumps(chunk)))
        if chunk[2]:
            return done
    raise AssertionError("transmission did not end")


def test_snapshot_streams_to_a_follower_in_chunks(tmp_path: Path) -> None:
    leader, follower = _journal(tmp_path, "a"), _journal(tmp_path, "b")
    try:
        src = serialization.SnapshotSerializer(leader, transmission_batch_bytes=1000)
        dst = serialization.SnapshotSerializer(follower)
        state = {"blob": os.urandom(10_000)}
        src.serialize((state, leader[4], leader[3], {Node("a")}), 4)
        assert _finish(src) == SERIALIZER_STATE.SUCCESS
        assert _stream(src, dst)
        app, last, prev, _ = dst.deserialize()
        assert app == state and (last, prev) == (leader[4], leader[3])
    finally:
        leader.close()
        follower.close()


def test_payload_as_streamed_snapshot_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    journal = _journal(tmp_path)
    try:
        dst = serialization.SnapshotSerializer(journal)
        assert not dst.setTransmissionData((_evil(marker), True, True))
        inner = serialization.dumps([1, (b"\x00", 5, 1), (b"\x00", 4, 1), _evil(marker)])
        assert not dst.setTransmissionData((inner, True, True))
        assert not dst.setTransmissionData("not a chunk")
        assert journal.load_snapshot() is None  # nothing stored
        assert not marker.exists()
    finally:
        journal.close()


def test_payload_as_stored_lmdb_snapshot_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    journal = _journal(tmp_path)
    try:
        journal.save_snapshot(_evil(marker), last_entry=journal[1], prev_entry=journal[0])
        with pytest.raises(DecodeError):
            serialization.SnapshotSerializer(journal).deserialize()
        assert not marker.exists()
    finally:
        journal.close()


def test_payload_as_lmdb_log_entry_is_never_applied(
    installed: None, tmp_path: Path, recording_transport: Any
) -> None:
    """The pickle payload survives a restart in the LMDB log and is still refused."""
    marker = tmp_path / "pwned"
    addr = "127.0.0.1:4001"
    path = str(tmp_path / "j")

    def build() -> tuple[_Counter, LmdbJournal]:
        holder: dict[str, LmdbJournal] = {}

        def make(_file: str | None) -> LmdbJournal:
            holder["j"] = LmdbJournal(path, node_id=addr)
            return holder["j"]

        with seams.journal_factory(make):
            obj = _Counter(addr, [], _conf(), recording_transport)
        return obj, holder["j"]

    obj, journal = build()
    assert _tick_until([obj], obj._isLeader)
    last_idx, term = journal[-1][1], journal[-1][2]
    journal.add(b"\x00" + _evil(marker), last_idx + 1, term)
    journal.flush()
    obj._doDestroy()
    obj, journal = build()
    try:
        with pytest.raises(DecodeError):
            for _ in range(100):
                obj.doTick(0.005)
        assert not marker.exists()
    finally:
        obj._doDestroy()


def test_peer_nodes_decode_without_the_wire_module() -> None:
    """The serializer knows PeerNode by itself (raft/nodes.py), not because the wire happened to
    be imported first: checked in a fresh interpreter that never imports the wire."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from coreplane.raft import serialization\n"
        "from coreplane.raft.nodes import PeerNode\n"
        "node = serialization.decode(serialization.encode({PeerNode('a', '10.0.0.1:4321')}))\n"
        "print(repr(node), 'coreplane.raft.wire' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert out.stdout.split() == ["{PeerNode('a',", "'10.0.0.1:4321')}", "False"]


def test_the_process_wide_swap_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A host that also uses pysyncobj can find out from its logs why pickle stopped working."""
    serialization.uninstall()
    caplog.set_level("INFO", logger="coreplane.raft.serialization")
    try:
        serialization.install()
        serialization.install()
        swaps = [r for r in caplog.records if "process-wide" in r.getMessage()]
        assert len(swaps) == 1 and "pysyncobj.pickle" in swaps[0].getMessage()
    finally:
        serialization.uninstall()


def test_the_snapshot_caps_of_state_and_raft_layer_agree() -> None:
    """The state allowed 4 GiB where this layer allowed 1: a state in between encoded and then
    failed the envelope at every compaction. Both derive from `codec.SNAPSHOT_BYTES_MAX`, and
    the envelope around a host snapshot at that cap (format, kind, a 7-voter member list,
    msgpack's 32-bit bin header) fits this layer's cap."""
    from coreplane.core import codec
    from coreplane.core import state as core_state

    host = codec.SNAPSHOT_BYTES_MAX
    assert host == core_state.SNAPSHOT_BYTES_MAX
    assert host + serialization.SNAPSHOT_ENVELOPE_BYTES == serialization.SNAPSHOT_BYTES_MAX
    members = serialization.encode({TCPNode(f"10.0.0.{i}:4321") for i in range(7)})
    payload = b"x" * 70_000  # a bin 32 header, as at the cap
    envelope = serialization.encode([1, 1, payload, members])
    assert len(envelope) - len(payload) < serialization.SNAPSHOT_ENVELOPE_BYTES

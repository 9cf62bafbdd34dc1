"""Attacks on a live node's wire, over real sockets on 127.0.0.1 (fast: default run).

Node "a" is a real pysyncobj SyncObj on the coreplane transport with peers "b" and "c" (which
dial it). Each test connects as an attacker or as peer "b" and checks the node (1) refused the
bytes for the expected reason, (2) did so before decoding anything (a spy on the decoder),
(3) sent nothing back to an unauthenticated client, and (4) kept no trace: no connection, no
pending handshake, no change to its cluster.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.utility import TcpUtility, UtilityException

from coreplane.raft import _frames, serialization, wire
from coreplane.raft.wire import PeerNode, make_transport_class

# Attacks on a real listener on 127.0.0.1: opt-in (`pytest -m slow`), as CONTRIBUTING.md says.
pytestmark = pytest.mark.slow

SECRET = b"integration-test-secret-0123456789"
MAX_FRAME = 64 * 1024
WAIT_S = 10.0


def wait_until(pred: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


class Counter(SyncObj):
    def __init__(self, transport_class: type, peers: dict[str, str]) -> None:
        conf = SyncObjConf(
            raftMinTimeout=0.3,
            raftMaxTimeout=0.6,
            appendEntriesPeriod=0.05,
            connectionTimeout=3.0,
            dynamicMembershipChange=True,
        )
        super().__init__(
            PeerNode("a", "127.0.0.1:0"),
            [PeerNode(i, addr) for i, addr in peers.items()],
            conf,
            transportClass=transport_class,
            nodeClass=PeerNode,
        )
        self.value = 0

    @replicated
    def incr(self) -> int:
        self.value += 1
        return self.value


class Node:
    """A live node "a" plus handles on its transport and a spy on its message decoder."""

    def __init__(self, obj: Counter, decoded: list[bytes]) -> None:
        self.obj = obj
        self.transport = obj._SyncObj__transport
        self.address = self.transport.bound_address
        host, port = self.address.rsplit(":", 1)
        self.endpoint = (host, int(port))
        self.decoded = decoded
        self.before = self.transport.stats()

    def rejected(self, reason: str) -> int:
        return self.transport.stats().get(f"reject:{reason}", 0) - self.before.get(
            f"reject:{reason}", 0
        )

    def assert_no_trace(self) -> None:
        # SyncObj hears of the close on its own thread just after the transport forgets it.
        wait_until(
            lambda: (
                not self.transport._pending
                and not self.transport.connected_peer_ids()
                and self.obj.getStatus()["partner_node_status_server_b"] == 0
            )
        )
        assert sorted(n.id for n in self.obj.otherNodes) == ["b", "c"]
        assert self.obj.getCodeVersion() == 0
        assert self.obj.getStatus()["readonly_nodes_count"] == 0


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    decoded: list[bytes] = []
    real = wire._decode_message

    def spy(payload: bytes) -> Any:
        decoded.append(payload)
        return real(payload)

    monkeypatch.setattr(wire, "_decode_message", spy)
    peers = {"b": "127.0.0.1:9", "c": "127.0.0.1:9"}  # never dialed: they dial "a"
    cls = make_transport_class(
        node_id="a", secret=SECRET, listen="127.0.0.1:0", peers=peers, max_frame_bytes=MAX_FRAME
    )
    obj = Counter(cls, peers)
    try:
        obj.waitBinded()
        yield Node(obj, decoded)
    finally:
        obj.destroy()


def stock_frame(message: Any) -> bytes:
    """What pysyncobj's own TcpConnection sends: struct('i', len) + zlib(pickle(message))."""
    data = zlib.compress(pickle.dumps(message), 3)
    return struct.pack("i", len(data)) + data


def exchange(node: Node, data: bytes) -> bytes:
    """Send raw bytes unauthenticated; return everything the node sent before closing."""
    with socket.create_connection(node.endpoint, timeout=WAIT_S) as sock:
        sock.sendall(data)
        return drain(sock)


def drain(sock: socket.socket) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk
    raise AssertionError("node did not close the connection")


class Peer:
    """A client that really holds the secret and completes the handshake as node `node_id`."""

    def __init__(self, node: Node, node_id: str = "b", secret: bytes = SECRET) -> None:
        self.sock = socket.create_connection(node.endpoint, timeout=WAIT_S)
        self.key = _frames.cluster_key(secret, "coreplane")
        self.id_c, self.id_s = node_id.encode(), b"a"
        self.nonce_c = os.urandom(32)
        self.hello = _frames.build_hello(self.key, self.id_c, self.nonce_c)
        self.sealer: _frames.FrameSealer | None = None
        self.opener: _frames.FrameOpener | None = None

    def handshake(self) -> None:
        self.sock.sendall(self.hello)
        buf = bytearray()
        while (
            reply := _frames.parse_reply(buf, self.key, self.id_c, self.nonce_c, self.id_s)
        ) is None:
            chunk = self.sock.recv(4096)
            assert chunk, "node closed during the handshake"
            buf += chunk
        nonce_s, used = reply
        del buf[:used]
        self.nonce_s = nonce_s
        self.confirm = _frames.build_confirm(self.key, self.id_c, self.id_s, self.nonce_c, nonce_s)
        self.sock.sendall(self.confirm)
        session = _frames.session_key(self.key, self.id_c, self.id_s, self.nonce_c, nonce_s)
        self.sealer = _frames.FrameSealer(session, _frames.DIRECTION_FROM_DIALER)
        self.opener = _frames.FrameOpener(session, _frames.DIRECTION_FROM_LISTENER, 1 << 24)
        self.rbuf = buf

    def messages(self, data: bytes) -> list[Any]:
        """Decode what the node sent us (it is authenticated to us, too)."""
        assert self.opener is not None
        self.rbuf += data
        out = []
        while (frame := self.opener.pop(self.rbuf)) is not None:
            if frame[0] == _frames.KIND_MESSAGE:
                out.append(serialization.loads(frame[1]))
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def peer(node: Node) -> Iterator[Peer]:
    p = Peer(node)
    p.handshake()
    wait_until(lambda: node.transport.connected_peer_ids() == ["b"])
    yield p
    p.close()


class Evil:
    """A pickle whose load would create `path` (the classic __reduce__ gadget)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


# ---------------------------------------------------------------------------- unauthenticated


def test_stock_pickle_frame_with_reduce_gadget_runs_nothing(node: Node, tmp_path: Path) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Evil(control)))  # the gadget is live: unpickling runs it
    assert control.exists()
    marker = tmp_path / "marker"
    assert exchange(node, stock_frame(Evil(marker))) == b""
    assert node.rejected("bad_magic") == 1
    assert node.decoded == []
    node.assert_no_trace()
    assert not marker.exists()


@pytest.mark.parametrize(
    "command",
    [["status"], ["add", "127.0.0.1:1"], ["remove", "c"], ["set_version", 7], ["transfer", "c"]],
)
def test_admin_commands_from_unauthenticated_clients_get_nothing(node: Node, command) -> None:
    assert exchange(node, stock_frame(command)) == b""
    assert node.rejected("bad_magic") == 1
    node.assert_no_trace()


def test_pysyncobj_admin_tool_gets_no_answer(node: Node) -> None:
    with pytest.raises(UtilityException):
        TcpUtility(timeout=WAIT_S).executeCommand(node.address, ["status"])
    node.assert_no_trace()


def test_readonly_handshake_is_refused_and_sent_no_log(node: Node) -> None:
    node.obj.incr(sync=False)  # something in the log that a reader would like to see
    assert exchange(node, stock_frame("readonly")) == b""
    # Even holding the secret, "readonly" is not a member: there are no read-only nodes.
    key = _frames.cluster_key(SECRET, "coreplane")
    assert exchange(node, _frames.build_hello(key, b"readonly", os.urandom(32))) == b""
    assert node.rejected("bad_magic") == 1 and node.rejected("unknown_peer_id") == 1
    assert node.decoded == []
    node.assert_no_trace()


def test_hello_without_mac_is_refused(node: Node) -> None:
    key = _frames.cluster_key(SECRET, "coreplane")
    hello = _frames.build_hello(key, b"b", os.urandom(32))[:-32]
    follow = zlib.compress(pickle.dumps({"type": "request_vote", "term": 99}))
    assert exchange(node, hello + follow.ljust(32, b"\0")) == b""
    assert node.rejected("bad_hello_mac") == 1
    assert node.decoded == []
    node.assert_no_trace()


def test_hello_with_bad_mac_is_refused(node: Node) -> None:
    wrong = _frames.cluster_key(b"not-the-cluster-secret!!", "coreplane")
    assert exchange(node, _frames.build_hello(wrong, b"b", os.urandom(32))) == b""
    assert node.rejected("bad_hello_mac") == 1
    node.assert_no_trace()


@pytest.mark.parametrize(
    ("claimed", "reason"), [("z", "unknown_peer_id"), ("a", "unknown_peer_id")]
)
def test_unknown_or_self_node_id_is_refused_even_with_the_secret(
    node: Node, claimed: str, reason: str
) -> None:
    key = _frames.cluster_key(SECRET, "coreplane")
    assert exchange(node, _frames.build_hello(key, claimed.encode(), os.urandom(32))) == b""
    assert node.rejected(reason) == 1
    node.assert_no_trace()


def test_forged_id_without_the_secret_is_refused(node: Node) -> None:
    attacker = Peer(node, node_id="b", secret=b"guessed-secret-0123456789")
    attacker.sock.sendall(attacker.hello)
    assert drain(attacker.sock) == b""
    attacker.close()
    assert node.rejected("bad_hello_mac") == 1
    node.assert_no_trace()


def test_replayed_handshake_is_refused(node: Node) -> None:
    first = Peer(node)
    first.handshake()
    wait_until(lambda: node.transport.connected_peer_ids() == ["b"])
    first.close()
    wait_until(lambda: node.transport.connected_peer_ids() == [])
    # Replaying the recorded HELLO gets a fresh challenge; the recorded CONFIRM cannot answer it.
    with socket.create_connection(node.endpoint, timeout=WAIT_S) as sock:
        sock.sendall(first.hello)
        time.sleep(0.05)
        sock.sendall(first.confirm)
        drain(sock)
    assert node.rejected("bad_confirm_mac") == 1
    node.assert_no_trace()


def test_unauthenticated_oversize_prefix_and_zlib_bomb_are_refused(node: Node) -> None:
    assert exchange(node, b"\x7f\xff\xff\xff" + b"\0" * 64) == b""
    assert exchange(node, zlib.compress(bytes(8 * 1024 * 1024), 9)) == b""
    assert node.rejected("bad_magic") == 2
    assert node.decoded == []
    node.assert_no_trace()


def test_binds_only_the_configured_address(node: Node) -> None:
    assert node.transport._server.getsockname()[0] == "127.0.0.1"


# ---------------------------------------------------------------------------- authenticated peer


def test_authenticated_peer_is_a_member_and_gets_raft_messages(node: Node, peer: Peer) -> None:
    peer.sock.sendall(
        peer.sealer.seal(
            _frames.KIND_MESSAGE,
            serialization.dumps(
                {"type": "request_vote", "term": 1, "last_log_index": 0, "last_log_term": 0}
            ),
        )
    )
    wait_until(lambda: len(node.decoded) == 1)
    assert node.transport.connected_peer_ids() == ["b"]


def test_frame_with_bad_mac_is_refused(node: Node, peer: Peer) -> None:
    frame = bytearray(peer.sealer.seal(_frames.KIND_MESSAGE, serialization.dumps({"type": "x"})))
    frame[-1] ^= 0xFF
    peer.sock.sendall(frame)
    drain(peer.sock)
    assert node.rejected("bad_frame_mac") == 1
    assert node.decoded == []
    node.assert_no_trace()


def test_frame_without_mac_is_refused(node: Node, peer: Peer) -> None:
    frame = peer.sealer.seal(_frames.KIND_MESSAGE, serialization.dumps({"type": "x"}))
    peer.sock.sendall(frame[:-32] + b"\0" * 32)
    drain(peer.sock)
    assert node.rejected("bad_frame_mac") == 1
    assert node.decoded == []


def test_replayed_frame_is_refused(node: Node, peer: Peer) -> None:
    frame = peer.sealer.seal(_frames.KIND_PING)
    peer.sock.sendall(frame + frame)
    drain(peer.sock)
    assert node.rejected("replayed_frame") == 1
    assert node.decoded == []
    node.assert_no_trace()


def test_oversize_length_prefix_is_refused_without_reading_the_body(node: Node, peer: Peer) -> None:
    peer.sock.sendall(struct.pack(">IQ", MAX_FRAME + 1, 0))  # no body follows
    drain(peer.sock)
    assert node.rejected("frame_too_large") == 1
    assert node.decoded == []
    node.assert_no_trace()


def test_zlib_bomb_is_refused_before_decoding(node: Node, peer: Peer) -> None:
    bomb = zlib.compress(bytes(16 * 1024 * 1024), 9)  # 16 MiB of zeros in ~16 KiB
    peer.sock.sendall(peer.sealer.seal(0x01, bomb))
    drain(peer.sock)
    assert node.rejected("decompressed_too_large") == 1
    assert node.decoded == []
    node.assert_no_trace()


def test_authenticated_pickled_global_is_refused_without_running(
    node: Node, peer: Peer, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    peer.sock.sendall(peer.sealer.seal(_frames.KIND_MESSAGE, pickle.dumps(Evil(marker))))
    drain(peer.sock)
    assert node.rejected("undecodable_message") == 1
    assert len(node.decoded) == 1  # reached the decoder only after the MAC, which refused it
    assert not marker.exists()
    node.assert_no_trace()


def test_authenticated_admin_command_is_not_a_raft_message(node: Node, peer: Peer) -> None:
    peer.sock.sendall(
        peer.sealer.seal(_frames.KIND_MESSAGE, serialization.dumps(["add", "127.0.0.1:1"]))
    )
    answers = peer.messages(drain(peer.sock))
    assert all(
        isinstance(m, dict) and m["type"] in {"request_vote", "append_entries"} for m in answers
    )
    assert node.rejected("not_a_raft_message") == 1
    node.assert_no_trace()


def test_flood_of_idle_connections_cannot_lock_out_a_peer(node: Node) -> None:
    idle = [socket.create_connection(node.endpoint, timeout=WAIT_S) for _ in range(80)]
    try:
        wait_until(
            lambda: node.transport.stats().get("accepted", 0) - node.before.get("accepted", 0) >= 80
        )
        assert len(node.transport._pending) <= 64
        p = Peer(node)
        p.handshake()
        wait_until(lambda: node.transport.connected_peer_ids() == ["b"])
        p.close()
    finally:
        for sock in idle:
            sock.close()
    node.assert_no_trace()

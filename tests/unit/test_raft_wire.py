"""Wire protocol logic without sockets: handshake, frames, caps, config validation, PeerNode.

Each rejection test names the reason code the transport counts, so a regression that accepts
bad bytes (or rejects them later, after decoding) shows up here before any socket is involved.
"""

from __future__ import annotations

import hmac
import inspect
import os
import struct
import tracemalloc
import zlib

import pysyncobj.version
import pytest
from pysyncobj import SyncObj
from pysyncobj.node import Node
from pysyncobj.transport import Transport

from coreplane.errors import DecodeError, InvalidArgument
from coreplane.raft import _frames, serialization
from coreplane.raft._frames import Rejected
from coreplane.raft.wire import PEER_NODE_EXT_CODE, PeerNode, make_transport_class

SECRET = b"s" * 32
KEY = _frames.cluster_key(SECRET, "coreplane")
ID_C, ID_S = b"b", b"a"


def _handshake() -> tuple[bytes, bytes, bytes]:
    """A complete valid handshake; returns (nonce_c, nonce_s, session key)."""
    nonce_c, nonce_s = os.urandom(32), os.urandom(32)
    hello = _frames.build_hello(KEY, ID_C, nonce_c)
    assert _frames.parse_hello(hello, KEY) == (ID_C, nonce_c, len(hello))
    reply = _frames.build_reply(KEY, ID_C, ID_S, nonce_c, nonce_s)
    assert _frames.parse_reply(reply, KEY, ID_C, nonce_c, ID_S) == (nonce_s, len(reply))
    confirm = _frames.build_confirm(KEY, ID_C, ID_S, nonce_c, nonce_s)
    assert _frames.parse_confirm(confirm, KEY, ID_C, ID_S, nonce_c, nonce_s) == 32
    return nonce_c, nonce_s, _frames.session_key(KEY, ID_C, ID_S, nonce_c, nonce_s)


def _pair(max_frame_bytes: int = 1 << 20) -> tuple[_frames.FrameSealer, _frames.FrameOpener]:
    *_, session = _handshake()
    return (
        _frames.FrameSealer(session, _frames.DIRECTION_FROM_DIALER),
        _frames.FrameOpener(session, _frames.DIRECTION_FROM_DIALER, max_frame_bytes),
    )


def _reason(fn, *args) -> str:
    with pytest.raises(Rejected) as info:
        fn(*args)
    assert isinstance(info.value, DecodeError)
    return info.value.reason


# ---------------------------------------------------------------------------------- handshake


def test_handshake_round_trip_and_every_prefix_is_incomplete() -> None:
    nonce_c, nonce_s, _ = _handshake()
    hello = _frames.build_hello(KEY, ID_C, nonce_c)
    reply = _frames.build_reply(KEY, ID_C, ID_S, nonce_c, nonce_s)
    confirm = _frames.build_confirm(KEY, ID_C, ID_S, nonce_c, nonce_s)
    for n in range(len(hello)):
        assert _frames.parse_hello(hello[:n], KEY) is None
    for n in range(len(reply)):
        assert _frames.parse_reply(reply[:n], KEY, ID_C, nonce_c, ID_S) is None
    for n in range(len(confirm)):
        assert _frames.parse_confirm(confirm[:n], KEY, ID_C, ID_S, nonce_c, nonce_s) is None


def test_pysyncobj_stock_frame_is_refused_at_its_first_bytes() -> None:
    # pysyncobj frames are struct('i', len) + zlib(pickle(...)): refused on the magic alone.
    stock = struct.pack("i", 20) + zlib.compress(b"anything")
    assert _reason(_frames.parse_hello, stock[:4], KEY) == "bad_magic"
    assert _reason(_frames.parse_hello, b"X", KEY) == "bad_magic"


def test_bad_version_and_id_length_are_refused_before_the_mac() -> None:
    hello = bytearray(_frames.build_hello(KEY, ID_C, os.urandom(32)))
    hello[4] = 99
    assert _reason(_frames.parse_hello, hello, KEY) == "bad_version"
    for bad_len in (0, _frames.NODE_ID_BYTES_MAX + 1):
        head = _frames.MAGIC + bytes((1,)) + os.urandom(32) + bytes((bad_len,))
        assert _reason(_frames.parse_hello, head, KEY) == "bad_id_length"


@pytest.mark.parametrize(
    "key",
    [
        _frames.cluster_key(b"w" * 32, "coreplane"),  # wrong secret
        _frames.cluster_key(SECRET, "other-cluster"),  # right secret, other cluster
    ],
)
def test_hello_under_another_key_is_refused(key: bytes) -> None:
    hello = _frames.build_hello(key, ID_C, os.urandom(32))
    assert _reason(_frames.parse_hello, hello, KEY) == "bad_hello_mac"


def test_hello_without_a_mac_is_refused() -> None:
    hello = _frames.build_hello(KEY, ID_C, os.urandom(32))
    no_mac = hello[:-32] + b"\x00" * 32
    assert _reason(_frames.parse_hello, no_mac, KEY) == "bad_hello_mac"


def test_forged_node_id_in_hello_is_refused() -> None:
    hello = bytearray(_frames.build_hello(KEY, b"z", os.urandom(32)))
    hello[38] = ord("c")  # rename the claimed id, keep the MAC
    assert _reason(_frames.parse_hello, hello, KEY) == "bad_hello_mac"


def test_dialer_refuses_a_listener_that_is_not_the_node_it_dialed() -> None:
    nonce_c, nonce_s = os.urandom(32), os.urandom(32)
    reply = _frames.build_reply(KEY, ID_C, b"c", nonce_c, nonce_s)  # valid, but node c
    assert _reason(_frames.parse_reply, reply, KEY, ID_C, nonce_c, ID_S) == "wrong_peer_id"


def test_replayed_reply_and_confirm_are_refused() -> None:
    old_c, old_s, _ = _handshake()
    reply = _frames.build_reply(KEY, ID_C, ID_S, old_c, old_s)
    confirm = _frames.build_confirm(KEY, ID_C, ID_S, old_c, old_s)
    new_c, new_s = os.urandom(32), os.urandom(32)
    assert _reason(_frames.parse_reply, reply, KEY, ID_C, new_c, ID_S) == "bad_reply_mac"
    assert (
        _reason(_frames.parse_confirm, confirm, KEY, ID_C, ID_S, old_c, new_s) == "bad_confirm_mac"
    )


def test_session_keys_are_fresh_and_bound_to_both_ids() -> None:
    n1, n2 = os.urandom(32), os.urandom(32)
    base = _frames.session_key(KEY, ID_C, ID_S, n1, n2)
    assert base != _frames.session_key(KEY, ID_C, ID_S, n1, os.urandom(32))
    assert base != _frames.session_key(KEY, ID_S, ID_C, n1, n2)
    # ids are length-prefixed in the MAC input, so moving a byte between them changes the key
    assert _frames.session_key(KEY, b"ab", b"c", n1, n2) != _frames.session_key(
        KEY, b"a", b"bc", n1, n2
    )


# ---------------------------------------------------------------------------------- frames


def test_frames_round_trip_in_one_buffer_and_in_pieces() -> None:
    sealer, opener = _pair()
    big = bytes(range(256)) * 400  # compressible and over 64 KiB, so it travels deflated
    wire = (
        sealer.seal(_frames.KIND_MESSAGE, b"hi")
        + sealer.seal(_frames.KIND_PING)
        + sealer.seal(_frames.KIND_MESSAGE, big)
    )
    buf = bytearray()
    got = []
    for byte in wire:
        buf.append(byte)
        frame = opener.pop(buf)
        if frame is not None:
            got.append(frame)
    assert got == [
        (_frames.KIND_MESSAGE, b"hi"),
        (_frames.KIND_PING, b""),
        (_frames.KIND_MESSAGE, big),
    ]
    assert buf == bytearray()


@pytest.mark.parametrize("key_bytes", [1, 32, 64, 65, 200])
@pytest.mark.parametrize("size", [0, 1, 2047, 2048, 5000, 70_000])
def test_frame_mac_is_hmac_sha256_of_the_joined_parts(key_bytes: int, size: int) -> None:
    key, data = os.urandom(key_bytes), os.urandom(size)
    mac = _frames.FrameMac(key)
    want = hmac.digest(key, b"C" + data, "sha256")
    assert mac.digest(b"C", data) == want
    assert mac.digest(b"C", memoryview(data)[:7], bytearray(data[7:])) == want
    assert mac.digest(b"C", data) == want  # the keyed state is copied, never consumed


@pytest.mark.parametrize("size", [0, 5, 4000, 64 * 1024])
def test_frame_bytes_are_the_documented_layout(size: int) -> None:
    """len | seq | kind | payload | HMAC(session, direction | len | seq | kind | payload): the
    bytes a peer on the previous release computes, so mixed versions still talk."""
    *_, session = _handshake()
    sealer = _frames.FrameSealer(session, _frames.DIRECTION_FROM_DIALER)
    sealer.seal(_frames.KIND_PING)
    payload = os.urandom(size)  # incompressible: sent raw whatever its size
    frame = sealer.seal(_frames.KIND_MESSAGE, payload)
    head = struct.pack(">IQ", size + 1, 1) + bytes((_frames.KIND_MESSAGE,))
    mac = hmac.digest(session, _frames.DIRECTION_FROM_DIALER + head + payload, "sha256")
    assert frame == head + payload + mac
    out = bytearray(b"queued")
    sealer.seal_into(out, _frames.KIND_MESSAGE, payload)
    assert out[:6] == b"queued" and out[6:18] == struct.pack(">IQ", size + 1, 2)


def test_only_large_compressible_messages_travel_deflated() -> None:
    sealer, opener = _pair()
    for payload, kind in [
        (bytes(60 * 1024), _frames.KIND_MESSAGE),  # under the threshold: raw
        (bytes(64 * 1024), 0x01),  # at it and compressible: deflated
        (os.urandom(64 * 1024), _frames.KIND_MESSAGE),  # deflating would not shrink it
    ]:
        frame = sealer.seal(_frames.KIND_MESSAGE, payload)
        assert frame[12] == kind
        assert opener.pop(bytearray(frame)) == (_frames.KIND_MESSAGE, payload)


@pytest.mark.parametrize("offset", [3, 5, 12, -1])  # length, seq, body, mac
def test_any_flipped_bit_is_refused_by_the_mac(offset: int) -> None:
    sealer, opener = _pair()
    frame = bytearray(sealer.seal(_frames.KIND_MESSAGE, b"payload"))
    frame[offset] ^= 0x01
    assert _reason(opener.pop, frame + bytes(64)) == "bad_frame_mac"


def test_frame_without_mac_is_refused() -> None:
    sealer, opener = _pair()
    frame = sealer.seal(_frames.KIND_MESSAGE, b"payload")
    follow = sealer.seal(_frames.KIND_MESSAGE, b"next")
    assert _reason(opener.pop, bytearray(frame[:-32] + follow)) == "bad_frame_mac"


def test_replayed_and_skipped_frames_are_refused() -> None:
    sealer, opener = _pair()
    first = sealer.seal(_frames.KIND_MESSAGE, b"one")
    assert opener.pop(bytearray(first)) == (_frames.KIND_MESSAGE, b"one")
    assert _reason(opener.pop, bytearray(first)) == "replayed_frame"
    sealer2, opener2 = _pair()
    sealer2.seal(_frames.KIND_MESSAGE, b"lost")
    assert (
        _reason(opener2.pop, bytearray(sealer2.seal(_frames.KIND_MESSAGE, b"two")))
        == "skipped_frame"
    )


def test_reflected_frame_and_other_session_frame_are_refused() -> None:
    *_, session = _handshake()
    mine = _frames.FrameSealer(session, _frames.DIRECTION_FROM_DIALER)
    my_opener = _frames.FrameOpener(session, _frames.DIRECTION_FROM_LISTENER, 1 << 20)
    assert (
        _reason(my_opener.pop, bytearray(mine.seal(_frames.KIND_MESSAGE, b"x"))) == "bad_frame_mac"
    )
    other, _ = _pair()
    _, fresh_opener = _pair()
    assert (
        _reason(fresh_opener.pop, bytearray(other.seal(_frames.KIND_MESSAGE, b"x")))
        == "bad_frame_mac"
    )


def test_oversize_length_prefix_is_refused_from_its_four_bytes() -> None:
    _, opener = _pair(max_frame_bytes=4096)
    assert _reason(opener.pop, bytearray(struct.pack(">I", 4097))) == "frame_too_large"
    assert _reason(opener.pop, bytearray(b"\xff\xff\xff\xff")) == "frame_too_large"
    assert _reason(opener.pop, bytearray(struct.pack(">IQ", 0, 0))) == "empty_frame"


def test_zlib_bomb_is_capped_without_inflating_it() -> None:
    sealer, opener = _pair(max_frame_bytes=64 * 1024)
    bomb = sealer.seal(0x01, zlib.compress(bytes(32 * 1024 * 1024), 9))  # 32 MiB in ~32 KiB
    assert len(bomb) < 64 * 1024
    tracemalloc.start()
    try:
        assert _reason(opener.pop, bytearray(bomb)) == "decompressed_too_large"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


def test_bad_compression_and_unknown_kind_are_refused() -> None:
    sealer, opener = _pair()
    frame = sealer.seal(0x01, b"not zlib at all")  # kind 1 = deflated message
    assert _reason(opener.pop, bytearray(frame)) == "bad_compression"
    sealer, opener = _pair()
    trailing = sealer.seal(0x01, zlib.compress(b"ok") + b"junk")
    assert _reason(opener.pop, bytearray(trailing)) == "bad_compression"
    sealer, opener = _pair()
    assert _reason(opener.pop, bytearray(sealer.seal(0x7F, b"?"))) == "unknown_frame_kind"


# ---------------------------------------------------------------------------------- config

GOOD = {
    "node_id": "a",
    "secret": SECRET,
    "listen": "127.0.0.1:4321",
    "peers": {"b": "127.0.0.1:4322", "c": "db.internal:7000"},
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"secret": b"short-secret"}, "secret"),
        ({"secret": "a str secret of length"}, "secret"),
        ({"listen": "127.0.0.1"}, "listen"),
        ({"listen": "127.0.0.1:http"}, "listen"),
        ({"listen": "127.0.0.1:70000"}, "listen"),
        ({"listen": "somehost:4321"}, "listen"),
        ({"peers": {"a": "127.0.0.1:1"}}, "peers"),
        ({"peers": {"b": "nowhere"}}, "peers['b']"),
        ({"peers": {"b": "127.0.0.1:0"}}, "peers['b']"),
        ({"peers": {"has space": "127.0.0.1:1"}}, "peers['has space']"),
        ({"node_id": ""}, "node_id"),
        ({"node_id": "x" * 200}, "node_id"),
        ({"max_frame_bytes": 10}, "max_frame_bytes"),
        ({"reconnect_backoff_ms": (500, 50)}, "reconnect_backoff_ms"),
        ({"reconnect_backoff_ms": 50}, "reconnect_backoff_ms"),
        ({"on_before_send": 3}, "on_before_send"),
    ],
)
def test_bad_config_names_the_field_and_never_echoes_the_secret(change, field) -> None:
    with pytest.raises(InvalidArgument) as info:
        make_transport_class(**{**GOOD, **change})
    assert info.value.field == field
    assert "s" * 16 not in str(info.value)


def test_good_config_keeps_no_secret_in_reprs() -> None:
    cls = make_transport_class(**GOOD)
    assert SECRET.decode() not in repr(cls._config)
    assert "key" not in repr(cls._config)
    assert "0.0.0.0" not in repr(cls._config)


def test_ipv6_and_explicit_wildcard_listen_are_accepted() -> None:
    make_transport_class(**{**GOOD, "listen": "[::1]:4321"})
    make_transport_class(**{**GOOD, "listen": "0.0.0.0:4321"})  # explicit: the operator's call


# ---------------------------------------------------------------------------------- PeerNode


def test_peer_node_is_known_by_id_and_travels_through_serialization() -> None:
    node = PeerNode("b", "10.0.0.2:4321")
    assert node == Node("b") and hash(node) == hash(Node("b"))
    assert node.address == "10.0.0.2:4321" and repr(node) == "PeerNode('b', '10.0.0.2:4321')"
    assert PeerNode.from_plain(node.to_plain()).address == node.address
    message = {"type": "append_entries", "entries": [(b"cmd", 2, 1)], "nodes": [node]}
    back = serialization.loads(serialization.dumps(message))
    assert back == message and type(back["nodes"][0]) is PeerNode
    assert back["nodes"][0].address == "10.0.0.2:4321"
    assert PEER_NODE_EXT_CODE not in serialization.EXT_CODES_RESERVED


@pytest.mark.parametrize(
    "plain",
    [
        None,
        [],
        {"id": "b"},
        {"id": 1, "address": "h:1"},
        {"id": "b", "address": "nope"},
        {"id": "b", "address": "h:1", "extra": 1},
        {"id": "b c", "address": "h:1"},
    ],
)
def test_bad_peer_node_plain_forms_raise_decode_error(plain) -> None:
    with pytest.raises(DecodeError):
        PeerNode.from_plain(plain)


def test_peer_node_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidArgument):
        PeerNode("", "h:1")
    with pytest.raises(InvalidArgument):
        PeerNode("b", "no-port")


# ---------------------------------------------------------------------------------- the seam


def test_pysyncobj_seams_the_transport_relies_on_are_unchanged() -> None:
    """wire.py uses only public Transport hooks plus SyncObj's `_poller`, `conf` and tick
    callbacks; if an upgrade moves any of them, this fails before a cluster does."""
    assert pysyncobj.version.VERSION == "0.3.17"
    init = inspect.getsource(SyncObj.__init__)
    assert "self._poller = createPoller(" in init
    assert init.index("self._poller = createPoller(") < init.index(
        "transportClass(self, self.__selfNode, self.__otherNodes)"
    )
    assert callable(SyncObj.addOnTickCallback)
    tick = inspect.getsource(SyncObj._onTick)
    assert tick.index("callback()") < tick.index("self._poller.poll(timeToWait)")
    for name in (
        "tryGetReady",
        "waitReady",
        "addNode",
        "dropNode",
        "send",
        "destroy",
        "_onMessageReceived",
        "_onNodeConnected",
        "_onNodeDisconnected",
    ):
        assert callable(getattr(Transport, name)), name

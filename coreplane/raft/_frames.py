"""Byte-level wire protocol of the peer transport: handshake and authenticated frames.

Pure functions and small state objects over byte buffers: no sockets, no clock, no decoding of
message bodies (that is `wire.py`'s job, and only after this module has verified the bytes).
Everything a peer sends is checked against an HMAC before any of it is interpreted beyond a
fixed-layout header, so a party without the cluster secret can make a node do nothing but drop
the connection.

Handshake (dialer C, listener S, K = `cluster_key(secret, cluster)`)::

    C -> S  HELLO   MAGIC | VERSION | nonce_c(32) | len(1) | id_c | HMAC(K, "hello-c" ...)
    S -> C  REPLY   MAGIC | VERSION | nonce_s(32) | len(1) | id_s | HMAC(K, "hello-s" ...)
    C -> S  CONFIRM HMAC(K, "confirm-c" | id_c | id_s | nonce_c | nonce_s)

HELLO alone is replayable, so S trusts C only after CONFIRM, which covers S's fresh nonce; C
trusts S after REPLY, which covers C's fresh nonce and names the node C meant to reach. Both then
derive ``session = HMAC(K, "session" | id_c | id_s | nonce_c | nonce_s)``.

Frames after the handshake::

    len(4, BE) | seq(8, BE) | body(len) | HMAC-SHA256(session, direction | len | seq | body)

`len` is capped before the body is read; `seq` counts from 0 per direction and must be exactly
the next one (a replayed, dropped or reordered frame ends the connection); `direction` is b"C"
or b"S" so a frame cannot be reflected back to its sender. ``body[0]`` is the kind: a message
(raw or zlib, inflated with a cap only after the MAC checks) or a keepalive ping.

Must not import pysyncobj, msgpack or anything that decodes objects.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib

from coreplane.errors import DecodeError

__all__ = [
    "DIRECTION_FROM_DIALER",
    "DIRECTION_FROM_LISTENER",
    "FRAME_OVERHEAD_BYTES",
    "HELLO_BYTES_MAX",
    "KIND_MESSAGE",
    "KIND_PING",
    "MAC_BYTES",
    "MAGIC",
    "NODE_ID_BYTES_MAX",
    "NONCE_BYTES",
    "VERSION",
    "FrameMac",
    "FrameOpener",
    "FrameSealer",
    "Rejected",
    "build_confirm",
    "build_hello",
    "build_reply",
    "cluster_key",
    "parse_confirm",
    "parse_hello",
    "parse_reply",
    "session_key",
]

MAGIC = b"CPW1"
VERSION = 1
NONCE_BYTES = 32
MAC_BYTES = 32
NODE_ID_BYTES_MAX = 128
_HELLO_HEAD = len(MAGIC) + 1 + NONCE_BYTES + 1  # magic, version, nonce, id length
HELLO_BYTES_MAX = _HELLO_HEAD + NODE_ID_BYTES_MAX + MAC_BYTES
_FRAME_HEADER = struct.Struct(">IQ")  # body length, sequence number
FRAME_OVERHEAD_BYTES = _FRAME_HEADER.size + MAC_BYTES
DIRECTION_FROM_DIALER = b"C"
DIRECTION_FROM_LISTENER = b"S"

KIND_MESSAGE = 0x00
_KIND_MESSAGE_ZLIB = 0x01
KIND_PING = 0x02
_COMPRESS_MIN_BYTES = 64 * 1024  # see FrameSealer.seal_into


class Rejected(DecodeError):
    """A peer broke the wire protocol; `reason` is a short stable code for counters and logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"wire protocol violation: {reason}")
        self.reason = reason


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.digest(key, b"".join(parts), "sha256")  # one-shot C path, no HMAC object


_SHA256_BLOCK_BYTES = 64
# hashlib (and zlib) release the GIL for an update of 2048 bytes or more (HASHLIB_GIL_MINSIZE),
# and a thread that releases it waits up to the switch interval to get it back while other
# threads are busy: on a leader with many writer threads a sealed frame cost ~1 ms of the Raft
# thread's time for ~10 us of work (measured: seal wall 1.9 s vs 0.16 s CPU in 10 s of load).
_GIL_CHUNK_BYTES = 2047


class FrameMac:
    """HMAC-SHA256 (RFC 2104) under one key, for the many frames of one connection.

    Equal to ``hmac.digest(key, b"".join(parts), "sha256")`` (pinned by a test), without its
    per-call costs: the keyed inner and outer states are computed once and copied per frame
    (the one-shot call looks the algorithm up in OpenSSL every time: ~3-5 us of a small
    frame's ~6 us), the parts are hashed where they lie (memoryviews of the receive buffer, no
    joined copy), and in pieces below hashlib's GIL-release size, so a busy process's Raft
    thread keeps the GIL through a frame.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _SHA256_BLOCK_BYTES:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_SHA256_BLOCK_BYTES, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, *parts: bytes | bytearray | memoryview) -> bytes:
        inner = self._inner.copy()
        for part in parts:
            size = len(part)
            if size <= _GIL_CHUNK_BYTES:
                inner.update(part)
                continue
            view = memoryview(part)
            for at in range(0, size, _GIL_CHUNK_BYTES):
                inner.update(view[at : at + _GIL_CHUNK_BYTES])
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _lp(data: bytes) -> bytes:
    """Length-prefixed field, so concatenated MAC inputs cannot be re-split differently."""
    return bytes((len(data),)) + data


def cluster_key(secret: bytes, cluster: str) -> bytes:
    """The long-term handshake key: the secret is never used directly, and clusters never mix."""
    return _mac(secret, b"coreplane-wire-v1\x00", cluster.encode("utf-8"))


def session_key(key: bytes, id_c: bytes, id_s: bytes, nonce_c: bytes, nonce_s: bytes) -> bytes:
    """Per-connection frame key, fresh because both nonces are."""
    return _mac(key, b"coreplane-session", _lp(id_c), _lp(id_s), nonce_c, nonce_s)


# ---------------------------------------------------------------------------------- handshake


def _build_hello_like(
    label: bytes, key: bytes, nonce: bytes, node_id: bytes, mac_inputs: tuple[bytes, ...]
) -> bytes:
    if len(nonce) != NONCE_BYTES or not 0 < len(node_id) <= NODE_ID_BYTES_MAX:
        raise Rejected("bad_local_handshake_input")
    head = MAGIC + bytes((VERSION,)) + nonce + _lp(node_id)
    return head + _mac(key, label, *mac_inputs)


def _parse_hello_like(buf: bytes | bytearray) -> tuple[bytes, bytes, bytes, int] | None:
    """Split a HELLO/REPLY into (nonce, id, mac, size) checking only the fixed header."""
    probe = bytes(buf[: len(MAGIC)])
    if not MAGIC.startswith(probe):
        raise Rejected("bad_magic")
    if len(buf) < _HELLO_HEAD:
        return None
    if buf[len(MAGIC)] != VERSION:
        raise Rejected("bad_version")
    id_len = buf[_HELLO_HEAD - 1]
    if not 0 < id_len <= NODE_ID_BYTES_MAX:
        raise Rejected("bad_id_length")
    size = _HELLO_HEAD + id_len + MAC_BYTES
    if len(buf) < size:
        return None
    nonce = bytes(buf[len(MAGIC) + 1 : len(MAGIC) + 1 + NONCE_BYTES])
    node_id = bytes(buf[_HELLO_HEAD : _HELLO_HEAD + id_len])
    mac = bytes(buf[_HELLO_HEAD + id_len : size])
    return nonce, node_id, mac, size


def build_hello(key: bytes, id_c: bytes, nonce_c: bytes) -> bytes:
    """The dialer's first message."""
    return _build_hello_like(b"hello-c", key, nonce_c, id_c, (_lp(id_c), nonce_c))


def parse_hello(buf: bytes | bytearray, key: bytes) -> tuple[bytes, bytes, int] | None:
    """(id_c, nonce_c, consumed) once a whole HELLO is buffered and its MAC holds; else None.

    Raises `Rejected` on a bad header or MAC. The id is returned as raw bytes for a lookup; it
    is still unproven (HELLO is replayable) until `parse_confirm` succeeds.
    """
    parts = _parse_hello_like(buf)
    if parts is None:
        return None
    nonce_c, id_c, mac, size = parts
    if not hmac.compare_digest(mac, _mac(key, b"hello-c", _lp(id_c), nonce_c)):
        raise Rejected("bad_hello_mac")
    return id_c, nonce_c, size


def build_reply(key: bytes, id_c: bytes, id_s: bytes, nonce_c: bytes, nonce_s: bytes) -> bytes:
    """The listener's answer: proves it holds the secret, bound to the dialer's fresh nonce."""
    return _build_hello_like(
        b"hello-s", key, nonce_s, id_s, (_lp(id_c), _lp(id_s), nonce_c, nonce_s)
    )


def parse_reply(
    buf: bytes | bytearray, key: bytes, id_c: bytes, nonce_c: bytes, expected_id_s: bytes
) -> tuple[bytes, int] | None:
    """(nonce_s, consumed) once a whole REPLY is buffered, proven, and from `expected_id_s`."""
    parts = _parse_hello_like(buf)
    if parts is None:
        return None
    nonce_s, id_s, mac, size = parts
    want = _mac(key, b"hello-s", _lp(id_c), _lp(id_s), nonce_c, nonce_s)
    if not hmac.compare_digest(mac, want):
        raise Rejected("bad_reply_mac")
    if not hmac.compare_digest(id_s, expected_id_s):
        raise Rejected("wrong_peer_id")
    return nonce_s, size


def build_confirm(key: bytes, id_c: bytes, id_s: bytes, nonce_c: bytes, nonce_s: bytes) -> bytes:
    """The dialer's proof over the listener's fresh nonce."""
    return _mac(key, b"confirm-c", _lp(id_c), _lp(id_s), nonce_c, nonce_s)


def parse_confirm(
    buf: bytes | bytearray, key: bytes, id_c: bytes, id_s: bytes, nonce_c: bytes, nonce_s: bytes
) -> int | None:
    """Bytes consumed once a valid CONFIRM is buffered; None if incomplete; `Rejected` if bad."""
    if len(buf) < MAC_BYTES:
        return None
    want = build_confirm(key, id_c, id_s, nonce_c, nonce_s)
    if not hmac.compare_digest(bytes(buf[:MAC_BYTES]), want):
        raise Rejected("bad_confirm_mac")
    return MAC_BYTES


# ---------------------------------------------------------------------------------- frames


class FrameSealer:
    """Seals outgoing frames for one direction of one connection."""

    __slots__ = ("_mac", "direction", "key", "next_seq")

    def __init__(self, key: bytes, direction: bytes, next_seq: int = 0) -> None:
        self.key = key
        self.direction = direction
        self.next_seq = next_seq
        self._mac = FrameMac(key)

    def seal(self, kind: int, payload: bytes = b"") -> bytes:
        """One frame; payloads of 64 KiB and more are deflated when that makes them smaller."""
        out = bytearray()
        self.seal_into(out, kind, payload)
        return bytes(out)

    def seal_into(self, out: bytearray, kind: int, payload: bytes = b"") -> None:
        """Append one frame to `out` (a send buffer): the payload is copied once, into `out`."""
        if kind == KIND_MESSAGE and len(payload) >= _COMPRESS_MIN_BYTES:
            packed = zlib.compress(payload, 1)
            if len(packed) < len(payload):
                kind, payload = _KIND_MESSAGE_ZLIB, packed
        head = _FRAME_HEADER.pack(len(payload) + 1, self.next_seq) + bytes((kind,))
        self.next_seq += 1
        mac = self._mac.digest(self.direction, head, payload)
        out += head
        out += payload
        out += mac


class FrameOpener:
    """Verifies incoming frames for one direction of one connection, in order."""

    __slots__ = ("_mac", "direction", "key", "max_frame_bytes", "next_seq")

    def __init__(
        self, key: bytes, direction: bytes, max_frame_bytes: int, next_seq: int = 0
    ) -> None:
        self.key = key
        self.direction = direction
        self.max_frame_bytes = max_frame_bytes
        self.next_seq = next_seq
        self._mac = FrameMac(key)

    def pop(self, buf: bytearray) -> tuple[int, bytes] | None:
        """Remove and return the next verified frame as (kind, payload), or None if incomplete.

        The length prefix is checked against the cap as soon as its 4 bytes arrive, the MAC over
        the raw bytes before anything else, then the sequence number, then the kind; only then
        is a compressed payload inflated, with `max_frame_bytes` as the output cap. The MAC is
        computed over the buffer in place; only a verified payload is copied out.
        """
        if len(buf) < _FRAME_HEADER.size:
            if len(buf) >= 4 and int.from_bytes(buf[:4], "big") > self.max_frame_bytes:
                raise Rejected("frame_too_large")
            return None
        length, seq = _FRAME_HEADER.unpack_from(buf)
        if length > self.max_frame_bytes:
            raise Rejected("frame_too_large")
        if length == 0:
            raise Rejected("empty_frame")
        end = _FRAME_HEADER.size + length
        if len(buf) < end + MAC_BYTES:
            return None
        with memoryview(buf) as view:  # released before `buf` is resized below
            want = self._mac.digest(self.direction, view[:end])
            if not hmac.compare_digest(view[end : end + MAC_BYTES], want):
                raise Rejected("bad_frame_mac")
            if seq != self.next_seq:
                raise Rejected("replayed_frame" if seq < self.next_seq else "skipped_frame")
            kind = buf[_FRAME_HEADER.size]
            payload = bytes(view[_FRAME_HEADER.size + 1 : end])
        self.next_seq += 1
        del buf[: end + MAC_BYTES]
        if kind in (KIND_MESSAGE, KIND_PING):
            return kind, payload
        if kind == _KIND_MESSAGE_ZLIB:
            return KIND_MESSAGE, _inflate(payload, self.max_frame_bytes)
        raise Rejected("unknown_frame_kind")


def _inflate(data: bytes, max_bytes: int) -> bytes:
    """zlib-decompress at most `max_bytes`; a bomb, a truncation or trailing bytes is refused."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_bytes)
    except zlib.error as exc:
        raise Rejected("bad_compression") from exc
    if inflater.unconsumed_tail:
        raise Rejected("decompressed_too_large")
    if not inflater.eof or inflater.unused_data:
        raise Rejected("bad_compression")
    return out

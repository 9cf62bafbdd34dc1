"""The one etcd protobuf message the raft bench sends, hand-encoded (no stubs, no protobuf).

etcdserverpb.PutRequest: ``key`` is field 1 and ``value`` field 2, both bytes (wire type 2:
tag byte, varint length, the bytes); every other field is left at its default (absent). The
reply (PutResponse) is never decoded: a call without an error status is the acknowledgement.
Imports nothing, so the tests can check it where grpcio is not installed.
"""

from __future__ import annotations

PUT_METHOD = "/etcdserverpb.KV/Put"
_KEY_TAG = b"\x0a"  # field 1 << 3 | wire type 2
_VALUE_TAG = b"\x12"  # field 2 << 3 | wire type 2


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer, least significant group first."""
    if n < 0:
        raise ValueError("varint: n must be >= 0")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def put_request(key: bytes, value: bytes) -> bytes:
    """An encoded PutRequest{key, value}."""
    return _KEY_TAG + varint(len(key)) + key + _VALUE_TAG + varint(len(value)) + value

"""codec: canonical bytes, and a clear DecodeError for every kind of bad input."""

from __future__ import annotations

import msgpack  # tests may build raw msgpack to forge inputs the codec would never write
import pytest

from coreplane.core import codec
from coreplane.errors import DecodeError, InvalidArgument


def test_envelope_round_trip() -> None:
    data = codec.encode(7, {"b": [1, b"x", None, True], "a": {"z": -3, "y": "s"}})
    env = codec.decode(data)
    assert (env.version, env.tag) == (codec.FORMAT_VERSION, 7)
    assert env.body == {"a": {"y": "s", "z": -3}, "b": [1, b"x", None, True]}


def test_canonical_bytes_ignore_insertion_order() -> None:
    assert codec.encode(1, {"a": 1, "b": {"c": 2, "d": 3}}) == codec.encode(
        1, {"b": {"d": 3, "c": 2}, "a": 1}
    )
    assert codec.encode_value((1, 2)) == codec.encode_value([1, 2])


@pytest.mark.parametrize(
    ("value", "field"),
    [(1.5, "body.x"), ({1: 2}, "body.x"), (2**64, "body.x"), (object(), "body.x")],
)
def test_encode_refuses_non_plain_values_naming_the_field(value: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        codec.encode(1, {"x": value})
    assert err.value.field == field


def test_encode_refuses_bad_tag() -> None:
    with pytest.raises(InvalidArgument, match="tag"):
        codec.encode(-1, {})
    with pytest.raises(InvalidArgument, match="tag"):
        codec.encode(True, {})  # bool is not a tag


def _deep(n: int) -> bytes:
    return b"\x91" * n + b"\xc0"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (codec.encode(1, {"a": 1})[:-1], "msgpack"),
        (codec.encode(1, {"a": 1}) + b"\x00", "trailing"),
        (msgpack.packb([2, 1, {}]), "version"),
        (msgpack.packb([1, -1, {}]), "tag"),
        (msgpack.packb([1, 1, []]), "body must be a map"),
        (msgpack.packb([1, 1]), "envelope"),
        (msgpack.packb([1, 1, {"x": 1.0}]), "float"),
        (msgpack.packb([1, 1, {1: 1}]), "map key 1"),
        (b"\x93\x01\x01\x82\xa1a\x01\xa1a\x02", "duplicate map key"),
        (b"\x93\xcc\x01\x01\x80", "canonical"),  # version 1 written as uint8: not minimal
        (msgpack.packb([1, 1, {"x": msgpack.ExtType(5, b"")}]), "extension"),
        (b"\x93\x01\x01\x81\xa1a\xa2\xff\xfe", "UTF-8"),
        (b"\x93\x01\x01\x81\xa1x" + _deep(40), "deep"),
        (_deep(5000), "deep"),
        (b"\xdd\xff\xff\xff\xff", "msgpack"),  # array32 claiming 4G items
        ("text", "expected bytes"),
    ],
)
def test_decode_names_what_is_wrong(data: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        codec.decode(data)  # type: ignore[arg-type]


def test_size_cap_checked_before_decoding() -> None:
    big = codec.encode(1, {"v": b"x" * 1000})
    with pytest.raises(DecodeError, match="cap"):
        codec.decode(big, max_bytes=100)


def test_tree_keeps_tuples_and_registered_types() -> None:
    class Node:
        def __init__(self, ident: str) -> None:
            self.ident = ident

    ext = {Node: (1, lambda n: n.ident)}
    data = codec.encode_tree({"e": [(b"c", 1, 2)], "n": Node("a")}, ext=ext)
    out = codec.decode_tree(data, ext={1: Node})
    assert out["e"] == [(b"c", 1, 2)]
    assert isinstance(out["n"], Node) and out["n"].ident == "a"
    with pytest.raises(DecodeError, match="not registered"):
        codec.decode_tree(data)
    with pytest.raises(InvalidArgument):
        codec.encode_tree({"f": 1.0})


def test_tree_fast_paths_keep_the_rules() -> None:
    # Flat tuples (log entries) skip the per-element walk; the limits must not move with it.
    flat = (b"entry", 7, 3, "s", None, True)
    assert codec.decode_tree(codec.encode_tree([flat, (flat,)])) == [flat, (flat,)]
    deepest: object = (1, 2)
    for _ in range(codec.MAX_DEPTH - 1):
        deepest = [deepest]
    assert codec.decode_tree(codec.encode_tree(deepest)) == deepest
    with pytest.raises(InvalidArgument, match="deeper"):
        codec.encode_tree([deepest])
    with pytest.raises(InvalidArgument):
        codec.encode_tree([(1, 2.5)])
    with pytest.raises(DecodeError, match="floats"):  # a float map key is refused too
        codec.decode_tree(msgpack.packb({1.5: 1}))
    too_deep = msgpack.packb([[[1]]])
    with pytest.raises(DecodeError, match="deeper"):
        codec.decode_tree(too_deep, max_depth=2)


def test_tree_ext_constructor_errors_become_decode_errors() -> None:
    def boom(_: object) -> object:
        raise RuntimeError("no")

    data = msgpack.packb(msgpack.ExtType(3, msgpack.packb(1)))
    with pytest.raises(DecodeError, match="bad extension 3"):
        codec.decode_tree(data, ext={3: boom})


def test_the_scalar_fast_path_gives_the_canonical_bytes() -> None:
    """commands.encode packs scalar-only commands without the generic canonical walk; the
    bytes must be exactly codec.encode's, or state hashes and replay would change."""
    from coreplane.core import commands as C

    samples = [
        C.Put("k/é", b"\x00v", 7, "client/1", 2**63 - 1),
        C.Delete("k", "c", 1),
        C.Cas("k", 3, b"", 0, "", 0),
        C.LeaseGrant(1_000, 5, "c", 9),
        C.LeaseKeepAlive(5),
        C.LeaseRevoke(5, "c", 2),
    ]
    for command in samples:
        assert C.encode(command) == codec.encode(command.TAG, command.to_body())
    for command in (C.Tick(3, 200), C.Leader("n1", 4)):
        assert C.encode_internal(command) == codec.encode(
            command.TAG, command.to_body(), internal=True
        )
    user = C.UserCommand("m", {"b": [1, {"z": 1, "a": 2}]}, "c", 1)  # not scalar: the walk
    assert C.encode(user) == codec.encode(user.TAG, user.to_body())


# ------------------------------------------------------------------ snapshots, in pieces

_ROW_COUNTS = [0, 1, 15, 16, 2047, 2048, 2049, 65535, 65536, 70000]


@pytest.mark.parametrize("count", _ROW_COUNTS)
def test_spliced_rows_give_the_bytes_of_the_list_itself(count: int) -> None:
    """Every header form (fix, 16-bit, 32-bit) for the list and its chunks, any chunk split."""
    rows = [[f"k{i:06d}", bytes([i % 256]) * (i % 5), i, 2**40 + i, -i] for i in range(count)]
    value = {"z": 1, "kv": {"keys": rows, "leases": [], "revision": count}, "a": [[1, 2]]}
    expected = codec.encode_value(value, max_bytes=1 << 40)
    spliced = {**value, "kv": {**value["kv"], "keys": codec.encode_list_items(iter(rows))}}
    assert codec.encode_snapshot(spliced, max_bytes=1 << 40) == expected
    small = codec.encode_list_items(rows, chunk=7)
    assert small.count == count
    assert codec.encode_snapshot({"keys": small}, max_bytes=1 << 40) == codec.encode_value(
        {"keys": rows}, max_bytes=1 << 40
    )


@pytest.mark.parametrize("count", _ROW_COUNTS)
def test_record_rows_give_the_bytes_of_the_checked_rows(count: int) -> None:
    """A state's own records, encoded without the field walk: the same bytes, any chunk."""
    records = {
        f"k{i:06d}": (bytes([i % 256]) * (i % 5), i, 2**40 + i, i % 3, -i) for i in range(count)
    }
    keys = sorted(records, reverse=True)  # the order given is kept
    checked = codec.encode_list_items([k, *records[k]] for k in keys)
    for chunk in (1, 7, 2048):
        rows = codec.encode_record_rows(iter(keys), records, chunk=chunk)
        assert (rows.count, rows.body) == (checked.count, checked.body)


def test_a_record_row_msgpack_cannot_take_is_still_refused() -> None:
    with pytest.raises(InvalidArgument):
        codec.encode_record_rows(["\udc80"], {"\udc80": (b"v", 1)})  # a lone surrogate


def test_spliced_items_are_checked_and_the_snapshot_cap_holds() -> None:
    with pytest.raises(InvalidArgument):
        codec.encode_list_items([[1, 1.5]])  # a float inside a row
    with pytest.raises(InvalidArgument):
        codec.encode_list_items([2**64])
    items = codec.encode_list_items([b"x" * 100] * 10)
    with pytest.raises(InvalidArgument, match="over 1000"):
        codec.encode_snapshot({"keys": items}, max_bytes=1000)
    with pytest.raises(InvalidArgument):
        codec.encode_value({"keys": items})  # only encode_snapshot splices


def test_encode_value_takes_a_larger_cap_for_snapshots() -> None:
    big = b"x" * (codec.MAX_ENCODED_BYTES + 1)
    with pytest.raises(InvalidArgument, match="over"):
        codec.encode_value(big)
    assert len(codec.encode_value(big, max_bytes=2 * codec.MAX_ENCODED_BYTES)) > len(big)

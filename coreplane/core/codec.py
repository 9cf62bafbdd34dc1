"""The only msgpack call sites in coreplane: envelopes, canonical values and wire trees.

Everything replicated (commands, snapshots) and everything that crosses a socket goes through
here, so there is one place that decides what bytes mean and one place that refuses bad ones.
Three encodings share one validator:

- `encode`/`decode`: a command envelope ``[version, tag, body]`` with an integer tag and a map
  body. Canonical (maps sorted by key, smallest integer forms) so the same value gives the same
  bytes on every machine, which `state_hash` and replay depend on.
- `encode_value`/`decode_value`: one canonical plain value (snapshots, hashing).
- `encode_tree`/`decode_tree`: a value that also keeps tuples apart from lists and admits
  registered extension types; for the consensus adapter's peer messages, never for replicated
  state.

Plain values are None, bool, int (64-bit), str, bytes, lists and str-keyed maps. No floats: they
can differ across machines. Any bad input (truncated, trailing bytes, wrong types, unknown
version, too deep, too large, non-str or duplicate map keys) raises `DecodeError` saying what was
wrong; no other exception escapes a decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgpack

from coreplane.errors import DecodeError, InvalidArgument

__all__ = [
    "FORMAT_VERSION",
    "MAX_DEPTH",
    "MAX_ENCODED_BYTES",
    "EncodedList",
    "Envelope",
    "FlatDecoder",
    "Value",
    "decode",
    "decode_tree",
    "decode_value",
    "encode",
    "encode_list_items",
    "encode_scalars",
    "encode_snapshot",
    "encode_tree",
    "encode_value",
]

Value: TypeAlias = Any  # None | bool | int | str | bytes | list[Value] | dict[str, Value]

FORMAT_VERSION = 1
MAX_ENCODED_BYTES = 16 * 1024 * 1024  # checked before decoding; a snapshot may raise its own cap
# A host state's snapshot, at most. The one cap both layers derive from: the raft layer wraps
# these bytes in its own envelope (`raft.serialization.SNAPSHOT_BYTES_MAX`, a little larger)
# and stores them as one LMDB value, whose limit is 4 GiB, in a map that must also hold the
# previous snapshot while the new one replaces it, and the log (8 GiB at most by default).
# The state once allowed 4 GiB where the raft layer allowed 1: a state in between encoded,
# then failed the envelope at every compaction, and the log was never compacted again.
SNAPSHOT_BYTES_MAX = 1 << 30
MAX_DEPTH = 32
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_TUPLE_EXT = 0  # ext code that keeps tuples apart from lists in wire trees
# Leaf types msgpack packs natively and exactly (no floats), matched by exact type: plain values
# are checked against them, and the hot shapes of wire trees (log entries are ``(bytes, int,
# int)`` tuples, hundreds per AppendEntries) skip the per-element walk with them (measured
# 2.7 -> 1.2 us per entry to encode).
_PLAIN_TYPES = frozenset({type(None), bool, int, str, bytes})


def _ext(code: int, payload: bytes) -> msgpack.ExtType:
    """An ExtType without its Python-level argument checks (code and payload are ours)."""
    ext: msgpack.ExtType = tuple.__new__(msgpack.ExtType, (code, payload))
    return ext


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded command envelope; `body` holds only plain values."""

    version: int
    tag: int
    body: dict[str, Value]
    internal: bool = False  # carries the runtime's marker (see `encode`)


# ---------------------------------------------------------------------------------- encoding


_PLAIN_NOT_INT = frozenset({type(None), bool, str, bytes})


# Where a value sits, for error messages only: the top's name, or (parent, list index or map
# key). Rendered only when an error is raised, so the walk builds no strings (it did, one per
# container, which was a fifth of the cost of encoding a snapshot).
_Path: TypeAlias = "str | tuple[_Path, int | str]"


def _render(path: _Path) -> str:
    parts: list[str] = []
    while not isinstance(path, str):
        path, step = path
        parts.append(f"[{step}]" if type(step) is int else f".{step}")
    return path + "".join(reversed(parts))


def _canonical(value: Value, depth: int, path: _Path) -> Value:
    """Validate a plain value and return it with every map's keys sorted.

    Scalars inside containers are checked inline, without recursion or path strings, and so
    are lists of scalars inside lists (a snapshot's rows): snapshots are mostly long lists of
    those, and this walk is most of the cost of taking one.
    """
    if depth > MAX_DEPTH:
        raise InvalidArgument(_render(path), f"nested deeper than {MAX_DEPTH}")
    kind = type(value)
    if kind in _PLAIN_NOT_INT:
        return value
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidArgument(_render(path), "integer does not fit in 64 bits")
        return value
    if kind is list or kind is tuple:
        out = []
        row_ok = depth + 1 <= MAX_DEPTH  # a row inline is at depth + 1, as in a call
        for i, item in enumerate(value):
            item_kind = type(item)
            if item_kind in _PLAIN_NOT_INT or (item_kind is int and _INT_MIN <= item <= _INT_MAX):
                out.append(item)
                continue
            if item_kind is list and row_ok:
                for x in item:
                    x_kind = type(x)
                    if not (
                        x_kind in _PLAIN_NOT_INT or (x_kind is int and _INT_MIN <= x <= _INT_MAX)
                    ):
                        break
                else:  # a list of scalars is its own canonical form
                    out.append(item)
                    continue
            out.append(_canonical(item, depth + 1, (path, i)))
        return out
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise InvalidArgument(_render(path), f"map key {key!r} is not a str")
        return {k: _canonical(value[k], depth + 1, (path, k)) for k in sorted(value)}
    if kind is EncodedList:  # canonical already (encode_list_items); only encode_snapshot packs it
        return value
    raise InvalidArgument(_render(path), f"{kind.__name__} is not encodable (integers, not floats)")


# Packers for `encode_scalars` (every write a caller makes), reused: `packb` builds a Packer
# and its buffer per call, which was a third of the cost of encoding a Put. A caller pops
# one, so no two threads ever share one (list.pop and list.append are atomic); one that
# raised is dropped, and one that packed a large value too (a Packer keeps its buffer).
_IDLE_PACKERS: list[Callable[[Any], bytes]] = []
_IDLE_PACKERS_MAX = 8
_IDLE_PACKER_BYTES_MAX = 64 * 1024


def _pack(value: Value, max_bytes: int = MAX_ENCODED_BYTES) -> bytes:
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True)
    except UnicodeEncodeError:
        raise InvalidArgument("value", "a string is not valid UTF-8 (a lone surrogate)") from None
    except TypeError as exc:  # an EncodedList outside encode_snapshot
        raise InvalidArgument("value", str(exc)) from None
    if len(data) > max_bytes:
        raise InvalidArgument("value", f"encodes to {len(data)} bytes, over {max_bytes}")
    return data


def encode(tag: int, body: Mapping[str, Value], *, internal: bool = False) -> bytes:
    """Canonical bytes of a command envelope.

    ``internal=True`` appends the runtime's marker (``[version, tag, body, true]``): only the
    runtime's own proposal path writes it and every public path refuses bytes that carry it,
    so the state machine can tell an entry the runtime made from one a host or client made.
    """
    if isinstance(tag, bool) or not isinstance(tag, int) or not 0 <= tag < 2**16:
        raise InvalidArgument("tag", f"must be an integer in [0, 65536), got {tag!r}")
    if not isinstance(body, Mapping):
        raise InvalidArgument("body", "must be a map")
    envelope: list[Value] = [FORMAT_VERSION, tag, _canonical(dict(body), 1, "body")]
    if internal:
        envelope.append(True)
    return _pack(envelope)


def encode_scalars(
    tag: int, names: tuple[str, ...], values: Sequence[Value], *, internal: bool = False
) -> bytes:
    """`encode` for a body of scalars whose caller already checked every value's exact type
    and range (the command types do, field by field) and passes the keys sorted: the same
    bytes without the generic canonical walk, which was most of the cost of encoding a write
    (a 5-field Put: 10.8 -> ~4 us; tests/unit/test_codec.py checks both give equal bytes)."""
    envelope: list[Value] = [FORMAT_VERSION, tag, dict(zip(names, values, strict=True))]
    if internal:
        envelope.append(True)
    try:
        pack = _IDLE_PACKERS.pop()
    except IndexError:
        pack = msgpack.Packer(use_bin_type=True).pack
    try:
        data = pack(envelope)
    except UnicodeEncodeError:
        raise InvalidArgument("value", "a string is not valid UTF-8 (a lone surrogate)") from None
    if len(data) > MAX_ENCODED_BYTES:
        raise InvalidArgument("value", f"encodes to {len(data)} bytes, over {MAX_ENCODED_BYTES}")
    if len(data) <= _IDLE_PACKER_BYTES_MAX and len(_IDLE_PACKERS) < _IDLE_PACKERS_MAX:
        _IDLE_PACKERS.append(pack)  # only after a small value: its buffer stays small
    return data


def encode_value(value: Value, *, max_bytes: int = MAX_ENCODED_BYTES) -> bytes:
    """Canonical bytes of one plain value (hashes, small records); `max_bytes` caps them."""
    return _pack(_canonical(value, 0, "value"), max_bytes)


# ------------------------------------------------------------------ snapshots, in pieces


@dataclass(frozen=True, slots=True)
class EncodedList:
    """A list already in canonical bytes: its items' encodings joined, and how many items.

    Why: a snapshot is mostly one long list (the KV rows). Encoded as one value it was one
    msgpack call holding the GIL for the whole state (and a list of lists built first), on
    every replica; `encode_list_items` encodes it in chunks, each a short call, and
    `encode_snapshot` splices the bytes in where the list sits. The bytes are exactly those
    `encode_value` gives for the list itself.
    """

    count: int
    body: bytes


def _header(count: int, fix: int, b16: int) -> bytes:
    """msgpack's shortest array (fix 0x90, b16 0xdc) or map (0x80, 0xde) header for `count`."""
    if count <= 15:
        return bytes((fix | count,))
    if count <= 0xFFFF:
        return bytes((b16,)) + count.to_bytes(2, "big")
    return bytes((b16 + 1,)) + count.to_bytes(4, "big")


def encode_list_items(items: Iterable[Value], chunk: int = 2048) -> EncodedList:
    """The canonical encoding of ``list(items)`` as an `EncodedList`, `chunk` items a call.

    Items are checked as `encode_value` checks them (a list of scalars takes the fast path),
    so nothing unencodable gets in; each chunk is one short msgpack call."""
    return _encode_chunks(items, chunk, _items_bytes)


def _encode_chunks(
    items: Iterable[Any], chunk: int, to_bytes: Callable[[list[Any]], bytes]
) -> EncodedList:
    """`items` as an `EncodedList`, `to_bytes` (a chunk's items, without the array header)
    called on `chunk` of them at a time."""
    parts: list[bytes] = []
    count = 0
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= chunk:
            count += len(batch)
            parts.append(to_bytes(batch))
            batch = []
    if batch:
        count += len(batch)
        parts.append(to_bytes(batch))
    return EncodedList(count, b"".join(parts))


def encode_record_rows(
    keys: Iterable[str], records: Mapping[str, tuple[Value, ...]], chunk: int = 2048
) -> EncodedList:
    """``encode_list_items([k, *records[k]] for k in keys)``, trusting the fields, in about
    two thirds of the time: rows go to msgpack as tuples, `chunk` a call, without the
    per-field walk of `_canonical` or a list per row.

    Only for a state's own records, whose fields apply already checked (a str key that was
    msgpack-encoded in the entry that wrote it, bytes, 64-bit integers): a snapshot of
    300k keys spent 1.8-2.1 us a key encoding, on every replica at every compaction, and the
    walk and the row lists were two thirds of it. A field msgpack cannot take still raises
    `InvalidArgument`; the bytes equal `encode_list_items`'s (tests/unit/test_codec.py)."""
    return _encode_chunks(((key, *records[key]) for key in keys), chunk, _rows_bytes)


def _rows_bytes(batch: list[tuple[Value, ...]]) -> bytes:
    data = _pack(batch, 1 << 62)
    return data[len(_header(len(batch), 0x90, 0xDC)) :]


def _items_bytes(batch: list[Value]) -> bytes:
    data = _pack(_canonical(batch, 1, "items"), 1 << 62)
    return data[len(_header(len(batch), 0x90, 0xDC)) :]  # the items, without the array header


def _holds_encoded(value: Value) -> bool:
    """Whether an `EncodedList` sits somewhere under `value` through map values."""
    if type(value) is EncodedList:
        return True
    return type(value) is dict and any(_holds_encoded(v) for v in value.values())


def _pack_spliced(value: Value, out: list[bytes], max_bytes: int) -> None:
    if type(value) is EncodedList:
        out.append(_header(value.count, 0x90, 0xDC))
        out.append(value.body)
    elif type(value) is dict and _holds_encoded(value):
        out.append(_header(len(value), 0x80, 0xDE))
        for key, item in value.items():  # canonical: keys sorted already
            out.append(_pack(key, max_bytes))
            _pack_spliced(item, out, max_bytes)
    else:
        out.append(_pack(value, max_bytes))


def encode_snapshot(value: Value, *, max_bytes: int) -> bytes:
    """`encode_value` for a value whose maps may hold `EncodedList`s (at any depth, as map
    values): the same bytes as encoding the lists themselves, under the snapshot's own cap."""
    canonical = _canonical(value, 0, "value")
    out: list[bytes] = []
    _pack_spliced(canonical, out, max_bytes)
    size = sum(len(part) for part in out)
    if size > max_bytes:
        raise InvalidArgument("value", f"encodes to {size} bytes, over {max_bytes}")
    return b"".join(out)


def encode_tree(
    value: Any,
    *,
    ext: Mapping[type, tuple[int, Callable[[Any], Any]]] | None = None,
    max_bytes: int = MAX_ENCODED_BYTES,
) -> bytes:
    """Bytes of a wire tree: plain values plus tuples and registered types.

    `ext` maps a class to ``(code, to_plain)``; `to_plain` turns an instance into a tree that is
    encoded recursively. Codes 1..127 are the caller's; 0 is reserved for tuples.
    """
    hooks = ext or {}

    def default(obj: Any) -> msgpack.ExtType:
        hook = hooks.get(type(obj))
        if hook is None:
            raise InvalidArgument("value", f"{type(obj).__name__} is not a registered wire type")
        code, to_plain = hook
        return msgpack.ExtType(code, encode_tree(to_plain(obj), ext=hooks))

    packer = msgpack.Packer(use_bin_type=True, default=default)  # tuples' inner arrays

    def prepare(obj: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise InvalidArgument("value", f"nested deeper than {MAX_DEPTH}")
        if type(obj) in _PLAIN_TYPES:
            return obj
        if isinstance(obj, tuple):
            if depth < MAX_DEPTH and all(type(v) in _PLAIN_TYPES for v in obj):
                inner = list(obj)
            else:
                inner = [prepare(v, depth + 1) for v in obj]
            return _ext(_TUPLE_EXT, packer.pack(inner))
        if isinstance(obj, list):
            return [prepare(v, depth + 1) for v in obj]
        if isinstance(obj, dict):
            return {prepare(k, depth + 1): prepare(v, depth + 1) for k, v in obj.items()}
        if isinstance(obj, float):
            raise InvalidArgument("value", "floats are not encodable")
        return obj

    try:
        data: bytes = msgpack.packb(prepare(value, 0), use_bin_type=True, default=default)
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, InvalidArgument):
            raise
        raise InvalidArgument("value", str(exc)) from exc
    if len(data) > max_bytes:
        raise InvalidArgument("value", f"encodes to {len(data)} bytes, over {max_bytes}")
    return data


# ---------------------------------------------------------------------------------- decoding


def _reject_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"extension type {code} is not allowed here")


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DecodeError(f"duplicate map key {key!r}")
        out[key] = value
    return out


def _unpack(
    data: bytes,
    max_bytes: int,
    ext_hook: Callable[[int, bytes], Any],
    pairs_hook: Callable[[list[tuple[Any, Any]]], Any] | None = _pairs,
) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise DecodeError(f"{len(data)} bytes is over the {max_bytes}-byte cap")
    if len(data) == 0:
        raise DecodeError("empty input")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,  # checked by _check_plain, to name the key in the error
            object_pairs_hook=pairs_hook,
            ext_hook=ext_hook,
        )
    except DecodeError:
        raise
    except msgpack.ExtraData as exc:
        raise DecodeError("trailing bytes after the value") from exc
    except msgpack.StackError as exc:
        raise DecodeError("nested too deep") from exc
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid UTF-8 in a string") from exc
    except ValueError as exc:  # truncated input, bad format bytes
        raise DecodeError(f"not valid msgpack: {exc or 'truncated'}") from exc
    except Exception as exc:
        raise DecodeError(f"not valid msgpack: {type(exc).__name__}: {exc}") from exc


def _check_plain(value: Any, max_depth: int) -> None:
    """Check a decoded value holds only plain types (no floats, str keys), without recursion.

    Scalars are checked inline and only containers go on the stack: this runs on every entry
    applied and on every snapshot restored.
    """
    if type(value) in _PLAIN_TYPES:
        return
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise DecodeError(f"nested deeper than {max_depth}")
        if type(item) is list:
            children: Any = item
        elif type(item) is dict:
            for key in item:
                if type(key) is not str:
                    raise DecodeError(f"map key {key!r} is not a str")
            children = item.values()
        else:
            raise DecodeError(f"{type(item).__name__} is not a plain value")
        for child in children:
            kind = type(child)
            if kind in _PLAIN_TYPES:
                continue
            if kind is list or kind is dict:
                stack.append((child, depth + 1))
            else:
                raise DecodeError(f"{kind.__name__} is not a plain value")


def decode_value(
    data: bytes, *, max_bytes: int = MAX_ENCODED_BYTES, max_depth: int = MAX_DEPTH
) -> Value:
    """Decode one plain value; any bad input raises `DecodeError`.

    Only canonical-form bytes are accepted (minimal integer and length forms, no duplicate map
    keys): re-encoding the decoded value must give the input back. That one C-speed check
    replaces a per-map Python hook and makes an ambiguous encoding impossible to smuggle in.
    """
    value = _unpack(data, max_bytes, _reject_ext, pairs_hook=None)
    _check_plain(value, max_depth)
    if msgpack.packb(value, use_bin_type=True) != data:
        raise DecodeError("not in canonical form (a duplicate map key or a non-minimal encoding)")
    return value


def decode(data: bytes, *, max_bytes: int = MAX_ENCODED_BYTES) -> Envelope:
    """Decode a command envelope; any bad input raises `DecodeError` naming the problem."""
    value = decode_value(data, max_bytes=max_bytes)
    if not isinstance(value, list) or len(value) not in (3, 4):
        raise DecodeError("envelope must be [version, tag, body] or [version, tag, body, true]")
    internal = len(value) == 4
    if internal and value[3] is not True:
        raise DecodeError("the envelope's fourth element (the runtime's marker) must be true")
    version, tag, body = value[:3]
    if type(version) is not int or version != FORMAT_VERSION:
        raise DecodeError(f"unknown format version {version!r}")
    if type(tag) is not int or not 0 <= tag < 2**16:
        raise DecodeError(f"tag must be an integer in [0, 65536), got {tag!r}")
    if not isinstance(body, dict):
        raise DecodeError("envelope body must be a map")
    return Envelope(version, tag, body, internal)


class FlatDecoder:
    """`decode` for the apply path's common case: an unmarked envelope whose body holds only
    scalars (every KV write). It answers exactly what `decode` answers for such bytes, in
    about half the time: one `unpackb` with the defaults, a flat type check instead of the
    walk of `_check_plain`, and the canonical-form check with a kept `Packer` (a `packb`
    builds one per call). Anything else, including every input `decode` refuses, gets None:
    the caller then calls `decode`, which gives the verdict and its message.

    Keeps a `Packer`, so not for sharing between threads: one per state machine, used under
    its apply lock."""

    __slots__ = ("_pack",)

    def __init__(self) -> None:
        self._pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack

    def decode(
        self, data: bytes, *, check_body: bool = True
    ) -> tuple[int, dict[str, Value]] | None:
        """(tag, body) of `data` if `decode` gives ``Envelope(FORMAT_VERSION, tag, body,
        internal=False)`` with only scalars (`_PLAIN_TYPES`) in `body`, else None.

        ``check_body=False`` leaves out the check of the body's keys and values: only for a
        caller that then checks each of them itself, an exact scalar type under a str key
        it names, and refuses anything else (`commands.EntryDecoder.put` does)."""
        if type(data) is not bytes or len(data) > MAX_ENCODED_BYTES:
            return None
        try:
            # The defaults: raw=False (str as str, as `_unpack`), strict_map_key=True (str or
            # bytes keys only; any other key type here is refused below, as `decode` does),
            # ExtType kept as a value (not a scalar: refused below).
            value = msgpack.unpackb(data)
        except Exception:  # noqa: BLE001 - `decode` names the problem
            return None
        if type(value) is not list or len(value) != 3:
            return None
        version, tag, body = value
        if (
            type(version) is not int
            or version != FORMAT_VERSION
            or type(tag) is not int
            or not 0 <= tag < 2**16
            or type(body) is not dict
        ):
            return None
        if check_body:
            for key, item in body.items():
                if type(key) is not str or type(item) not in _PLAIN_TYPES:
                    return None
        try:
            canonical = self._pack(value)
        except Exception:  # noqa: BLE001 - cannot happen for decoded scalars; `decode` decides
            return None
        if canonical != data:
            return None
        return tag, body


def decode_tree(
    data: bytes,
    *,
    ext: Mapping[int, Callable[[Any], Any]] | None = None,
    max_bytes: int = MAX_ENCODED_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Decode a wire tree written by `encode_tree`; unregistered ext codes are refused.

    `ext` maps a code to ``from_plain``; a `from_plain` that raises anything but `DecodeError`
    has its exception turned into one, so no other exception escapes.
    """
    hooks = ext or {}
    depth = [0]

    def ext_hook(code: int, payload: bytes) -> Any:
        depth[0] += 1
        try:
            if depth[0] > max_depth:
                raise DecodeError(f"nested deeper than {max_depth}")
            inner = _unpack(payload, max_bytes, ext_hook)
            if code == _TUPLE_EXT:
                if not isinstance(inner, list):
                    raise DecodeError("tuple extension must hold an array")
                return tuple(inner)
            from_plain = hooks.get(code)
            if from_plain is None:
                raise DecodeError(f"extension type {code} is not registered")
            try:
                return from_plain(inner)
            except DecodeError:
                raise
            except Exception as exc:
                raise DecodeError(f"bad extension {code} payload: {exc}") from exc
        finally:
            depth[0] -= 1

    value = _unpack(data, max_bytes, ext_hook)
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:  # floats never (keys included); depth bounded; leaves are not pushed
        item, d = stack.pop()
        if d > max_depth:
            raise DecodeError(f"nested deeper than {max_depth}")
        if isinstance(item, float):
            raise DecodeError("floats are not allowed")
        if isinstance(item, (list, tuple)):
            children: Any = item
        elif isinstance(item, dict):
            children = [*item, *item.values()]
        else:
            continue
        if children and d + 1 > max_depth:
            raise DecodeError(f"nested deeper than {max_depth}")
        stack.extend((v, d + 1) for v in children if type(v) not in _PLAIN_TYPES)
    return value

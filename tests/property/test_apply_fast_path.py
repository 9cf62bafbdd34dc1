"""Apply's fast path for KV writes answers exactly what the generic path answers.

`StateMachine._apply_one` takes a shortcut for the common entry (a Put, decoded by
`commands.EntryDecoder` or handed over by its proposer) and `EntryDecoder.decode_entry` one for
any unmarked envelope of scalars. `Reference` below is the state machine with the generic path
only (the code before the shortcuts, kept deliberately simple); on random logs, hand-made
malformed Puts and random byte flips, both give the same results, snapshots, sessions and
watch history, applied one entry at a time or in batches, with or without the proposer's
decoded commands.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coreplane.core import codec
from coreplane.core import commands as C
from coreplane.core.machines.history import _EVENT_OVERHEAD_BYTES, History
from coreplane.core.machines.kv import (
    _CREATE,
    _LEASE,
    _VALUE,
    _VERSION,
    KVMachine,
    Limits,
    record_bytes,
)
from coreplane.core.state import BATCHABLE_TAGS, Applied, StateMachine, _applied_ok
from coreplane.errors import CommandRejected, DecodeError, InvalidArgument, InvariantViolation
from coreplane.raft import engine as E

from .logs import TagSet, command_logs

SMALL = Limits(key_bytes_max=8, value_bytes_max=16, keys_max=6, entry_bytes_max=80)
# a byte quota with room for two keys (49 to 72 bytes each here), so short logs meet it
TIGHT = dataclasses.replace(SMALL, kv_bytes_max=130)


class ReferenceHistory(History):
    """The history's eviction as it was: one event at a time, straight on the attributes."""

    def _evict(self) -> None:
        events = self._events
        while len(events) - self._start > self.events_max or (
            self._bytes > self.bytes_max and len(events) - self._start > 1
        ):
            old = events[self._start]
            self._bytes -= len(old[2]) + len(old[3]) + _EVENT_OVERHEAD_BYTES
            self.floor = max(self.floor, old[0])
            self._start += 1
        if self._start > 1024 and self._start * 2 > len(events):
            del events[: self._start]
            self._start = 0


class ReferenceKV(KVMachine):
    """`put` as it was: every check of `_check_write` first, then the byte quota (counted
    from scratch), then the write."""

    def put(self, key: str, value: bytes, lease_id: int) -> int:
        self._check_write(key, value, lease_id)
        record = self.keys.get(key)
        grown = sum(record_bytes(k, r[_VALUE]) for k, r in self.keys.items() if k != key)
        grown += record_bytes(key, value)
        if grown > self.limits.kv_bytes_max and grown > self.stored_bytes:
            grow, cap = grown - self.stored_bytes, self.limits.kv_bytes_max
            raise CommandRejected(
                "space_exceeded",
                f"the keys and values stored would pass limits.kv_bytes_max "
                f"({self.stored_bytes} + {grow} > {cap} bytes); delete keys "
                "or shrink values first (writes that do not grow the state still apply)",
            )
        self.stored_bytes = grown
        self.revision += 1
        if record is None:
            self.keys[key] = (value, self.revision, self.revision, 1, lease_id)
            self._sorted_keys = None
        else:
            if record[_LEASE] and record[_LEASE] != lease_id:
                self._detach(key, record[_LEASE])
            self.keys[key] = (value, record[_CREATE], self.revision, record[_VERSION] + 1, lease_id)
        if lease_id:
            self.leases[lease_id].keys.add(key)
        self.history.record(self.revision, "put", key, value, self.revision)
        return self.revision


class Reference(StateMachine):
    """The generic path only: every entry decoded by `commands.decode_entry`, every command
    object through `_apply_session`, as before the fast path existed; the KV's `put` and
    its history's eviction as they were (`ReferenceKV`, `ReferenceHistory`)."""

    def __init__(self, *, limits: Limits | None = None) -> None:
        super().__init__(limits=limits)
        self.kv = ReferenceKV(self.limits)

    def _apply_one(
        self, entry: bytes, index: int, batched: bool, known: C.Command | None
    ) -> Applied:
        if len(entry) > self.limits.entry_bytes_max:
            return Applied(
                False, None, "entry_too_large", f"{len(entry)} bytes, over limits.entry_bytes_max"
            )
        command: C.Command
        if known is not None and known.TAG in BATCHABLE_TAGS:
            command, internal = known, False
        else:
            try:
                command, internal = C.decode_entry(entry)
            except DecodeError as exc:
                return Applied(False, None, "decode_error", str(exc))
        if internal != (command.TAG in C.INTERNAL_TAGS):
            return Applied(
                False,
                None,
                "internal_only" if not internal else "not_internal",
                f"{type(command).__name__} {'lacks' if not internal else 'carries'}"
                " the runtime's marker",
            )
        if batched and command.TAG not in BATCHABLE_TAGS:
            return Applied(
                False,
                None,
                "not_batchable",
                f"{type(command).__name__} depends on its log index and cannot share an entry",
            )
        if isinstance(command, C.LockReleaseAcquire) and command.release_seq:
            return self._release_acquire(command, index)
        return self._apply_session(command, index)


def _machines(limits: Limits | None) -> tuple[StateMachine, StateMachine]:
    """The machine under test and the reference; with `limits`, short histories as well, so
    that evictions (by count and by bytes) happen within a short log."""
    fast, slow = StateMachine(limits=limits), Reference(limits=limits)
    if limits is not None:
        fast.kv.history = History(events_max=5, bytes_max=400)
        slow.kv.history = ReferenceHistory(events_max=5, bytes_max=400)
    else:
        slow.kv.history = ReferenceHistory()
    fast.register("tags", TagSet())
    slow.register("tags", TagSet())
    return fast, slow


def _state(sm: StateMachine) -> tuple[Any, ...]:
    history = sm.kv.history
    return (
        sm.snapshot(),
        sm.state_hash(),
        sm.kv.stored_bytes,
        history.floor,
        history.since(history.floor + 1, limit=10**6),
        {cid: (s.floor, list(s.results.items())) for cid, s in sm.sessions.items()},
    )


def _known(entry: bytes) -> C.Command | None:
    """What the proposer keeps for its own apply: the decoded KV write these bytes encode."""
    try:
        command, internal = C.decode_entry(entry)
    except DecodeError:
        return None
    if internal or command.TAG not in BATCHABLE_TAGS or C.encode(command) != entry:
        return None
    return command


def _apply_both(log: list[bytes], cuts: list[int], mode: str, limits: Limits | None) -> None:
    fast, slow = _machines(limits)
    bounds = sorted({0, len(log), *(c % (len(log) + 1) for c in cuts)})
    for index, (lo, hi) in enumerate(itertools.pairwise(bounds), 1):
        group = log[lo:hi]
        if mode == "single":
            got = [fast.apply(e, index * 1000 + i) for i, e in enumerate(group)]
            want = [slow.apply(e, index * 1000 + i) for i, e in enumerate(group)]
        elif mode == "single_known":
            got = [fast.apply(e, index * 1000 + i, _known(e)) for i, e in enumerate(group)]
            want = [slow.apply(e, index * 1000 + i, _known(e)) for i, e in enumerate(group)]
        elif mode == "batch":
            got, want = fast.apply_batch(group, index), slow.apply_batch(group, index)
        else:
            known = [_known(e) for e in group]
            got, want = fast.apply_batch(group, index, known), slow.apply_batch(group, index, known)
        assert got == want
    assert _state(fast) == _state(slow)


# ------------------------------------------------------------------ hand-made Put variants


def _pack_map(pairs: list[tuple[Any, bytes]]) -> bytes:
    """A msgpack map from keys and already-encoded values (any encoding, duplicates kept)."""
    assert len(pairs) < 16
    out = bytes([0x80 | len(pairs)])
    for key, raw in pairs:
        out += msgpack.packb(key, use_bin_type=True) + raw
    return out


def _put_pairs(key: str, value: bytes, lease: int, client: str, seq: int) -> list[Any]:
    enc = msgpack.Packer(use_bin_type=True).pack
    return [
        ("client_id", enc(client)),
        ("key", enc(key)),
        ("lease_id", enc(lease)),
        ("seq", enc(seq)),
        ("value", enc(value)),
    ]


def _envelope(body: bytes, head: bytes = b"\x93\x01\x0a", tail: bytes = b"") -> bytes:
    return head + body + tail


def _variants(key: str, value: bytes, lease: int, client: str, seq: int) -> list[bytes]:
    enc = msgpack.Packer(use_bin_type=True).pack
    pairs = _put_pairs(key, value, lease, client, seq)
    good = _envelope(_pack_map(pairs))
    out = [good]
    assert good == C.encode(C.Put(key, value, lease_id=lease, client_id=client, seq=seq))
    out.append(_envelope(_pack_map(pairs[::-1])))  # keys out of order: canonical enough
    out.append(b"\x94\x01\x0a" + _pack_map(pairs) + b"\xc3")  # the runtime's marker
    out.append(b"\x94\x01\x0a" + _pack_map(pairs) + b"\xc2")  # a marker that is not true
    out.append(_envelope(_pack_map(pairs[:4])))  # a field missing
    out.append(_envelope(_pack_map([*pairs, ("zz", enc(1))])))  # an unknown field
    out.append(_envelope(_pack_map([*pairs, ("seq", enc(seq + 1))])))  # a duplicate key
    out.append(_envelope(_pack_map([(k.encode(), v) for k, v in pairs])))  # bin keys
    swap = {
        "seq": [b"\xd1" + seq.to_bytes(2, "big")] if seq < 2**15 else [],  # int16: not minimal
        "lease_id": [enc(-1), enc(2**63), enc(True), enc(1.0)],
        "value": [enc(value.decode("latin-1"))],  # a str where bytes belong
        "key": [enc(key.encode()), b"\xa2\xff\xfe"],  # bytes key; invalid UTF-8
        "client_id": [enc(None), b"\xd9" + bytes([len(client)]) + client.encode()],  # str8
    }
    for name, raws in swap.items():
        for raw in raws:
            out.append(_envelope(_pack_map([(k, raw if k == name else v) for k, v in pairs])))
    out.append(_envelope(_pack_map(pairs), head=b"\x93\x02\x0a"))  # unknown version
    out.append(_envelope(_pack_map(pairs), head=b"\x93\xc3\x0a"))  # version True
    out.append(_envelope(_pack_map(pairs), head=b"\x93\x01\xc3"))  # tag True
    out.append(_envelope(_pack_map(pairs), head=b"\x93\x01\x0b"))  # a Delete's tag
    out.append(_envelope(_pack_map(pairs), head=b"\x93\x01\xcd\x00\x0a"))  # tag not minimal
    out.append(_envelope(_pack_map(pairs), head=b"\x93\x01\x01"))  # a Tick's tag, unmarked
    out.append(good[:-1])  # truncated
    out.append(good + b"\x00")  # trailing bytes
    out.append(b"")
    return out


_puts = st.builds(
    _variants,
    key=st.sampled_from(["k0", "k1", "", "ü/é", "éééé", "ééééé", "k" * 9, "dir/a"]),
    value=st.sampled_from([b"", b"v", b"x" * 16, b"y" * 17]),
    lease=st.sampled_from([0, 0, 1, 2, 7]),
    client=st.sampled_from(["", "c1", "c2"]),
    seq=st.integers(0, 300),
)


@st.composite
def _logs(draw: st.DrawFn) -> list[bytes]:
    log = list(draw(command_logs(max_len=30)))
    for variants in draw(st.lists(_puts, max_size=12)):
        picked = draw(st.lists(st.sampled_from(variants), min_size=1, max_size=3))
        at = draw(st.integers(0, len(log)))
        log[at:at] = picked
    for _ in range(draw(st.integers(0, 3))):  # random byte flips in random entries
        i = draw(st.integers(0, len(log) - 1))
        if log[i]:
            j = draw(st.integers(0, len(log[i]) - 1))
            flipped = bytearray(log[i])
            flipped[j] ^= draw(st.integers(1, 255))
            log.insert(i, bytes(flipped))
    return log


_modes = st.sampled_from(["single", "single_known", "batch", "batch_known"])


@given(log=_logs(), cuts=st.lists(st.integers(0, 200), max_size=8), mode=_modes)
def test_fast_path_equals_generic_path(log: list[bytes], cuts: list[int], mode: str) -> None:
    _apply_both(log, cuts, mode, None)


@given(log=_logs(), cuts=st.lists(st.integers(0, 200), max_size=8), mode=_modes)
def test_fast_path_equals_generic_path_at_the_limits(
    log: list[bytes], cuts: list[int], mode: str
) -> None:
    """Small limits: the key, value, entry and key-count refusals on both paths."""
    _apply_both(log, cuts, mode, SMALL)


@given(log=_logs(), cuts=st.lists(st.integers(0, 200), max_size=8), mode=_modes)
def test_fast_path_equals_generic_path_at_the_byte_quota(
    log: list[bytes], cuts: list[int], mode: str
) -> None:
    """A byte quota that short logs reach: `space_exceeded`, and the count kept by deletes,
    overwrites, lease revocations and restores, on both paths."""
    _apply_both(log, cuts, mode, TIGHT)


def test_session_window_and_lease_refusals_agree() -> None:
    """A long run of one session's puts (past `SESSION_WINDOW`, with retries of forgotten
    and remembered seqs) and puts to missing leases, as batches."""
    log: list[bytes] = [C.encode(C.LeaseGrant(5_000))]
    for seq in range(1, 400):
        log.append(C.encode(C.Put(f"k{seq % 7}", b"v", lease_id=seq % 3, client_id="c", seq=seq)))
        if seq % 50 == 0:
            log += [log[-40], log[-2], log[1]]  # remembered, remembered, forgotten
    for mode in ("single", "single_known", "batch", "batch_known"):
        _apply_both(log, [1, 7, 100, 101, 250], mode, None)


def test_flat_decoder_matches_decode_on_its_cases() -> None:
    """`codec.FlatDecoder` answers (tag, body) only where `decode` gives that envelope."""
    flat = codec.FlatDecoder()
    entries = [
        C.encode(C.Put("k", b"v", client_id="c", seq=3)),
        C.encode(C.Delete("k")),
        C.encode_internal(C.Tick(1, 200)),  # marked: not the fast path's
        C.encode(C.UserCommand("m", {"a": [1]})),  # a map in the body: not the fast path's
        codec.encode(10, {"x": True, "y": None}),
    ]
    answers = [flat.decode(e) for e in entries]
    assert answers[0] == (
        10,
        {"client_id": "c", "key": "k", "lease_id": 0, "seq": 3, "value": b"v"},
    )
    assert answers[1] == (11, {"client_id": "", "key": "k", "seq": 0})
    assert answers[2] is None
    assert answers[3] is None
    assert answers[4] == (10, {"x": True, "y": None})
    for entry, answer in zip(entries, answers, strict=True):
        if answer is not None:
            envelope = codec.decode(entry)
            assert (envelope.tag, envelope.body, envelope.internal) == (*answer, False)


# ------------------------------------------------------------------ the proposer's encode

_CLIENT_CLASSES = [
    cls
    for cls in (
        C.Put,
        C.Delete,
        C.Cas,
        C.LeaseGrant,
        C.LeaseKeepAlive,
        C.LeaseRevoke,
        C.UserCommand,
        *C.LOCK_COMMANDS,
        C.QuotaSetLimit,
        C.QuotaDeleteLimit,
        C.FleetCreatePartition,
        C.FleetCordon,
        C.FleetAck,
    )
]
_field_values = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63)]),
    st.booleans(),
    st.text(max_size=4),
    st.sampled_from(["\ud800", "a\udfffb", "ü"]),  # lone surrogates: not valid UTF-8
    st.binary(max_size=4),
    st.none(),
    st.floats(allow_nan=False),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from("ba"), st.integers(0, 3), max_size=2),
)


def _reference_encode(command: Any) -> bytes:
    """`commands.encode` as it was: `_check` on every field, then the canonical encoder
    (which gives the same bytes as the direct packing of validated scalars)."""
    name = type(command).__name__
    for field_name, kind in command.TYPES.items():
        try:
            C._check(name, field_name, kind, getattr(command, field_name))
        except DecodeError as exc:
            raise InvalidArgument(f"{name}.{field_name}", str(exc)) from None
    return codec.encode(command.TAG, command.to_body())


@given(cls=st.sampled_from(_CLIENT_CLASSES), data=st.data())
def test_encode_equals_the_reference_encode(cls: Any, data: st.DataObject) -> None:
    """Valid or not, a command encodes to the same bytes or is refused with the same field
    and message (the inline checks of `validate`, the attrgetter of `_encode_checked`)."""
    fields = {}
    for name, kind in cls.TYPES.items():
        valid = {int: st.integers(0, 2**63 - 1), str: st.text(max_size=6)}.get(
            kind, st.binary(max_size=6) if kind is bytes else st.booleans()
        )
        if kind is object:
            valid = st.lists(st.integers(0, 9), max_size=3)
        fields[name] = data.draw(st.one_of(valid, valid, _field_values), label=name)
    command = cls(**fields)
    try:
        want: Any = _reference_encode(command)
    except InvalidArgument as exc:
        want = (exc.field, str(exc))
    try:
        got: Any = C.encode(command)
    except InvalidArgument as exc:
        got = (exc.field, str(exc))
    assert got == want


# ------------------------------------------------------------------ splitting a batch


def _reference_split(payload: bytes) -> list[bytes]:
    """`split_batch` as it was (through a memoryview)."""
    out: list[bytes] = []
    view = memoryview(payload)
    i, n = 0, len(payload)
    while i < n:
        size = int.from_bytes(view[i : i + 4], "big")
        i += 4
        if size == 0 or i + size > n:
            raise InvariantViolation(f"a batch entry does not split at byte {i - 4} of {n}")
        out.append(bytes(view[i : i + size]))
        i += size
    if not out:
        raise InvariantViolation("an empty batch entry")
    return out


def _split_answer(split: Any, payload: bytes) -> Any:
    try:
        return split(payload)
    except InvariantViolation as exc:
        return str(exc)


@given(
    commands=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    cut=st.integers(0, 3000),
    noise=st.binary(max_size=6),
)
def test_split_batch_equals_the_reference(commands: list[bytes], cut: int, noise: bytes) -> None:
    """Whole payloads split back into their commands; cut or padded ones are refused with
    the same message."""
    payload = E.join_batch(commands)
    if commands:
        assert E.split_batch(payload) == commands
        assert E.split_batch(bytearray(payload)) == commands
    for bad in (payload, payload[: cut % (len(payload) + 1)], payload + noise, noise):
        assert _split_answer(E.split_batch, bad) == _split_answer(_reference_split, bad)


@given(value=st.one_of(st.integers(0, 2**63), st.none(), st.binary(max_size=3)))
def test_applied_ok_is_the_constructors(value: Any) -> None:
    made = _applied_ok(value)
    want = Applied(True, value)
    assert type(made) is Applied
    assert (made, repr(made), hash(made), made.to_plain()) == (
        want,
        repr(want),
        hash(want),
        want.to_plain(),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.ok = False  # type: ignore[misc]


def test_encode_from_many_threads_gives_each_its_own_bytes() -> None:
    """`encode_scalars` reuses Packers: threads encoding at once each get their own bytes,
    small and large (a large one's Packer is not kept)."""
    commands = [
        C.Put(f"k{i}", bytes([i % 256]) * (i % 7 if i % 50 else 70_000), client_id="c", seq=i)
        for i in range(1, 600)
    ]
    want = [codec.encode(c.TAG, c.to_body()) for c in commands]
    got: dict[int, list[bytes]] = {}

    def work(t: int) -> None:
        out = []
        for c in commands:
            out.append(C.encode(c))
        got[t] = out

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(got[t] == want for t in range(6))
    assert len(codec._IDLE_PACKERS) <= codec._IDLE_PACKERS_MAX


def test_restored_sessions_forget_in_the_same_order() -> None:
    """A session's eviction order (`_Session.order`) is rebuilt on restore: past the window,
    a restored replica forgets, refuses and answers exactly as the one that never stopped."""
    log = [
        C.encode(C.Put(f"k{seq % 5}", b"v", client_id="c", seq=seq))
        for seq in (*range(1, 150), 3, 149, *range(152, 140, -1), *range(150, 400))
    ]
    log += [log[i] for i in (0, 20, 200, 300, -1)]  # retries: forgotten and remembered
    whole = StateMachine()
    results, snapshots = [], []
    for i, entry in enumerate(log, 1):
        results.append(whole.apply(entry, i))
        snapshots.append(whole.snapshot())
    for k in (100, 160, 170, 300):
        prefix = StateMachine()
        for i, entry in enumerate(log[:k], 1):
            prefix.apply(entry, i)
        restored = StateMachine()
        restored.restore(prefix.snapshot())
        for i, entry in enumerate(log[k:], k + 1):
            assert restored.apply(entry, i) == results[i - 1]
            assert restored.snapshot() == snapshots[i - 1]
        assert list(restored.sessions["c"].order) == list(whole.sessions["c"].results)


# ------------------------------------------------------------------ the canonical walk


def _reference_canonical(value: Any, depth: int, path: str) -> Any:
    """`codec._canonical` as it was: a path string built for every container."""
    if depth > codec.MAX_DEPTH:
        raise InvalidArgument(path, f"nested deeper than {codec.MAX_DEPTH}")
    kind = type(value)
    if kind in (type(None), bool, str, bytes):
        return value
    if kind is int:
        if not -(2**63) <= value <= 2**64 - 1:
            raise InvalidArgument(path, "integer does not fit in 64 bits")
        return value
    if kind is list or kind is tuple:
        out = []
        for i, item in enumerate(value):
            item_kind = type(item)
            if item_kind in (type(None), bool, str, bytes) or (
                item_kind is int and -(2**63) <= item <= 2**64 - 1
            ):
                out.append(item)  # scalars inline, at any depth
            else:
                out.append(_reference_canonical(item, depth + 1, f"{path}[{i}]"))
        return out
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise InvalidArgument(path, f"map key {key!r} is not a str")
        return {k: _reference_canonical(value[k], depth + 1, f"{path}.{k}") for k in sorted(value)}
    raise InvalidArgument(path, f"{kind.__name__} is not encodable (integers, not floats)")


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([-(2**63) - 1, 2**64, 1.5]),
    st.text(max_size=3),
    st.binary(max_size=3),
)
_trees = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(
            st.one_of(st.text(max_size=2), st.sampled_from([1, b"k"])), inner, max_size=3
        ),
    ),
    max_leaves=30,
)


def _nest(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


def _canonical_answer(walk: Any, value: Any) -> Any:
    try:
        return ("ok", codec._pack(walk(value, 0, "value")))
    except InvalidArgument as exc:
        return (exc.field, str(exc))


@given(tree=_trees, levels=st.sampled_from([0, 1, 28, 30, 31, 32, 33]))
def test_canonical_walk_equals_the_reference(tree: Any, levels: int) -> None:
    """Same bytes, or the same refusal naming the same path, at any depth (rows of scalars
    are checked inline, and paths are rendered only for an error)."""
    value = _nest(tree, levels)
    assert _canonical_answer(codec._canonical, value) == _canonical_answer(
        _reference_canonical, value
    )

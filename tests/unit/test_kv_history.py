"""The KV event history behind watches: bounded, resumable, and honest about compaction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coreplane.core import commands as C
from coreplane.core.machines.history import History
from coreplane.core.state import StateMachine
from coreplane.errors import CommandRejected


def _apply(sm: StateMachine, *commands: C.Command) -> None:
    for command in commands:
        data = C.encode_internal(command) if command.TAG in C.INTERNAL_TAGS else C.encode(command)
        sm.apply(data, sm.applied_index + 1)


def test_puts_deletes_and_lease_expiry_are_events_in_revision_order() -> None:
    sm = StateMachine()
    _apply(
        sm,
        C.LeaseGrant(ttl_ms=1_000),
        C.Put("a", b"1"),
        C.Put("b/x", b"2", lease_id=1),
        C.Put("b/y", b"3", lease_id=1),
        C.Delete("a"),
        C.Tick(1, 1_000),
    )
    events, next_revision = sm.kv.history.since(1)
    assert [(r, kind, key) for r, kind, key, _v, _m in events] == [
        (1, "put", "a"),
        (2, "put", "b/x"),
        (3, "put", "b/y"),
        (4, "delete", "a"),
        (5, "delete", "b/x"),
        (5, "delete", "b/y"),
    ]  # one revocation, one revision
    assert next_revision == 6 == sm.kv.revision + 1
    assert sm.kv.history.since(2, prefix="b/")[0][0][2] == "b/x"
    assert sm.kv.history.since(6) == ([], 6)


def test_limit_never_splits_a_revision_and_eviction_raises_the_floor() -> None:
    h = History(events_max=4)
    for rev, key in ((1, "a"), (2, "b"), (2, "c"), (3, "d")):
        h.record(rev, "put", key, b"", rev)
    events, nxt = h.since(1, limit=2)
    assert [e[2] for e in events] == ["a", "b", "c"] and nxt == 3
    h.record(4, "put", "e", b"", 4)  # evicts revision 1
    assert h.floor == 1 and len(h) == 4
    with pytest.raises(CommandRejected) as info:
        h.since(1)
    assert info.value.code == "compacted" and "oldest available is 2" in info.value.message
    big = History(bytes_max=1_000)
    for rev in range(1, 20):
        big.record(rev, "put", "k", b"x" * 300, rev)
    assert big.describe()["bytes"] <= 1_000 and big.floor == 17


def test_a_restored_replica_knows_no_events_before_its_snapshot() -> None:
    sm = StateMachine()
    _apply(sm, C.Put("a", b"1"), C.Put("b", b"2"))
    restored = StateMachine.from_snapshot(sm.snapshot())
    assert restored.state_hash() == sm.state_hash()  # the history is not in the hash
    with pytest.raises(CommandRejected):
        restored.kv.history.since(2)
    _apply(restored, C.Put("c", b"3"))
    assert [e[2] for e in restored.kv.history.since(3)[0]] == ["c"]


@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["put", "delete"]), st.sampled_from("abc")), max_size=40
    ),
    polls=st.lists(st.integers(1, 5), max_size=20),
)
def test_resuming_by_revision_misses_nothing(ops: list[tuple[str, str]], polls: list[int]) -> None:
    sm = StateMachine()
    seen: list[tuple[int, str, str]] = []
    start = 1
    cursor = 0
    for step in [*polls, len(ops)]:
        chunk, cursor = ops[cursor : cursor + step], cursor + step
        for kind, key in chunk:
            _apply(sm, C.Put(key, b"v") if kind == "put" else C.Delete(key))
        events, start = sm.kv.history.since(start, limit=2)
        seen += [(r, k, key) for r, k, key, _v, _m in events]
        while events:
            events, start = sm.kv.history.since(start, limit=2)
            seen += [(r, k, key) for r, k, key, _v, _m in events]
    everything = [(r, k, key) for r, k, key, _v, _m in sm.kv.history.since(1, limit=10**6)[0]]
    assert seen == everything

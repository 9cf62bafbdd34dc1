"""Batch entries: KV writes queued together share one log entry (`RaftEngine.propose(...,
batchable=True)`), each applied exactly as if it were an entry of its own."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.journal import MemoryJournal
from pysyncobj.node import Node

from coreplane.core import commands as C
from coreplane.core.state import BATCHABLE_TAGS, Applied, StateMachine
from coreplane.errors import InvariantViolation
from coreplane.raft import engine as E
from coreplane.raft.journal import LmdbJournal, snapshot_marker_path


def _put(key: str, seq: int = 0, client: str = "") -> bytes:
    return C.encode(C.Put(key=key, value=key.encode(), client_id=client, seq=seq))


# ------------------------------------------------------------------ the entry format


def test_a_batch_splits_back_into_its_commands_in_order() -> None:
    commands = [_put(f"k{i}") for i in range(5)] + [b"x" * 70_000]
    assert E.split_batch(E.join_batch(commands)) == commands


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00\x00\x00", b"\x00\x00\x00\x05abc", b"\x00\x00\x00\x00", b"\x00\x00\x00\x01ab"],
)
def test_a_payload_that_does_not_split_stops_the_node(payload: bytes) -> None:
    with pytest.raises(InvariantViolation):
        E.split_batch(payload)


# ------------------------------------------------------------------ the state machine


def test_a_batch_applies_like_its_commands_one_entry_each() -> None:
    commands = [
        C.Put("a", b"1", client_id="c", seq=1),
        C.Cas("a", 1, b"2", client_id="c", seq=2),
        C.Cas("a", 1, b"3", client_id="c", seq=3),  # refused: the revision moved
        C.Delete("b", client_id="c", seq=4),
        C.Put("b", b"4", client_id="c", seq=5),
        C.Put("a", b"1", client_id="c", seq=1),  # a re-sent seq: its first result, not re-run
    ]
    alone, batched = StateMachine(), StateMachine()
    one_each = [alone.apply(C.encode(c), i + 1) for i, c in enumerate(commands)]
    together = batched.apply_batch([C.encode(c) for c in commands], 1)
    assert together == one_each
    assert [r.code for r in together] == ["", "", "compare_failed", "", "", ""]
    assert batched.kv.range("") == alone.kv.range("")
    assert batched.kv.revision == alone.kv.revision == 3
    assert batched.applied_index == 1


def test_commands_that_see_their_index_are_refused_in_a_batch_alike_everywhere() -> None:
    sm = StateMachine()
    others = [
        C.encode(C.LockSessionGrant(ttl_ms=10_000)),
        C.encode(C.UserCommand(machine="m", body=1)),
        C.encode_internal(C.Leader(node_id="n", term=1)),  # fencing token = index
        C.encode_internal(C.Tick(n=1, elapsed_ms=1)),
    ]
    results = sm.apply_batch([*others, _put("k")], 7)
    assert [r.code for r in results] == ["not_batchable"] * 4 + [""]
    assert sm.leader_token == 0 and sm.tick_n == 0
    assert {C.Put.TAG, C.Delete.TAG, C.Cas.TAG} == BATCHABLE_TAGS


def test_a_batch_index_must_grow_like_any_entry() -> None:
    sm = StateMachine()
    sm.apply(_put("a"), 5)
    with pytest.raises(InvariantViolation):
        sm.apply_batch([_put("b")], 5)


# ------------------------------------------------------------------ the engine


def _solo(
    applied: list[tuple[str, Any, int]], recording_transport: Any, snapshot_source: Any = None
) -> Any:
    def apply_one(data: bytes, index: int) -> str:
        applied.append(("one", data, index))
        return f"r{index}"

    def apply_batch(entries: list[bytes], index: int) -> list[str]:
        applied.append(("batch", entries, index))
        return [f"r{index}.{i}" for i in range(len(entries))]

    conf = E.build_conf(timing=E.EngineTiming(), journal_file=None, dump_file=None, auto_tick=False)
    node = E.RaftEngine(
        self_node=Node("solo"),
        other_nodes=[],
        conf=conf,
        apply_fn=apply_one,
        apply_batch_fn=apply_batch,
        transport_class=recording_transport,
        journal=MemoryJournal(),
        snapshot_source=snapshot_source,
        node_class=Node,
    )
    node._SyncObj__raftElectionDeadline = 0
    node.doTick()
    node.doTick()
    assert node._isLeader()
    return node


def test_queued_writes_share_an_entry_and_each_hears_its_own_result(
    recording_transport: Any,
) -> None:
    applied: list[tuple[str, Any, int]] = []
    node = _solo(applied, recording_transport)
    results: dict[str, tuple[Any, int]] = {}

    def cb(name: str) -> Any:
        return lambda result, code: results.__setitem__(name, (result, code))

    for name in ("a", "b", "c"):
        node.propose(name.encode(), cb(name), batchable=True)
    node.propose(b"plain", cb("plain"))  # not batchable: cuts the run, keeps its place
    node.propose(b"d", cb("d"), batchable=True)
    node.propose(b"e", cb("e"), batchable=True)
    for _ in range(4):
        node.doTick()
    assert [(kind, data) for kind, data, _ in applied] == [
        ("batch", [b"a", b"b", b"c"]),
        ("one", b"plain"),
        ("batch", [b"d", b"e"]),
    ]
    batch1, plain, batch2 = applied
    assert results["a"] == (f"r{batch1[2]}.0", 0) and results["c"] == (f"r{batch1[2]}.2", 0)
    assert results["plain"] == (f"r{plain[2]}", 0)
    assert results["e"] == (f"r{batch2[2]}.1", 0)
    assert batch1[2] < plain[2] < batch2[2]  # queue order is log order
    assert node.batch_stats() == (2, 5)
    assert node.observations()["batches"] == {"entries": 2, "commands": 5}  # cp.observations()
    log = node._SyncObj__raftLog
    kinds = [log[i][0][:1] for i in range(len(log))]
    assert bytes([0x12]) not in kinds  # the queue's marker never reaches the log
    node.destroy()


def test_a_lone_write_is_a_plain_entry_and_batches_are_bounded(recording_transport: Any) -> None:
    applied: list[tuple[str, Any, int]] = []
    node = _solo(applied, recording_transport)
    node.propose(b"alone", lambda r, c: None, batchable=True)
    node.doTick()
    node.doTick()
    assert applied[-1][:2] == ("one", b"alone")
    applied.clear()
    for i in range(E.BATCH_COMMANDS_MAX + 3):
        node.propose(b"%d" % i, lambda r, c: None, batchable=True)
    big = b"x" * (E.BATCH_BYTES_MAX - 100)
    node.propose(big, lambda r, c: None, batchable=True)
    node.propose(big, lambda r, c: None, batchable=True)
    for _ in range(6):
        node.doTick()
    sizes = [len(data) if kind == "batch" else 1 for kind, data, _ in applied]
    assert sizes == [E.BATCH_COMMANDS_MAX, 4, 1]  # the two big ones cannot share an entry
    node.destroy()


def test_a_failed_batch_fails_every_write_in_it() -> None:
    got: list[tuple[Any, int]] = []
    callback = E._BatchCallback([lambda r, c: got.append((r, c))] * 3)
    callback(None, E.FAIL.LEADER_CHANGED)
    assert got == [(None, E.FAIL.LEADER_CHANGED)] * 3
    got.clear()
    callback([Applied(True, 1), Applied(True, 2), Applied(True, 3)], E.FAIL.SUCCESS)
    assert [r.value for r, _ in got] == [1, 2, 3]
    with pytest.raises(InvariantViolation):
        callback("not a list", E.FAIL.SUCCESS)


# ------------------------------------------------------------------ the proposer's shortcut


def test_a_proposer_applying_its_own_decoded_writes_ends_in_the_same_state() -> None:
    commands = [
        C.Put("a", b"1", client_id="c", seq=1),
        C.Cas("a", 1, b"2", client_id="c", seq=2),
        C.Delete("a", client_id="c", seq=3),
        C.Put("a", b"1", client_id="c", seq=1),  # a re-sent seq
        C.LockSessionGrant(ttl_ms=10_000, client_id="c", seq=4),  # not a KV write: decoded
    ]
    datas = [C.encode(c) for c in commands]
    follower, proposer = StateMachine(), StateMachine()
    for i, data in enumerate(datas):
        assert proposer.apply(data, i + 1, commands[i]) == follower.apply(data, i + 1)
    assert proposer.apply_batch(datas[:3], 9, list(commands[:3])) == follower.apply_batch(
        datas[:3], 9
    )
    assert proposer.state_hash() == follower.state_hash()


def test_a_batch_counts_as_its_writes_towards_log_compaction(recording_transport: Any) -> None:
    # A log of batch entries would otherwise hold ~100x more writes between snapshots, and a
    # restarted node replays them all in one tick before it answers a vote.
    applied: list[tuple[str, Any, int]] = []
    node = _solo(applied, recording_transport)
    node.conf.logCompactionMinEntries = 20
    forced: list[int] = []
    node.forceLogCompaction = lambda: forced.append(len(node._SyncObj__raftLog))
    for i in range(12):
        node.propose(b"%d" % i, lambda r, c: None, batchable=True)
    node.doTick()
    node.doTick()
    assert applied[-1][0] == "batch" and forced == []  # 12 writes + a few entries: not yet
    for i in range(12):
        node.propose(b"%d" % i, lambda r, c: None, batchable=True)
    node.doTick()
    node.doTick()
    assert len(forced) == 1 and forced[0] < 20  # few entries, but over 20 writes
    node.destroy()


class _SizedSource:
    def __init__(self) -> None:
        self.keys = 0

    def snapshot_view(self) -> Any:
        return lambda: b""

    def restore(self, data: bytes) -> None:
        raise AssertionError("not loaded in this test")

    def size_hint(self) -> int:
        return self.keys


def _sized_solo(path: Path, recording_transport: Any, source: _SizedSource, base: int) -> Any:
    """A one-voter leader on an LMDB journal (snapshots need one) over a sized source."""
    journal = LmdbJournal(str(path), node_id="solo")
    conf = E.build_conf(
        timing=E.EngineTiming(),
        journal_file=None,
        dump_file=snapshot_marker_path(str(path)),
        auto_tick=False,
        log_compaction_min_entries=base,
    )
    node = E.RaftEngine(
        self_node=Node("solo"),
        other_nodes=[],
        conf=conf,
        apply_fn=lambda data, index: None,
        apply_batch_fn=lambda entries, index: [None] * len(entries),
        transport_class=recording_transport,
        journal=journal,
        snapshot_source=source,
        node_class=Node,
    )
    node._SyncObj__raftElectionDeadline = 0
    node.doTick()
    node.doTick()
    assert node._isLeader()
    return node


def _finish_snapshot(node: Any) -> None:
    """Let a snapshot under way (captured on a tick, written on its own thread) complete and
    the next tick compact the log with it."""
    assert node.wait_snapshot_writer(10.0)
    node.doTick()


def _serializing(node: Any) -> bool:
    """A snapshot was captured and is being written (without taking its outcome, which the
    engine's next tick must see to compact)."""
    return any(i.serializer._thread is not None for i in node._cp_installed)


def _snapshot(node: Any) -> None:
    node.forceLogCompaction()
    node.doTick()
    _finish_snapshot(node)


def test_the_compaction_threshold_grows_with_the_state_at_the_last_snapshot(
    tmp_path: Path, recording_transport: Any
) -> None:
    """A snapshot encodes the whole state: at a fixed count its cost per write grew with the
    state (at 250k keys, more than the write itself on every replica). The threshold is
    max(the configured count, the state's size hint when the last snapshot was taken)."""
    source = _SizedSource()
    node = _sized_solo(tmp_path, recording_transport, source, base=20)
    try:
        node.propose(b"w", lambda r, c: None, batchable=True)
        node.doTick()
        source.keys = 60
        node.doTick()
        assert node.conf.logCompactionMinEntries == 20  # no snapshot of that state yet
        _snapshot(node)
        assert node.conf.logCompactionMinEntries == 60
        source.keys = 1  # keys deleted: back to the configured floor at the next snapshot
        node.propose(b"w", lambda r, c: None, batchable=True)
        node.doTick()
        _snapshot(node)
        assert node.conf.logCompactionMinEntries == 20
    finally:
        node.destroy()


def test_writes_that_only_add_keys_still_compact_the_log(
    tmp_path: Path, recording_transport: Any
) -> None:
    """Against the size *now*, a write that adds a key grows the threshold as fast as it
    counts towards it: past the configured count the log was never compacted again and grew
    without bound. Against the last snapshot's size, snapshots come at least at every
    doubling of the state."""
    source = _SizedSource()
    node = _sized_solo(tmp_path, recording_transport, source, base=20)
    snapshots: list[int] = []
    try:
        for i in range(400):  # every write a new key
            node.propose(b"%d" % i, lambda r, c: None, batchable=True)
            source.keys += 1
            node.doTick()
            if _serializing(node):  # captured on this tick
                snapshots.append(source.keys)
                _finish_snapshot(node)
    finally:
        node.destroy()
    assert len(snapshots) >= 3  # ~20, ~40, ~80, ~160, ~320 keys
    assert all(b <= 2 * a + 4 for a, b in itertools.pairwise(snapshots))


def test_each_voter_compacts_at_its_own_stretch_of_the_threshold() -> None:
    """All replicas used to snapshot at the same index (each ~1 s of CPU at 200k keys, on
    machines they may share); voter r of n now compacts every T(1 + r/2n) writes."""
    ranks = [E.compaction_rank(Node(me), [Node(x) for x in "abc" if x != me]) for me in "cab"]
    assert ranks == [(2, 3), (0, 3), (1, 3)]  # by sorted id, whatever the peers' order
    assert [E.staggered_threshold(30_000, r, n) for r, n in sorted(ranks)] == [
        30_000,
        35_000,
        40_000,
    ]
    assert E.staggered_threshold(30_000, 0, 1) == 30_000  # a lone voter: nothing to spread
    assert E.compaction_rank("b", iter(["a", "c", "a"])) == (1, 3)


def test_a_voters_threshold_is_stretched_by_its_rank(recording_transport: Any) -> None:
    source = _SizedSource()
    conf = E.build_conf(timing=E.EngineTiming(), journal_file=None, dump_file=None, auto_tick=False)
    node = E.RaftEngine(
        self_node=Node("c"),
        other_nodes=(Node(x) for x in "ab"),  # any iterable, read once
        conf=conf,
        apply_fn=lambda data, index: None,
        apply_batch_fn=lambda entries, index: [None] * len(entries),
        transport_class=recording_transport,
        journal=MemoryJournal(),
        snapshot_source=source,
        node_class=Node,
    )
    try:
        assert {n.id for n in node._SyncObj__otherNodes} == {"a", "b"}
        base = node.conf.logCompactionMinEntries
        assert base == conf.logCompactionMinEntries
        assert (
            E.staggered_threshold(
                E.build_conf(
                    timing=E.EngineTiming(), journal_file=None, dump_file=None, auto_tick=False
                ).logCompactionMinEntries,
                2,
                3,
            )
            == base
        )  # stretched from the start
    finally:
        node.destroy()

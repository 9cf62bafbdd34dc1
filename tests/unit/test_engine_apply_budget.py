"""A tick applies a bounded amount of the log (`engine_overrides` 9.), driven by hand.

pysyncobj applied every committed entry in one tick and read no socket meanwhile: a restarted
node, whose commit index comes back from its journal, replayed its whole log tail before it
could answer a vote or a heartbeat. Now a backlog is applied in chunks (at most
`apply_entries_max` entries, no new one after `apply_budget_ms`), each tick ends with its poll,
and the next tick is woken at once. Claims:

- a restart's replay spans several ticks, and messages that arrive between them are answered
  (a vote, a heartbeat);
- every entry is applied exactly once, in log order, and the result equals applying the whole
  backlog in one tick;
- the time budget cuts a chunk after the entry that crossed it (never mid-entry);
- on a leader, each proposal's callback fires once, in order, with its own result, and new
  proposals wait in the queue while the leader still has committed entries to apply.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pysyncobj.syncobj as so
import pytest
from pysyncobj.journal import MemoryJournal
from pysyncobj.node import Node

from coreplane.errors import InvalidArgument
from coreplane.raft import engine as E

_NO_OP = b"\x01"  # pysyncobj's NO_OP entry type


class _RestartedJournal(MemoryJournal):  # type: ignore[misc]
    """A memory journal that remembers its commit index, as `LmdbJournal` does on disk."""

    def __init__(self) -> None:
        super().__init__()
        self.commit = 1

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self.commit = raftCommitIndex

    def getRaftCommitIndex(self) -> int:
        return self.commit


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    clock = [1000.0]
    monkeypatch.setattr(so, "monotonicTime", lambda: clock[0])
    yield clock


class _Replica:
    """What `apply_fn` saw, in order, and a running digest of it (the state's hash)."""

    def __init__(self, on_apply: Callable[[], None] | None = None) -> None:
        self.applied: list[int] = []
        self.digest = hashlib.sha256()
        self.on_apply = on_apply

    def apply(self, data: bytes, index: int) -> str:
        self.applied.append(index)
        self.digest.update(index.to_bytes(8, "big") + data)
        if self.on_apply is not None:
            self.on_apply()
        return f"r{index}"


def _restarted(transport: type, replica: _Replica, last: int, **bounds: Any) -> E.RaftEngine:
    """Follower "f" restarted with entries 2..`last` (term 1) on disk, committed to `last`."""
    journal = _RestartedJournal()
    journal.add(_NO_OP, 1, 0)
    for index in range(2, last + 1):
        journal.add(E.ENTRY_COMMAND_TYPE + b"w%d" % index, index, 1)
    journal.setRaftCommitIndex(last)
    journal.setCurrentTerm(1, None)
    conf = E.build_conf(timing=E.EngineTiming(), journal_file=None, dump_file=None, auto_tick=False)
    return E.RaftEngine(
        self_node=Node("f"),
        other_nodes=[Node("leader"), Node("other")],
        conf=conf,
        apply_fn=replica.apply,
        transport_class=transport,
        journal=journal,
        node_class=Node,
        **bounds,
    )


def _sent(node: Any, kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [(to, m) for to, m in node._SyncObj__transport.sent if m["type"] == kind]


def test_a_restart_replays_its_backlog_over_several_ticks_answering_between(
    recording_transport: Any, append_entries: Any
) -> None:
    replica = _Replica()
    node = _restarted(recording_transport, replica, 21, apply_entries_max=5)
    assert node.raftCommitIndex == 21 and node.applied_index() == 1  # from the journal
    wakes: list[int] = []
    node._cp_notify = lambda: wakes.append(node.applied_index())

    node.doTick()
    assert replica.applied == [2, 3, 4, 5, 6]
    assert node.apply_backlog() == 15 and wakes == [6]  # the next tick is due at once

    # A leader's heartbeat arrives between two chunks: answered now, not after the replay.
    reply = append_entries(node, prev=21, prev_term=1, entries=[], commit=21)
    assert reply["success"] and reply["next_node_idx"] == 22
    assert node.applied_index() == 6  # answering applied nothing

    per_tick = []
    while node.apply_backlog():
        before = node.applied_index()
        node.doTick()
        per_tick.append(node.applied_index() - before)
    assert per_tick == [5, 5, 5]
    assert replica.applied == list(range(2, 22))  # each once, in order
    assert node.counters()["apply_yields"] == 3
    assert wakes == [6, 11, 16]  # no wake once caught up

    # Same log applied in one go (a budget that never binds): the same state.
    whole = _Replica()
    other = _restarted(recording_transport, whole, 21)
    other.doTick()
    assert whole.applied == replica.applied
    assert whole.digest.hexdigest() == replica.digest.hexdigest()
    assert other.counters()["apply_yields"] == 0
    node.destroy()
    other.destroy()


def test_a_vote_request_between_chunks_is_answered(recording_transport: Any) -> None:
    replica = _Replica()
    node = _restarted(recording_transport, replica, 30, apply_entries_max=4)
    node.doTick()
    assert node.apply_backlog() == 25
    node._SyncObj__onMessageReceived(
        Node("other"),
        {"type": "request_vote", "term": 2, "last_log_index": 30, "last_log_term": 1},
    )
    assert _sent(node, "response_vote") == [("other", {"type": "response_vote", "term": 2})]
    assert node.applied_index() == 5
    while node.apply_backlog():
        node.doTick()
    assert replica.applied == list(range(2, 31))
    node.destroy()


def test_the_time_budget_ends_a_chunk_after_a_whole_entry(
    recording_transport: Any, fake_clock: list[float]
) -> None:
    def one_ms() -> None:  # every entry takes 1 ms of (fake) time to apply
        fake_clock[0] += 0.001

    replica = _Replica(one_ms)
    node = _restarted(recording_transport, replica, 13, apply_budget_ms=3.5)
    chunks = []
    while node.apply_backlog() or not chunks:
        before = node.applied_index()
        node.doTick()
        chunks.append(node.applied_index() - before)
    # The 4th entry ends at 4 ms > 3.5 ms: no 5th in that tick; every tick makes progress.
    assert chunks == [4, 4, 4]
    assert replica.applied == list(range(2, 14))
    node.destroy()


def test_bounds_must_be_positive(recording_transport: Any) -> None:
    with pytest.raises(InvalidArgument):
        _restarted(recording_transport, _Replica(), 3, apply_entries_max=0)
    with pytest.raises(InvalidArgument):
        _restarted(recording_transport, _Replica(), 3, apply_budget_ms=0)


def _elected_leader(transport: type, replica: _Replica, **bounds: Any) -> E.RaftEngine:
    conf = E.build_conf(timing=E.EngineTiming(), journal_file=None, dump_file=None, auto_tick=False)
    node = E.RaftEngine(
        self_node=Node("l"),
        other_nodes=[Node("f1"), Node("f2")],
        conf=conf,
        apply_fn=replica.apply,
        transport_class=transport,
        journal=MemoryJournal(),
        node_class=Node,
        **bounds,
    )
    node._SyncObj__transport.tryGetReady()
    node._SyncObj__raftElectionDeadline = 0
    node.doTick()  # the pre-vote round
    (prevote,) = {m["term"] for _, m in _sent(node, "cp_prevote")}
    node._SyncObj__onMessageReceived(
        Node("f1"), {"type": "cp_prevote_reply", "term": prevote, "granted": True, "ms": 0}
    )
    node.doTick()  # the election
    node._SyncObj__onMessageReceived(
        Node("f1"), {"type": "response_vote", "term": node.raftCurrentTerm}
    )
    assert node._isLeader()
    return node


def test_a_leader_applies_a_backlog_in_chunks_and_waits_to_take_more(
    recording_transport: Any, fake_clock: list[float]
) -> None:
    replica = _Replica()
    node = _elected_leader(recording_transport, replica, apply_entries_max=5)
    term = node.raftCurrentTerm
    assert node._SyncObj__getCurrentLogIndex() == 2  # the new leader's no-op
    done: list[tuple[Any, int]] = []

    def proposal(i: int) -> None:
        node.propose(b"p%d" % i, lambda result, code: done.append((result, code)))

    for i in range(12):
        proposal(i)
    node.doTick()  # appended at 3..14, sent; nothing committed without a follower
    assert node._SyncObj__getCurrentLogIndex() == 14 and done == []
    node._SyncObj__onMessageReceived(
        Node("f1"),
        {
            "type": "next_node_idx",
            "term": term,
            "next_node_idx": 15,
            "success": True,
            "reset": False,
        },
    )
    for i in range(12, 15):
        proposal(i)  # queued while the leader is about to fall behind in applying

    node.doTick()  # commits 14; applies the no-op and 3..6
    assert node.raftCommitIndex == 14 and node.applied_index() == 6
    assert done == [(f"r{i}", E.FAIL.SUCCESS) for i in range(3, 7)]
    assert node._SyncObj__getCurrentLogIndex() == 14  # the three new proposals still wait
    node.doTick()
    assert node.applied_index() == 11 and node._SyncObj__getCurrentLogIndex() == 14
    node.doTick()  # caught up: now it takes the queued proposals
    assert node.applied_index() == 14 and node._SyncObj__getCurrentLogIndex() == 17
    assert done == [(f"r{i}", E.FAIL.SUCCESS) for i in range(3, 15)]  # once each, in order
    assert replica.applied == list(range(3, 15))  # the no-op is pysyncobj's own
    node.destroy()


def test_a_node_with_entries_left_to_apply_votes_but_does_not_stand(
    recording_transport: Any, fake_clock: list[float]
) -> None:
    # After a restart, membership changes in the log take effect as they are applied: a
    # candidate in mid-replay could count votes against an old member list.
    replica = _Replica()
    node = _restarted(recording_transport, replica, 21, apply_entries_max=5)
    node._SyncObj__transport.tryGetReady()  # peers connected: an election could start
    node._SyncObj__raftElectionDeadline = 0  # due
    ticks = 0
    while node.apply_backlog():
        node.doTick()
        ticks += 1
        assert _sent(node, "cp_prevote") == [] and _sent(node, "request_vote") == []
    assert ticks == 4 and node.counters()["candidacy_held"] == 1
    fake_clock[0] += 0.011  # the held deadline (one apply budget) passes, caught up now
    node.doTick()
    assert {to for to, _ in _sent(node, "cp_prevote")} == {"leader", "other"}
    node.destroy()

"""Log safety under reordered and duplicated AppendEntries (issue 4, defect 4).

A follower is driven by hand (``auto_tick=False``, a recording transport, messages delivered
directly), so the scenario is exact: the follower acknowledges entries 2..10, then a delayed
duplicate of an earlier AppendEntries (prevLogIdx 2, entries 3..5) arrives. Upstream pysyncobj
deletes 6..10 although the follower acknowledged them and committed up to 8 (its CRITICAL
"truncating already-applied log entries"); the leader counted those acknowledgements, so a
leader crash then could lose a committed write. The fixed engine keeps them, answers for the
message's own range only, and truncates only where a term really differs, never at or below its
commit index. A leader also ignores a stale ``reset`` reply that would move ``nextIndex`` back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pysyncobj.journal import MemoryJournal
from pysyncobj.node import Node

from coreplane.errors import InvariantViolation
from coreplane.raft import engine as E


@pytest.fixture(params=["fixed", "upstream"])
def follower(request: Any, make_follower: Any) -> Iterator[Any]:
    node = make_follower(request.param == "upstream")
    node.doTick()  # ready: peers connected
    yield node
    node.destroy()


def _log(node: Any) -> list[tuple[int, int]]:
    return [(e[1], e[2]) for e in node._SyncObj__raftLog[:]]


def test_duplicate_append_entries_truncates_acknowledged_entries_upstream_only(
    append_entries: Any, follower: Any
) -> None:
    upstream = not isinstance(follower, E.RaftEngine)
    # The follower's log starts with pysyncobj's (1, term 0) no-op.
    reply = append_entries(
        follower, prev=1, prev_term=0, entries=[(i, 1) for i in range(2, 11)], commit=8
    )
    assert reply["success"] and reply["next_node_idx"] == 11  # acknowledged 2..10
    assert follower.raftCommitIndex == 8
    # A delayed duplicate of an earlier message (or a resend after a stale reset) arrives.
    reply = append_entries(
        follower, prev=2, prev_term=1, entries=[(i, 1) for i in range(3, 6)], commit=8
    )
    assert reply["success"]
    if upstream:  # the defect, measured: acknowledged and committed entries deleted
        assert _log(follower)[-1] == (5, 1)
        assert follower.raftCommitIndex == 5
        return
    assert _log(follower) == [(1, 0)] + [(i, 1) for i in range(2, 11)]
    assert follower.raftCommitIndex == 8  # never lowered, never past what it holds
    assert reply["next_node_idx"] == 6  # answers for the message's own range only
    assert follower.counters()["conflict_truncations"] == 0


def test_reordered_messages_keep_every_acknowledged_entry(
    make_follower: Any, append_entries: Any
) -> None:
    node = make_follower(upstream=False)
    node.doTick()
    batches = [(1, 0, [2, 3, 4]), (4, 1, [5, 6, 7]), (7, 1, [8, 9, 10])]
    # Deliver the batches, then each again, oldest first (duplicated and out of order).
    for prev, prev_term, idxs in batches + batches[::-1] + batches:
        append_entries(
            node, prev=prev, prev_term=prev_term, entries=[(i, 1) for i in idxs], commit=6
        )
        assert [i for i, _ in _log(node)][: len(idxs) + prev] == list(
            range(1, prev + len(idxs) + 1)
        )
    assert _log(node) == [(1, 0)] + [(i, 1) for i in range(2, 11)]
    assert node.raftCommitIndex == 6
    node.destroy()


def test_a_real_conflict_truncates_uncommitted_entries_only(
    make_follower: Any, append_entries: Any
) -> None:
    node = make_follower(upstream=False)
    node.doTick()
    append_entries(node, prev=1, prev_term=0, entries=[(i, 1) for i in range(2, 9)], commit=4)
    # A new leader (term 2) never had 6..8 of term 1: it sends its own 6 and commits 5.
    reply = append_entries(node, prev=5, prev_term=1, entries=[(6, 2)], commit=5, term=2)
    assert reply["success"] and reply["next_node_idx"] == 7
    assert _log(node) == [(1, 0)] + [(i, 1) for i in range(2, 6)] + [(6, 2)]
    assert node.counters()["conflict_truncations"] == 1
    assert node.raftCommitIndex == 5
    node.destroy()


def test_a_stale_tail_past_the_message_is_never_committed(
    make_follower: Any, append_entries: Any
) -> None:
    node = make_follower(upstream=False)
    node.doTick()
    append_entries(node, prev=1, prev_term=0, entries=[(i, 1) for i in range(2, 9)], commit=2)
    # Term 2 leader resends 3..4 only (batch cut) while its commit index is already 8: the
    # follower's 5..8 (term 1) may differ from the leader's, so it must not commit past 4.
    append_entries(node, prev=2, prev_term=1, entries=[(3, 1), (4, 1)], commit=8, term=2)
    assert node.raftCommitIndex == 4
    assert len(_log(node)) == 8  # kept until a conflicting entry shows up
    node.destroy()


def test_replacing_a_committed_entry_stops_the_engine(
    make_follower: Any, append_entries: Any
) -> None:
    node = make_follower(upstream=False)
    node.doTick()
    append_entries(node, prev=1, prev_term=0, entries=[(i, 1) for i in range(2, 6)], commit=5)
    # impossible in Raft: a term-2 entry at 3, below the commit index
    append_entries(node, prev=2, prev_term=1, entries=[(3, 2)], commit=5, term=2)
    assert (3, 1) in _log(node)  # kept
    assert isinstance(node.fatal_error(), InvariantViolation)
    node.destroy()


def _leader(transport_class: type) -> tuple[Any, Any]:
    conf = E.build_conf(timing=E.EngineTiming(), journal_file=None, dump_file=None, auto_tick=False)
    node = E.RaftEngine(
        self_node=Node("l"),
        other_nodes=[Node("f1"), Node("f2")],
        conf=conf,
        apply_fn=lambda data, index: None,
        transport_class=transport_class,
        journal=MemoryJournal(),
        node_class=Node,
    )
    node._SyncObj__transport.tryGetReady()  # connect the peers
    node._SyncObj__raftElectionDeadline = 0
    node.doTick()  # a pre-vote round for term 1
    node._SyncObj__onMessageReceived(
        Node("f1"), {"type": "cp_prevote_reply", "term": 1, "granted": True, "ms": 0}
    )
    node.doTick()  # candidate
    transport = node._SyncObj__transport
    node._SyncObj__onMessageReceived(
        Node("f1"), {"type": "response_vote", "term": node.raftCurrentTerm}
    )
    assert node.raft_role_is_leader()
    return node, transport


def test_leader_ignores_a_stale_reset_reply(recording_transport: Any) -> None:
    node, _transport = _leader(recording_transport)
    for i in range(5):
        node.propose(bytes([i]), lambda *_: None)
    node.doTick()
    last = node._SyncObj__raftLog[-1][1]
    f1 = Node("f1")
    node._SyncObj__onMessageReceived(
        f1, {"type": "next_node_idx", "next_node_idx": last + 1, "reset": False, "success": True}
    )
    # A reply to an old, reordered message: "reset to 2". Upstream would resend from 2.
    node._SyncObj__onMessageReceived(
        f1, {"type": "next_node_idx", "next_node_idx": 2, "reset": True, "success": False}
    )
    assert node._SyncObj__raftNextIndex[f1] == last + 1
    assert node.counters()["stale_resets"] == 1
    node.destroy()


def test_a_snapshot_chunk_moves_no_commit_index(append_entries: Any, follower: Any) -> None:
    # Found by the simulator (tests/chaos/test_raft_regressions.py): pysyncobj sets
    # commit = min(leader commit, own last index) after any append_entries, including a
    # snapshot chunk that verified nothing, so a rejoining ex-leader applied its stale tail.
    upstream = not isinstance(follower, E.RaftEngine)
    append_entries(follower, prev=1, prev_term=0, entries=[(i, 1) for i in range(2, 9)], commit=2)
    follower._SyncObj__onMessageReceived(
        Node("leader"),
        {
            "type": "append_entries",
            "term": 2,
            "commit_index": 8,
            "serialized": (b"first chunk of a snapshot", True, False),
        },
    )
    assert follower.raftCommitIndex == (8 if upstream else 2)

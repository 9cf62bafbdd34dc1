"""A restarted node replays its log in per-tick chunks and keeps reading its sockets meanwhile.

Three ControlPlanes in this process on 127.0.0.1. The log is never compacted, so a follower
that stops and starts again replays every committed write from its journal (its commit index
comes back from there), in its first ticks. It restarts twice on the same log: once with the
engine's default apply budget (`engine_overrides` 9.), once with a budget that never binds (all
in one tick, as pysyncobj did). Asserted: the bounded replay spans several ticks, the unbounded
one does not, and the replicas agree afterwards. Measured and printed (never asserted, run with
``-s``): the catch-up time, the longest stretch of tick work before a poll (the time the
node read no socket, so answered no vote or heartbeat), and the full garbage collections of
the process meanwhile (three nodes share it: such a pause stops every node, in any tick).

The second test crashes the leader right after a follower restarts: the third node needs the
replaying node's pre-vote and vote to take over. Printed: seconds from the crash to an
established new leader and to its first write, with each budget.
"""

from __future__ import annotations

import collections
import gc
import time
from typing import Any

import pytest

from coreplane.errors import InvariantViolation
from coreplane.raft import engine as E

pytestmark = pytest.mark.slow

WRITES = 60_000
UNBOUNDED = {"apply_budget_ms": 1e9, "apply_entries_max": 10**9}


class _Recorded:
    """Per restarted engine: the tick work (s) before each poll, with the tick's start time."""

    def __init__(self) -> None:
        self.work: list[tuple[float, float]] = []


def _recording_engine(record: _Recorded, bounds: dict[str, Any]) -> type:
    class RecordingEngine(E.RaftEngine):
        def __init__(self, **kwargs: Any) -> None:
            self._rec_started = 0.0  # set before SyncObj.__init__: its ticks may start inside
            self._rec_wrapped = False
            super().__init__(**kwargs, **bounds)

        def _onTick(self, timeToWait: float = 0.0) -> None:
            if not self._rec_wrapped:
                self._rec_wrapped = True
                poll = self._poller.poll

                def timed_poll(timeout: float) -> Any:
                    record.work.append((self._rec_started, time.monotonic() - self._rec_started))
                    return poll(timeout)

                self._poller.poll = timed_poll
            self._rec_started = time.monotonic()
            super()._onTick(timeToWait)

    return RecordingEngine


def _restart(
    cluster: Any, node_id: str, bounds: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Stop `node_id`, start it again on its data dir; wait until it applied what the leader
    had committed when it started. The measurements, and the engine's apply_yields."""
    cluster.nodes[node_id].stop()
    leader = cluster.leader()
    target = leader._require_engine().raftCommitIndex
    record = _Recorded()
    gc_pauses: list[float] = []  # the whole process stops for a full collection: reported too
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.monotonic()
        elif info["generation"] == 2:
            gc_pauses.append(round(time.monotonic() - gc_started[0], 4))

    gc.callbacks.append(on_gc)
    try:
        return _measure(cluster, node_id, bounds, monkeypatch, record, target, gc_pauses)
    finally:
        gc.callbacks.remove(on_gc)


def _measure(
    cluster: Any,
    node_id: str,
    bounds: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    record: _Recorded,
    target: int,
    gc_pauses: list[float],
) -> dict[str, Any]:
    with monkeypatch.context() as patch:
        patch.setattr(E, "RaftEngine", _recording_engine(record, bounds))
        started = time.monotonic()
        cp = cluster.make(node_id)
    engine = cp._require_engine()
    while engine.applied_index() < target:
        assert time.monotonic() - started < 120, "no catch-up in 120 s"
        time.sleep(0.002)
    caught_up = time.monotonic()
    time.sleep(0.5)  # the tick that caught up reaches its poll (and is recorded)
    during = [work for at, work in record.work if at < caught_up]
    return {
        "replayed": target,
        "catch_up_s": round(caught_up - started, 3),
        "ticks": len(during),
        "longest_tick_work_s": round(max(during, default=0.0), 4),
        "apply_yields": engine.counters()["apply_yields"],
        "full_gc_pauses_s": gc_pauses,
    }


def _bulk_load(leader: Any, writes: int, window: int = 1000) -> None:
    """`writes` pipelined puts, at most `window` in flight: all at once, a slow machine ran
    out of session seqs ("too many writes in flight on this node")."""
    pending: collections.deque[Any] = collections.deque()
    for i in range(writes):
        if len(pending) >= window:
            pending.popleft().result()
        pending.append(leader.kv.put_async(f"k{i:06d}", b"v%d" % i, timeout_s=120))
    for future in pending:
        future.result()


def test_a_restart_replays_in_chunks_and_keeps_polling(
    cluster_factory: Any, wait_until: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = cluster_factory(
        log_compaction_min_entries=10 * WRITES, durability="relaxed"
    ).start_all()
    leader = cluster.leader()
    _bulk_load(leader, WRITES)
    follower = next(cp.node_id for cp in cluster.followers())

    bounded = _restart(cluster, follower, {}, monkeypatch)
    unbounded = _restart(cluster, follower, UNBOUNDED, monkeypatch)
    print(f"\nreplay of {WRITES} writes, bounded (default budget): {bounded}")
    print(f"replay of {WRITES} writes, unbounded (one tick):     {unbounded}")

    assert bounded["apply_yields"] > 0  # the replay spanned several ticks
    assert unbounded["apply_yields"] == 0
    # Replicas at the same applied index have the same state hash. The cluster keeps writing
    # tick entries and a hash of 60,000 keys takes a while, so sample until the restarted node
    # and another one are seen at the same index.
    at_index: dict[int, dict[str, str]] = {}

    def seen_together() -> bool:
        for cp in cluster.nodes.values():
            index, digest = cp.state_hash()
            at_index.setdefault(index, {})[cp.node_id] = digest
        return any(follower in nodes and len(nodes) > 1 for nodes in at_index.values())

    wait_until(seen_together, 60, "the restarted node and another at one index")
    for index, digests in at_index.items():
        assert len(set(digests.values())) == 1, (index, digests)
    assert cluster.nodes[follower].kv.get("k059999", stale_ok=True) is not None


def _crash(cp: Any) -> None:
    """kill -9 as the others see it: the engine stops ticking at once (no handover), and the
    runtime then stops the node, which closes its sockets."""
    cp._require_engine()._cp_fatal = InvariantViolation("test: crashed")


def _failover_during_replay(
    cluster: Any, bounds: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Restart a follower (replaying its log with `bounds`) and crash the leader right after:
    the third node needs the replaying one's (pre-)vote. Seconds from the crash to a new
    established leader and to its first write; the old leader then comes back."""
    leader = cluster.leader()
    follower = next(cp.node_id for cp in cluster.followers())
    cluster.nodes[follower].stop()
    with monkeypatch.context() as patch:
        patch.setattr(E, "RaftEngine", _recording_engine(_Recorded(), bounds))
        cluster.make(follower)
    crashed_at = time.monotonic()
    _crash(leader)
    new = None
    while new is None:
        assert time.monotonic() - crashed_at < 60, "no new leader in 60 s"
        time.sleep(0.002)
        new = next(
            (
                cp
                for cp in list(cluster.nodes.values())
                if cp is not leader and cp.is_leader() and cp.fencing_token is not None
            ),
            None,
        )
    elected = time.monotonic() - crashed_at
    new.kv.put("after-failover", b"x")
    written = time.monotonic() - crashed_at
    replaying = cluster.nodes[follower]._require_engine()
    result = {
        "elected_s": round(elected, 3),
        "first_write_s": round(written, 3),
        "new_leader_is_replaying_node": new.node_id == follower,
        "apply_yields": replaying.counters()["apply_yields"],
        "candidacy_held": replaying.counters()["candidacy_held"],
    }
    leader.stop()
    back = cluster.make(leader.node_id)
    target = cluster.leader()._require_engine().raftCommitIndex
    deadline = time.monotonic() + 60
    while back._require_engine().applied_index() < target:
        assert time.monotonic() < deadline, "the old leader did not catch up"
        time.sleep(0.01)
    return result


def test_a_leader_crash_during_a_replay_fails_over(
    cluster_factory: Any, wait_until: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = 100_000
    cluster = cluster_factory(
        log_compaction_min_entries=10 * writes, durability="relaxed"
    ).start_all()
    leader = cluster.leader()
    _bulk_load(leader, writes)

    bounded = _failover_during_replay(cluster, {}, monkeypatch)
    unbounded = _failover_during_replay(cluster, UNBOUNDED, monkeypatch)
    print(f"\nleader crash while a follower replays {writes} writes, bounded: {bounded}")
    print(f"leader crash while a follower replays {writes} writes, one tick: {unbounded}")
    assert bounded["apply_yields"] > 0 and unbounded["apply_yields"] == 0
    nodes = list(cluster.nodes.values())  # every node ends with every write, crashed ones too
    wait_until(
        lambda: all(cp.kv.get("after-failover", stale_ok=True) for cp in nodes), 30, "convergence"
    )
    assert all(cp.kv.get("k099999", stale_ok=True) for cp in nodes)

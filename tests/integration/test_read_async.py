"""`ControlPlane.read_async` / `KV.get_async`: linearizable reads that hold no thread while
they wait (coreplane/runtime/async_reads.py), on three real nodes in one process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from coreplane.errors import InvalidArgument, Unavailable

pytestmark = pytest.mark.slow


def test_async_reads_are_linearizable_on_every_node_and_await_on_one_loop(
    cluster_factory: Any,
) -> None:
    cluster = cluster_factory().start_all()
    leader = cluster.leader()
    followers = cluster.followers()
    for i in range(5):  # a follower's async read sees the write the leader just answered
        rev = leader.kv.put(f"k{i}", f"v{i}".encode())
        for cp in [leader, *followers]:
            assert cp.kv.get_async(f"k{i}").result(timeout=10) == (f"v{i}".encode(), rev)
    assert followers[0].kv.get_async("missing").result(timeout=10) is None
    view = followers[1].read_async(lambda v: v.kv.range("k")).result(timeout=10)
    assert [k for k, _, _ in view] == [f"k{i}" for i in range(5)]

    async def many() -> list[Any]:  # 60 reads in flight on one thread
        reads = [cp.kv.get_async(f"k{i % 5}") for i in range(20) for cp in cluster.nodes.values()]
        return list(await asyncio.gather(*reads))

    got = asyncio.run(many())
    assert [g[0] for g in got] == [f"v{i % 5}".encode() for i in range(20) for _ in range(3)]
    stale = followers[0].kv.get_async("k1", stale_ok=True)
    assert stale.done() and stale.result() is not None  # answered at once, from this replica


def test_async_read_errors_are_the_futures(cluster_factory: Any) -> None:
    cluster = cluster_factory().start_all()
    leader = cluster.leader()
    with pytest.raises(InvalidArgument):
        leader.read_async("not callable")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        leader.kv.get_async(b"bytes")  # type: ignore[arg-type]
    boom = leader.read_async(lambda v: 1 // 0)
    with pytest.raises(ZeroDivisionError):
        boom.result(timeout=10)
    lone = cluster.followers()[0]
    for cp in cluster.nodes.values():
        if cp is not lone:
            cp.stop()
    pending = lone.kv.get_async("k", timeout_s=1.0)  # no quorum: fails by its deadline
    with pytest.raises(Unavailable):
        pending.result(timeout=10)


def _a_read_waiting_without_quorum(cluster_factory: Any) -> tuple[Any, Any]:
    """A follower left alone (the other two stopped) and a read of it still waiting for a read
    index no leader will give (its deadline ten minutes away)."""
    cluster = cluster_factory().start_all()
    lone = cluster.followers()[0]
    assert lone.kv.get_async("warm").result(timeout=10) is None  # the node's reader exists
    for cp in cluster.nodes.values():
        if cp is not lone:
            cp.stop()
    for _ in range(100):  # a read the old leader still answered may finish: ask until one waits
        pending = lone.kv.get_async("k", timeout_s=600.0)  # no quorum: would wait 10 minutes
        if not pending.done():
            break
        time.sleep(0.05)
    assert not pending.done()
    return lone, pending


def test_a_read_waiting_when_its_node_stops_fails_at_once(cluster_factory: Any) -> None:
    """A read still waiting for a read index when its node stops fails with the stop, not at
    its own deadline (no tick walks the pending list after the tick thread ended)."""
    lone, pending = _a_read_waiting_without_quorum(cluster_factory)
    lone.stop()
    with pytest.raises(Unavailable, match=r"stopped|not running"):
        pending.result(timeout=30)


def test_a_read_waiting_when_its_node_dies_fails_with_the_fatal_error(
    cluster_factory: Any,
) -> None:
    """A node whose raft tick fails stops by itself (no `stop()` call): a read still waiting
    then fails at once, naming the error, not at its own ten-minute deadline."""
    lone, pending = _a_read_waiting_without_quorum(cluster_factory)

    def broken() -> bool:
        raise IndexError("list index out of range")

    lone._engine._SyncObj__applyLogEntries = broken  # type: ignore[union-attr]
    with pytest.raises(Unavailable, match=r"fatal error: .*IndexError"):
        pending.result(timeout=30)
    with pytest.raises(Unavailable, match="fatal"):  # and a read asked afterwards at once
        lone.kv.get_async("k", timeout_s=600.0).result(timeout=5)

"""Pipelined writes (`propose_async`, `kv.put_async`) on a real 3-node cluster on 127.0.0.1:
many in flight from one thread, through a follower, awaited from asyncio, across a leader
failover (each acknowledged write applied exactly once, none lost), and refusals."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from coreplane import CommandRejected, InvalidArgument, Unavailable
from coreplane.core import commands as C

pytestmark = pytest.mark.slow


def test_many_writes_in_flight_from_one_thread(cluster_factory: Callable[..., Any]) -> None:
    cluster = cluster_factory().start_all()
    leader = cluster.leader()
    futures = [leader.kv.put_async(f"k/{i:04d}", b"v%d" % i) for i in range(2000)]
    revisions = [f.result(timeout=30) for f in futures]
    assert len(set(revisions)) == 2000  # each applied once, each its own revision
    follower = cluster.followers()[0]
    assert follower.kv.get("k/1999") == (b"v1999", revisions[1999])
    assert len(follower.kv.range("k/")) == 2000


def test_through_a_follower_and_awaited(cluster_factory: Callable[..., Any]) -> None:
    cluster = cluster_factory().start_all()
    cluster.leader()
    follower = cluster.followers()[0]

    async def writes() -> list[int]:
        return list(
            await asyncio.gather(*(follower.kv.put_async(f"a/{i}", b"x") for i in range(100)))
        )

    assert len(set(asyncio.run(writes()))) == 100
    refused = follower.propose_async(C.Cas("a/0", 999, b"y")).result(timeout=10)
    assert (refused.ok, refused.code) == (False, "compare_failed")  # the Applied, not raised
    with pytest.raises(CommandRejected, match="compare_failed"):
        follower.propose_async(C.Cas("a/0", 999, b"y"), transform=lambda a: a.unwrap()).result(
            timeout=10
        )


def test_bad_commands_raise_at_the_call(cluster_factory: Callable[..., Any]) -> None:
    cluster = cluster_factory().start_all()
    leader = cluster.leader()
    with pytest.raises(InvalidArgument):
        leader.kv.put_async("", b"v")
    with pytest.raises(InvalidArgument):
        leader.propose_async(C.Tick(n=1, elapsed_ms=1))


def test_writes_in_flight_survive_a_leader_failover(
    wait_until: Any, cluster_factory: Callable[..., Any]
) -> None:
    cluster = cluster_factory().start_all()
    old = cluster.leader()
    writer = cluster.followers()[0]
    futures = [writer.kv.put_async(f"f/{i:04d}", b"v", timeout_s=20) for i in range(3000)]
    old.stop()  # the leader goes away with writes in flight
    acked = {}
    for i, f in enumerate(futures):
        with contextlib.suppress(Unavailable):
            acked[f"f/{i:04d}"] = f.result(timeout=30)
    assert len(acked) >= 2900  # retried with the same bytes through the new leader
    assert len(set(acked.values())) == len(acked)  # exactly once: distinct revisions
    survivor = next(cp for cp in cluster.nodes.values() if cp is not old)
    wait_until(lambda: survivor.is_leader() or survivor.leader_id is not None, 10)
    stored = {k: rev for k, _, rev in survivor.kv.range("f/")}
    for key, revision in acked.items():
        assert stored.get(key) == revision  # acknowledged, applied, not re-applied later


def test_a_stopped_node_fails_its_futures(cluster_factory: Callable[..., Any]) -> None:
    cluster = cluster_factory(ids=("solo",)).start_all()
    node = cluster.leader()
    node.stop()
    with pytest.raises(Unavailable):
        node.kv.put_async("k", b"v")

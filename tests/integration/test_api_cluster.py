"""The API and the SDK against a real 3-node cluster on 127.0.0.1 (pysyncobj, LMDB)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from coreplane.errors import CommandRejected, LockLost
from coreplane.sdk import Client, FencedResource
from tests.integration.api_support import CONFIG, TOKEN

pytestmark = pytest.mark.slow


def test_kv_through_any_node_and_leader_discovery(
    api_cluster: Any, wait_until: Callable[..., Any]
) -> None:
    cluster, servers = api_cluster
    leader = cluster.leader()
    follower = next(nid for nid in servers if nid != leader.node_id)
    with Client([servers[follower].url], TOKEN, CONFIG) as c:
        rev = c.put("it/a", b"1")  # a follower forwards the write through Raft
        assert c.get("it/a") == (b"1", rev)
        c.refresh()
        assert c.endpoints.leader_url == servers[leader.node_id].url
        assert len(c.endpoints.all()) == 3
        assert c.status()["role"] in ("leader", "follower")
    for cp in cluster.nodes.values():
        wait_until(
            lambda cp=cp: cp.kv.get("it/a", stale_ok=True) == (b"1", rev),
            5,
            "the write on every replica",
        )


def _answered(server: Any, path: str) -> float:
    """How many requests to `path` this server answered 200 (its request metrics)."""
    api = server.obs.metrics.api
    return float(api.count(path, "POST", 200))


def test_stale_reads_are_answered_by_followers(
    api_cluster: Any, wait_until: Callable[..., Any]
) -> None:
    cluster, servers = api_cluster
    leader = cluster.leader().node_id
    with Client([s.url for s in servers.values()], TOKEN, CONFIG) as c:
        rev = c.put("it/stale", b"s")
        c.refresh()
        assert c.endpoints.leader_url == servers[leader].url
        before = {nid: _answered(s, "/v1/kv/get") for nid, s in servers.items()}
        wait_until(
            lambda: all(
                cp.kv.get("it/stale", stale_ok=True) == (b"s", rev) for cp in cluster.nodes.values()
            ),
            5,
            "the write on every replica",
        )
        for _ in range(4):
            assert c.get("it/stale", stale_ok=True) == (b"s", rev)
        after = {nid: _answered(s, "/v1/kv/get") for nid, s in servers.items()}
        served = {nid: after[nid] - before[nid] for nid in servers}
        assert served[leader] == 0  # the followers answered, in turn
        assert sorted(v for nid, v in served.items() if nid != leader) == [2, 2]
        c.get("it/stale")  # linearizable: the leader
        assert _answered(servers[leader], "/v1/kv/get") == before[leader] + 1


def test_lock_fifo_and_fencing_across_clients(api_cluster: Any) -> None:
    _cluster, servers = api_cluster
    urls = [s.url for s in servers.values()]
    fence = FencedResource()
    log: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            with Client(urls, TOKEN, CONFIG) as c:
                for _ in range(3):
                    with c.lock("it-lock", ttl_ms=3_000) as lock:
                        fence.check("resource", lock.token)
                        log.append((name, lock.token))
                        c.put("it/owner", name.encode(), guard=lock)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    tokens = [token for _name, token in log]
    assert len(log) == 9 and tokens == sorted(tokens) and len(set(tokens)) == 9


def test_client_survives_leader_failover_and_tokens_keep_growing(api_cluster: Any) -> None:
    cluster, servers = api_cluster
    urls = [s.url for s in servers.values()]
    with Client(urls, TOKEN, CONFIG) as c:
        with c.lock("failover", ttl_ms=2_000) as lock:
            first = lock.token
        c.refresh()
        old = cluster.leader()
        servers[old.node_id].stop()
        old.stop()
        del cluster.nodes[old.node_id]
        cluster.leader(timeout_s=15)
        rev = c.put("it/after", b"x")  # retried onto the survivors
        assert c.get("it/after") == (b"x", rev)
        with c.lock("failover", ttl_ms=2_000) as lock:
            assert lock.token > first


def test_a_lock_whose_keepalives_stop_is_lost_and_the_next_holder_is_fenced(
    api_cluster: Any,
) -> None:
    _cluster, servers = api_cluster
    urls = [s.url for s in servers.values()]
    fence = FencedResource()
    lost: list[object] = []
    with Client(urls, TOKEN, CONFIG) as a, Client(urls, TOKEN, CONFIG) as b:
        la = a.lock("paused", ttl_ms=1_000, on_lost=lost.append).acquire()
        fence.check("r", la.token)
        la._session.stop_keep_alive()  # the holder's keep-alives stop, as in a long pause
        with b.lock("paused", ttl_ms=2_000, acquire_timeout_s=20) as lb:
            assert lb.token > la.token
            fence.check("r", lb.token)
            assert la.lost and lost == [la]
            with pytest.raises(LockLost):
                a.put("paused/x", b"late", guard=la)
            with pytest.raises(CommandRejected):
                fence.check("r", la.token)  # a write already in flight is refused too


def test_watch_on_a_follower_sees_every_write_in_order(api_cluster: Any) -> None:
    cluster, servers = api_cluster
    leader = cluster.leader()
    follower = next(nid for nid in servers if nid != leader.node_id)
    with (
        Client([servers[leader.node_id].url], TOKEN, CONFIG) as writer,
        Client([servers[follower].url], TOKEN, CONFIG) as watcher,
    ):
        start = writer.put("watch/0", b"0")
        revisions = [start] + [writer.put(f"watch/{i}", str(i).encode()) for i in range(1, 20)]
        events = watcher.watch_events("watch/", start_revision=start, wait_ms=2_000)
        got = [next(events) for _ in range(20)]
        assert [r for r, _k, _key, _v in got] == revisions
        assert [key for _r, _k, key, _v in got] == [f"watch/{i}" for i in range(20)]

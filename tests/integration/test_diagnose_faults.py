"""Fault injection for `diagnose`: real ControlPlanes on 127.0.0.1 (in this process), one fault
each; every fault is found, placed (where), explained (why) and given its fix command, and a
healthy cluster gives no finding at all.

Faults here need neither the fleet nor the API: voter down, partitioned voter (messages lost
while the TCP connections stay up), slow disk (a journal whose write transaction is delayed),
LMDB map nearly full (a journal with a small map cap), the KV near its byte quota, a voter
built with other limits, clock skew (one node's wall clock, as obs reads it, set ahead), a
voter with the wrong secret, election churn (five leadership transfers), and a starved leader
whose cluster time falls behind (its runtime clock slowed).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from coreplane.core.machines.kv import Limits
from coreplane.obs import Finding, Observer, Place, diagnose, gather_inprocess, what, where, why
from coreplane.raft.journal import LmdbJournal
from coreplane.runtime.controlplane import ControlPlane
from coreplane.runtime.seams import Seams

pytestmark = pytest.mark.slow

WRONG_SECRET = b"not-the-cluster-secret-0123456789"


def inspect(
    cluster: Any,
    observers: dict[str, Observer] | None = None,
    *,
    window_s: float = 0.0,
    observer: str | None = None,
) -> Any:
    """Inputs as the leader (or `observer`) sees the cluster, every node sampled in-process."""
    observers = observers if observers is not None else {}
    for nid, cp in cluster.nodes.items():
        observers.setdefault(nid, Observer(cp))
    me = observer or cluster.leader().node_id
    return gather_inprocess(
        observers[me], {n: o for n, o in observers.items() if n != me}, window_s=window_s
    )


def found(cluster: Any, check: str, wait_until: Any, **kw: Any) -> Finding:
    """Wait (bounded) until diagnose reports `check`; that finding."""

    def look() -> Finding | None:
        hits = [f for f in diagnose(inspect(cluster, **kw)) if f.check == check]
        return hits[0] if hits else None

    finding: Finding = wait_until(look, 15.0, f"a {check} finding")
    return finding


def test_a_healthy_cluster_has_no_findings(cluster_factory: Any) -> None:
    cluster = cluster_factory().start_all()
    leader = cluster.leader()
    for i in range(20):
        leader.kv.put(f"k{i}", b"v")
    inputs = inspect(cluster, window_s=1.0)
    findings = diagnose(inputs)
    assert findings == [], [f.to_dict() for f in findings]
    assert what(inputs, findings).healthy and where(inputs, findings).places == ()
    assert inputs.previous is not None  # the window's rates (tick lag, fsync) were checked


def test_voter_down(cluster_factory: Any, wait_until: Any) -> None:
    cluster = cluster_factory().start_all()
    leader = cluster.leader()
    victim = next(cp for cp in cluster.nodes.values() if cp is not leader)
    victim.stop()
    f = found(cluster, "quorum", wait_until)
    assert f.where == (Place("voter", victim.node_id),)
    assert f.what == f"voter {victim.node_id} is down or unreachable"
    assert "2 of 3 voters answer, a quorum needs 2" in f.why
    assert f.fix == f"coreplane members remove {victim.node_id}"
    inputs = inspect(cluster)
    answer = why(inputs, diagnose(inputs), f"voter/{victim.node_id}")
    assert answer.state["reachable"] is False and not answer.healthy


def _isolate(cp: ControlPlane) -> None:
    """Drop every Raft message to and from `cp`; the TCP connections stay open."""
    assert cp._engine is not None
    transport = cp._engine._SyncObj__transport
    transport.send = lambda node, message: True
    transport._onMessageReceivedCallback = None


def test_partitioned_voter(cluster_factory: Any, wait_until: Any) -> None:
    cluster = cluster_factory().start_all()
    leader = cluster.leader()
    victim = next(cp for cp in cluster.nodes.values() if cp is not leader)
    _isolate(victim)
    for i in range(10):
        leader.kv.put(f"k{i}", b"v")
    f = found(cluster, "replication_lag", wait_until)
    assert f.where == (Place("voter", victim.node_id),) and f.severity == "critical"
    assert f"{leader.node_id} (term" in f.why and "has its connection" in f.why
    assert f.evidence["lag_entries"] >= 10
    assert f.fix == f"coreplane members remove {victim.node_id}"
    assert "check the network" in f.note


class _SlowJournal(LmdbJournal):
    """A disk whose every write transaction takes 150 ms longer."""

    def _flush_txn(self) -> None:
        time.sleep(0.15)
        super()._flush_txn()


def _slow_journal(path: str, **kw: Any) -> LmdbJournal:
    return _SlowJournal(path, **kw)


def test_slow_disk(cluster_factory: Any, wait_until: Any) -> None:
    cluster = cluster_factory()
    cluster.make("a")
    cluster.make("b")
    slow = cluster.make("c", seams=Seams(journal_factory=_slow_journal))
    leader = cluster.leader()
    for i in range(30):
        leader.kv.put(f"k{i}", b"v")
    f = found(cluster, "fsync_latency", wait_until)
    assert f.where == (Place("voter", slow.node_id),)
    assert "journal flushes (LMDB write + fsync) on c took over 100 ms" in f.why
    assert f.evidence["count"] >= 20
    assert f.fix == "coreplane members remove c" and "faster disk" in f.note


def _small_map(path: str, **kw: Any) -> LmdbJournal:
    return LmdbJournal(path, map_size_bytes=1 << 20, map_size_max_bytes=1 << 20, **kw)


def test_lmdb_map_nearly_full(cluster_factory: Any, wait_until: Any) -> None:
    cluster = cluster_factory()
    cluster.make("a")
    cluster.make("b", seams=Seams(journal_factory=_small_map))
    cluster.make("c")
    leader = cluster.leader()
    observers: dict[str, Observer] = {}

    def map_use_pct() -> int:
        j = (observers.get("b") or Observer(cluster.nodes["b"])).sample().raft["journal"]
        return (j["last_page"] + 1) * j["page_bytes"] * 100 // j["map_size_max_bytes"]

    i = 0
    while map_use_pct() < 82:
        leader.kv.put(f"big{i}", b"x" * 8000)
        i += 1
        assert i < 500, "the map never filled"
    f = found(cluster, "storage", wait_until)
    assert f.where == (Place("voter", "b"),) and "LMDB map is" in f.what
    assert f"of its {1 << 20}-byte cap (map_size_max_bytes)" in f.why
    assert f.fix == "restart voter b with a larger map_size_max_bytes"
    assert not cluster.nodes["b"].status().storage_full  # nearly full, still writing


def test_the_kv_near_its_byte_quota(cluster_factory: Any, wait_until: Any) -> None:
    cluster = cluster_factory(limits=Limits(kv_bytes_max=100_000)).start_all()
    leader = cluster.leader()
    for i in range(9):  # 9 x 10,052 bytes (key, value, 48 a key): 90% of the quota
        leader.kv.put(f"big{i}", b"x" * 10_000)
    f = found(cluster, "storage", wait_until)
    assert f.where == (Place("cluster", "kv"),) and f.severity == "warning"
    assert f.what == "the stored keys and values are 90% of limits.kv_bytes_max"
    assert f.evidence["kv_bytes"] == leader.status().kv_bytes == 9 * 10_052
    assert f.fix == "coreplane kv del KEY"


def test_a_voter_built_with_other_limits(cluster_factory: Any, wait_until: Any) -> None:
    cluster = cluster_factory()
    cluster.make("a")
    cluster.make("b", limits=Limits(keys_max=10))
    cluster.make("c")
    leader = cluster.leader()
    f = found(cluster, "apply_config_skew", wait_until)
    if leader.node_id == "b":  # then a and c are the ones that differ from the leader
        assert f.where in ((Place("voter", "a"),), (Place("voter", "c"),))
        assert "limits.keys_max=2000000 (not 10)" in f.why
    else:
        assert f.where == (Place("voter", "b"),) and f.severity == "critical"
        assert "limits.keys_max=10 (not 2000000)" in f.why


def test_clock_skew(cluster_factory: Any, wait_until: Any) -> None:
    cluster = cluster_factory().start_all()
    leader = cluster.leader()
    skewed = next(cp for cp in cluster.nodes.values() if cp is not leader)
    observers = {skewed.node_id: Observer(skewed, wall_clock_s=lambda: time.time() + 5.0)}
    f = found(cluster, "clock_drift", wait_until, observers=observers)
    assert f.where == (Place("voter", skewed.node_id),)
    assert f"ahead of {leader.node_id}'s" in f.what and 4_900 <= f.evidence["offset_ms"] <= 5_100
    assert f.fix == "chronyc makestep" and skewed.node_id in f.note


def test_wrong_secret(cluster_factory: Any, wait_until: Any) -> None:
    cluster = cluster_factory()
    cluster.make("a")
    cluster.make("b")
    # c is a configured voter started with another secret (its data dir is new, so nothing
    # else refuses it): the handshakes with a and b fail
    peers = {p: a for p, a in cluster.addresses.items() if p != "c"}
    c = ControlPlane(
        "c", cluster.addresses["c"], peers, cluster.base / "c", WRONG_SECRET, **cluster.options
    )
    cluster.created.append(c)
    cluster.nodes["c"] = c
    c.start()
    cluster.leader()
    f = found(cluster, "auth_failures", wait_until)
    assert f.where == (Place("voter", "c"),) and f.severity == "critical"
    assert "failed the wire's HMAC handshake" in f.why and "another cluster secret" in f.why
    assert f.fix == "coreplane members remove c" and "cluster's secret" in f.note
    assert wait_until(
        lambda: all(
            p.connected is False for nid, p in cluster.leader().status().peers.items() if nid == "c"
        )
    )


def test_election_churn(cluster_factory: Any, wait_until: Any) -> None:
    cluster = cluster_factory().start_all()
    for _ in range(5):
        old = cluster.leader()
        old.transfer_leadership(timeout_s=10)
        wait_until(lambda old=old: cluster.leader() is not old, 10.0, "a new leader")
    f = found(cluster, "leader_stability", wait_until)
    assert Place("cluster", "leader") in f.where
    assert f.evidence["window_s"] == 60.0 and len(f.evidence["terms"]) >= 4


class _QuarterClock:
    """A monotonic clock at a quarter of real speed: the leader's runtime paces its ticks and
    measures their elapsed time with it, as a starved runtime thread would fall behind."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def monotonic(self) -> float:
        return self._start + (time.monotonic() - self._start) / 4


def test_tick_lag(cluster_factory: Any, wait_until: Any) -> None:
    cluster = cluster_factory().start_all(seams=Seams(clock=_QuarterClock()))
    cluster.leader()
    observers: dict[str, Observer] = {}
    f = found(cluster, "tick_lag", wait_until, observers=observers, window_s=1.0)
    assert Place("cluster", "ticks") in f.where
    assert f.evidence["advanced_ms"] * 2 < f.evidence["window_ms"]
    assert "leader's runtime thread is starved" in f.why

"""The fleet brain across real processes: three ControlPlane processes (examples/_demo_node.py)
and twenty storage agents on threads of the test process, talking the agent protocol over the
JSON-line channel. kill -9 the leader in the middle of moves and a storage node: every
partition ends at RF, with no duplicate replica, every committed replica held by its agent,
and equal state hashes.

Node logs are in the test's tmp dir (``<node>.log``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from coreplane.testing.fleet import ThreadAgent

OPTIONS = {
    "election_timeout_ms": [250, 500],
    "heartbeat_ms": 50,
    "tick_interval_ms": 100,
    "fleet_config": {
        "suspect_after_ms": 1_500,
        "dead_after_ms": 3_000,
        "copy_timeout_ms": 4_000,
        "cleanup_timeout_ms": 4_000,
        "moves_in_flight_per_node": 2,
        "moves_in_flight_max": 16,
    },
}


def _endpoint(node: Any) -> Any:
    def call(op: str, **fields: Any) -> Any:
        reply = node.request(f"fleet_{op}", timeout_s=2.0, **fields)
        if not reply.get("ok"):
            raise RuntimeError(f"{reply.get('error')}: {reply.get('message')}")
        return reply["actions"] if op == "actions" else reply

    return call


def _partitions(cluster: Any) -> list[dict[str, Any]]:
    leader = cluster.wait_leader(20)
    return list(cluster.nodes[leader].request("fleet_partitions", timeout_s=5)["partitions"])


def _wait(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:  # noqa: BLE001 - a node down mid-poll: poll again
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _healthy(cluster: Any, count: int) -> bool:
    parts = _partitions(cluster)
    leader = cluster.wait_leader(20)
    ops = cluster.nodes[leader].request("fleet_operations", timeout_s=5)["operations"]
    return len(parts) == count and not ops and all(p["health"] == "healthy" for p in parts)


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_kill9_leader_mid_move_and_a_storage_node(
    tmp_path: Path, demo_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the children run this checkout's coreplane
    with demo_harness.ProcCluster(tmp_path, options=OPTIONS) as cluster:
        cluster.start_all()
        leader = cluster.wait_leader(20)
        endpoints = [_endpoint(n) for n in cluster.nodes.values()]
        peers: dict[str, ThreadAgent] = {}
        for i in range(20):
            peers[f"s{i:02d}"] = ThreadAgent(
                f"s{i:02d}", f"z{i % 4}", endpoints, peers, heartbeat_s=0.3, copy_s=0.2
            )
        for agent in peers.values():
            agent.start()
        try:
            _wait(
                lambda: len(cluster.nodes[leader].request("fleet_nodes")["nodes"]) == 20,
                30,
                "20 nodes registered",
            )
            for i in range(40):
                cluster.nodes[leader].request(
                    "fleet_create_partition", pid=f"p{i:02d}", rf=3, timeout_s=5
                )
            _wait(lambda: _healthy(cluster, 40), 90, "bootstrap")
            # Drain two nodes (moves start), then kill -9 the leader while they run.
            for victim in ("s00", "s01"):
                cluster.nodes[leader].request("fleet_drain", node_id=victim, timeout_s=5)
            _wait(
                lambda: cluster.nodes[leader].request("fleet_operations")["operations"],
                10,
                "moves in flight",
            )
            cluster.nodes[leader].kill9()
            new_leader = cluster.wait_leader(20, exclude=leader)
            peers["s05"].stop()  # and a storage node dies
            cluster.nodes[leader].start()
            gone = {"s00", "s01", "s05"}
            # Healthy is not enough: a failover counts every node as heard when it takes over,
            # so until s05 is declared dead its replicas still look healthy.
            _wait(
                lambda: (
                    _healthy(cluster, 40)
                    and not any(gone & set(p["replicas"]) for p in _partitions(cluster))
                ),
                120,
                "repaired and drained",
            )
            parts = _partitions(cluster)
            for part in parts:
                replicas = part["replicas"]
                assert len(replicas) == len(set(replicas)) == 3, part
                assert not {"s00", "s01", "s05"} & set(replicas), part
                for node_id in replicas:
                    assert peers[node_id].holds(part["id"]), (part, node_id)
            assert new_leader != leader
            cluster.wait_caught_up(30)
            cluster.equal_hashes()
        finally:
            for agent in peers.values():
                agent.stop()

"""The fleet brain on three real ControlPlanes in one process (real sockets, data dirs, the
solver on its worker thread) with agents on threads: bootstrap to RF, a stopped storage node
repaired, each lost replica re-created once, and the host-facing views and explain."""

from __future__ import annotations

from typing import Any

import pytest

from coreplane.core.machines.fleet import FleetConfig
from coreplane.errors import NotLeader
from coreplane.testing.fleet import ThreadAgent, started_moves
from tests.integration.fleet_support import agent_endpoint, converged

CFG = FleetConfig(
    suspect_after_ms=1_000,
    dead_after_ms=2_000,
    copy_timeout_ms=3_000,
    cleanup_timeout_ms=3_000,
    moves_in_flight_per_node=4,
)


@pytest.mark.slow
def test_fleet_bootstraps_and_repairs_a_dead_storage_node(
    cluster_factory: Any, wait_until: Any
) -> None:
    cluster = cluster_factory().start_all(fleet_config=CFG)
    leader = cluster.leader()
    follower = cluster.followers()[0]
    with pytest.raises(NotLeader):
        follower.fleet.heartbeat("x", zone="z")
    endpoints = [agent_endpoint(cp) for cp in cluster.nodes.values()]
    peers: dict[str, ThreadAgent] = {}
    for i in range(6):
        peers[f"s{i}"] = ThreadAgent(f"s{i}", f"z{i % 3}", endpoints, peers, heartbeat_s=0.1)
    for agent in peers.values():
        agent.start()
    try:
        wait_until(lambda: len(leader.fleet.nodes()) == 6, 10, "six nodes registered")
        for i in range(12):
            follower.fleet.create_partition(f"p{i}", rf=3)  # forwarded to the leader
        wait_until(lambda: converged(leader), 30, "bootstrap to rf")
        victim = "s2"
        held = sorted(p["id"] for p in leader.fleet.partitions() if victim in p["replicas"])
        assert held
        peers[victim].stop()
        wait_until(lambda: leader.fleet.node(victim)["state"] == "dead", 15, "dead")
        wait_until(lambda: converged(leader), 30, "repair")
        for cp in cluster.nodes.values():
            for pid in held:
                view = cp.fleet.partition(pid)
                assert view["health"] == "healthy" and victim not in view["replicas"]
        fleet = leader._sm.fleet
        repairs = [m for m in started_moves(fleet) if m[2] == victim]
        assert sorted(m[1] for m in repairs) == held  # each lost replica re-created once
        why = leader.fleet.explain(victim)
        assert any(f"{victim} declared dead" in e["text"] for e in why)
        assert all(isinstance(e["index"], int) and isinstance(e["tick_ms"], int) for e in why)
    finally:
        for agent in peers.values():
            agent.stop()

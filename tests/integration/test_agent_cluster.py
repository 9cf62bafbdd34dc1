"""`coreplane.sdk.Agent` against a real 3-node cluster on 127.0.0.1 over HTTP: agents bootstrap
partitions to their RF, run each action once with growing tokens per partition, and keep
converging after the leader is stopped.

The agent routes (heartbeat, actions, ack) come with the fleet's API module on the CLI branch
(issue 14, ``coreplane/api/fleet_routes.py``); until that reaches this branch, the test adds
routes of the same contract itself (`_agent_routes`), and only where the server lacks them.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from coreplane.api.routes import F
from coreplane.api.server import ApiServer
from coreplane.core.machines.fleet import FleetConfig
from coreplane.sdk import Agent, Client, FleetAction, LongRunningConfig
from coreplane.testing.ports import free_ports

pytestmark = pytest.mark.slow

CFG = FleetConfig(
    suspect_after_ms=1_000,
    dead_after_ms=2_000,
    copy_timeout_ms=3_000,
    cleanup_timeout_ms=3_000,
    moves_in_flight_per_node=4,
)
ADMIN = "agent-test-admin-token-0123"
AGENTS = [("s0", "z0"), ("s1", "z1"), ("s2", "z2"), ("s3", "z0")]
TOKENS = {ADMIN: "admin", **{f"agent-token-{n}-0123456789": f"agent:{n}" for n, _z in AGENTS}}
CONFIG = LongRunningConfig(
    backoff_base_ms=20,
    backoff_cap_ms=500,
    health_check_interval_ms=500,
    request_timeout_ms=5_000,
    max_attempts=8,
    budget_min_retries_per_s=5.0,
)


def _agent_routes(server: ApiServer, cp: Any) -> None:
    """The fleet agent contract of issue 14's fleet_routes.py, if the server has none."""
    if any(path == "/v1/fleet/heartbeat" for _m, path, _r in server.routes):
        return
    node = F("str", None, 256, True)
    roles = {"admin", "agent"}

    def heartbeat(b: dict[str, Any]) -> Any:
        return cp.fleet.heartbeat(
            b["node_id"],
            zone=b["zone"],
            weight=b["weight"] or 1,
            slots=b["slots"] or 1 << 20,
            heat=json.loads(b["heat"]) if b["heat"] else {},
            lost=json.loads(b["lost"]) if b["lost"] else [],
        )

    server.add_route(
        "POST",
        "/v1/fleet/heartbeat",
        roles=roles,
        node_field="node_id",
        fields={
            "node_id": node,
            "zone": node,
            "weight": F("int", 1),
            "slots": F("int", 0),
            "heat": F("str", "", 1 << 20),
            "lost": F("str", "", 1 << 20),
        },
        handler=heartbeat,
    )
    server.add_route(
        "POST",
        "/v1/fleet/actions",
        roles=roles,
        node_field="node_id",
        fields={"node_id": node},
        handler=lambda b: {
            "actions": [
                dataclasses.asdict(a) for a in cp.fleet.actions(b["node_id"], stale_ok=True)
            ]
        },
    )
    server.add_route(
        "POST",
        "/v1/fleet/ack",
        roles=roles,
        node_field="node_id",
        fields={
            "node_id": node,
            "action_id": node,
            "token": F("int", None),
            "ok": F("bool", True),
            "detail": F("str", "", 1000),
        },
        handler=lambda b: {
            "result": cp.fleet.ack(b["node_id"], b["action_id"], b["token"], b["ok"], b["detail"])
        },
    )


class Store:
    """One storage node's data: partition -> the token of the action that created it."""

    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, action: FleetAction) -> None:
        with self.lock:
            self.held[action.partition] = action.token

    def remove(self, action: FleetAction) -> None:
        with self.lock:
            self.held.pop(action.partition, None)

    def heat(self) -> dict[str, int]:
        with self.lock:
            return dict.fromkeys(self.held, 1000)


@pytest.fixture
def served(cluster_factory: Callable[..., Any]) -> Iterator[tuple[Any, dict[str, ApiServer]]]:
    cluster = cluster_factory().start_all(fleet_config=CFG)
    cluster.leader()
    ports = dict(zip(cluster.nodes, free_ports(len(cluster.nodes)), strict=True))
    urls = {nid: f"http://127.0.0.1:{port}" for nid, port in ports.items()}
    servers = {}
    for nid, cp in cluster.nodes.items():
        server = ApiServer(
            cp,
            f"127.0.0.1:{ports[nid]}",
            tokens=TOKENS,
            api_peers={n: u for n, u in urls.items() if n != nid},
        )
        _agent_routes(server, cp)
        server.start()
        servers[nid] = server
    try:
        yield cluster, servers
    finally:
        for server in servers.values():
            server.stop()


def _converged(cp: Any) -> bool:
    parts = cp.fleet.partitions(stale_ok=True)
    return (
        bool(parts)
        and all(p["health"] == "healthy" for p in parts)
        and not cp.fleet.operations(stale_ok=True)
    )


def test_agents_place_partitions_fenced_and_survive_a_leader_change(
    served: Any, wait_until: Callable[..., Any]
) -> None:
    cluster, servers = served
    urls = [s.url for s in servers.values()]
    token_of = {role.split(":")[1]: tok for tok, role in TOKENS.items() if role != "admin"}
    stores = {n: Store() for n, _z in AGENTS}
    clients = [Client(urls, token_of[n], CONFIG) for n, _z in AGENTS]
    agents = [
        Agent(
            c,
            n,
            zone=z,
            heat=stores[n].heat,
            heartbeat_ms=100,
            handlers={"add_replica": stores[n].add, "remove_replica": stores[n].remove},
        )
        for c, (n, z) in zip(clients, AGENTS, strict=True)
    ]
    try:
        leader = cluster.leader()
        wait_until(lambda: len(leader.fleet.nodes()) == len(AGENTS), 10, "agents registered")
        for i in range(6):
            leader.fleet.create_partition(f"p{i}", rf=3)
        wait_until(lambda: _converged(leader), 30, "bootstrap to rf")
        servers[leader.node_id].stop()
        leader.stop()
        del cluster.nodes[leader.node_id]
        new_leader = cluster.leader(timeout_s=15)
        for i in range(6, 9):
            new_leader.fleet.create_partition(f"p{i}", rf=3)
        wait_until(lambda: _converged(new_leader), 40, "placement after the leader change")
        wait_until(
            lambda: all(
                sorted(n for n, s in stores.items() if p["id"] in s.held) == sorted(p["replicas"])
                for p in new_leader.fleet.partitions()
            ),
            10,
            "stores match the replicas",
        )
    finally:
        for a in agents:
            a.close()
        for c in clients:
            c.close()
    parts = new_leader.fleet.partitions()
    assert len(parts) == 9 and all(len(p["replicas"]) == 3 for p in parts)
    for agent in agents:
        ids = [a.id for a in agent.ran]
        assert len(ids) == len(set(ids)), f"{agent.node_id} ran an action twice"
        by_part: dict[str, list[int]] = {}
        for a in agent.ran:
            by_part.setdefault(a.partition, []).append(a.token)
        for pid, tokens in by_part.items():
            assert tokens == sorted(tokens), f"{agent.node_id}/{pid}: tokens went back"
    assert sum(len(a.ran) for a in agents) >= 27  # every replica was created by an action

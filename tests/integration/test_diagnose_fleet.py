"""Fleet faults for `diagnose` on three real ControlPlanes in this process (127.0.0.1) with
agents on threads: a silent agent (stopped), the partitions it leaves under-replicated when no
other zone can take them, and an operation stuck on an agent that heartbeats but never acts;
each found, placed, explained and given its fix; and a partition too hot for any node (a split
candidate). A converged fleet gives no finding."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from coreplane.core.machines.fleet import FleetConfig
from coreplane.obs import Metrics, Observer, Place, diagnose, gather_inprocess, where, why
from coreplane.testing.fleet import ThreadAgent
from tests.integration.fleet_support import agent_endpoint, converged

pytestmark = pytest.mark.slow

CFG = FleetConfig(
    suspect_after_ms=1_000,
    dead_after_ms=2_000,
    copy_timeout_ms=1_500,
    cleanup_timeout_ms=1_500,
    moves_in_flight_per_node=4,
)


class _IdleAgent(ThreadAgent):
    """Heartbeats, takes no action: its operations can only time out."""

    def _act(self, action: dict[str, Any]) -> None:
        return None


@pytest.fixture
def fleet(cluster_factory: Any) -> Iterator[tuple[Any, dict[str, ThreadAgent]]]:
    cluster = cluster_factory().start_all(fleet_config=CFG)
    cluster.leader()
    agents: dict[str, ThreadAgent] = {}
    yield cluster, agents
    for agent in agents.values():
        agent.stop()


def _start(
    cluster: Any,
    agents: dict[str, ThreadAgent],
    node_id: str,
    zone: str,
    kind: type[ThreadAgent] = ThreadAgent,
) -> None:
    endpoints = [agent_endpoint(cp) for cp in cluster.nodes.values()]
    agents[node_id] = kind(node_id, zone, endpoints, agents, heartbeat_s=0.1)
    agents[node_id].start()


def _inspect(cluster: Any) -> Any:
    leader = cluster.leader()
    obs = {n: Observer(cp) for n, cp in cluster.nodes.items()}
    return gather_inprocess(
        obs[leader.node_id], {n: o for n, o in obs.items() if n != leader.node_id}
    )


def test_silent_agent_and_the_partitions_it_leaves_short(fleet: Any, wait_until: Any) -> None:
    cluster, agents = fleet
    for i in range(3):
        _start(cluster, agents, f"s{i}", f"z{i}")
    leader = cluster.leader()
    wait_until(lambda: len(leader.fleet.nodes()) == 3, 10, "three nodes")
    for i in range(4):
        leader.fleet.create_partition(f"p{i}", rf=3)
    wait_until(lambda: converged(cluster.leader()), 30, "bootstrap to rf")
    assert diagnose(_inspect(cluster)) == []  # a converged fleet: nothing to say
    agents["s1"].stop()

    def dead() -> Any:
        findings = diagnose(_inspect(cluster))
        silent = [f for f in findings if f.check == "silent_agent"]
        under = [f for f in findings if f.check == "under_replicated"]
        return (
            (silent, under)
            if silent and silent[0].severity == "critical" and len(under) == 4
            else None
        )

    silent, under = wait_until(dead, 20, "s1 dead and four partitions short")
    f = silent[0]
    assert f.where == (Place("node", "s1"), Place("zone", "z1"))
    assert "the leader last heard s1 at tick time" in f.why and "holds 4 replicas" in f.why
    assert f.fix == "coreplane decommission s1"
    g = under[0]
    assert g.where[:2] == (Place("partition", "p0"), Place("node", "s1"))
    assert "only 2 zones have eligible nodes for rf 3" in g.why
    inputs = _inspect(cluster)
    findings = diagnose(inputs)
    assert where(inputs, findings).by_kind()["node"] == ["s1"]
    assert why(inputs, findings, "zone/z1").state["by_state"] == {"dead": 1}
    text = Metrics(cluster.leader()).generate().decode()
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    node = cluster.leader().node_id
    assert got[("coreplane_fleet_nodes", (("node", node), ("state", "dead")))] == 1.0
    assert got[("coreplane_fleet_nodes", (("node", node), ("state", "alive")))] == 2.0
    assert got[("coreplane_fleet_partitions_under_replicated", (("node", node),))] == 4.0


def test_an_operation_stuck_on_an_idle_agent(fleet: Any, wait_until: Any) -> None:
    cluster, agents = fleet
    _start(cluster, agents, "s0", "z0")
    _start(cluster, agents, "s1", "z1", _IdleAgent)
    leader = cluster.leader()
    wait_until(lambda: len(leader.fleet.nodes()) == 2, 10, "two nodes")
    leader.fleet.create_partition("p0", rf=2)

    def stuck() -> Any:
        hits = [f for f in diagnose(_inspect(cluster)) if f.check == "stuck_operation"]
        return hits[0] if hits else None

    f = wait_until(stuck, 20, "a stuck operation")
    op = f.where[0]
    assert op.kind == "operation" and Place("node", "s1") in f.where
    assert "waits for node s1 (alive)" in f.why and f.evidence["attempt"] >= 1
    assert f.fix == f"coreplane ops resume {op.id}"
    answer = why(_inspect(cluster), diagnose(_inspect(cluster)), f"operation/{op.id}")
    assert answer.state["operation"]["node"] == "s1"


def test_a_partition_too_hot_for_any_node(fleet: Any, wait_until: Any) -> None:
    cluster, agents = fleet
    for i in range(3):
        _start(cluster, agents, f"s{i}", f"z{i}")
    leader = cluster.leader()
    wait_until(lambda: len(leader.fleet.nodes()) == 3, 10, "three nodes")
    for i in range(3):
        leader.fleet.create_partition(f"cool{i}", rf=1, heat=1)
    leader.fleet.create_partition("hot", rf=1, heat=1_000)

    def split() -> Any:
        hits = [f for f in diagnose(_inspect(cluster)) if f.check == "split_candidate"]
        return hits[0] if hits else None

    f = wait_until(split, 20, "a split candidate")
    assert f.where == (Place("partition", "hot"),)
    assert f.fix.startswith("split hot in the host") and "--scale-up" not in f.fix
    assert why(_inspect(cluster), [f], "partition/hot").state["partition"]["split_candidate"]


def test_an_infeasible_solve_is_a_why_seen_from_a_follower(fleet: Any, wait_until: Any) -> None:
    """A partition asked for before any node registered: the leader's solve cannot place it,
    and diagnose on a follower (the leader's sample carries its solve status) says so and
    why; once nodes register the next solve is feasible and the finding goes away."""
    cluster, agents = fleet
    cluster.leader().fleet.create_partition("p0", rf=2)

    def from_follower() -> Any:
        lead = cluster.leader()
        obs = {n: Observer(cp) for n, cp in cluster.nodes.items()}
        me = next(n for n in sorted(obs) if n != lead.node_id)
        return gather_inprocess(obs[me], {n: o for n, o in obs.items() if n != me})

    def infeasible() -> Any:
        inputs = from_follower()
        hits = [f for f in diagnose(inputs) if f.check == "placement"]
        return (inputs, hits[0]) if hits else None

    inputs, f = wait_until(infeasible, 20, "an infeasible solve found")
    assert inputs.observer != cluster.leader().node_id
    assert f.where == (Place("cluster", "placement"), Place("partition", "p0"))
    assert "the solver says: leaves out p0" in f.why and f.evidence["left_out"] == ["p0"]
    answer = why(inputs, diagnose(inputs), "cluster/placement")
    assert answer.state["placement_solve"]["feasible"] is False and not answer.healthy
    for i in range(2):
        _start(cluster, agents, f"s{i}", f"z{i}")

    def feasible() -> bool:
        inputs = from_follower()
        return not [f for f in diagnose(inputs) if f.check == "placement"]

    wait_until(feasible, 30, "the next solve feasible")
    assert cluster.leader().fleet.solve_status()["feasible"] is True

"""The fleet brain end to end in simulation: real ControlPlane nodes (SimCluster) managing
simulated storage agents (FleetWorld), from a seed. A failure names its seed.

Claims: a fleet bootstraps to RF; a killed storage node is declared dead and each replica it
held is re-created exactly once, RF restored; killing the leader at every step of a move still
completes the move exactly once; drain empties a node; a hot partition is flagged as a split
candidate and not moved back and forth; no committed replica ever lacks its data.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

import pytest

from coreplane.core import commands as C
from coreplane.core.machines.fleet import FleetConfig
from coreplane.testing import SimCluster
from coreplane.testing.fleet import FleetWorld, started_moves, undone_moves

CFG = FleetConfig(
    suspect_after_ms=3_000,
    dead_after_ms=6_000,
    copy_timeout_ms=8_000,
    cleanup_timeout_ms=5_000,
    moves_in_flight_per_node=2,
    moves_in_flight_max=16,
)


def _world(
    seed: int,
    agents: int = 6,
    zones: int = 3,
    partitions: int = 12,
    rf: int = 3,
    config: FleetConfig = CFG,
) -> tuple[SimCluster, FleetWorld]:
    c = SimCluster(seed, fleet_config=config)
    assert c.run_until(c.converged, 5_000), f"seed {seed}: no leader"
    world = FleetWorld(c)
    for i in range(agents):
        world.add_agent(f"s{i}", f"z{i % zones}")
    world.run(3_000)
    for i in range(partitions):
        c.command(
            "admin",
            C.FleetCreatePartition(f"p{i}", rf=rf, client_id="admin", seq=i + 1),
            lambda op: None,
        )
    return c, world


@pytest.mark.parametrize("seed", [1, 2])
def test_bootstrap_reaches_rf_everywhere(seed: int) -> None:
    c, world = _world(seed)
    with c:
        assert world.run_until_converged(60_000), f"seed {seed}: not converged"
        fleet = world.fleet_state()
        assert len(fleet.parts) == 12
        for pid in fleet.parts:
            assert len({fleet.nodes[n].zone for n in fleet.parts[pid][2]}) == 3
        assert c.violations == [], f"seed {seed}: {c.violations}"


@pytest.mark.parametrize("seed", [3, 4])
def test_a_killed_storage_node_is_repaired_exactly_once(seed: int) -> None:
    c, world = _world(seed)
    with c:
        assert world.run_until_converged(60_000), f"seed {seed}"
        fleet = world.fleet_state()
        lost = sorted(fleet.node_parts["s1"])
        assert lost
        world.crash("s1")
        assert c.run_until(lambda: world.fleet_state().nodes["s1"].liveness == "dead", 30_000)
        assert world.run_until_converged(90_000), f"seed {seed}: no repair"
        fleet = world.fleet_state()
        repairs = world.repairs("s1")
        assert sorted(repairs) == lost and set(repairs.values()) == {1}, repairs
        for pid in lost:
            assert "s1" not in fleet.parts[pid][2]
        assert c.violations == [], f"seed {seed}: {c.violations}"


@pytest.mark.parametrize("seed", [5, 6])
def test_orphan_copies_are_removed_exactly_once_after_the_grace(seed: int) -> None:
    """A node declared dead comes back with the replicas it held (repaired elsewhere in the
    meantime), and another holds a copy a rolled-back move left: each copy gets one fenced
    remove_replica after the grace, never a replica a replica set still counts."""
    config = dataclasses.replace(CFG, orphan_grace_ms=5_000)
    c, world = _world(seed, config=config)
    with c:
        assert world.run_until_converged(60_000), f"seed {seed}"
        fleet = world.fleet_state()
        held = sorted(fleet.node_parts["s1"])
        stray = next(p for p in sorted(fleet.parts) if "s2" not in fleet.parts[p][2])
        world.agents["s2"].held.add(stray)  # a partial copy whose removal was abandoned
        world.crash("s1")  # its disk survives
        assert c.run_until(lambda: world.fleet_state().nodes["s1"].liveness == "dead", 30_000)
        assert world.run_until_converged(90_000), f"seed {seed}: no repair"
        world.restart("s1")
        world.run(30_000)
        fleet = world.fleet_state()
        assert fleet.node_view("s1")["state"] == "alive"
        for node_id in ("s1", "s2"):  # it holds what its replica sets say, nothing else
            assert world.agents[node_id].held == fleet.node_parts[node_id], node_id
        gc = Counter((pid, node) for _i, pid, node, _t in started_moves(fleet, "gc"))
        assert gc[(stray, "s2")] == 1
        assert {p for p, n in gc if n == "s1"} | fleet.node_parts["s1"] >= set(held)
        assert set(gc.values()) == {1}  # exactly once
        assert any("no replica set holds it" in e["text"] for e in fleet.explain("s1"))
        assert world.converged() and c.violations == [], f"seed {seed}: {c.violations}"


def _one_move_world(seed: int) -> tuple[SimCluster, FleetWorld, str]:
    """Four zones, one partition at rf=3: draining a holder makes exactly one move."""
    c, world = _world(seed, agents=4, zones=4, partitions=1)
    assert world.run_until_converged(60_000), f"seed {seed}"
    holder = world.fleet_state().parts["p0"][2][0]
    return c, world, holder


STEPS = ["drain_committed", "copy_issued", "copy_done_unacked", "cleanup_issued", "done"]


def _reached(world: FleetWorld, step: str, holder: str) -> bool:
    fleet = world.fleet_state()
    op = next(iter(fleet.ops.values()), None)
    if step == "drain_committed":
        return fleet.nodes[holder].admin == "draining"
    if step == "copy_issued":
        return op is not None and op.step == "copy"
    if step == "copy_done_unacked":
        return (
            op is not None
            and op.step == "copy"
            and any(world.copies[("p0", n)] for n in world.agents if n != holder)
        )
    if step == "cleanup_issued":
        return op is not None and op.step == "cleanup"
    return not fleet.ops and holder not in fleet.parts["p0"][2]


@pytest.mark.parametrize("step", STEPS)
def test_killing_the_leader_at_every_step_of_a_move_completes_it_once(step: str) -> None:
    seed = 10 + STEPS.index(step)
    c, world, holder = _one_move_world(seed)
    with c:
        c.command("admin", C.FleetDrain(holder, client_id="admin", seq=100), lambda op: None)
        assert c.run_until(lambda: _reached(world, step, holder), 30_000), f"seed {seed} {step}"
        leader = c.leader()
        c.crash(leader)
        world.run(2_000)
        c.restart(leader)
        assert world.run_until_converged(90_000), f"seed {seed}: not converged after {step}"
        fleet = world.fleet_state()
        moves = [m for m in started_moves(fleet) if m[2] == holder]
        assert len(moves) == 1, moves  # exactly once
        assert holder not in fleet.parts["p0"][2]
        assert fleet.partition_view("p0")["health"] == "healthy"
        assert not world.agents[holder].held  # cleaned up
        assert c.violations == [], f"seed {seed}: {c.violations}"


def test_drain_empties_a_node_and_keeps_rf() -> None:
    c, world = _world(21, agents=6, zones=3, partitions=18)
    with c:
        assert world.run_until_converged(60_000)
        c.command("admin", C.FleetDrain("s0", client_id="admin", seq=100), lambda op: None)
        world.run(1_000)
        assert world.run_until_converged(120_000)
        fleet = world.fleet_state()
        assert not fleet.node_parts["s0"] and not world.agents["s0"].held
        assert fleet.node_view("s0")["state"] == "draining"
        assert c.violations == []


def test_a_hot_partition_is_flagged_as_a_split_candidate_and_not_moved_back_and_forth() -> None:
    c, world = _world(22, agents=6, zones=3, partitions=12)
    with c:
        assert world.run_until_converged(60_000)
        for i in range(12):
            world.set_heat(f"p{i}", 1_000)
        world.set_heat("p5", 200_000)
        world.run(60_000)
        fleet = world.fleet_state()
        assert fleet.partition_view("p5")["split_candidate"] is True
        assert any("split candidate" in e["text"] for e in fleet.explain("p5"))
        assert undone_moves(fleet) == []
        assert len([m for m in started_moves(fleet) if m[1] == "p5"]) <= 3  # placed, not chased
        assert c.violations == []


def test_noisy_heat_for_a_thousand_ticks_undoes_no_move() -> None:
    c, world = _world(23, agents=6, zones=3, partitions=18)
    with c:
        assert world.run_until_converged(60_000)
        for _ in range(100):  # 100 x 1 s = 1,000 ticks of 100 ms
            for i in range(18):
                world.set_heat(f"p{i}", 1_000 + c.rng.randrange(-300, 300))
            world.run(1_000)
        fleet = world.fleet_state()
        assert undone_moves(fleet) == []
        assert c.violations == []


def test_scale_up_past_the_zones_provisions_through_the_provider_then_places() -> None:
    c, world = _world(31, agents=3, zones=3, partitions=2)
    with c:
        provider = world.provider()
        assert world.run_until_converged(60_000)
        c.command("admin", C.FleetSetRF("p0", 4, client_id="admin", seq=100), lambda op: None)
        assert c.run_until(
            lambda: (
                world.fleet_state().partition_view("p0")["health"] == "healthy"
                and len(world.fleet_state().parts["p0"][2]) == 4
            ),
            60_000,
        )
        assert [k for k, _r, _t in provider.calls] == ["provision"]
        request_id = provider.calls[0][1]
        assert request_id == "provision/zone-4#1"
        fleet = world.fleet_state()
        assert fleet.requests[request_id][3] == "done"
        assert any("provider provision" in e["text"] for e in fleet.explain(request_id))
        assert len({fleet.nodes[n].zone for n in fleet.parts["p0"][2]}) == 4
        assert c.violations == []


def test_decommission_drains_then_releases_the_node_through_the_provider() -> None:
    c, world = _world(32, agents=4, zones=4, partitions=3, rf=3)
    with c:
        provider = world.provider()
        assert world.run_until_converged(60_000)
        holder = world.fleet_state().parts["p0"][2][0]
        c.command("admin", C.FleetDecommission(holder, client_id="admin", seq=100), lambda op: None)
        assert c.run_until(lambda: any(k == "decommission" for k, _r, _t in provider.calls), 60_000)
        _kind, request_id, token = provider.calls[-1]
        assert request_id == f"decommission/{holder}#1" and token > 0
        assert not world.agents[holder].up
        world.run(5_000)
        fleet = world.fleet_state()
        assert fleet.node_view(holder)["state"] == "decommissioned"
        assert fleet.requests[request_id][3] == "done"
        assert world.converged() and c.violations == []


def test_a_failover_mid_provision_calls_again_with_the_same_request_id() -> None:
    c, world = _world(33, agents=3, zones=3, partitions=1)
    with c:
        provider = world.provider()
        assert world.run_until_converged(60_000)
        first = provider.provision

        def provision_then_lose_the_leader(*args: object, **kw: object) -> str:
            node_id = first(*args, **kw)  # type: ignore[arg-type]
            if len(provider.calls) == 1:
                leader = c.leader()
                c.at(0, c.crash, leader)
                c.at(3_000, c.restart, leader)
            return node_id

        provider.provision = provision_then_lose_the_leader  # type: ignore[method-assign]
        c.command("admin", C.FleetSetRF("p0", 4, client_id="admin", seq=100), lambda op: None)
        assert c.run_until(lambda: len(world.fleet_state().parts["p0"][2]) == 4, 60_000)
        ids = [r for k, r, _t in provider.calls if k == "provision"]
        assert len(ids) >= 2, "the new leader did not call again"
        assert set(ids) == {"provision/zone-4#1"}  # the same request, never a second node
        assert len(provider.answers) == 1
        tokens = [t for _k, _r, t in provider.calls]
        assert tokens == sorted(tokens)
        assert c.violations == []


@pytest.mark.parametrize("seed", [101, 102])
def test_fleet_chaos_schedules_hold_the_fleet_invariants(seed: int) -> None:
    from coreplane.testing.fleet_chaos import run_fleet_schedule

    result = run_fleet_schedule(seed)
    assert result.ok, f"{result.violations[:3]}; replay: {result.replay}"
    assert result.moves_completed > 0 and result.faults


def test_a_suspect_node_heard_again_gets_the_replica_it_alone_can_take() -> None:
    """A partition whose only usable target was suspect when it was planned is planned again
    once that node is heard again (regression: alive <-> suspect did not mark the fleet
    dirty, so the worklist never asked for the solve and the partition stayed under RF)."""
    config = dataclasses.replace(CFG, dead_after_ms=60_000)
    c = SimCluster(11, fleet_config=config)
    with c:
        assert c.run_until(c.converged, 5_000), "no leader"
        world = FleetWorld(c)
        for i in range(3):
            world.add_agent(f"s{i}", f"z{i}")
        world.run(3_000)
        world.cut("s2", 12_000)
        assert c.run_until(lambda: world.fleet_state().nodes["s2"].liveness == "suspect", 10_000)
        c.command(
            "admin", C.FleetCreatePartition("p0", rf=3, client_id="admin", seq=1), lambda op: None
        )
        world.run(3_000)  # planned while s2 is suspect: it cannot take the third replica
        fleet = world.fleet_state()
        assert fleet.nodes["s2"].liveness == "suspect"
        assert "s2" not in fleet.parts["p0"][2]
        assert c.run_until(lambda: world.fleet_state().nodes["s2"].liveness == "alive", 20_000)
        assert world.run_until_converged(30_000), world.fleet_state().explain("plan", 5)
        fleet = world.fleet_state()
        assert sorted(fleet.parts["p0"][2]) == ["s0", "s1", "s2"]
        assert c.violations == []


def test_an_rf_above_the_zones_before_any_node_registered_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A normal start-up state (partitions asked for, no node yet) is not an error: each solve
    finds the problem infeasible, but the reason is logged once, as one line without a
    traceback, and the leader's `solve_status()` carries it."""
    c = SimCluster(12, fleet_config=CFG)
    with c, caplog.at_level(logging.DEBUG, logger="coreplane.runtime.fleet"):
        assert c.run_until(c.converged, 5_000), "no leader"
        for i in range(3):  # each a change in the fleet: solved again, infeasible again
            c.command(
                "admin",
                C.FleetCreatePartition(f"p{i}", rf=3, client_id="admin", seq=i + 1),
                lambda op: None,
            )
            c.run_for(5_000)
        fleet = c.slots[c.leader()].node.fleet
        assert fleet.stats["solves"] == 3
        records = [r for r in caplog.records if r.name == "coreplane.runtime.fleet"]
        assert [(r.levelno, r.exc_info) for r in records] == [(logging.INFO, None)]
        assert "p0" in records[0].getMessage() and "0 zones" in records[0].getMessage()
        status = fleet.solve_status()
        assert status["feasible"] is False and status["left_out"] == ["p0", "p1", "p2"]
        texts = [e["text"] for e in FleetWorld(c).fleet_state().explain("plan", 10)]
        assert any("no move for 3 under-replicated partitions (p0, p1, p2)" in t for t in texts)

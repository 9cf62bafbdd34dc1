"""The fleet brain end to end in simulation: real ControlPlane nodes (SimCluster) managing
simulated storage agents (FleetWorld), from a seed. A failure names its seed.

Claims: a fleet bootstraps to RF; a killed storage node is declared dead and each replica it
held is re-created exactly once, RF restored; killing the leader at every step of a move still
completes the move exactly once; drain empties a node; a hot partition is flagged as a split
candidate and not moved back and forth; no committed replica ever lacks its data.
"""

from __future__ import annotations

import pytest

from coreplane.core import commands as C
from coreplane.core.machines.fleet import FleetConfig
from coreplane.testing import SimCluster
from coreplane.testing.fleet import FleetWorld

CFG = FleetConfig(suspect_after_ms=3_000, dead_after_ms=6_000, copy_timeout_ms=8_000,
                  cleanup_timeout_ms=5_000, moves_in_flight_per_node=2, moves_in_flight_max=16)


def _world(seed: int, agents: int = 6, zones: int = 3, partitions: int = 12,
           rf: int = 3) -> tuple[SimCluster, FleetWorld]:
    c = SimCluster(seed, fleet_config=CFG)
    assert c.run_until(c.converged, 5_000), f"seed {seed}: no leader"
    world = FleetWorld(c)
    for i in range(agents):
        world.add_agent(f"s{i}", f"z{i % zones}")
    world.run(3_000)
    for i in range(partitions):
        c.command("admin", C.FleetCreatePartition(f"p{i}", rf=rf, client_id="admin", seq=i + 1),
                  lambda op: None)
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

"""A three-voter cluster with a fleet: six storage agents on threads (zones z0..z2), partitions
placed and converged; for the CLI's fleet tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coreplane.core.machines.fleet import FleetConfig
from coreplane.testing.fleet import ThreadAgent
from tests.integration.cli_support import Cluster
from tests.integration.fleet_support import agent_endpoint, converged
from tests.integration.procs_support import eventually as wait_until

CFG = FleetConfig(
    suspect_after_ms=2_000,
    dead_after_ms=4_000,
    copy_timeout_ms=20_000,
    cleanup_timeout_ms=10_000,
    moves_in_flight_per_node=1,
)


SIZE_BYTES = 256 << 20  # every partition's size, as its agents report it


class FleetCluster(Cluster):
    def __init__(
        self, tmp: Path, *, partitions: int = 6, rf: int = 2, copy_s: float = 0.05
    ) -> None:
        super().__init__(tmp, fleet_config=CFG)
        self.agents: dict[str, ThreadAgent] = {}
        endpoints = [agent_endpoint(cp, size_bytes=SIZE_BYTES) for cp in self.nodes.values()]
        for i in range(6):
            self.agents[f"s{i}"] = ThreadAgent(
                f"s{i}", f"z{i % 3}", endpoints, self.agents, heartbeat_s=0.1, copy_s=copy_s
            )
        for agent in self.agents.values():
            agent.start()
        cp = self.any_node()
        wait_until(lambda: len(cp.fleet.nodes()) == 6, 20, "six nodes registered")
        for i in range(partitions):
            cp.fleet.create_partition(f"p{i}", rf=rf)
        self.wait_converged()

    def any_node(self) -> Any:
        return self.nodes[self.leader()]

    def converged(self) -> bool:
        return converged(self.any_node(), stale_ok=False)

    def wait_converged(self, timeout_s: float = 60) -> None:
        wait_until(self.converged, timeout_s, "the fleet converged")

    def slow_copies(self, copy_s: float) -> None:
        for agent in self.agents.values():
            agent.copy_s = copy_s

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        super().stop()

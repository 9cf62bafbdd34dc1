"""coreplane.testing: the public chaos kit (docs/architecture.md).

`SimCluster(seed)` runs real ControlPlane nodes on a simulated network, clock and disk in one
thread; `run_schedule` is one seeded chaos experiment with its checks; `catch` runs a known-bug
canary; the Wing-Gong-Lowe checker is `check_kv` / `check`. `FleetWorld` adds simulated storage
agents to a SimCluster (`ThreadAgent` is one for real clusters) and `run_fleet_schedule` is one
seeded fleet chaos experiment. `FencedHttpResource` is a downstream resource behind HTTP that
checks fencing tokens (or, as a negative control, does not) for lock-safety experiments. The
runner is ``python -m coreplane.testing.chaos``.
"""

from coreplane.testing.canaries import CANARIES, CanaryResult, catch
from coreplane.testing.cluster import NetworkConfig, Op, SimCluster, Violation
from coreplane.testing.fleet import FleetWorld, SimAgent, SimProvider, ThreadAgent
from coreplane.testing.fleet_chaos import FleetScheduleResult, run_fleet_schedule
from coreplane.testing.linearizability import (
    CheckResult,
    Model,
    Operation,
    Verdict,
    check,
    check_brute_force,
    check_kv,
    kv_register_model,
)
from coreplane.testing.node import Canaries, SimNode
from coreplane.testing.ports import free_ports
from coreplane.testing.resource import FencedHttpResource, violations
from coreplane.testing.workload import ScheduleResult, replay_command, run_schedule

__all__ = [
    "CANARIES",
    "Canaries",
    "CanaryResult",
    "CheckResult",
    "FencedHttpResource",
    "FleetScheduleResult",
    "FleetWorld",
    "Model",
    "NetworkConfig",
    "Op",
    "Operation",
    "ScheduleResult",
    "SimAgent",
    "SimCluster",
    "SimNode",
    "SimProvider",
    "ThreadAgent",
    "Verdict",
    "Violation",
    "catch",
    "check",
    "check_brute_force",
    "check_kv",
    "free_ports",
    "kv_register_model",
    "replay_command",
    "run_fleet_schedule",
    "run_schedule",
    "violations",
]

"""`ControlPlane.observations()`: what coreplane.obs reads of a node, typed, in one call.

Health, diagnose and the metrics collector need two things no other public call gives: the Raft
engine's own observations (journal stats, flush and commit latency, terms seen, the wire's
counters) and the fleet machine's own views of this replica (under-replicated partitions, moves
in flight, counts by state). Both are read without a quorum (this replica, stale): diagnose must
work on a broken cluster. Nothing is proposed.

Imports coreplane.core and below only (the runtime's own modules import this one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coreplane.runtime.controlplane import ControlPlane

__all__ = ["FleetObservations", "Observations", "observe"]

ROWS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class FleetObservations:
    """This replica's fleet: views (at most `rows_max` rows each, ordered by id) and totals."""

    tick_ms: int
    nodes: list[dict[str, Any]]  # node views (`FleetMachine.node_view`)
    under_replicated: list[dict[str, Any]]  # partition views of the under-replicated ones
    operations: list[dict[str, Any]]  # moves in flight (`Operation.view`)
    splits: list[str]
    split_views: list[dict[str, Any]]  # partition views of the first 100 split candidates
    partitions_total: int
    under_total: int
    splits_total: int
    queue: int  # planned moves waiting for admission
    nodes_by_state: dict[str, int]
    operations_by_step: dict[str, int]
    config: dict[str, int]  # suspect_after_ms, dead_after_ms, copy_timeout_ms, retries_max
    silent_after_ms: int | None  # the leader-side option of `cp.fleet`


@dataclass(frozen=True, slots=True)
class Observations:
    """`raft`: `RaftEngine.observations()`; `fleet`: this replica's fleet; empty and None
    when the node is stopped."""

    raft: dict[str, Any]
    fleet: FleetObservations | None


def _fleet(cp: ControlPlane, rows_max: int) -> FleetObservations:
    with cp._sm_lock:
        sm = cp._sm
        f = sm.fleet
        by_state: dict[str, int] = {}
        for n in f.nodes.values():
            by_state[n.state] = by_state.get(n.state, 0) + 1
        by_step: dict[str, int] = {}
        for op in f.ops.values():
            by_step[op.step] = by_step.get(op.step, 0) + 1
        cfg = f.config
        return FleetObservations(
            tick_ms=sm.tick_ms,
            nodes=[f.node_view(n) for n in sorted(f.nodes)[:rows_max]],
            under_replicated=[f.partition_view(p) for p in sorted(f.under)[:rows_max]],
            operations=[f.ops[o].view() for o in sorted(f.ops)[:rows_max]],
            splits=sorted(f.splits)[:rows_max],
            split_views=[f.partition_view(p) for p in sorted(f.splits)[: min(100, rows_max)]],
            partitions_total=len(f.parts),
            under_total=len(f.under),
            splits_total=len(f.splits),
            queue=len(f.queue),
            nodes_by_state=dict(sorted(by_state.items())),
            operations_by_step=dict(sorted(by_step.items())),
            config={
                "suspect_after_ms": cfg.suspect_after_ms,
                "dead_after_ms": cfg.dead_after_ms,
                "copy_timeout_ms": cfg.copy_timeout_ms,
                "retries_max": cfg.retries_max,
            },
            silent_after_ms=cp.fleet.silent_after_ms,
        )


def observe(cp: ControlPlane, rows_max: int) -> Observations:
    """A stopped node (not started, stopping, or failed) has no raft observations and no
    fleet to show; its `status()` says why."""
    if cp.status().role == "stopped" or cp._engine is None:
        return Observations(raft={}, fleet=None)
    try:
        raft = cp._engine.observations()
    except Exception:  # noqa: BLE001 - a racing shutdown: the status says what is known
        raft = {}
    return Observations(raft=raft, fleet=_fleet(cp, rows_max))

"""Blast radius: how much of the fleet a change touches, and when a human must say yes.

Pure (no I/O), so the rule is unit-tested on its own. A change *touches* the nodes it names
plus every node its planned moves copy to or from, and the partitions those moves carry. It
needs the cluster's name typed back (or ``--confirm-cluster NAME``) when

- it touches more than `nodes_pct` percent of the fleet's nodes (default 30) or more than
  `partitions_pct` percent of its partitions (default 30); or
- the cluster is marked production (KV key ``coreplane/cluster/production`` = ``true``) and
  the command is destructive (every mutating command but `uncordon`).

Both limits come from the config file's ``blast-radius:`` map (``nodes-pct``,
``partitions-pct``) or the ``--max-nodes-pct`` / ``--max-partitions-pct`` flags.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["NODES_PCT", "PARTITIONS_PCT", "Radius", "radius"]

NODES_PCT = 30
PARTITIONS_PCT = 30


@dataclass(frozen=True)
class Radius:
    nodes: tuple[str, ...]
    partitions: tuple[str, ...]
    nodes_total: int
    partitions_total: int
    reasons: tuple[str, ...]  # why confirmation is needed; empty: it is not
    provision: int = 0  # nodes the change has the provider add (not among nodes_total yet)

    @property
    def needs_confirmation(self) -> bool:
        return bool(self.reasons)

    def sentence(self) -> str:
        new = (
            f" (plus {self.provision} new node{'s' if self.provision > 1 else ''} to provision)"
            if self.provision
            else ""
        )
        return (
            f"affects {len(self.nodes)} of {self.nodes_total} nodes{new} and "
            f"{len(self.partitions)} of {self.partitions_total} partitions"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "nodes": list(self.nodes),
            "partitions": list(self.partitions),
            "nodes_total": self.nodes_total,
            "partitions_total": self.partitions_total,
            "needs_confirmation": self.needs_confirmation,
            "reasons": list(self.reasons),
            "provision": self.provision,
        }


def _over(count: int, total: int, pct: int) -> bool:
    return total > 0 and count * 100 > pct * total


def radius(
    *,
    named_nodes: Iterable[str] = (),
    named_partitions: Iterable[str] = (),
    moves: Iterable[dict[str, object]] = (),
    nodes_total: int,
    partitions_total: int,
    destructive: bool,
    production: bool,
    nodes_pct: int = NODES_PCT,
    partitions_pct: int = PARTITIONS_PCT,
    provision: int = 0,
) -> Radius:
    nodes = set(named_nodes)
    parts = set(named_partitions)
    for move in moves:
        for field in ("source", "target"):
            value = move.get(field)
            if isinstance(value, str) and value:
                nodes.add(value)
        pid = move.get("partition")
        if isinstance(pid, str) and pid:
            parts.add(pid)
    reasons = []
    if _over(len(nodes), nodes_total, nodes_pct):
        reasons.append(f"touches {len(nodes)} of {nodes_total} nodes (over {nodes_pct}%)")
    if _over(len(parts), partitions_total, partitions_pct):
        reasons.append(
            f"touches {len(parts)} of {partitions_total} partitions (over {partitions_pct}%)"
        )
    if production and destructive:
        reasons.append("the cluster is marked production")
    return Radius(
        tuple(sorted(nodes)),
        tuple(sorted(parts)),
        nodes_total,
        partitions_total,
        tuple(reasons),
        provision,
    )

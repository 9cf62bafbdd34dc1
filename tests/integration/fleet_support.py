"""Storage agents on threads talking to in-process ControlPlanes, for the fleet's integration
tests (diagnose, the CLI's fleet cluster): the agent protocol as direct `cp.fleet` calls, and
the converged check."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["agent_endpoint", "converged"]


def agent_endpoint(cp: Any, *, size_bytes: int | None = None) -> Callable[..., Any]:
    """A `coreplane.testing.fleet.ThreadAgent` endpoint on `cp` (heartbeat, actions, ack).
    With `size_bytes`, each heartbeat reports that size for every partition the agent holds
    (its heat report names them), as a dry run's copy estimate reads it."""

    def call(op: str, **fields: Any) -> Any:
        if op == "heartbeat":
            node_id = fields.pop("node_id")
            if size_bytes is not None:
                fields["sizes"] = dict.fromkeys(fields.get("heat") or {}, size_bytes)
            return cp.fleet.heartbeat(node_id, **fields)
        if op == "actions":
            return [
                dataclasses.asdict(a) for a in cp.fleet.actions(fields["node_id"], stale_ok=True)
            ]
        if op == "ack":
            return cp.fleet.ack(
                fields["node_id"],
                fields["action_id"],
                fields["token"],
                fields["ok"],
                fields["detail"],
                timeout_s=2.0,
            )
        raise ValueError(op)

    return call


def converged(cp: Any, *, stale_ok: bool = True) -> bool:
    """Every partition healthy and no operation in flight, as `cp` reads them (its replica with
    `stale_ok`, else linearizably)."""
    parts = cp.fleet.partitions(stale_ok=stale_ok)
    return (
        bool(parts)
        and all(p["health"] == "healthy" for p in parts)
        and not cp.fleet.operations(stale_ok=stale_ok)
    )

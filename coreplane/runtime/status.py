"""Typed answers of `ControlPlane.status()` and `ControlPlane.stale_read_bound()`.

Frozen dataclasses rather than dicts, so a typo in a field name is a type error at the caller
and not a silent None, and `to_dict()` gives the plain JSON-ready form for APIs and logs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeStatus", "PeerStatus", "StaleReadBound"]


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """Another voter as this node sees it."""

    address: str
    connected: bool  # an authenticated connection is open


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node's view of itself and its cluster; fields are None where it does not know
    (a stopped node knows only its identity, its core state and why it stopped)."""

    node_id: str
    address: str
    role: str  # leader | follower | candidate | stopped | unknown
    core_applied_index: int  # the replicated state's applied index
    tick_n: int  # committed ticks
    tick_ms: int  # cluster time: the sum of the leaders' monotonic ticks, never a wall clock
    # the keys and values stored (`Limits.kv_bytes_max` refuses writes that would pass the cap)
    kv_bytes: int = 0
    kv_bytes_max: int = 0
    # what this node's apply decides by: ``{"limits": Limits, "fleet": FleetConfig}`` as plain
    # dicts; voters that differ can apply one entry differently (diagnose: apply_config_skew)
    apply_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None  # why the node stopped after a fatal error
    term: int | None = None
    commit_index: int | None = None
    applied_index: int | None = None  # the engine's; equals core_applied_index once applied
    leader: str | None = None
    has_quorum: bool | None = None
    log_len: int | None = None
    peers: dict[str, PeerStatus] = field(default_factory=dict)
    fencing_token: int | None = None  # set only on the established leader holding its lease
    lease_remaining_ms: int | None = None  # None on a one-voter cluster (it never lapses)
    raft: dict[str, int] = field(default_factory=dict)  # engine counters
    storage_full: bool = False  # the journal cannot write: writes refused until space returns

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class StaleReadBound:
    """How far behind a ``stale_ok=True`` read on this node may be.

    Writes committed since this node last heard a leader are unknown here, so
    `ms_since_leader_heard` is the real bound; `entries_behind_min` counts only the entries it
    knows are committed but has not applied yet."""

    applied_index: int
    known_commit_index: int
    entries_behind_min: int
    ms_since_leader_heard: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

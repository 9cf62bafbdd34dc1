"""What coreplane.obs knows about a node: one `LocalSample`, read at the moment it is asked for.

Every health answer, every finding of `diagnose` and every metric is computed from samples, so
the checks themselves are pure functions over plain data (tests build samples by hand). A
sample is read from one ControlPlane without proposing anything and without a quorum: stale,
local reads only (`stale_ok=True`), because diagnose must work on a broken cluster.

`Observer` is the per-ControlPlane reader: it takes samples and remembers the previous one, so
rates over a window (cluster time against the monotonic clock, flushes since the last look)
need no background thread. Its `wall_clock_s` is the only place obs reads the wall clock; a
test may hand it a skewed one (the same seam as `Seams.clock` for the runtime).

What obs reads of the runtime beyond `status()` and `members()` comes from the public, typed
`ControlPlane.observations()` (the Raft engine's observations and the fleet machine's own
views of this replica), in one place: `_observations` below; and the leader's newest placement
solve from the public `cp.fleet.solve_status()`, in `_solve_status`.

Imports coreplane.runtime and below only; nothing below imports obs.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coreplane.runtime.controlplane import ControlPlane

__all__ = ["ClusterInputs", "LocalSample", "Observer", "gather_inprocess", "package_version"]

_FLEET_ROWS_MAX = 10_000  # a sample carries at most this many nodes / partitions / operations


def package_version() -> str:
    """This process's coreplane version (what `version_skew` compares between voters); read
    from the loaded package root, which obs may not import (layers point down)."""
    return str(getattr(sys.modules.get("coreplane"), "__version__", "unknown"))


@dataclass(frozen=True, slots=True)
class LocalSample:
    """One node's own view, plain data: `status` is `NodeStatus.to_dict()`, `raft` is
    `RaftEngine.observations()` ({} on a stopped node), `fleet` the fleet views read from
    this replica (None before the fleet exists), `api` what the API hooks counted, `solve`
    the newest placement solve this node ran as leader (`cp.fleet.solve_status()`: base
    `index`, `tick_ms`, `feasible`, `reason`, `left_out`; None before its first). `solve` is
    leader soft state, so unlike `fleet` it travels in the samples handed to other nodes: the
    observer reads it from the leader's."""

    node_id: str
    address: str
    version: str
    wall_ms: int  # this node's wall clock (never used for decisions; clock-drift checks only)
    mono_s: float  # the sampling process's monotonic clock (rates between two samples)
    status: dict[str, Any]
    members: dict[str, str]
    raft: dict[str, Any] = field(default_factory=dict)
    fleet: dict[str, Any] | None = None
    api: dict[str, Any] = field(default_factory=dict)
    solve: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocalSample:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)
class ClockSample:
    """A peer's wall clock against the observer's: ``offset_ms`` = peer - local, measured
    within ``error_ms`` (half the round trip of the exchange; 0 in-process)."""

    offset_ms: int
    error_ms: int


@dataclass(frozen=True, slots=True)
class ClusterInputs:
    """Everything `diagnose` and the health hierarchy look at.

    `observer` is the node answering; `samples` holds a sample per voter it asked (None: no
    answer); a voter it did not ask (no API address known) is judged by the observer's own Raft
    connection to it. `previous` is the observer's sample from an earlier look, for rates;
    `clocks` each answering peer's clock offset against the observer."""

    observer: str
    samples: dict[str, LocalSample | None]
    previous: LocalSample | None = None
    clocks: dict[str, ClockSample] = field(default_factory=dict)

    @property
    def local(self) -> LocalSample | None:
        return self.samples.get(self.observer)

    @property
    def leader_sample(self) -> LocalSample | None:
        """The sample of a node that says it leads (the newest term wins)."""
        best: LocalSample | None = None
        for nid in sorted(self.samples):
            s = self.samples[nid]
            if s is None or s.status.get("role") != "leader":
                continue
            if best is None or (s.status.get("term") or 0) > (best.status.get("term") or 0):
                best = s
        return best

    def to_dict(self) -> dict[str, Any]:
        return {
            "observer": self.observer,
            "samples": {
                k: None if v is None else v.to_dict() for k, v in sorted(self.samples.items())
            },
            "previous": None if self.previous is None else self.previous.to_dict(),
            "clocks": {k: dataclasses.asdict(v) for k, v in sorted(self.clocks.items())},
        }


def _observations(cp: ControlPlane, *, fleet: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(raft observations, the fleet as this replica has it) through the public
    `ControlPlane.observations()`; a host's stand-in without it has neither."""
    observe = getattr(cp, "observations", None)
    if observe is None:
        return {}, None
    try:
        got = observe(rows_max=_FLEET_ROWS_MAX if fleet else 0)
    except Exception:  # noqa: BLE001 - a racing shutdown: report what status says
        return {}, None
    f = got.fleet
    if not fleet or f is None:
        return got.raft, None
    return got.raft, {
        "tick_ms": f.tick_ms,
        "nodes": f.nodes,
        "under_replicated": f.under_replicated,
        "operations": f.operations,
        "splits": f.splits,
        "split_views": f.split_views,
        "partitions_total": f.partitions_total,
        "queue": f.queue,
        "config": f.config,
        "silent_after_ms": f.silent_after_ms,
    }


def _solve_status(cp: ControlPlane) -> dict[str, Any] | None:
    """The public `cp.fleet.solve_status()`; None on a host's stand-in without a fleet."""
    status = getattr(getattr(cp, "fleet", None), "solve_status", None)
    if status is None:
        return None
    try:
        got = status()
    except Exception:  # noqa: BLE001 - a racing shutdown: report what status says
        return None
    return dict(got) if got is not None else None


class Observer:
    """Samples one ControlPlane; keeps the previous sample for rates. Thread-safe.

    `api_stats` (optional) returns what the API hooks counted (`coreplane.obs.metrics`)."""

    def __init__(
        self,
        cp: ControlPlane,
        *,
        wall_clock_s: Callable[[], float] = time.time,
        api_stats: Callable[[], dict[str, Any]] | None = None,
        version: str | None = None,
    ) -> None:
        self.cp = cp
        self.version = version or package_version()
        self.wall_clock_s = wall_clock_s
        self.api_stats = api_stats
        self._lock = threading.Lock()
        self._previous: LocalSample | None = None
        self._last: LocalSample | None = None

    def sample(self, *, remember: bool = True, fleet: bool = True) -> LocalSample:
        """A fresh sample of this node; with `remember`, it becomes the newest look (and the
        one before it the previous, for rates). Samples handed to other nodes are not
        remembered, so they never shorten this node's own window, and carry no fleet
        (``fleet=False``): the fleet is replicated, the asking node reads its own replica."""
        cp = self.cp
        st: Any = cp.status()  # a NodeStatus (a host's stand-in may hand out a plain dict)
        status = st.to_dict() if hasattr(st, "to_dict") else dict(st)
        raft, fleet_views = _observations(cp, fleet=fleet)
        api = self.api_stats() if self.api_stats is not None else {}
        sample = LocalSample(
            node_id=cp.node_id,
            address=cp.address,
            version=self.version,
            wall_ms=int(self.wall_clock_s() * 1000),
            mono_s=time.monotonic(),
            status=status,
            members=cp.members(),
            raft=raft,
            fleet=fleet_views,
            api=api,
            solve=_solve_status(cp),
        )
        if remember:
            with self._lock:
                self._previous, self._last = self._last, sample
        return sample

    def previous(self, *, min_age_s: float = 0.5, max_age_s: float = 120.0) -> LocalSample | None:
        """The sample before the newest, if its age suits a rate (else None)."""
        with self._lock:
            prev, last = self._previous, self._last
        if prev is None or last is None:
            return None
        age = last.mono_s - prev.mono_s
        return prev if min_age_s <= age <= max_age_s else None

    def inputs(
        self,
        peers: Mapping[str, LocalSample | None] | None = None,
        *,
        clocks: Mapping[str, ClockSample] | None = None,
        window_s: float = 0.0,
    ) -> ClusterInputs:
        """Sample this node (twice, `window_s` apart, if no earlier sample suits a rate) and
        combine with the peers' samples (None: unreachable)."""
        if window_s > 0 and self.previous() is None:
            self.sample()
            time.sleep(window_s)
        local = self.sample()
        samples: dict[str, LocalSample | None] = dict(peers or {})
        samples[local.node_id] = local
        return ClusterInputs(
            observer=local.node_id,
            samples=samples,
            previous=self.previous(min_age_s=min(0.5, window_s or 0.5)),
            clocks=dict(clocks or {}),
        )


def gather_inprocess(
    observer: Observer, others: Mapping[str, Observer | None], *, window_s: float = 0.0
) -> ClusterInputs:
    """Inputs for a cluster whose nodes run in this process (tests, a single-host demo):
    each reachable peer is sampled directly; clock offsets are exact (error 0), measured
    against `observer`'s wall clock at the same instant."""
    peers: dict[str, LocalSample | None] = {}
    clocks: dict[str, ClockSample] = {}
    for nid in sorted(others):
        other = others[nid]
        if other is None:
            peers[nid] = None
            continue
        try:
            s = other.sample()
        except Exception:  # noqa: BLE001 - an unreachable peer is a finding, not an error
            peers[nid] = None
            continue
        if s.status.get("role") == "stopped":
            peers[nid] = None
            continue
        peers[nid] = s
        local_ms = int(observer.wall_clock_s() * 1000)
        clocks[nid] = ClockSample(offset_ms=s.wall_ms - local_ms, error_ms=0)
    return observer.inputs(peers, clocks=clocks, window_s=window_s)

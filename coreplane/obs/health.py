"""The health hierarchy as data: `what` -> `where` -> `why/<kind>/<id>`; pure.

- **what** (``/health``): healthy or not, in one line, and how many findings of each severity;
- **where** (``/health/where``): the places affected (voter, zone, node, partition, operation,
  peer, client, cluster), worst first, each with the checks that name it;
- **why** (``/health/why/<kind>/<id>``): the findings about that place in full (what, why,
  fix) and the internal state that explains them (a voter's role, term, match index, ack age,
  journal map use and flush latency; a node's liveness and since when; an operation's step,
  attempt and deadline; ...), with links to related places.

Every answer carries `links`: the next level down and the level up, as paths of the HTTP API.
The functions take `ClusterInputs` and the findings of `diagnose` over them, so one look at
the cluster answers all three levels consistently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coreplane.errors import InvalidArgument
from coreplane.obs.diagnose import CRITICAL, Finding, Place, quantile_s
from coreplane.obs.sample import ClusterInputs

__all__ = ["KINDS", "HealthWhat", "HealthWhere", "HealthWhy", "PlaceHealth", "what", "where", "why"]

KINDS = ("cluster", "voter", "zone", "node", "partition", "operation", "peer", "client")
_KIND_ORDER = {k: i for i, k in enumerate(KINDS)}


@dataclass(frozen=True, slots=True)
class HealthWhat:
    healthy: bool
    summary: str  # one line
    critical: int
    warning: int
    observer: str
    links: tuple[str, ...] = ("/health/where",)

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "summary": self.summary,
            "critical": self.critical,
            "warning": self.warning,
            "observer": self.observer,
            "links": list(self.links),
        }


@dataclass(frozen=True, slots=True)
class PlaceHealth:
    kind: str
    id: str
    severity: str
    checks: tuple[str, ...]
    what: tuple[str, ...]

    @property
    def link(self) -> str:
        return Place(self.kind, self.id).path

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "severity": self.severity,
            "checks": list(self.checks),
            "what": list(self.what),
            "link": self.link,
        }


@dataclass(frozen=True, slots=True)
class HealthWhere:
    healthy: bool
    places: tuple[PlaceHealth, ...]
    links: tuple[str, ...]

    def by_kind(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for p in self.places:
            out.setdefault(p.kind, []).append(p.id)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "places": [p.to_dict() for p in self.places],
            "by_kind": self.by_kind(),
            "links": list(self.links),
        }


@dataclass(frozen=True, slots=True)
class HealthWhy:
    kind: str
    id: str
    healthy: bool
    findings: tuple[Finding, ...]
    state: dict[str, Any]
    links: tuple[str, ...]
    up: str = "/health/where"
    related: tuple[str, ...] = field(default_factory=tuple)

    @property
    def thing(self) -> str:
        return f"{self.kind}/{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "thing": self.thing,
            "kind": self.kind,
            "id": self.id,
            "healthy": self.healthy,
            "findings": [f.to_dict() for f in self.findings],
            "state": self.state,
            "up": self.up,
            "related": list(self.related),
            "links": list(self.links),
        }


def what(inputs: ClusterInputs, findings: list[Finding]) -> HealthWhat:
    crit = sum(1 for f in findings if f.severity == CRITICAL)
    warn = len(findings) - crit
    if not findings:
        local = inputs.local
        leader = inputs.leader_sample
        voters = sum(1 for s in inputs.samples.values() if s is not None)
        summary = (
            f"healthy: leader {leader.node_id if leader else '?'}, term "
            f"{leader.status.get('term') if leader else '?'}, {voters}/"
            f"{len(inputs.samples)} voters, commit index "
            f"{local.status.get('commit_index') if local else '?'}"
        )
    else:
        worst = findings[0]
        summary = f"unhealthy: {worst.what}" + (
            f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
        )
    return HealthWhat(
        healthy=not findings, summary=summary, critical=crit, warning=warn, observer=inputs.observer
    )


def _places(findings: list[Finding]) -> dict[Place, list[Finding]]:
    out: dict[Place, list[Finding]] = {}
    for f in findings:
        for p in f.where:
            out.setdefault(p, []).append(f)
    return out


def where(inputs: ClusterInputs, findings: list[Finding]) -> HealthWhere:
    rows = []
    for place, fs in _places(findings).items():
        sev = CRITICAL if any(f.severity == CRITICAL for f in fs) else "warning"
        rows.append(
            PlaceHealth(
                place.kind,
                place.id,
                sev,
                tuple(sorted({f.check for f in fs})),
                tuple(f.what for f in fs),
            )
        )
    rows.sort(key=lambda r: (r.severity != CRITICAL, _KIND_ORDER.get(r.kind, 99), r.id))
    return HealthWhere(
        healthy=not findings, places=tuple(rows), links=("/health", *(r.link for r in rows))
    )


def parse_thing(thing: str) -> Place:
    """``"voter/b"`` -> Place("voter", "b"); InvalidArgument("thing") otherwise."""
    kind, _, ident = thing.strip("/").partition("/")
    if kind not in KINDS or not ident or len(ident) > 256:
        raise InvalidArgument("thing", f"must be KIND/ID with KIND one of {', '.join(KINDS)}")
    return Place(kind, ident)


def why(inputs: ClusterInputs, findings: list[Finding], thing: str) -> HealthWhy:
    """The findings about `thing` (``kind/id``) and the state that explains them."""
    place = parse_thing(thing)
    mine = tuple(f for f in findings if place in f.where)
    state = _state(inputs, place)
    if state is None and not mine:
        raise InvalidArgument("thing", f"no {place.kind} {place.id!r} is known here")
    related = sorted({p.path for f in mine for p in f.where if p != place})
    return HealthWhy(
        kind=place.kind,
        id=place.id,
        healthy=not mine,
        findings=mine,
        state=state or {},
        links=("/health/where", "/health", *related),
        related=tuple(related),
    )


# ---------------------------------------------------------------------------- state per kind


def _state(inputs: ClusterInputs, place: Place) -> dict[str, Any] | None:
    kind, ident = place.kind, place.id
    if kind == "voter":
        return _voter_state(inputs, ident)
    if kind == "cluster":
        return _cluster_state(inputs)
    fleet: dict[str, Any] | None = None
    for s in (inputs.leader_sample, inputs.local):
        if s is not None and s.fleet is not None:
            fleet = s.fleet
            break
    if kind in ("node", "zone", "partition", "operation"):
        return None if fleet is None else _fleet_state(fleet, kind, ident)
    if kind in ("peer", "client"):
        key = "auth_failures" if kind == "peer" else "unauthorized_by_remote"
        seen = {}
        for nid, s in sorted(inputs.samples.items()):
            if s is None:
                continue
            bag = s.raft.get(key) if kind == "peer" else s.api.get(key)
            if bag and ident in bag:
                seen[nid] = bag[ident]
        return {kind: ident, "failures_by_voter": seen} if seen else None
    return None


def _fleet_state(fleet: dict[str, Any], kind: str, ident: str) -> dict[str, Any] | None:
    if kind == "node":
        return next(({"node": n} for n in fleet["nodes"] if n["id"] == ident), None)
    if kind == "zone":
        nodes = [n for n in fleet["nodes"] if str(n["zone"]) == ident]
        if not nodes:
            return None
        states: dict[str, int] = {}
        for n in nodes:
            states[n["state"]] = states.get(n["state"], 0) + 1
        return {"zone": ident, "nodes": [n["id"] for n in nodes], "by_state": states}
    if kind == "partition":
        rows = [*fleet["under_replicated"], *(fleet.get("split_views") or [])]
        return next(({"partition": p} for p in rows if p["id"] == ident), None)
    return next(({"operation": o} for o in fleet["operations"] if o["id"] == ident), None)


def _latency(hist: dict[str, Any] | None) -> dict[str, Any] | None:
    if not hist:
        return None
    count = hist.get("count", 0)
    return {
        "count": count,
        "p50_s_le": quantile_s(hist, 0.5),
        "p99_s_le": quantile_s(hist, 0.99),
        "max_s": hist.get("max_s"),
        "mean_s": (hist.get("sum_s", 0.0) / count) if count else None,
    }


def _voter_state(inputs: ClusterInputs, nid: str) -> dict[str, Any] | None:
    local = inputs.local
    if nid not in inputs.samples and (local is None or nid not in local.members):
        return None
    s = inputs.samples.get(nid)
    out: dict[str, Any] = {
        "voter": nid,
        "reachable": s is not None,
        "address": local.members.get(nid) if local is not None else None,
    }
    if local is not None and nid != local.node_id:
        peer = (local.status.get("peers") or {}).get(nid) or {}
        out["raft_connected_from_observer"] = peer.get("connected")
    leader = inputs.leader_sample
    if leader is not None and nid != leader.node_id:
        out["ack_age_s"] = (leader.raft.get("ack_age_s") or {}).get(nid)
        match = (leader.raft.get("match_index") or {}).get(nid)
        out["match_index"] = match
        commit = leader.status.get("commit_index")
        out["lag_entries"] = None if match is None or commit is None else commit - match
    clock = inputs.clocks.get(nid)
    if clock is not None:
        out["clock_offset_ms"], out["clock_error_ms"] = clock.offset_ms, clock.error_ms
    if s is not None:
        st = s.status
        out.update(
            {
                k: st.get(k)
                for k in (
                    "role",
                    "term",
                    "leader",
                    "commit_index",
                    "applied_index",
                    "has_quorum",
                    "storage_full",
                    "tick_n",
                    "tick_ms",
                    "error",
                )
            }
        )
        out["version"] = s.version
        out["journal"] = s.raft.get("journal")
        out["flush_latency"] = _latency(s.raft.get("flush_latency"))
        out["commit_latency"] = _latency(s.raft.get("commit_latency"))
        out["terms_seen"] = s.raft.get("terms")
        out["auth_failures"] = s.raft.get("auth_failures")
    return out


def _cluster_state(inputs: ClusterInputs) -> dict[str, Any]:
    leader = inputs.leader_sample
    return {
        "observer": inputs.observer,
        "leader": None if leader is None else leader.node_id,
        "term": None if leader is None else leader.status.get("term"),
        "voters": {
            n: (None if s is None else s.status.get("role"))
            for n, s in sorted(inputs.samples.items())
        },
        "tick_n": None if leader is None else leader.status.get("tick_n"),
        "tick_ms": None if leader is None else leader.status.get("tick_ms"),
        # the replicated KV against its byte quota (Limits.kv_bytes_max)
        "kv_bytes": None if leader is None else leader.status.get("kv_bytes"),
        "kv_bytes_max": None if leader is None else leader.status.get("kv_bytes_max"),
        "terms_seen": None if leader is None else leader.raft.get("terms"),
        "leader_changes_seen": None if leader is None else leader.raft.get("leader_changes"),
        # the leader's newest placement solve (`cp.fleet.solve_status()`): feasible or why not
        "placement_solve": None if leader is None else leader.solve,
    }

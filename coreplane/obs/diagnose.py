"""`diagnose`: the usual suspects, checked in one pass over `ClusterInputs`; pure.

Each check is a function ``(inputs, thresholds) -> list[Finding]`` and reads plain data only,
so tests build inputs by hand and the fault-injection suite checks the same functions on real
clusters. A `Finding` says what is wrong (one sentence), where (`Place`s: voter, zone, node,
partition, operation, peer, client, cluster), why (the internal state that explains it, with
its numbers in `evidence`) and the fix: `fix` is the exact command to run (CLI words such as
``coreplane members remove b``; an OS command where coreplane has none), `note` says when and
how. A healthy cluster gives no finding at all.

Thresholds are defaults an operator may change (`Thresholds`); their reasons are next to them.

Must not import coreplane.api or anything above obs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coreplane.core.machines.kv import RECORD_OVERHEAD_BYTES
from coreplane.obs.sample import ClusterInputs, LocalSample

__all__ = ["CHECKS", "Finding", "Place", "Thresholds", "diagnose"]

CRITICAL, WARNING = "critical", "warning"
_SEVERITY_ORDER = {CRITICAL: 0, WARNING: 1}


@dataclass(frozen=True, slots=True, order=True)
class Place:
    """Where: `kind` is voter | zone | node | partition | operation | peer | client | cluster."""

    kind: str
    id: str

    @property
    def path(self) -> str:
        """The `why` level for this place."""
        return f"/health/why/{self.kind}/{self.id}"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id, "link": self.path}


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    severity: str  # critical | warning
    what: str
    where: tuple[Place, ...]
    why: str
    fix: str  # the exact command
    note: str = ""  # when to run it, what to do first
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "what": self.what,
            "where": [p.to_dict() for p in self.where],
            "why": self.why,
            "fix": self.fix,
            "note": self.note,
            "evidence": dict(self.evidence),
            "links": [p.path for p in self.where],
        }


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a measurement becomes a finding (defaults suit the default Raft timing)."""

    # A majority acked this much later than the heartbeat period (50 ms) means a cut-off
    # voter: the leader's check-quorum lease is ~274 ms, an election timeout 300..700 ms.
    ack_age_s_max: float = 1.0
    lag_entries_max: int = 10_000  # a follower this far behind needs a snapshot to catch up
    # more new terms than this in the window, after the first leader: elections churn (etcd's
    # stock alert fires at 4 leader changes in 15 min; a start on a loaded host may take 3)
    term_changes_max: int = 3
    term_window_s: float = 60.0
    map_use_pct_warn: int = 80  # LMDB map use against map_size_max_bytes
    map_use_pct_crit: int = 95
    # stored keys and values against Limits.kv_bytes_max: at the cap writes that grow the
    # state are refused (`space_exceeded`), so warn while there is room to delete first
    kv_use_pct_warn: int = 80
    kv_use_pct_crit: int = 95
    disk_free_bytes_min: int = 1 << 30  # 1 GiB free on the data dir's filesystem
    # 1 % of journal flushes (write + fsync) slower than this: heartbeats (50 ms) and votes
    # wait for the flush, so elections follow; etcd's own guidance is p99 < 10 ms.
    fsync_p99_s_max: float = 0.1
    fsync_count_min: int = 20  # flushes needed in the window before judging
    clock_skew_ms_max: int = 500  # |offset| minus the measurement's error bound
    tick_lag_pct_max: int = 50  # cluster time advanced less than half the leader's clock
    tick_window_s_min: float = 0.5
    ops_attempts_max: int = 1  # an operation retried this often (or past its deadline) is stuck
    # While the fleet needs a plan the leader solves again on every change and, unchanged, at
    # least every 60 s (FleetConfig.solve_backoff_max_ms; the runtime's own back-off caps at
    # 30 s); an infeasible solve older than this in cluster time was not followed by another
    # because nothing needed placing since: it is history. Keep it above twice that back-off.
    solve_age_ms_max: int = 120_000

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _voter(nid: str) -> Place:
    return Place("voter", nid)


def _members(inputs: ClusterInputs) -> list[str]:
    local = inputs.local
    ids = set(inputs.samples)
    if local is not None:
        ids |= set(local.members)
    return sorted(ids)


def _connected(local: LocalSample | None, nid: str) -> bool | None:
    if local is None:
        return None
    peer = (local.status.get("peers") or {}).get(nid)
    return None if peer is None else bool(peer.get("connected"))


# ---------------------------------------------------------------------------- raft checks


def check_quorum(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """Voters down or unreachable, a lost quorum, no leader."""
    out: list[Finding] = []
    members = _members(inputs)
    local = inputs.local
    # a voter not asked (no API address known) counts as up while the observer's Raft
    # connection to it is
    down = [
        n
        for n in members
        if (inputs.samples.get(n) is None if n in inputs.samples else _connected(local, n) is False)
    ]
    reachable = [n for n in members if n not in down]
    majority = len(members) // 2 + 1
    for nid in down:
        connected = _connected(local, nid)
        addr = local.members.get(nid, "?") if local is not None else "?"
        out.append(
            Finding(
                "quorum",
                CRITICAL if len(reachable) < majority else WARNING,
                f"voter {nid} is down or unreachable",
                (_voter(nid),),
                (
                    f"{inputs.observer} got no sample from {nid} ({addr}) and its Raft connection "
                    f"to it is {'up' if connected else 'down'}"
                    if nid in inputs.samples
                    else f"{inputs.observer}'s Raft connection to {nid} ({addr}) is down"
                )
                + f"; {len(reachable)} of {len(members)} voters "
                f"answer, a quorum needs {majority}",
                f"coreplane members remove {nid}",
                f"first restart {nid}'s process on its host (its data dir is intact: it catches up "
                f"by itself); remove it only if it is gone for good, then add a replacement with "
                f"coreplane members add NEW_ID HOST:PORT",
                {
                    "reachable": len(reachable),
                    "voters": len(members),
                    "quorum": majority,
                    "raft_connected": connected,
                },
            )
        )
    for nid in reachable:
        if inputs.samples.get(nid) is None:
            continue  # not asked: nothing more to say
        if nid != inputs.observer and _connected(local, nid) is False:
            out.append(
                Finding(
                    "quorum",
                    WARNING,
                    f"voter {nid} answers but has no Raft connection to {inputs.observer}",
                    (_voter(nid),),
                    f"{nid}'s process runs (its sample came back) but the authenticated peer "
                    f"connection {inputs.observer} -> {nid} is down: a network partition on the "
                    "Raft port, a firewall, or a secret mismatch (see auth_failures)",
                    f"coreplane health why voter {nid}",
                    f"check the network path to {local.members.get(nid, '?') if local else '?'}",
                    {"raft_connected": False},
                )
            )
    known = any(s is not None and s.status.get("leader") for s in inputs.samples.values())
    if inputs.leader_sample is None and not known and reachable:
        roles = {
            n: s.status.get("role") for n, s in sorted(inputs.samples.items()) if s is not None
        }
        out.append(
            Finding(
                "quorum",
                CRITICAL,
                "the cluster has no leader: writes and linearizable reads stop",
                (Place("cluster", "leader"),),
                f"roles: {', '.join(f'{n}={r}' for n, r in sorted(roles.items()))}; "
                f"{len(reachable)} of {len(members)} voters answer, a quorum needs {majority}",
                f"coreplane members remove {down[0]}" if down else "coreplane status",
                "restart the voters that are down first; with a quorum back a leader is elected "
                "within an election timeout"
                if down
                else "look at leader_stability findings",
                {"roles": roles, "quorum": majority},
            )
        )
    return out


def _term_changes(sample: LocalSample, window_s: float) -> list[tuple[float, int]]:
    """New terms in the window after this node first knew a leader (the elections of a start
    are not churn; neither is the term found at start)."""
    terms = [(float(a), int(t)) for a, t in sample.raft.get("terms") or []]
    first = sample.raft.get("first_leader_age_s")
    if first is None:
        return []
    return [(a, t) for a, t in terms[1:] if a <= window_s and a < float(first)]


def check_leader_stability(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """Term churn: more new terms in the window than a failover or two explain."""
    out: list[Finding] = []
    for nid in sorted(inputs.samples):
        s = inputs.samples[nid]
        if s is None:
            continue
        changes = _term_changes(s, th.term_window_s)
        if len(changes) > th.term_changes_max:
            out.append(
                Finding(
                    "leader_stability",
                    WARNING,
                    f"{len(changes)} elections in {th.term_window_s:.0f} s seen by {nid}",
                    (Place("cluster", "leader"), _voter(nid)),
                    f"{nid} saw terms {', '.join(str(t) for _, t in changes)} in the last "
                    f"{th.term_window_s:.0f} s (over {th.term_changes_max}); leader changes seen: "
                    f"{s.raft.get('leader_changes', 0)}. Churn comes from voters missing "
                    "heartbeats: "
                    "a starved CPU, a slow disk (see fsync_latency), a flapping network",
                    "coreplane diagnose",
                    "fix the slow voter the other findings name; if none, raise "
                    "election_timeout_ms",
                    {"terms": [t for _, t in changes], "window_s": th.term_window_s},
                )
            )
            break  # one voter's view is enough: the churn is cluster-wide
    return out


def check_replication(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """On the leader: followers connected but silent (cut off), or far behind."""
    out: list[Finding] = []
    leader = inputs.leader_sample
    if leader is None:
        return out
    commit = int(leader.status.get("commit_index") or 0)
    ages = leader.raft.get("ack_age_s") or {}
    match = leader.raft.get("match_index") or {}
    for nid in sorted(ages):
        age = ages[nid]
        lag = max(0, commit - int(match.get(nid, 0)))
        connected = _connected(leader, nid)
        if connected is False:
            continue  # check_quorum names unconnected voters
        stale = age is None or age > th.ack_age_s_max
        if stale or lag > th.lag_entries_max:
            age_text = "never this leadership" if age is None else f"{age:.1f} s ago"
            out.append(
                Finding(
                    "replication_lag",
                    CRITICAL if stale else WARNING,
                    f"voter {nid} is cut off from leader {leader.node_id}"
                    if stale
                    else f"voter {nid} lags {lag} entries behind",
                    (_voter(nid),),
                    f"leader {leader.node_id} (term {leader.status.get('term')}) has its "
                    "connection "
                    f"to {nid} up, but {nid} last acknowledged a heartbeat {age_text} (over "
                    f"{th.ack_age_s_max} s) and matches index {match.get(nid, 0)} of {commit} "
                    f"committed ({lag} behind): messages are lost between them",
                    f"coreplane members remove {nid}",
                    f"first check the network between {leader.node_id} and {nid} (a half-open "
                    "link, "
                    "a firewall dropping packets); remove it only if it stays cut off",
                    {
                        "ack_age_s": age,
                        "match_index": match.get(nid, 0),
                        "commit_index": commit,
                        "lag_entries": lag,
                    },
                )
            )
    return out


def _pct(numer: int, denom: int) -> int:
    return 0 if denom <= 0 else (100 * numer) // denom


def check_storage(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """Journal full, LMDB map nearly full, little disk left, the KV near its byte quota."""
    out: list[Finding] = _kv_quota(inputs, th)
    for nid in sorted(inputs.samples):
        s = inputs.samples[nid]
        if s is None:
            continue
        j = s.raft.get("journal") or {}
        if s.status.get("storage_full"):
            out.append(
                Finding(
                    "storage",
                    CRITICAL,
                    f"voter {nid}'s journal is full: it refuses writes",
                    (_voter(nid),),
                    f"the last journal flush on {nid} failed with StorageFull (disk or LMDB map at "
                    f"its cap: map {j.get('map_size_bytes', '?')} of "
                    f"{j.get('map_size_max_bytes', '?')} bytes, {j.get('disk_free_bytes', '?')} "
                    "bytes free on disk); writes resume by themselves once space returns",
                    "df -h DATA_DIR",
                    f"free disk space on {nid}'s data dir, or restart it with a larger "
                    "map_size_max_bytes",
                    {"journal": j},
                )
            )
            continue
        if not j:
            continue
        used = (int(j["last_page"]) + 1) * int(j.get("page_bytes", 4096))
        cap = int(j.get("map_size_max_bytes", 0))
        pct = _pct(used, cap)
        if pct >= th.map_use_pct_warn:
            out.append(
                Finding(
                    "storage",
                    CRITICAL if pct >= th.map_use_pct_crit else WARNING,
                    f"voter {nid}'s LMDB map is {pct}% full",
                    (_voter(nid),),
                    f"{nid}'s journal uses {used} bytes ({int(j['last_page']) + 1} pages of "
                    f"{j.get('page_bytes')}) of its {cap}-byte cap (map_size_max_bytes), "
                    f"{j.get('entries')} log entries since index {j.get('first_index')}; at the "
                    "cap writes stop with StorageFull",
                    f"restart voter {nid} with a larger map_size_max_bytes",
                    "or compact sooner (log_compaction_min_entries) so old entries are dropped",
                    {"used_bytes": used, "cap_bytes": cap, "use_pct": pct},
                )
            )
        free = int(j.get("disk_free_bytes", -1))
        if 0 <= free < th.disk_free_bytes_min:
            out.append(
                Finding(
                    "storage",
                    WARNING,
                    f"voter {nid}'s disk has {free >> 20} MiB free",
                    (_voter(nid),),
                    f"the filesystem of {nid}'s data dir has {free} bytes free (under "
                    f"{th.disk_free_bytes_min}); the journal grows its map by doubling",
                    "df -h DATA_DIR",
                    f"free space on {nid}'s data dir filesystem",
                    {"disk_free_bytes": free},
                )
            )
    return out


def _hist_delta(now: Mapping[str, Any], before: Mapping[str, Any] | None) -> dict[str, Any]:
    if (
        before is None
        or len(before.get("counts", ())) != len(now["counts"])
        or sum(before["counts"]) > sum(now["counts"])
    ):
        return dict(now)
    counts = [a - b for a, b in zip(now["counts"], before["counts"], strict=True)]
    return {**now, "counts": counts, "count": sum(counts), "sum_s": now["sum_s"] - before["sum_s"]}


def quantile_s(hist: Mapping[str, Any], q: float) -> float | None:
    """The upper bound of the bucket holding quantile `q` (None: empty; inf: past the last)."""
    total = sum(hist["counts"])
    if total == 0:
        return None
    seen = 0
    for bound, count in zip([*hist["bounds_s"], float("inf")], hist["counts"], strict=True):
        seen += count
        if seen >= q * total:
            return float(bound)
    return float("inf")


def _kv_quota(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """The replicated KV near `Limits.kv_bytes_max`: one cluster-wide finding, read from the
    sample that has applied the most (every replica reaches the same count at an index)."""
    newest: LocalSample | None = None
    for s in inputs.samples.values():
        if s is not None and int(s.status.get("kv_bytes_max") or 0) > 0:
            applied = int(s.status.get("core_applied_index") or 0)
            if newest is None or applied > int(newest.status.get("core_applied_index") or 0):
                newest = s
    if newest is None:
        return []
    used, cap = int(newest.status.get("kv_bytes") or 0), int(newest.status["kv_bytes_max"])
    pct = _pct(used, cap)
    if pct < th.kv_use_pct_warn:
        return []
    return [
        Finding(
            "storage",
            CRITICAL if pct >= th.kv_use_pct_crit else WARNING,
            f"the stored keys and values are {pct}% of limits.kv_bytes_max",
            (Place("cluster", "kv"),),
            f"the KV holds {used} bytes (keys, values and {RECORD_OVERHEAD_BYTES} bytes a key) "
            f"of its {cap}-byte quota (limits.kv_bytes_max) at applied index "
            f"{newest.status.get('core_applied_index')}; at the quota every write that would "
            "grow it is refused with space_exceeded (deletes and shrinking writes still apply)",
            "coreplane kv del KEY",
            "delete keys that are no longer needed (or attach them to leases); the quota keeps "
            "the whole state under the snapshot cap, so raise limits.kv_bytes_max on every "
            "voter only while it is below its maximum",
            {"kv_bytes": used, "kv_bytes_max": cap, "use_pct": pct},
        )
    ]


def check_fsync(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """Slow journal flushes (write + fsync), since the previous look where there was one."""
    out: list[Finding] = []
    prev = inputs.previous
    for nid in sorted(inputs.samples):
        s = inputs.samples[nid]
        if s is None or not s.raft.get("flush_latency"):
            continue
        before = (
            prev.raft.get("flush_latency") if prev is not None and prev.node_id == nid else None
        )
        hist = _hist_delta(s.raft["flush_latency"], before)
        p99 = quantile_s(hist, 0.99)
        if hist["count"] < th.fsync_count_min or p99 is None or p99 <= th.fsync_p99_s_max:
            continue
        mean_ms = 1000 * hist["sum_s"] / hist["count"]
        slow = sum(
            c
            for b, c in zip([*hist["bounds_s"], float("inf")], hist["counts"], strict=True)
            if b > th.fsync_p99_s_max
        )
        out.append(
            Finding(
                "fsync_latency",
                WARNING,
                f"voter {nid}'s disk is slow: journal flush p99 > "
                f"{int(th.fsync_p99_s_max * 1000)} ms",
                (_voter(nid),),
                f"{slow} of {hist['count']} journal flushes (LMDB write + fsync) on {nid} took "
                f"over {int(th.fsync_p99_s_max * 1000)} ms (mean {mean_ms:.1f} ms, max "
                f"{1000 * hist['max_s']:.0f} ms); votes and acks wait for the flush, so a slow "
                "disk "
                "delays commits and causes elections",
                f"coreplane members remove {nid}",
                f"move {nid}'s data dir to a faster disk (or find what else writes to it): add a "
                "replacement voter on good storage with coreplane members add NEW_ID HOST:PORT, "
                f"then remove {nid}",
                {"p99_s": p99, "mean_ms": round(mean_ms, 3), "slow": slow, "count": hist["count"]},
            )
        )
    return out


def check_clock(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """Wall clocks of voters apart by more than the threshold (beyond the measurement error).

    Cluster time never reads a wall clock (ticks carry the leader's monotonic time), so skew
    breaks no lease; it breaks what humans and other systems read: logs, certificates, TTLs
    shown as dates."""
    out: list[Finding] = []
    for nid in sorted(inputs.clocks):
        c = inputs.clocks[nid]
        if abs(c.offset_ms) - c.error_ms > th.clock_skew_ms_max:
            ahead = "ahead of" if c.offset_ms > 0 else "behind"
            out.append(
                Finding(
                    "clock_drift",
                    WARNING,
                    f"voter {nid}'s clock is {abs(c.offset_ms)} ms {ahead} {inputs.observer}'s",
                    (_voter(nid),),
                    f"{nid}'s wall clock read {c.offset_ms:+d} ms against {inputs.observer}'s, "
                    f"measured within +-{c.error_ms} ms (half the exchange's round trip); over "
                    f"{th.clock_skew_ms_max} ms. Leases and ticks are unaffected (they use the "
                    "leader's monotonic clock); logs, certificates and dates shown to operators "
                    "are not",
                    "chronyc makestep",
                    f"on {nid}'s host (as root); then check its time service: chronyc tracking",
                    {"offset_ms": c.offset_ms, "error_ms": c.error_ms},
                )
            )
    return out


def check_tick_lag(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """Cluster time (committed ticks) against the leader's monotonic clock over a window."""
    prev, now = inputs.previous, inputs.local
    if prev is None or now is None or prev.node_id != now.node_id:
        return []
    if (
        now.status.get("role") != "leader"
        or prev.status.get("role") != "leader"
        or now.status.get("term") != prev.status.get("term")
    ):
        return []
    window_ms = int((now.mono_s - prev.mono_s) * 1000)
    if window_ms < th.tick_window_s_min * 1000:
        return []
    advanced = int(now.status.get("tick_ms", 0)) - int(prev.status.get("tick_ms", 0))
    ticks = int(now.status.get("tick_n", 0)) - int(prev.status.get("tick_n", 0))
    if 100 * advanced >= (100 - th.tick_lag_pct_max) * window_ms:
        return []
    return [
        Finding(
            "tick_lag",
            CRITICAL if ticks == 0 else WARNING,
            f"cluster time on leader {now.node_id} runs slow: {advanced} ms in {window_ms} ms",
            (Place("cluster", "ticks"), _voter(now.node_id)),
            f"{ticks} ticks committed while the leader's monotonic clock advanced {window_ms} ms; "
            f"cluster time advanced {advanced} ms ({_pct(advanced, window_ms)}%). Leases, "
            "heartbeat timeouts and operation deadlines all count cluster time, so they stretch: "
            "the leader's runtime thread is starved (CPU, GIL, a blocking host callback) or its "
            "tick proposals do not commit",
            f"restart voter {now.node_id}'s process",
            "coreplane has no command to move leadership yet: a restart hands it to a caught-up "
            "voter (transfer_leadership on a planned stop); then look at that host's CPU",
            {"window_ms": window_ms, "advanced_ms": advanced, "ticks": ticks},
        )
    ]


def check_auth(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """Peers failing the wire's authentication (a wrong secret), clients with a wrong token."""
    out: list[Finding] = []
    local = inputs.local
    prev = inputs.previous
    members = local.members if local is not None else {}
    for nid in sorted(inputs.samples):
        s = inputs.samples[nid]
        if s is None:
            continue
        before = (
            prev.raft.get("auth_failures", {}) if prev is not None and prev.node_id == nid else {}
        )
        for who, count in sorted((s.raft.get("auth_failures") or {}).items()):
            grew = count - int(before.get(who, 0))
            if grew <= 0 and before:
                continue
            suspects = sorted(
                m
                for m, addr in members.items()
                if m != nid
                and (m == who or addr.rpartition(":")[0] == who)
                and _connected(s, m) is not True
            )
            places = tuple(_voter(m) for m in suspects) or (Place("peer", who),)
            out.append(
                Finding(
                    "auth_failures",
                    CRITICAL if suspects else WARNING,
                    f"{who} fails authentication at voter {nid}"
                    + (f" (voter {', '.join(suspects)} is not connected)" if suspects else ""),
                    places,
                    f"{count} connections from {who} to {nid} failed the wire's HMAC handshake "
                    f"({grew if before else count} since the previous look): the peer runs with "
                    "another cluster secret"
                    + (
                        f"; voter {', '.join(suspects)} at that address has no connection"
                        if suspects
                        else ", or something that is no member dials the Raft port"
                    ),
                    f"coreplane members remove {suspects[0]}"
                    if suspects
                    else f"coreplane health why peer {who}",
                    "restart that voter with the cluster's secret (the one the others use); remove "
                    "it only if it should not be a member"
                    if suspects
                    else f"find the process on {who} dialing the Raft port and stop it or give it "
                    "the "
                    "secret",
                    {"failures": count, "peer": who, "at": nid},
                )
            )
    for nid in sorted(inputs.samples):
        s = inputs.samples[nid]
        if s is None:
            continue
        for remote, count in sorted((s.api.get("unauthorized_by_remote") or {}).items()):
            out.append(
                Finding(
                    "token_mismatch",
                    WARNING,
                    f"client {remote} sends a wrong API token to {nid}",
                    (Place("client", remote),),
                    f"{count} requests from {remote} to {nid}'s API were refused with 401 (no or "
                    "unknown bearer token): a client or agent configured with an old or wrong "
                    "token",
                    "coreplane config set-context --token NEW_TOKEN",
                    f"on the client at {remote}; mint the token in the API server's token table",
                    {"unauthorized": count, "remote": remote, "at": nid},
                )
            )
    return out


def check_versions(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """Voters running different coreplane versions."""
    versions = {n: s.version for n, s in sorted(inputs.samples.items()) if s is not None}
    if len(set(versions.values())) <= 1:
        return []
    counts: dict[str, int] = {}
    for v in versions.values():
        counts[v] = counts.get(v, 0) + 1
    newest = max(
        counts, key=lambda v: (tuple(int(x) if x.isdigit() else 0 for x in v.split(".")), v)
    )
    behind = sorted(n for n, v in versions.items() if v != newest)
    return [
        Finding(
            "version_skew",
            WARNING,
            f"voters run {len(counts)} coreplane versions",
            tuple(_voter(n) for n in behind),
            f"versions: {', '.join(f'{n}={v}' for n, v in versions.items())}; a rolling upgrade "
            "left unfinished (mixed versions are supported only during an upgrade)",
            f"pip install coreplane=={newest}",
            f"on {', '.join(behind)}, one voter at a time, restarting each after the other "
            "voters are connected",
            {"versions": versions},
        )
    ]


def check_apply_config(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """Voters whose `Limits` or `FleetConfig` differ from the leader's (or, with no leader,
    from most voters'): apply decides by them, so such a replica can refuse an entry the others
    applied, or the reverse, and its state diverges at the same index without a word."""
    configs = {
        n: s.status.get("apply_config")
        for n, s in sorted(inputs.samples.items())
        if s is not None and s.status.get("apply_config")
    }
    if len(configs) < 2:
        return []
    leader = inputs.leader_sample
    if leader is not None and leader.node_id in configs:
        reference, ref_name = configs[leader.node_id], f"the leader ({leader.node_id})"
    else:
        keys = [repr(sorted(_flat(c).items())) for c in configs.values()]
        most = max(set(keys), key=lambda k: (keys.count(k), k))
        reference = next(c for c, k in zip(configs.values(), keys, strict=True) if k == most)
        ref_name = "most voters"
    want = _flat(reference)
    out: list[Finding] = []
    for nid, config in configs.items():
        have = _flat(config)
        differ = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
        if not differ:
            continue
        shown = ", ".join(f"{k}={have.get(k)!r} (not {want.get(k)!r})" for k in differ[:6])
        out.append(
            Finding(
                "apply_config_skew",
                CRITICAL,
                f"voter {nid} applies with other settings than {ref_name}: {', '.join(differ[:6])}",
                (_voter(nid),),
                f"{nid} has {shown}; apply refuses by these bounds and times, so {nid} can "
                "refuse an entry the others applied (or apply one they refused) and hold "
                "another state at the same index",
                f"restart voter {nid} with the same Limits and FleetConfig as {ref_name}",
                "every voter must be built with equal limits= and fleet_config=; change them "
                "on all voters, one at a time, only while no write is near a bound that differs",
                {"differ": differ, "have": {k: have.get(k) for k in differ}},
            )
        )
    return out


def _flat(config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"limits": {...}, "fleet": {...}}`` as ``{"limits.key_bytes_max": ..., ...}``."""
    return {
        f"{part}.{name}": value
        for part, fields in sorted(config.items())
        if isinstance(fields, Mapping)
        for name, value in sorted(fields.items())
    }


# ---------------------------------------------------------------------------- fleet checks


def _fleet(inputs: ClusterInputs) -> dict[str, Any] | None:
    leader = inputs.leader_sample
    for s in (leader, inputs.local):
        if s is not None and s.fleet is not None:
            return s.fleet
    return None


def _node_zone(fleet: Mapping[str, Any], node_id: str) -> str | None:
    for n in fleet["nodes"]:
        if n["id"] == node_id:
            return str(n["zone"])
    return None


def check_agents(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """Fleet nodes whose agent stopped heartbeating (silent, suspect, dead)."""
    fleet = _fleet(inputs)
    if fleet is None:
        return []
    out: list[Finding] = []
    now = int(fleet["tick_ms"])
    cfg = fleet.get("config", {})
    for n in fleet["nodes"]:
        if n["admin"] == "decommissioned":
            continue
        silent = n.get("silent_since_ms")
        if silent is None and n["liveness"] == "alive":
            continue
        dead = n["liveness"] == "dead"
        last = silent if silent is not None else n["liveness_since_ms"]
        out.append(
            Finding(
                "silent_agent",
                CRITICAL if dead else WARNING,
                f"node {n['id']}'s agent is silent ({n['liveness']})",
                (Place("node", n["id"]), Place("zone", str(n["zone"]))),
                f"the leader last heard {n['id']} at tick time {last} ms, {now - last} ms ago "
                f"(cluster time {now} ms); liveness {n['liveness']} since "
                f"{n['liveness_since_ms']} ms (suspect after {cfg.get('suspect_after_ms')} ms, "
                f"dead after {cfg.get('dead_after_ms')} ms); it holds {n['replicas']} replicas "
                f"and {len(n.get('operations') or [])} operations",
                f"coreplane decommission {n['id']}",
                f"restart the agent on {n['id']} first; decommission it if the machine is gone "
                "(its replicas are re-created elsewhere once it is dead)",
                {
                    "silent_since_ms": silent,
                    "tick_ms": now,
                    "liveness": n["liveness"],
                    "replicas": n["replicas"],
                },
            )
        )
    return out


def check_partitions(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """Under-replicated partitions, and why they are not being repaired."""
    fleet = _fleet(inputs)
    if fleet is None:
        return []
    out: list[Finding] = []
    nodes = {n["id"]: n for n in fleet["nodes"]}
    eligible_zones = sorted(
        {
            str(n["zone"])
            for n in nodes.values()
            if n["liveness"] == "alive" and n["admin"] == "active"
        }
    )
    cordoned = sorted(
        nid for nid, n in nodes.items() if n["admin"] == "cordoned" and n["liveness"] == "alive"
    )
    solve, _age_ms = _failed_solve(inputs, th)
    left_out = {str(pid) for pid in solve.get("left_out") or []}
    solve_reason = str(solve.get("reason") or "no reason given")
    for p in fleet["under_replicated"]:
        op = p.get("operation")
        gone = [
            r
            for r in p["replicas"]
            if r not in nodes or nodes[r]["state"] in ("dead", "decommissioned")
        ]
        if op is not None:
            fix, note = f"coreplane ops show {op['id']}", "a repair is in flight; watch it"
            repair = f"operation {op['id']} ({op['step']} on {op['node']}) is repairing it"
        elif len(eligible_zones) < p["rf"] and cordoned:
            fix = f"coreplane uncordon {cordoned[0]}"
            note = "or add a node in another zone"
            repair = (
                f"no repair can start: {len(eligible_zones)} zones have nodes that may "
                f"take a replica ({', '.join(eligible_zones)}), rf is {p['rf']}, and "
                f"{', '.join(cordoned)} is cordoned"
            )
        elif len(eligible_zones) < p["rf"]:
            fix = f"coreplane partitions show {p['id']}"
            note = "add nodes in another zone (the provider is asked when one is configured)"
            repair = (
                f"no repair can start: only {len(eligible_zones)} zones have eligible "
                f"nodes for rf {p['rf']}"
            )
        elif p["id"] in left_out:
            fix = "coreplane health why cluster/placement"
            note = "see the placement finding: add nodes, uncordon one, or lower the rf"
            repair = f"the leader's newest placement solve left it out: {solve_reason}"
        else:
            fix, note = f"coreplane partitions show {p['id']}", "the next plan should repair it"
            repair = "no operation yet: waiting for the leader's next plan"
        places = [Place("partition", p["id"])] + [Place("node", r) for r in gone]
        if op is not None:
            places.append(Place("operation", op["id"]))
        out.append(
            Finding(
                "under_replicated",
                CRITICAL if p["health"] == "unavailable" else WARNING,
                f"partition {p['id']} has {p['live_replicas']} of {p['rf']} live replicas",
                tuple(places),
                f"replicas {', '.join(p['replicas']) or '(none)'}"
                + (f"; lost with {', '.join(gone)}" if gone else "")
                + f"; {repair}",
                fix,
                note,
                {
                    "rf": p["rf"],
                    "live": p["live_replicas"],
                    "replicas": p["replicas"],
                    "eligible_zones": eligible_zones,
                },
            )
        )
    return out


def check_operations(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """Operations retried, past their deadline, or waiting on a node that is not alive."""
    fleet = _fleet(inputs)
    if fleet is None:
        return []
    out: list[Finding] = []
    nodes = {n["id"]: n for n in fleet["nodes"]}
    now = int(fleet["tick_ms"])
    retries_max = fleet.get("config", {}).get("retries_max")
    for op in fleet["operations"]:
        node = nodes.get(op["node"])
        node_state = node["state"] if node is not None else "unknown"
        late = now > int(op["deadline_ms"])
        if (
            op["attempt"] < th.ops_attempts_max
            and not late
            and node_state in ("alive", "cordoned", "draining")
        ):
            continue
        out.append(
            Finding(
                "stuck_operation",
                WARNING,
                f"operation {op['id']} on partition {op['partition']} is stuck in step "
                f"{op['step']}",
                (
                    Place("operation", op["id"]),
                    Place("partition", op["partition"]),
                    Place("node", op["node"]),
                ),
                f"step {op['step']} ({op['kind']}) waits for node {op['node']} ({node_state}), "
                f"attempt {op['attempt']} of {retries_max}, deadline at tick time "
                f"{op['deadline_ms']} ms ({'passed' if late else 'in'} "
                f"{abs(int(op['deadline_ms']) - now)} ms{' ago' if late else ''}), action "
                f"{op['action_id']} fenced by token {op['token']}; cause: {op['cause']}",
                f"coreplane ops cancel {op['id']}"
                if node_state in ("dead", "suspect", "unknown")
                else f"coreplane ops resume {op['id']}",
                f"its node {op['node']} is {node_state}: cancel rolls the move back"
                if node_state in ("dead", "suspect", "unknown")
                else f"check the agent on {op['node']} (its log for action {op['action_id']})",
                {
                    "attempt": op["attempt"],
                    "deadline_ms": op["deadline_ms"],
                    "tick_ms": now,
                    "node_state": node_state,
                    "step": op["step"],
                },
            )
        )
    return out


def check_splits(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """Partitions the solver flagged as too hot for one node.

    Every replica carries its partition's full heat, so more replicas (a scale-up) never clear
    the flag: the advice is to split the partition (coreplane only flags it; the host splits)
    or to give the nodes more capacity (their weight)."""
    fleet = _fleet(inputs)
    if fleet is None:
        return []
    out = []
    views = {p["id"]: p for p in fleet.get("split_views") or []}
    for pid in fleet["splits"]:
        view = views.get(pid, {})
        heat = view.get("heat")
        out.append(
            Finding(
                "split_candidate",
                WARNING,
                f"partition {pid} is too hot for its nodes",
                (Place("partition", pid),),
                f"the placement solver flagged {pid}: its heat"
                f"{'' if heat is None else f' ({heat} milli-units)'} alone exceeds the heat cap "
                "of every node that may hold it, so no move balances it; each replica carries "
                "the partition's full heat, so adding replicas (--scale-up) cannot clear it",
                f"split {pid} in the host (cp.fleet.on_split_candidate is called with it), or "
                "raise its nodes' capacity (the agents' weight)",
                "coreplane does not split partitions: the host owns the key space; the flag "
                "clears once the parts, or the raised caps, fit",
                {"rf": view.get("rf"), "heat": heat},
            )
        )
    return out


_LEFT_OUT_PLACES_MAX = 20  # partitions named as places by one placement finding


def _failed_solve(inputs: ClusterInputs, th: Thresholds) -> tuple[dict[str, Any], int | None]:
    """The leader's newest placement solve if it failed and is recent, with its age in cluster
    time (None if unknown); ({}, None) otherwise."""
    leader = inputs.leader_sample
    solve = None if leader is None else leader.solve
    if not solve or solve.get("feasible", True):
        return {}, None
    now = leader.status.get("tick_ms") if leader is not None else None
    age_ms = None if now is None else int(now) - int(solve.get("tick_ms") or 0)
    if age_ms is not None and age_ms > th.solve_age_ms_max:
        return {}, None
    return solve, age_ms


def check_placement(inputs: ClusterInputs, th: Thresholds) -> list[Finding]:
    """The leader's newest placement solve was infeasible, or placed the rest only by leaving
    partitions out: the solver's reason is the why (leader soft state, from its sample)."""
    solve, age_ms = _failed_solve(inputs, th)
    if not solve:
        return []
    leader = inputs.leader_sample
    solved_ms = int(solve.get("tick_ms") or 0)
    left_out = [str(p) for p in solve.get("left_out") or []]
    reason = str(solve.get("reason") or "no reason given")
    places = (
        Place("cluster", "placement"),
        *(Place("partition", p) for p in left_out[:_LEFT_OUT_PLACES_MAX]),
    )
    named = ", ".join(left_out[:_LEFT_OUT_PLACES_MAX]) + (
        f" and {len(left_out) - _LEFT_OUT_PLACES_MAX} more"
        if len(left_out) > _LEFT_OUT_PLACES_MAX
        else ""
    )
    what = (
        f"the leader's placement solve left out {len(left_out)} "
        f"partition{'s' if len(left_out) != 1 else ''} ({named})"
        if left_out
        else "the leader's placement solve is infeasible: no plan was made"
    )
    leader_id = leader.node_id if leader is not None else "?"
    return [
        Finding(
            "placement",
            WARNING,
            what,
            places,
            f"leader {leader_id} solved the fleet as of log index {solve.get('index')} at tick "
            f"time {solved_ms} ms"
            + ("" if age_ms is None else f" ({age_ms} ms ago)")
            + f"; the solver says: {reason}",
            f"coreplane partitions show {left_out[0]}" if left_out else "coreplane explain plan",
            "add nodes where the reason says room is short (another zone when it counts zones; "
            "the provider is asked when one is configured), uncordon a node, or lower the rf "
            "with coreplane update partition ID --scale-down --new-num-nodes N; the leader "
            "solves again on every fleet change",
            {
                "index": solve.get("index"),
                "tick_ms": solved_ms,
                "age_ms": age_ms,
                "reason": reason,
                "left_out": left_out,
            },
        )
    ]


Check = Callable[[ClusterInputs, Thresholds], list[Finding]]
CHECKS: dict[str, Check] = {
    "quorum": check_quorum,
    "leader_stability": check_leader_stability,
    "replication_lag": check_replication,
    "storage": check_storage,
    "fsync_latency": check_fsync,
    "clock_drift": check_clock,
    "tick_lag": check_tick_lag,
    "auth": check_auth,
    "version_skew": check_versions,
    "apply_config_skew": check_apply_config,
    "silent_agent": check_agents,
    "under_replicated": check_partitions,
    "stuck_operation": check_operations,
    "split_candidate": check_splits,
    "placement": check_placement,
}


def diagnose(inputs: ClusterInputs, thresholds: Thresholds | None = None) -> list[Finding]:
    """Every check over `inputs`, critical first; [] on a healthy cluster."""
    th = thresholds or Thresholds()
    findings: list[Finding] = []
    for name in CHECKS:
        findings.extend(CHECKS[name](inputs, th))
    findings.sort(key=lambda f: (_SEVERITY_ORDER.get(f.severity, 9), f.check, f.where))
    return findings

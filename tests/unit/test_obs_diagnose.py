"""`diagnose` and the health hierarchy over hand-built samples: each check fires on its fault,
names the place, explains it and gives the fix command; a healthy cluster gives nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coreplane.errors import InvalidArgument
from coreplane.obs import (
    ClockSample,
    ClusterInputs,
    LocalSample,
    Place,
    Thresholds,
    diagnose,
    what,
    where,
    why,
)
from coreplane.obs.diagnose import quantile_s

MEMBERS = {"a": "10.0.0.1:7000", "b": "10.0.0.2:7000", "c": "10.0.0.3:7000"}
BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]


def hist(fast: int = 100, slow: int = 0) -> dict[str, Any]:
    counts = [0] * (len(BOUNDS) + 1)
    counts[2] = fast  # <= 2.5 ms
    counts[9] = slow  # <= 500 ms
    return {
        "bounds_s": BOUNDS,
        "counts": counts,
        "count": fast + slow,
        "sum_s": fast * 0.002 + slow * 0.4,
        "max_s": 0.4 if slow else 0.002,
    }


def journal(last_page: int = 100, cap: int = 8 << 30, free: int = 50 << 30) -> dict[str, Any]:
    return {
        "first_index": 1,
        "entries": 500,
        "cached_entries": 500,
        "map_size_bytes": 64 << 20,
        "last_page": last_page,
        "snapshot_gen": 0,
        "page_bytes": 4096,
        "map_size_max_bytes": cap,
        "disk_free_bytes": free,
    }


def sample(
    nid: str,
    *,
    role: str = "follower",
    term: int = 3,
    commit: int = 500,
    tick_ms: int = 10_000,
    tick_n: int = 50,
    mono_s: float = 100.0,
    connected: dict[str, bool] | None = None,
    **extra: Any,
) -> LocalSample:
    peers = {
        p: {"address": MEMBERS[p], "connected": (connected or {}).get(p, True)}
        for p in MEMBERS
        if p != nid
    }
    status = {
        "node_id": nid,
        "address": MEMBERS[nid],
        "role": role,
        "term": term,
        "commit_index": commit,
        "applied_index": commit,
        "leader": None if role == "candidate" else "a",
        "has_quorum": True,
        "peers": peers,
        "tick_ms": tick_ms,
        "tick_n": tick_n,
        "storage_full": extra.pop("storage_full", False),
        "raft": {},
        **extra.pop("status", {}),
    }
    raft = {
        "journal": journal(),
        "flush_latency": hist(),
        "commit_latency": hist(),
        "terms": [[50.0, 2], [40.0, 3]],
        "leader_changes": 1,
        "wire": {},
        "auth_failures": {},
        "ack_age_s": {},
        "match_index": {},
    }
    if role == "leader":
        raft["ack_age_s"] = {p: 0.05 for p in peers}
        raft["match_index"] = dict.fromkeys(peers, commit)
    raft.update(extra.pop("raft", {}))
    return LocalSample(
        node_id=nid,
        address=MEMBERS[nid],
        version=extra.pop("version", "0.1.0"),
        wall_ms=1_000_000,
        mono_s=mono_s,
        status=status,
        members=dict(MEMBERS),
        raft=raft,
        fleet=extra.pop("fleet", None),
        api=extra.pop("api", {}),
        solve=extra.pop("solve", None),
    )


def cluster(**over: LocalSample | None) -> ClusterInputs:
    samples: dict[str, LocalSample | None] = {
        "a": sample("a", role="leader"),
        "b": sample("b"),
        "c": sample("c"),
    }
    samples.update(over)
    return ClusterInputs(
        observer="a", samples=samples, clocks={"b": ClockSample(3, 1), "c": ClockSample(-2, 1)}
    )


def only(findings: list[Any], check: str) -> Any:
    hits = [f for f in findings if f.check == check]
    assert len(hits) == 1, [f.to_dict() for f in findings]
    return hits[0]


def test_a_healthy_cluster_has_no_findings_and_says_so_in_one_line() -> None:
    inputs = cluster()
    assert diagnose(inputs) == []
    answer = what(inputs, [])
    assert answer.healthy and answer.summary.startswith("healthy: leader a, term 3, 3/3 voters")
    assert where(inputs, []).places == ()


def test_a_down_voter_is_found_placed_and_fixed() -> None:
    a = sample("a", role="leader", connected={"c": False})
    f = only(diagnose(cluster(a=a, c=None)), "quorum")
    assert f.where == (Place("voter", "c"),)
    assert f.severity == "warning"  # two of three still form a quorum
    assert "2 of 3 voters answer, a quorum needs 2" in f.why
    assert f.fix == "coreplane members remove c" and "restart" in f.note


def test_two_down_voters_are_critical_and_a_missing_leader_is_reported() -> None:
    a = sample("a", role="candidate", connected={"b": False, "c": False})
    findings = diagnose(cluster(a=a, b=None, c=None))
    assert {f.where[0] for f in findings if f.check == "quorum"} == {
        Place("voter", "b"),
        Place("voter", "c"),
        Place("cluster", "leader"),
    }
    assert all(f.severity == "critical" for f in findings if f.check == "quorum")


def test_a_connected_but_silent_voter_is_cut_off() -> None:
    a = sample(
        "a",
        role="leader",
        commit=900,
        raft={"ack_age_s": {"b": 4.2, "c": 0.05}, "match_index": {"b": 600, "c": 900}},
    )
    f = only(diagnose(cluster(a=a)), "replication_lag")
    assert f.where == (Place("voter", "b"),)
    assert "last acknowledged a heartbeat 4.2 s ago" in f.why and "(300 behind)" in f.why
    assert f.fix == "coreplane members remove b" and f.evidence["lag_entries"] == 300


def test_a_far_behind_voter_is_a_warning() -> None:
    a = sample(
        "a",
        role="leader",
        commit=50_000,
        raft={"ack_age_s": {"b": 0.05, "c": 0.05}, "match_index": {"b": 100, "c": 50_000}},
    )
    f = only(diagnose(cluster(a=a)), "replication_lag")
    assert f.severity == "warning" and f.what == "voter b lags 49900 entries behind"


def test_term_churn_is_leader_instability() -> None:
    terms = [[55.0, 3], [30.0, 4], [20.0, 5], [10.0, 6], [2.0, 7]]
    b = sample("b", raft={"terms": terms, "first_leader_age_s": 56.0})
    f = only(diagnose(cluster(b=b)), "leader_stability")
    assert Place("cluster", "leader") in f.where and "terms 4, 5, 6, 7" in f.why
    # the same elections before b first knew a leader are a start, not churn
    start = sample("b", raft={"terms": terms, "first_leader_age_s": 1.0})
    assert diagnose(cluster(b=start)) == []


def test_lmdb_map_nearly_full_and_storage_full() -> None:
    cap = 1 << 20  # 256 pages
    c = sample("c", raft={"journal": journal(last_page=230, cap=cap)})
    f = only(diagnose(cluster(c=c)), "storage")
    assert f.where == (Place("voter", "c"),) and f.what == "voter c's LMDB map is 90% full"
    assert "map_size_max_bytes" in f.fix
    b = sample("b", storage_full=True)
    g = only(diagnose(cluster(b=b)), "storage")
    assert g.severity == "critical" and "StorageFull" in g.why


def test_the_kv_near_its_byte_quota_is_one_cluster_finding() -> None:
    """Read from the sample that applied the most: every replica counts the same bytes at
    the same index, so the freshest one speaks for the cluster."""
    cap = 1_000_000
    quota = {"kv_bytes_max": cap, "core_applied_index": 500}
    b = sample("b", status={**quota, "kv_bytes": 850_000})
    c = sample("c", status={**quota, "kv_bytes": 960_000, "core_applied_index": 510})
    f = only(diagnose(cluster(b=b, c=c)), "storage")
    assert f.severity == "critical" and f.where == (Place("cluster", "kv"),)
    assert f.what == "the stored keys and values are 96% of limits.kv_bytes_max"
    assert "space_exceeded" in f.why and f.fix == "coreplane kv del KEY"
    assert f.evidence == {"kv_bytes": 960_000, "kv_bytes_max": cap, "use_pct": 96}
    g = only(diagnose(cluster(b=b)), "storage")
    assert g.severity == "warning" and g.evidence["use_pct"] == 85
    low = sample("b", status={**quota, "kv_bytes": 790_000})
    assert [x for x in diagnose(cluster(b=low)) if x.check == "storage"] == []


def _config(**limits: int) -> dict[str, Any]:
    return {"limits": {"keys_max": 100, "kv_bytes_max": 1_000, **limits}, "fleet": {"x": 1}}


def test_a_voter_with_other_limits_than_the_leader_is_named_with_the_fields() -> None:
    a = sample("a", role="leader", status={"apply_config": _config()})
    b = sample("b", status={"apply_config": _config(kv_bytes_max=2_000)})
    c = sample("c", status={"apply_config": _config()})
    f = only(diagnose(cluster(a=a, b=b, c=c)), "apply_config_skew")
    assert f.severity == "critical" and f.where == (Place("voter", "b"),)
    assert f.what == "voter b applies with other settings than the leader (a): limits.kv_bytes_max"
    assert "limits.kv_bytes_max=2000 (not 1000)" in f.why
    assert f.evidence == {"differ": ["limits.kv_bytes_max"], "have": {"limits.kv_bytes_max": 2000}}
    same = sample("b", status={"apply_config": _config()})
    assert [x for x in diagnose(cluster(a=a, b=same, c=c)) if x.check == "apply_config_skew"] == []


def test_without_a_leader_the_odd_voter_out_is_the_one_named() -> None:
    a = sample("a", role="candidate", status={"apply_config": _config()})
    b = sample("b", role="candidate", status={"apply_config": _config(keys_max=5)})
    c = sample("c", role="candidate", status={"apply_config": _config()})
    f = only(diagnose(cluster(a=a, b=b, c=c)), "apply_config_skew")
    assert f.where == (Place("voter", "b"),) and "than most voters" in f.what


def test_low_disk_space() -> None:
    c = sample("c", raft={"journal": journal(free=100 << 20)})
    f = only(diagnose(cluster(c=c)), "storage")
    assert f.what == "voter c's disk has 100 MiB free"


def test_slow_fsync_counts_the_window_since_the_previous_look() -> None:
    slow_now = sample("a", role="leader", raft={"flush_latency": hist(fast=1000, slow=30)})
    f = only(diagnose(cluster(a=slow_now)), "fsync_latency")
    assert f.where == (Place("voter", "a"),) and "30 of 1030 journal flushes" in f.why
    # the same slow flushes, all before the previous look: nothing new in the window
    before = sample("a", role="leader", raft={"flush_latency": hist(fast=900, slow=30)})
    inputs = ClusterInputs(
        "a", {"a": slow_now, "b": sample("b"), "c": sample("c")}, previous=before
    )
    assert [x for x in diagnose(inputs) if x.check == "fsync_latency"] == []


def test_clock_skew_beyond_the_measurement_error() -> None:
    inputs = ClusterInputs(
        "a", cluster().samples, clocks={"b": ClockSample(2_400, 30), "c": ClockSample(520, 40)}
    )
    f = only(diagnose(inputs), "clock_drift")  # c: 520 - 40 is within 500 ms
    assert f.where == (Place("voter", "b"),) and f.fix == "chronyc makestep"
    assert "+2400 ms" in f.why and "+-30 ms" in f.why


def test_tick_lag_needs_the_same_leadership_over_the_window() -> None:
    before = sample("a", role="leader", tick_ms=10_000, tick_n=50, mono_s=100.0)
    now = sample("a", role="leader", tick_ms=10_300, tick_n=53, mono_s=102.0)
    inputs = ClusterInputs("a", {**cluster().samples, "a": now}, previous=before)
    f = only(diagnose(inputs), "tick_lag")
    assert f.severity == "warning" and "300 ms in 2000 ms" in f.what
    stopped = sample("a", role="leader", tick_ms=10_000, tick_n=50, mono_s=102.0)
    g = only(
        diagnose(ClusterInputs("a", {**cluster().samples, "a": stopped}, previous=before)),
        "tick_lag",
    )
    assert g.severity == "critical"
    new_term = sample("a", role="leader", term=4, tick_ms=10_000, tick_n=50, mono_s=102.0)
    assert not [
        x
        for x in diagnose(ClusterInputs("a", {**cluster().samples, "a": new_term}, previous=before))
        if x.check == "tick_lag"
    ]


def test_a_wrong_secret_is_pinned_on_the_unconnected_voter_at_that_host() -> None:
    a = sample("a", role="leader", connected={"c": False}, raft={"auth_failures": {"10.0.0.3": 12}})
    findings = diagnose(cluster(a=a))
    f = only(findings, "auth_failures")
    assert f.where == (Place("voter", "c"),) and f.severity == "critical"
    assert "12 connections from 10.0.0.3" in f.why and f.fix == "coreplane members remove c"
    stranger = sample("a", role="leader", raft={"auth_failures": {"10.9.9.9": 3}})
    g = only(diagnose(cluster(a=stranger)), "auth_failures")
    assert g.where == (Place("peer", "10.9.9.9"),)


def test_api_token_mismatch_names_the_client() -> None:
    b = sample("b", api={"unauthorized_by_remote": {"10.1.2.3": 7}})
    f = only(diagnose(cluster(b=b)), "token_mismatch")
    assert f.where == (Place("client", "10.1.2.3"),) and "7 requests" in f.why


def test_version_skew_names_the_voters_behind() -> None:
    f = only(diagnose(cluster(c=sample("c", version="0.0.9"))), "version_skew")
    assert f.where == (Place("voter", "c"),) and f.fix == "pip install coreplane==0.1.0"


def fleet(**over: Any) -> dict[str, Any]:
    def node(nid: str, zone: str, **kw: Any) -> dict[str, Any]:
        return {
            "id": nid,
            "state": "alive",
            "liveness": "alive",
            "liveness_since_ms": 0,
            "admin": "active",
            "admin_since_ms": 0,
            "zone": zone,
            "weight": 1,
            "slots": 100,
            "silent_since_ms": None,
            "replicas": 2,
            "heat": 10,
            "operations": [],
            **kw,
        }

    base = {
        "tick_ms": 60_000,
        "nodes": [node("n1", "z1"), node("n2", "z2"), node("n3", "z3")],
        "under_replicated": [],
        "operations": [],
        "splits": [],
        "split_views": [],
        "partitions_total": 2,
        "queue": 0,
        "config": {
            "suspect_after_ms": 5_000,
            "dead_after_ms": 30_000,
            "copy_timeout_ms": 60_000,
            "retries_max": 3,
        },
    }
    base.update(over)
    base["node"] = node
    return base


def with_fleet(f: dict[str, Any]) -> ClusterInputs:
    f = {k: v for k, v in f.items() if k != "node"}
    return cluster(a=sample("a", role="leader", fleet=f))


def test_a_healthy_fleet_has_no_findings() -> None:
    assert diagnose(with_fleet(fleet())) == []


def test_a_silent_agent() -> None:
    f0 = fleet()
    f0["nodes"][1].update(
        silent_since_ms=52_000, liveness="suspect", state="suspect", liveness_since_ms=57_000
    )
    f = only(diagnose(with_fleet(f0)), "silent_agent")
    assert f.where == (Place("node", "n2"), Place("zone", "z2"))
    assert "last heard n2 at tick time 52000 ms, 8000 ms ago" in f.why
    assert f.fix == "coreplane decommission n2" and f.severity == "warning"


def test_an_under_replicated_partition_blocked_by_a_cordon() -> None:
    f0 = fleet()
    f0["nodes"][2].update(admin="cordoned", state="cordoned")
    f0["nodes"][1].update(liveness="dead", state="dead")
    f0["under_replicated"] = [
        {
            "id": "p1",
            "rf": 3,
            "heat": 5,
            "replicas": ["n1", "n2", "n3"],
            "live_replicas": 2,
            "health": "under_replicated",
            "split_candidate": False,
            "operation": None,
        }
    ]
    findings = diagnose(with_fleet(f0))
    f = only(findings, "under_replicated")
    assert f.where == (Place("partition", "p1"), Place("node", "n2"))
    assert f.fix == "coreplane uncordon n3" and "n3 is cordoned" in f.why


def test_a_stuck_operation_with_its_step_and_deadline() -> None:
    f0 = fleet()
    f0["operations"] = [
        {
            "id": "op-7",
            "partition": "p1",
            "source": "n1",
            "target": "n3",
            "step": "copy",
            "node": "n3",
            "action_id": "op-7#812",
            "kind": "add_replica",
            "copy_from": "n1",
            "token": 812,
            "deadline_ms": 58_000,
            "attempt": 2,
            "created_index": 700,
            "cause": "rebalance",
        }
    ]
    f = only(diagnose(with_fleet(f0)), "stuck_operation")
    assert f.where[0] == Place("operation", "op-7")
    assert (
        "attempt 2 of 3" in f.why and "deadline at tick time 58000 ms (passed 2000 ms ago)" in f.why
    )
    assert f.fix == "coreplane ops resume op-7"


def test_a_split_candidate() -> None:
    f0 = fleet(splits=["hot"], split_views=[{"id": "hot", "rf": 3, "heat": 90_000}])
    f = only(diagnose(with_fleet(f0)), "split_candidate")
    # every replica carries the full heat: a scale-up cannot help, so it is not the advice
    assert "--scale-up" not in f.fix and "--new-num-nodes" not in f.fix
    assert f.fix.startswith("split hot in the host") and "weight" in f.fix
    assert "90000 milli-units" in f.why and "cannot clear it" in f.why
    assert f.evidence == {"rf": 3, "heat": 90_000}


def test_the_hierarchy_links_what_to_where_to_why() -> None:
    a = sample("a", role="leader", connected={"c": False})
    inputs = cluster(a=a, c=None)
    findings = diagnose(inputs)
    top = what(inputs, findings)
    assert not top.healthy and top.summary == "unhealthy: voter c is down or unreachable"
    assert top.links == ("/health/where",)
    level2 = where(inputs, findings)
    assert [(p.kind, p.id) for p in level2.places] == [("voter", "c")]
    assert "/health/why/voter/c" in level2.links
    level3 = why(inputs, findings, "voter/c")
    assert level3.findings == tuple(findings) and level3.state["reachable"] is False
    assert level3.state["raft_connected_from_observer"] is False
    assert "/health/where" in level3.links
    json.dumps([top.to_dict(), level2.to_dict(), level3.to_dict()])  # plain data


def test_why_of_a_healthy_voter_shows_its_state_and_refuses_unknown_things() -> None:
    inputs = cluster()
    answer = why(inputs, [], "voter/a")
    assert answer.healthy and answer.state["role"] == "leader"
    assert answer.state["flush_latency"]["p99_s_le"] == 0.0025
    with pytest.raises(InvalidArgument):
        why(inputs, [], "voter/zz")
    with pytest.raises(InvalidArgument):
        why(inputs, [], "spaceship/1")


def test_quantile_reads_bucket_upper_bounds() -> None:
    assert quantile_s(hist(fast=99, slow=1), 0.99) == 0.0025
    assert quantile_s(hist(fast=98, slow=2), 0.99) == 0.5
    assert quantile_s({"bounds_s": BOUNDS, "counts": [0] * 13}, 0.5) is None


def test_thresholds_are_plain_data() -> None:
    assert Thresholds().to_dict()["clock_skew_ms_max"] == 500


def test_a_node_that_asked_no_peer_judges_them_by_its_raft_connections() -> None:
    alone = ClusterInputs("b", {"b": sample("b")})
    assert diagnose(alone) == []  # b follows leader a, connected to both
    cut = ClusterInputs("b", {"b": sample("b", connected={"c": False})})
    f = only(diagnose(cut), "quorum")
    assert f.where == (Place("voter", "c"),) and "b's Raft connection to c" in f.why


def test_why_drills_from_an_operation_to_its_node_and_zone() -> None:
    f0 = fleet()
    f0["nodes"][2].update(liveness="dead", state="dead", silent_since_ms=20_000)
    f0["operations"] = [
        {
            "id": "op-9",
            "partition": "p2",
            "source": "n3",
            "target": "n1",
            "step": "copy",
            "node": "n1",
            "action_id": "op-9#900",
            "kind": "add_replica",
            "copy_from": "n3",
            "token": 900,
            "deadline_ms": 50_000,
            "attempt": 1,
            "created_index": 880,
            "cause": "repair",
        }
    ]
    inputs = with_fleet(f0)
    findings = diagnose(inputs)
    op = why(inputs, findings, "operation/op-9")
    assert op.state["operation"]["step"] == "copy" and not op.healthy
    assert "/health/why/node/n1" in op.related and "/health/why/partition/p2" in op.related
    node = why(inputs, findings, "node/n3")
    assert node.state["node"]["liveness"] == "dead"
    assert [f.check for f in node.findings] == ["silent_agent"]
    zone = why(inputs, findings, "zone/z3")
    assert zone.state == {"zone": "z3", "nodes": ["n3"], "by_state": {"dead": 1}}
    kinds = where(inputs, findings).by_kind()
    assert kinds["node"] == ["n3", "n1"] and kinds["operation"] == ["op-9"]


def solve(
    feasible: bool, tick_ms: int = 9_000, left_out: list[str] | None = None
) -> dict[str, Any]:
    return {
        "index": 812,
        "tick_ms": tick_ms,
        "feasible": feasible,
        "reason": "" if feasible else "leaves out p0: no free slot in 2 zones for rf 3",
        "left_out": list(left_out or []),
    }


def test_an_infeasible_solve_is_found_from_the_what_down_to_its_why() -> None:
    inputs = cluster(a=sample("a", role="leader", solve=solve(False, left_out=["p0", "p1"])))
    findings = diagnose(inputs)
    f = only(findings, "placement")
    assert f.severity == "warning" and f.what.startswith("the leader's placement solve left out 2")
    assert f.where == (
        Place("cluster", "placement"),
        Place("partition", "p0"),
        Place("partition", "p1"),
    )
    assert "the solver says: leaves out p0: no free slot in 2 zones" in f.why
    assert "log index 812 at tick time 9000 ms (1000 ms ago)" in f.why
    assert f.fix == "coreplane partitions show p0" and f.evidence["left_out"] == ["p0", "p1"]
    # is it broken -> where -> why
    assert not what(inputs, findings).healthy
    assert [(p.kind, p.id) for p in where(inputs, findings).places] == [
        ("cluster", "placement"),
        ("partition", "p0"),
        ("partition", "p1"),
    ]
    answer = why(inputs, findings, "cluster/placement")
    assert answer.findings == (f,) and answer.state["placement_solve"]["feasible"] is False
    assert answer.findings[0].to_dict()["why"] == f.why
    assert why(inputs, findings, "partition/p1").findings == (f,)
    json.dumps(answer.to_dict())


def test_a_wholly_infeasible_solve_names_the_cluster_only() -> None:
    inputs = cluster(
        a=sample("a", role="leader", solve={**solve(False), "reason": "infeasible: x"})
    )
    f = only(diagnose(inputs), "placement")
    assert f.where == (Place("cluster", "placement"),) and f.fix == "coreplane explain plan"
    assert f.what == "the leader's placement solve is infeasible: no plan was made"


def test_only_the_leaders_fresh_infeasible_solve_is_a_finding() -> None:
    assert diagnose(cluster(a=sample("a", role="leader", solve=solve(True)))) == []
    assert diagnose(cluster(a=sample("a", role="leader"))) == []  # no solve yet
    # a follower's is from an old leadership of its own
    assert diagnose(cluster(b=sample("b", solve=solve(False, left_out=["p0"])))) == []
    # older than the leader's longest back-off allows: nothing needed placing since
    old = solve(False, tick_ms=10_000 - Thresholds().solve_age_ms_max - 1, left_out=["p0"])
    assert diagnose(cluster(a=sample("a", role="leader", solve=old))) == []
    assert why(cluster(), [], "cluster/placement").state["placement_solve"] is None


def test_the_sample_carries_the_fleets_solve_status_and_reads_old_samples() -> None:
    from coreplane.obs import Observer

    class Host:  # what Observer reads of a ControlPlane, and the public cp.fleet.solve_status
        node_id, address = "a", MEMBERS["a"]

        class fleet:  # stands in for the attribute cp.fleet
            @staticmethod
            def solve_status() -> dict[str, Any]:
                return solve(False, left_out=["p0"])

        def status(self) -> dict[str, Any]:
            return {"role": "leader", "node_id": "a", "tick_ms": 9_500}

        def members(self) -> dict[str, str]:
            return dict(MEMBERS)

    got = Observer(Host(), version="0.1.0").sample(fleet=False)  # type: ignore[arg-type]
    assert got.solve == solve(False, left_out=["p0"])  # also in samples handed to peers
    back = LocalSample.from_dict(got.to_dict())
    assert back == got
    older = {k: v for k, v in got.to_dict().items() if k != "solve"}  # a peer not upgraded
    assert LocalSample.from_dict(older).solve is None


def test_an_under_replicated_partition_left_out_by_the_solver_says_so() -> None:
    f0 = fleet()
    f0.pop("node")
    f0["under_replicated"] = [
        {
            "id": "p0",
            "rf": 3,
            "heat": 5,
            "replicas": ["n1"],
            "live_replicas": 1,
            "health": "under_replicated",
            "split_candidate": False,
            "operation": None,
        }
    ]
    leader = sample("a", role="leader", fleet=f0, solve=solve(False, left_out=["p0"]))
    inputs = cluster(a=leader)
    findings = diagnose(inputs)
    under = only(findings, "under_replicated")
    assert "the leader's newest placement solve left it out: leaves out p0" in under.why
    assert under.fix == "coreplane health why cluster/placement"
    placement = only(findings, "placement")
    about = why(inputs, findings, "partition/p0").findings
    assert len(about) == 2 and under in about and placement in about
    # without the solver's word, the old answer: wait for the next plan
    plain = only(diagnose(cluster(a=sample("a", role="leader", fleet=f0))), "under_replicated")
    assert "waiting for the leader's next plan" in plain.why

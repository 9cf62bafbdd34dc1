"""The CLI's fleet commands against three real voters and six storage agents: dry-runs plan
with the real solver and change nothing, the blast-radius guard refuses wide changes, the same
command resumes its operation after the CLI or the leader is killed, Ctrl-C detaches."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from coreplane.ops.context import EXIT
from tests.integration.cli_fleet_support import CFG, SIZE_BYTES, FleetCluster, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[FleetCluster]:
    c = FleetCluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def _op_records(fleet: FleetCluster) -> list[dict[str, object]]:
    cp = fleet.any_node()
    return [json.loads(v) for _k, v, _r in cp.kv.range("coreplane/ops/")]


def test_views_list_and_show_nodes_partitions_and_decisions(fleet: FleetCluster) -> None:
    nodes = json.loads(fleet.cli("nodes", "list", "-o", "json").stdout)
    assert [n["id"] for n in nodes] == [f"s{i}" for i in range(6)]
    assert sum(n["replicas"] for n in nodes) == 12
    parts = json.loads(fleet.cli("partitions", "list", "-o", "json").stdout)
    assert {p["id"]: p["health"] for p in parts} == {f"p{i}": "healthy" for i in range(6)}
    p0 = json.loads(fleet.cli("partitions", "show", "p0", "-o", "json").stdout)
    assert len(p0["replicas"]) == 2
    assert fleet.cli("nodes", "show", "nope").returncode == EXIT["rejected"]
    why = json.loads(fleet.cli("explain", "p0", "-o", "json").stdout)
    assert why and all("p0" in d["subjects"] for d in why)
    table = fleet.cli("nodes", "list")
    assert "s5" in table.stdout and "z2" in table.stdout
    # sizes: reported by the agents, committed by the leader, shown in the views
    cp = fleet.any_node()
    wait_until(
        lambda: {p["size_bytes"] for p in cp.fleet.partitions()} == {SIZE_BYTES}, 20, "sizes"
    )
    parts = json.loads(fleet.cli("partitions", "list", "-o", "json").stdout)
    assert {p["size_bytes"] for p in parts} == {SIZE_BYTES}
    assert "256 MiB" in fleet.cli("partitions", "list").stdout


def test_dry_runs_plan_with_the_solver_and_change_nothing(fleet: FleetCluster) -> None:
    fleet.pause_ticks()
    before = fleet.hashes()
    assert len(set(before.values())) == 1
    cp = fleet.any_node()
    held = cp.fleet.node("s1")["replicas"]
    drain = fleet.cli("drain", "s1", "--dry-run", "-o", "json")
    assert drain.returncode == 0, drain.stderr
    plan = json.loads(drain.stdout)
    moves = plan["plan"]["moves"]
    # every replica on s1 is copied elsewhere and removed from s1
    assert sorted(m["partition"] for m in moves if m["target"]) == sorted(
        p["id"] for p in cp.fleet.partitions() if "s1" in p["replicas"]
    )
    assert len([m for m in moves if m["target"]]) == held
    assert all(m["target"] != "s1" for m in moves)
    est = plan["plan"]["estimate"]
    assert est["measured_moves"] > 0 and est["ms_per_move"] >= 0  # this cluster's moves
    assert "(median of the last 5 of this cluster)" in plan["words"]
    scale = fleet.cli(
        "update", "partition", "p0", "--scale-up", "--new-num-nodes", "3", "--dry-run"
    )
    assert scale.returncode == 0, scale.stderr
    assert "add 1 new, drop 0" in scale.stdout and "affects 1 partition, 0 others" in scale.stdout
    down = fleet.cli(
        "update",
        "partition",
        "p0",
        "--scale-down",
        "--new-num-nodes",
        "1",
        "--dry-run",
        "-o",
        "json",
    )
    assert [m["target"] for m in json.loads(down.stdout)["plan"]["moves"]] == [None]
    wrong = fleet.cli("update", "partition", "p0", "--scale-down", "--new-num-nodes", "3")
    assert wrong.returncode == EXIT["usage"]
    assert fleet.hashes() == before  # no voter's state moved
    assert _op_records(fleet) == []
    fleet.resume_ticks()


def test_a_wide_drain_is_refused_unless_the_cluster_is_named(fleet: FleetCluster) -> None:
    plan = json.loads(fleet.cli("drain", "s0", "--dry-run", "-o", "json").stdout)
    radius = plan["blast_radius"]
    assert radius["needs_confirmation"] and len(radius["nodes"]) >= 2
    refused = fleet.cli("drain", "s0")
    assert refused.returncode == EXIT["unconfirmed"]
    assert "--confirm-cluster coreplane" in refused.stderr
    wrong = fleet.cli("drain", "s0", "--confirm-cluster", "other")
    assert wrong.returncode == EXIT["unconfirmed"]
    cp = fleet.any_node()
    assert cp.fleet.node("s0")["admin"] == "active" and _op_records(fleet) == []
    # a wider limit lets a cordon (one node, no moves) through without a name
    ok = fleet.cli("--max-nodes-pct", "50", "cordon", "s0", "-o", "json")
    assert ok.returncode == 0, ok.stderr
    assert cp.fleet.node("s0")["admin"] == "cordoned"
    assert fleet.cli("uncordon", "s0").returncode == 0
    # the config file's limits count too
    fleet.config.write_text("blast-radius: {nodes-pct: 100, partitions-pct: 100}\n")
    relaxed = json.loads(fleet.cli("drain", "s0", "--dry-run", "-o", "json").stdout)
    assert relaxed["blast_radius"]["needs_confirmation"] is False


def test_the_same_drain_after_a_killed_cli_attaches_to_its_operation(fleet: FleetCluster) -> None:
    fleet.slow_copies(0.8)
    proc = fleet.popen("drain", "s2", "--confirm-cluster", "coreplane")
    cp = fleet.any_node()
    wait_until(
        lambda: any(r["state"] == "running" for r in _op_records(fleet)), 30, "the operation record"
    )
    wait_until(lambda: cp.fleet.node("s2")["operations"], 30, "a move off s2")
    proc.kill()
    proc.wait(10)
    (record,) = _op_records(fleet)
    # The fleet's own moves answer to their ids too (diagnose names them); a move may end
    # between two commands, so look until one is caught in flight.
    for _ in range(5):
        moves = json.loads(fleet.cli("ops", "list", "-o", "json").stdout)["moves_in_flight"]
        if not moves:
            break
        shown = fleet.cli("ops", "show", moves[0]["id"], "-o", "json")
        if shown.returncode == 0:
            assert json.loads(shown.stdout)["partition"] == moves[0]["partition"]
            resumed = fleet.cli("ops", "resume", moves[0]["id"])
            assert resumed.returncode == EXIT["rejected"]
            break
    again = fleet.cli("drain", "s2", "--confirm-cluster", "coreplane", "-o", "json", timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"attaching to operation {record['id']}" in again.stderr
    out = json.loads(again.stdout)
    assert (out["operation"], out["state"]) == (record["id"], "done")
    (after,) = _op_records(fleet)  # one operation, never a second
    assert after["id"] == record["id"] and after["attempt"] == 1
    assert cp.fleet.node("s2")["replicas"] == 0


def test_a_scale_up_resumes_after_the_leader_is_killed(fleet: FleetCluster) -> None:
    fleet.slow_copies(1.0)
    start = fleet.cli(
        "update", "partition", "p1", "--scale-up", "--new-num-nodes", "3", "--no-wait", "-o", "json"
    )
    assert start.returncode == 0, start.stderr
    oid = json.loads(start.stdout)["operation"]
    old = fleet.leader()
    fleet.nodes[old].stop()
    again = fleet.cli(
        "update", "partition", "p1", "--scale-up", "--new-num-nodes", "3", "-o", "json", timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert f"attaching to operation {oid}" in again.stderr
    assert json.loads(again.stdout)["state"] == "done"
    new = fleet.leader()
    assert new != old
    p1 = fleet.nodes[new].fleet.partition("p1")
    assert (p1["rf"], len(p1["replicas"]), p1["health"]) == (3, 3, "healthy")
    assert [r["id"] for r in _op_records(fleet)] == [oid]


def test_ctrl_c_detaches_and_the_operation_goes_on(fleet: FleetCluster) -> None:
    fleet.slow_copies(0.8)
    proc = fleet.popen("update", "partition", "p2", "--scale-up", "--new-num-nodes", "3")
    wait_until(
        lambda: any(r["state"] == "running" for r in _op_records(fleet)), 30, "the operation record"
    )
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == EXIT["detached"]
    assert "detached from" in err
    cp = fleet.any_node()
    wait_until(lambda: len(cp.fleet.partition("p2")["replicas"]) == 3, 60, "p2 on three nodes")
    (record,) = _op_records(fleet)
    assert record["state"] == "running"  # nobody cancelled it; `ops show` reports it done
    shown = json.loads(fleet.cli("ops", "show", record["id"], "-o", "json").stdout)
    assert shown["progress"][0] == shown["progress"][1]


def test_plan_shows_the_diff_and_apply_makes_it_so(fleet: FleetCluster, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("partitions:\n  p3: {rf: 3}\n  p9: {rf: 2}\ncordoned: [s5]\n")
    plan = fleet.cli("plan", "-f", str(spec))
    assert plan.returncode == EXIT["pending"], plan.stderr
    assert plan.stdout.splitlines()[:3] == [
        "+ partition p9: rf 2",
        "~ partition p3: rf 2 -> 3",
        "~ node s5: active -> cordoned",
    ]
    applied = fleet.cli(
        "apply", "-f", str(spec), "--confirm-cluster", "coreplane", "-o", "json", timeout=120
    )
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["state"] == "done"
    again = fleet.cli("plan", "-f", str(spec), "-o", "json")
    assert again.returncode == 0 and json.loads(again.stdout)["in_sync"] is True
    # cordoning two zones of three leaves one zone for rf 3: always asks, whatever the share
    short = tmp_path / "short.yaml"
    short.write_text("cordoned: [s0, s3, s1, s4]\n")
    dry = fleet.cli(
        "--max-nodes-pct",
        "100",
        "--max-partitions-pct",
        "100",
        "apply",
        "-f",
        str(short),
        "--dry-run",
        "-o",
        "json",
    )
    reasons = json.loads(dry.stdout)["blast_radius"]["reasons"]
    assert reasons == [
        "afterwards 1 zone(s) can take replicas and the highest RF is 3: "
        "partitions above 1 cannot be fully placed",
        "afterwards 2 node(s) are active and take new replicas",
    ]
    assert "WARNING: afterwards 1 zone(s)" in json.loads(dry.stdout)["words"]
    refused = fleet.cli(
        "--max-nodes-pct", "100", "--max-partitions-pct", "100", "apply", "-f", str(short)
    )
    assert refused.returncode == EXIT["unconfirmed"]


def test_replay_reproduces_the_hash_and_prints_the_fleet_decisions(
    fleet: FleetCluster, tmp_path: Path
) -> None:
    assert fleet.cli("drain", "s3", "--confirm-cluster", "coreplane", timeout=120).returncode == 0
    fleet.pause_ticks()
    hashes = fleet.hashes()
    follower = next(n for n in ("a", "b", "c") if n != fleet.leader())
    index, digest = hashes[follower]
    fleet.nodes[follower].stop()
    copy = tmp_path / "copy"
    shutil.copytree(fleet.tmp / follower, copy)
    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump(dataclasses.asdict(CFG)))
    r = fleet.cli("replay", str(copy), "--fleet-config", str(config), "-o", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["applied_index"], out["state_hash"]) == (index, digest)
    texts = [d["text"] for d in out["decisions"]]
    assert any("s3" in t for t in texts)  # the drain's moves, each with its sentence
    assert all(d["index"] <= index for d in out["decisions"])
    table = fleet.cli("replay", str(copy), "--fleet-config", str(config))
    assert digest in table.stdout and "fleet decisions" in table.stdout


def test_cancel_asks_for_the_state_before(fleet: FleetCluster) -> None:
    fleet.slow_copies(2.0)
    start = fleet.cli(
        "update", "partition", "p4", "--scale-up", "--new-num-nodes", "3", "--no-wait", "-o", "json"
    )
    oid = json.loads(start.stdout)["operation"]
    listed = json.loads(fleet.cli("ops", "list", "-o", "json").stdout)
    assert [r["id"] for r in listed["operations"]] == [oid]
    dry = json.loads(fleet.cli("ops", "cancel", oid, "--dry-run", "-o", "json").stdout)
    assert dry["undo"] == [{"verb": "set_rf", "subject": "p4", "rf": 2}]
    done = fleet.cli("ops", "cancel", oid, "-o", "json")  # narrow: no name asked
    assert done.returncode == 0, done.stderr
    cp = fleet.any_node()
    assert cp.fleet.partition("p4")["rf"] == 2
    assert json.loads(fleet.cli("ops", "show", oid, "-o", "json").stdout)["state"] == "cancelled"
    assert fleet.cli("ops", "resume", oid).returncode == EXIT["rejected"]
    fleet.slow_copies(0.05)
    fleet.wait_converged()
    assert len(cp.fleet.partition("p4")["replicas"]) == 2

"""The `coreplane` CLI as a separate process against a real three-voter cluster (127.0.0.1):
`--output json` parses, dry-runs change nothing (every voter's state hash stands still),
the production guard refuses without the cluster's name, tokens never show, and `replay` on
a copy of a voter's data dir reproduces its state hash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from coreplane.ops.context import EXIT
from tests.integration.cli_support import ADMIN, Cluster

pytestmark = pytest.mark.slow


def test_status_members_and_kv_answer_in_json_and_yaml(cli_cluster: Cluster) -> None:
    r = cli_cluster.cli("status", "-o", "json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["leader"] == cli_cluster.leader()
    assert sorted(v["id"] for v in st["voters"]) == ["a", "b", "c"]
    assert all(v["reachable"] for v in st["voters"])
    assert st["cluster"] == "coreplane" and st["production"] is False

    assert cli_cluster.cli("kv", "put", "app/x", "hello").returncode == 0
    got = json.loads(cli_cluster.cli("kv", "get", "app/x", "-o", "json").stdout)
    assert got["value"] == "hello" and got["mod_revision"] > 0
    listed = yaml.safe_load(cli_cluster.cli("-o", "yaml", "kv", "get", "app/", "--prefix").stdout)
    assert [(x["key"], x["value"]) for x in listed] == [("app/x", "hello")]
    members = json.loads(cli_cluster.cli("members", "list", "-o", "json").stdout)
    assert [m["id"] for m in members] == ["a", "b", "c"]
    assert sum(m["leader"] for m in members) == 1

    gone = cli_cluster.cli("kv", "del", "app/x", "-o", "json")
    assert json.loads(gone.stdout)["deleted"] == 1
    missing = cli_cluster.cli("kv", "get", "app/x")
    assert missing.returncode == EXIT["rejected"]
    for r in (gone, missing):
        assert ADMIN not in r.stdout + r.stderr


def test_dry_runs_change_nothing_on_any_voter(cli_cluster: Cluster) -> None:
    assert cli_cluster.cli("kv", "put", "app/y", "one").returncode == 0
    cli_cluster.pause_ticks()
    before = cli_cluster.hashes()
    assert len(set(before.values())) == 1  # every voter at the same index has the same hash
    runs = [
        cli_cluster.cli("kv", "put", "app/y", "two", "--dry-run", "-o", "json"),
        cli_cluster.cli("kv", "del", "app/y", "--dry-run", "-o", "json"),
        cli_cluster.cli("members", "remove", "c", "--dry-run", "-o", "json"),
        cli_cluster.cli("members", "add", "d", "127.0.0.1:1", "--dry-run", "-o", "json"),
    ]
    plans = [json.loads(r.stdout) for r in runs]
    assert all(p["dry_run"] for p in plans)
    assert (
        plans[0]["plan"] == "put app/y: 3 bytes; replaces 3 bytes at revision "
        f"{json.loads(cli_cluster.cli('kv', 'get', 'app/y', '-o', 'json').stdout)['mod_revision']}"
    )
    assert plans[2]["voters_after"] == ["a", "b"] and plans[2]["quorum_after"] == 2
    assert cli_cluster.hashes() == before
    cli_cluster.resume_ticks()


def test_paused_ticks_hold_the_log_still_until_something_is_proposed(
    cli_cluster: Cluster, wait_until: Any
) -> None:
    """`pause_ticks` returns once the log stands still (no fixed sleep: the dry-run tests
    compare hashes across it): the voters agree, a write moves every one of them, and no tick
    comes with it; `resume_ticks` lets cluster time run again."""
    cli_cluster.pause_ticks()
    before = cli_cluster.hashes()
    ticks = {n: cp.status().tick_n for n, cp in cli_cluster.nodes.items()}
    assert len(set(before.values())) == 1 and len(set(ticks.values())) == 1
    assert cli_cluster.cli("kv", "put", "still/x", "1").returncode == 0
    after = cli_cluster.hashes()
    assert len(set(after.values())) == 1 and after != before
    assert {n: cp.status().tick_n for n, cp in cli_cluster.nodes.items()} == ticks
    cli_cluster.resume_ticks()
    wait_until(
        lambda: min(cp.status().tick_n for cp in cli_cluster.nodes.values()) > max(ticks.values()),
        20,
        "ticks again on every voter",
    )


def test_production_needs_the_cluster_name_for_destructive_commands(cli_cluster: Cluster) -> None:
    assert cli_cluster.cli("kv", "put", "coreplane/cluster/name", "prod-eu-1").returncode == 0
    assert cli_cluster.cli("kv", "put", "coreplane/cluster/production", "true").returncode == 0
    st = json.loads(cli_cluster.cli("status", "-o", "json").stdout)
    assert (st["cluster"], st["production"]) == ("prod-eu-1", True)
    refused = cli_cluster.cli("members", "remove", "zz")  # no terminal: refuse, say how to confirm
    assert refused.returncode == EXIT["unconfirmed"]
    assert "--confirm-cluster prod-eu-1" in refused.stderr
    wrong = cli_cluster.cli("members", "remove", "zz", "--confirm-cluster", "prod-us-1")
    assert wrong.returncode == EXIT["unconfirmed"]
    ok = cli_cluster.cli("members", "remove", "zz", "--confirm-cluster", "prod-eu-1", "-o", "json")
    assert ok.returncode == 0, ok.stderr
    assert sorted(json.loads(ok.stdout)["members"]) == ["a", "b", "c"]
    assert cli_cluster.cli("kv", "put", "app/z", "1").returncode == 0  # a put is not destructive
    assert cli_cluster.cli("kv", "del", "app/z").returncode == EXIT["unconfirmed"]
    assert cli_cluster.cli("kv", "get", "app/z").returncode == 0  # still there
    assert cli_cluster.cli("kv", "del", "app/z", "--confirm-cluster", "prod-eu-1").returncode == 0


def test_replay_of_a_copied_data_dir_reproduces_the_voters_hash(
    cli_cluster: Cluster, tmp_path: Path
) -> None:
    for i in range(5):
        assert cli_cluster.cli("kv", "put", f"r/{i}", str(i)).returncode == 0
    cli_cluster.pause_ticks()
    hashes = cli_cluster.hashes()
    follower = next(n for n in ("a", "b", "c") if n != cli_cluster.leader())
    index, digest = hashes[follower]
    cli_cluster.nodes[follower].stop()
    copy = tmp_path / "copy"
    shutil.copytree(cli_cluster.tmp / follower, copy)
    r = cli_cluster.cli("replay", str(copy), "-o", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["applied_index"], out["state_hash"]) == (index, digest)
    table = cli_cluster.cli("replay", str(copy))
    assert digest in table.stdout

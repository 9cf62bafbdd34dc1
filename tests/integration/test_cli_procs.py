"""The CLI's resume with kill -9, all in real processes: three voter daemons (each its own OS
process with its HTTP API), six storage agents driven by the SDK's `Agent` over HTTP (sizes
and heat in their heartbeats), and the `coreplane` CLI as a separate process.

- the CLI is killed with SIGKILL in the middle of a drain: the same command run again
  attaches to the same operation (deterministic id) and finishes it; one record, never two;
- the leader daemon is killed with SIGKILL in the middle of a scale-up: the same command run
  again (against the endpoints, one of them dead) attaches to the same operation and finishes
  it on the new leader; one record;
- the dry run's estimate is made of the sizes the agents reported and this cluster's own
  measured copies; and one move is cancelled by the operator (`ops cancel OP --move M`),
  rolled back, with the reason in `explain`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coreplane.ops.context import EXIT
from coreplane.sdk import Agent, Client, FleetAction, LongRunningConfig
from tests.integration.cli_support import cli_env, popen_cli, run_cli
from tests.integration.procs_support import VoterProcs, eventually

pytestmark = pytest.mark.slow

ADMIN = "procs-admin-token-0123456789"
AGENTS = tuple(f"s{i}" for i in range(6))
GIB = 1 << 30
SIZES = {f"p{i}": (i + 1) * GIB // 2 for i in range(6)}  # p0 0.5 GiB ... p5 3 GiB
SDK = LongRunningConfig(
    backoff_base_ms=20,
    backoff_cap_ms=300,
    health_check_interval_ms=0,
    connect_timeout_ms=500,
    request_timeout_ms=5_000,
    max_attempts=6,
)


class StorageNode:
    """A toy storage node: an `Agent` over HTTP that holds partitions and reports sizes."""

    def __init__(self, node_id: str, zone: str, urls: list[str], copy_s: list[float]) -> None:
        self.held: set[str] = set()
        self._lock = threading.Lock()
        self._copy_s = copy_s
        self.client = Client(urls, f"agent-token-{node_id}-0123456789", SDK)
        self.agent = Agent(
            self.client,
            node_id,
            zone=zone,
            handlers={"add_replica": self._add, "remove_replica": self._remove},
            sizes=self._sizes,
            heat=lambda: {},
            heartbeat_ms=100,
        )

    def _add(self, action: FleetAction) -> None:
        if action.source:  # a copy from a replica: takes time; a new partition is empty
            time.sleep(self._copy_s[0])
        with self._lock:
            self.held.add(action.partition)

    def _remove(self, action: FleetAction) -> None:
        with self._lock:
            self.held.discard(action.partition)

    def _sizes(self) -> dict[str, int]:
        with self._lock:
            return {pid: SIZES.get(pid, 0) for pid in self.held}

    def close(self) -> None:
        self.agent.close()
        self.client.close()


class Procs(VoterProcs):
    def __init__(self, base: Path) -> None:
        tokens = {ADMIN: "admin", **{f"agent-token-{s}-0123456789": f"agent:{s}" for s in AGENTS}}
        super().__init__(base, tokens=tokens)
        self.copy_s = [0.05]
        self.storage: dict[str, StorageNode] = {}
        self.admin = Client(list(self.urls.values()), ADMIN, SDK)

    def start_fleet(self) -> None:
        urls = list(self.urls.values())
        for i, sid in enumerate(AGENTS):
            self.storage[sid] = StorageNode(sid, f"z{i % 3}", urls, self.copy_s)
        eventually(lambda: len(self.get("/v1/fleet/nodes")["nodes"]) == 6, 30, "six nodes")
        for pid in SIZES:
            self.admin.request(
                "POST", "/v1/fleet/partitions/create", {"pid": pid, "rf": 2}, idempotent=True
            )
        self.wait_converged()

    def get(self, path: str) -> Any:
        return self.admin.request("GET", path, idempotent=True)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.admin.request("POST", path, body, idempotent=True)

    def converged(self) -> bool:
        parts = self.get("/v1/fleet/partitions")["partitions"]
        return (
            bool(parts)
            and all(p["health"] == "healthy" for p in parts)
            and not (self.get("/v1/fleet/operations")["operations"])
        )

    def wait_converged(self, timeout_s: float = 90) -> None:
        eventually(self.converged, timeout_s, "the fleet converged")

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(v) for _k, v, _r in self.admin.range("coreplane/ops/")]

    def env(self) -> dict[str, str]:
        return cli_env(self.urls.values(), ADMIN, self.base / "config.yaml")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cli(self.env(), *args, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return popen_cli(self.env(), *args)

    def stop(self) -> None:
        for node in self.storage.values():
            node.close()
        self.admin.close()
        super().stop()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path / "cluster")
    try:
        p.start_fleet()
        yield p
    finally:
        p.stop()


def _sigkill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def test_kill9_of_the_cli_then_the_same_drain_attaches(procs: Procs) -> None:
    eventually(
        lambda: all(
            p["size_bytes"] == SIZES[p["id"]]
            for p in procs.get("/v1/fleet/partitions")["partitions"]
        ),
        30,
        "every size committed",
    )
    procs.copy_s[0] = 1.0
    proc = procs.popen("drain", "s2", "--confirm-cluster", "coreplane")
    eventually(lambda: [r for r in procs.records() if r["state"] == "running"], 60, "the record")
    eventually(
        lambda: procs.post("/v1/fleet/node", {"node_id": "s2"})["node"]["operations"],
        60,
        "a move off s2 in flight",
    )
    _sigkill(proc)
    (record,) = procs.records()
    assert record["state"] == "running"
    procs.copy_s[0] = 0.05
    again = procs.cli("drain", "s2", "--confirm-cluster", "coreplane", "-o", "json")
    assert again.returncode == 0, again.stderr
    assert f"attaching to operation {record['id']}" in again.stderr
    out = json.loads(again.stdout)
    assert (out["operation"], out["state"]) == (record["id"], "done")
    (after,) = procs.records()  # one operation, never a second
    assert (after["id"], after["attempt"]) == (record["id"], 1)
    assert procs.post("/v1/fleet/node", {"node_id": "s2"})["node"]["replicas"] == 0


def test_kill9_of_the_leader_daemon_then_the_same_scale_up_attaches(procs: Procs) -> None:
    procs.copy_s[0] = 1.5
    args = ("update", "partition", "p1", "--scale-up", "--new-num-nodes", "3")
    start = procs.cli(*args, "--no-wait", "-o", "json")
    assert start.returncode == 0, start.stderr
    oid = json.loads(start.stdout)["operation"]
    old = procs.leader()
    procs.nodes[old].kill9()  # SIGKILL: no clean shutdown, no goodbye to the peers
    new = procs.leader()
    assert new != old
    again = procs.cli(*args, "-o", "json")
    assert again.returncode == 0, again.stderr
    assert f"attaching to operation {oid}" in again.stderr
    assert json.loads(again.stdout)["state"] == "done"
    p1 = procs.post("/v1/fleet/partition", {"pid": "p1"})["partition"]
    assert (p1["rf"], len(p1["replicas"]), p1["health"]) == (3, 3, "healthy")
    assert [r["id"] for r in procs.records()] == [oid]


def test_estimates_use_sizes_and_throughput_and_one_move_is_cancelled(procs: Procs) -> None:
    eventually(
        lambda: all(
            p["size_bytes"] == SIZES[p["id"]]
            for p in procs.get("/v1/fleet/partitions")["partitions"]
        ),
        30,
        "every size committed",
    )
    # a drain of s0 measures this cluster's copies (sizes known, copies from a source)
    procs.copy_s[0] = 0.3
    assert procs.cli("drain", "s0", "--confirm-cluster", "coreplane").returncode == 0
    procs.wait_converged()
    dry = procs.cli(
        "update", "partition", "p5", "--scale-up", "--new-num-nodes", "3", "--dry-run", "-o", "json"
    )
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    est = plan["plan"]["estimate"]
    copies = [m for m in plan["plan"]["moves"] if m["target"]]
    assert "p5" in {m["partition"] for m in copies}
    assert est["bytes"] == sum(SIZES[m["partition"]] for m in copies)
    assert est["copies"] == len(copies) and est["measured_copies"] > 0
    assert est["rate_bytes_per_s"] == min(est["measured_bytes_per_s"], 50 << 20)
    head = plan["words"].splitlines()[1]  # after the line naming the operation
    parts = {m["partition"] for m in plan["plan"]["moves"]}
    others = plan["plan"]["others"]
    assert "p5" not in others and set(others) <= parts
    assert (
        head.startswith(f"copy {len(copies)} replica")
        and " at the 50 MiB/s throttle: about " in head
    )
    plural = ("" if len(parts) == 1 else "s", "" if len(others) == 1 else "s")
    tail = f"affects {len(parts)} partition{plural[0]}, {len(others)} other{plural[1]}"
    assert head.endswith(tail)
    # the throttle is the cluster's: raised far above what was measured, the measure rules
    procs.admin.put("coreplane/cluster/copy-throttle-bytes-per-s", str(1 << 50).encode())
    fast = json.loads(
        procs.cli(
            "update",
            "partition",
            "p5",
            "--scale-up",
            "--new-num-nodes",
            "3",
            "--dry-run",
            "-o",
            "json",
        ).stdout
    )["plan"]["estimate"]
    assert fast["rate_bytes_per_s"] == fast["measured_bytes_per_s"]
    assert fast["total_ms"] < est["total_ms"]
    # one move of an operation, cancelled while it copies. The SDK's Agent runs a handler on
    # its heartbeat thread, so a copy longer than suspect_after_ms (5 s) makes the node
    # suspect; and a suspect node heard again does not ask the fleet for a new solve (issue
    # left to the fleet's owners): keep the copy under it.
    procs.copy_s[0] = 4.0
    start = procs.cli(
        *("update", "partition", "p5", "--scale-up", "--new-num-nodes", "3", "--no-wait"),
        *("--confirm-cluster", "coreplane", "-o", "json"),
    )
    assert start.returncode == 0, start.stderr
    oid = json.loads(start.stdout)["operation"]
    move = eventually(
        lambda: [
            m
            for m in procs.get("/v1/fleet/operations")["operations"]
            if m["partition"] == "p5" and m["step"] == "copy"
        ],
        30,
        "p5's copy in flight",
    )[0]
    dry_cancel = procs.cli("ops", "cancel", oid, "--move", move["id"], "--dry-run")
    assert dry_cancel.returncode == 0 and "roll the copy back" in dry_cancel.stdout
    cancelled = procs.cli(
        "ops", "cancel", oid, "--move", move["id"], "--reason", "wrong rack", "-o", "json"
    )
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["step"] == "abort"
    why = json.loads(procs.cli("explain", move["id"], "-o", "json").stdout)
    texts = [d["text"] for d in why]
    assert any("cancelled by the operator: wrong rack" in t for t in texts), texts
    eventually(
        lambda: any(
            "rolled back" in d["text"]
            for d in procs.post("/v1/fleet/explain", {"thing": move["id"], "limit": 100})[
                "decisions"
            ]
        ),
        30,
        "rolled back",
    )
    other = procs.cli("ops", "cancel", oid, "--move", "p0@1")
    assert other.returncode == EXIT["rejected"]
    (record,) = [r for r in procs.records() if r["id"] == oid]
    assert record["cancelled_moves"] == [{"move": move["id"], "reason": "wrong rack"}]
    by_op = json.loads(procs.cli("explain", oid, "-o", "json").stdout)  # the operation's id
    assert any("cancelled by the operator: wrong rack" in d["text"] for d in by_op)
    procs.copy_s[0] = 0.05  # the operation still asks for rf 3: the fleet plans p5 again
    done = procs.cli("ops", "resume", oid, "-o", "json", timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(procs.post("/v1/fleet/partition", {"pid": "p5"})["partition"]["replicas"]) == 3

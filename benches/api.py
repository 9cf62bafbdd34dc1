"""The HTTP API and the SDK against etcd 3.4's gateway: KV puts and gets, lock cycles.

Measured in one run: a fresh 3-node coreplane cluster (each node a process with its
`ApiServer`, LMDB journal fsynced, the default) and, when `etcd` is installed, a fresh 3-member
etcd cluster (WAL fsynced, its default), both on 127.0.0.1. Each phase drives one system at a
time from `procs` client processes of `threads` threads each, closed loop (one request
outstanding per thread), the same concurrency for both:
- ``put``: coreplane through the SDK (`Client.put`, msgpack over HTTP/1.1 keep-alive) vs
  etcd's v3 JSON gateway ``/v3/kv/put``, to the leader;
- ``get``: linearizable reads (`Client.get`: ReadIndex) vs ``/v3/kv/range`` (linearizable);
- ``get_stale``: reads of whichever replica answers (`Client.get(stale_ok=True)`, which the
  SDK sends to a follower first) vs ``/v3/kv/range`` with ``serializable`` (the leader's);
- ``lock``: a lock cycle, acquire + release, uncontended (one lock name per thread):
  ``with client.lock(...)`` vs etcd's v3lock service ``/v3/lock/lock`` + ``/v3/lock/unlock``
  with a lease granted once per thread. The SDK opens one lock session per client and TTL
  (once), and defers a release by its linger (5 ms): in this loop each release rides on the
  thread's next acquire, so a cycle is one request and one log entry (`LockReleaseAcquire`:
  the release, then the acquire, a new grant and token each cycle). ``lock_sync`` (coreplane only)
  is the same with the deferral off: two requests, each waited for, as etcd's.
Each phase runs ``rounds`` times per system in ABBA order (coreplane, etcd, etcd, coreplane):
the machine is shared and its load drifts, and one 5 s phase per system swung the ratios by
half from run to run; the figures are totals over the rounds (``rounds_ops_per_s`` keeps
each). Reports ops/s and p50 latency per phase and ``ratio_vs_etcd`` (coreplane / etcd for
throughput, etcd / coreplane for latency: > 1 is better for coreplane either way). The clients
share the machine with the servers (2 cores here): the figures compare, they do not size.

``put_local`` is the reference for what HTTP and the SDK add: the same number of puts in
flight, issued inside the leader's process (`kv.put_async`, no HTTP), reported as
``put_local_per_s`` and ``put_local_p50_ms`` (coreplane only; etcd has no such row).

``put_switch`` is the GIL's switch interval A/B, in the same run (coreplane only): puts as in
``put`` with every node's `sys.setswitchinterval` at `SWITCH_INTERVAL_S` (CPython's default is
5 ms: a thread woken by I/O may wait that long for the GIL while another runs), in ABBA order
with rounds at the default (``put_pair``); ``put_switch_ratio`` is its throughput over
``put_pair``'s. The library sets no switch interval; this row says whether one would pay.

CPU per operation (`benches._cpu`), per phase and system: ``gen_cpu_us_per_op`` is the load
generator processes' own CPU (the SDK for coreplane, a bare http.client loop for etcd: the same
closed loop, threads and concurrency), ``servers_cpu_us_per_op`` the three members' (all
threads, kernel time included), ``leader_cpu_us_per_op`` the leader's; ``machine_busy_cores``
says how busy the shared machine was over the phase (all processes, other agents' included).

Where the time and the leader's CPU go (coreplane only, read from the leader: `_api_node`'s
phase brackets): ``server_p50_ms`` is the leader's own time per request of the phase's route
(parsed request to built answer: the commit wait included, the client, the network, reading
the request and writing the answer excluded), so ``p50_ms - server_p50_ms`` is roughly what
the client side and the event loop's queueing add; ``leader_api_cpu_us_per_op`` is the API's
event loop and pool threads, ``leader_raft_cpu_us_per_op`` the engine's tick thread. Put
against ``put_local`` they say whether a slow phase waits on CPU (the loop or the tick
thread) or on something else.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benches import _cpu
from benches._raft_procs import ROOT, EtcdCluster, etcd_binary
from coreplane.testing.ports import free_ports
from coreplane.testing.procs import JsonLineChild

FULL = {"duration_s": 5.0, "procs": 2, "threads": 16, "rounds": 2}
SMOKE = {"duration_s": 1.0, "procs": 1, "threads": 2, "rounds": 1}
TOKEN = "bench-api-token-" + os.urandom(8).hex()
OPS = ("put", "get", "get_stale", "lock")
SWITCH_INTERVAL_S = 0.0005
ROUTES = {  # the route whose server time a phase reports (on the leader)
    "put": "/v1/kv/put",
    "get": "/v1/kv/get",
    "lock": "/v1/locks/acquire",
    "lock_sync": "/v1/locks/acquire",
}


class _Nodes:
    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
        ids = ("a", "b", "c")
        raft = dict(zip(ids, free_ports(3), strict=True))
        api = dict(zip(ids, free_ports(3), strict=True))
        urls = {n: f"http://127.0.0.1:{p}" for n, p in api.items()}
        secret = os.urandom(32).hex()
        self.nodes = {}
        for nid in ids:
            cfg = {
                "node_id": nid,
                "address": f"127.0.0.1:{raft[nid]}",
                "peers": {p: f"127.0.0.1:{raft[p]}" for p in ids if p != nid},
                "data_dir": str(base / nid),
                "api_address": f"127.0.0.1:{api[nid]}",
                "api_peers": {p: u for p, u in urls.items() if p != nid},
            }
            self.nodes[nid] = JsonLineChild(
                nid,
                [sys.executable, "-m", "benches._api_node", json.dumps(cfg)],
                log_path=base / f"{nid}.log",
                env={"BENCH_SECRET": secret, "BENCH_TOKEN": TOKEN},
                cwd=ROOT,
            )
        self.urls = [urls[n] for n in ids]
        self.by_id = urls

    def __enter__(self) -> _Nodes:
        for node in self.nodes.values():
            node.start(30)
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.stop()
            with contextlib.suppress(Exception):
                node.kill9()

    def leader_id(self) -> str:
        """Who leads now (for whose CPU is the leader's: leadership may move under load)."""
        url = self.leader_url()
        return next(nid for nid, u in self.by_id.items() if u == url)

    def leader_url(self, timeout_s: float = 30) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for nid, node in self.nodes.items():
                with contextlib.suppress(ConnectionError, TimeoutError):
                    if node.request("role", timeout_s=2)["leader"]:
                        return self.by_id[nid]
            time.sleep(0.05)
        raise TimeoutError("no coreplane leader")


def _load(
    system: str,
    op: str,
    targets: list[str],
    params: dict[str, Any],
    prefix: str,
    servers: dict[str, int | None] | None = None,
    leader: str | None = None,
    leader_node: JsonLineChild | None = None,
) -> dict[str, Any]:
    if leader_node is not None:
        leader_node.request("phase_start")
    meter = _cpu.Meter(dict(servers or {}))
    meter.__enter__()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benches._api_client",
                system,
                op,
                str(params["threads"]),
                str(params["duration_s"]),
                f"{prefix}{i}/",
                *targets,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "BENCH_TOKEN": TOKEN},
        )
        for i in range(params["procs"])
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=params["duration_s"] + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"{system} {op} client failed: {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    meter.__exit__(
        None, None, None
    )  # spans the clients' set-up too: servers' CPU is an upper bound
    inside: dict[str, Any] = {}
    if leader_node is not None:
        inside = leader_node.request("phase_end", timeout_s=30)
    threads = inside.get("threads_cpu_s", {})
    return {
        "server_ms": inside.get("server_ms", {}).get(ROUTES.get(op, ""), []),
        "leader_api_cpu_s": (threads["api_loop"] + threads["api_pool"]) if threads else None,
        "leader_raft_cpu_s": threads.get("raft"),
        "lat_ms": [x for r in results for x in r["lat_ms"]],
        "elapsed_s": max(r["elapsed_s"] for r in results),
        "ops": sum(r["ok"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "gen_cpu_s": sum(r["cpu_s"] for r in results),
        "servers_cpu_s": _cpu.total(meter.cpu_s.values()) if meter.cpu_s else None,
        "leader_cpu_s": meter.cpu_s.get(leader or ""),
        "busy_core_s": (meter.machine_busy_cores or 0.0) * meter.wall_s,
        "wall_s": meter.wall_s,
    }


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase's figures over its rounds (see `ROUNDS`): totals over total time."""
    lat = [x for r in rounds for x in r["lat_ms"]]
    server_ms = [x for r in rounds for x in r.get("server_ms", [])]
    elapsed = sum(r["elapsed_s"] for r in rounds)
    ops = sum(r["ops"] for r in rounds)

    def cpu(key: str) -> float | None:
        values = [r.get(key) for r in rounds]
        return None if any(v is None for v in values) else sum(values)

    return {
        "ops_per_s": ops / elapsed,
        "p50_ms": statistics.median(lat) if lat else None,
        "errors": sum(r["errors"] for r in rounds),
        "ops": ops,
        "rounds_ops_per_s": [r["ops"] / r["elapsed_s"] for r in rounds],
        "gen_cpu_us_per_op": _cpu.per_write_us(cpu("gen_cpu_s"), ops),
        "gen_cores": (cpu("gen_cpu_s") or 0.0) / elapsed,
        "servers_cpu_us_per_op": _cpu.per_write_us(cpu("servers_cpu_s"), ops),
        "leader_cpu_us_per_op": _cpu.per_write_us(cpu("leader_cpu_s"), ops),
        "server_p50_ms": statistics.median(server_ms) if server_ms else None,
        "leader_api_cpu_us_per_op": _cpu.per_write_us(cpu("leader_api_cpu_s"), ops),
        "leader_raft_cpu_us_per_op": _cpu.per_write_us(cpu("leader_raft_cpu_s"), ops),
        "machine_busy_cores": sum(r["busy_core_s"] for r in rounds)
        / max(sum(r["wall_s"] for r in rounds), 1e-9),
    }


def _local_puts(nodes: _Nodes, leader: str, concurrency: int, duration_s: float) -> dict[str, Any]:
    got = nodes.nodes[leader].request(
        "local_puts", concurrency=concurrency, duration_s=duration_s, timeout_s=duration_s + 60
    )
    lat = got["lat_ms"]
    return {
        "ops_per_s": got["ok"] / got["elapsed_s"],
        "p50_ms": statistics.median(lat) if lat else None,
        "errors": got["errors"],
        "ops": got["ok"],
        "leader_cpu_us_per_op": _cpu.per_write_us(got["cpu_s"], got["ok"]),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def run(json_out: str | None = None, smoke: bool = False) -> dict[str, Any]:
    params = dict(SMOKE if smoke else FULL)
    results: dict[str, dict[str, Any]] = {"coreplane": {}, "etcd": {}}
    etcd_state = (
        "skipped (--smoke)" if smoke else ("measured" if etcd_binary() else "not installed")
    )
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        base = Path(tmp)
        with _Nodes(base / "cp") as nodes, contextlib.ExitStack() as stack:
            leader = nodes.leader_url()
            targets = [leader] + [u for u in nodes.urls if u != leader]
            cp_pids = {nid: node.pid for nid, node in nodes.nodes.items()}
            cp_leader = next(nid for nid, url in nodes.by_id.items() if url == leader)
            etcd = (
                stack.enter_context(EtcdCluster(base / "etcd"))
                if etcd_state == "measured"
                else None
            )
            concurrency = int(params["procs"] * params["threads"])
            results["coreplane"]["put_local"] = _local_puts(
                nodes, cp_leader, concurrency, params["duration_s"]
            )
            lead = nodes.leader_id()
            sync = _load(
                "coreplane",
                "lock_sync",
                targets,
                params,
                "cp-sync",
                cp_pids,
                lead,
                nodes.nodes[lead],
            )
            results["coreplane"]["lock_sync"] = _summary([sync])
            for op in OPS:
                rounds: dict[str, list[dict[str, Any]]] = {"coreplane": [], "etcd": []}
                for i in range(int(params["rounds"])):
                    # ABBA: coreplane, etcd, then etcd, coreplane: the shared machine's load
                    # drifts over a run, and this order gives both systems the same drift.
                    systems = ("coreplane", "etcd") if i % 2 == 0 else ("etcd", "coreplane")
                    for system in systems:
                        if system == "coreplane":
                            lead = nodes.leader_id()  # it may move under load
                            rounds[system].append(
                                _load(
                                    "coreplane",
                                    op,
                                    targets,
                                    params,
                                    f"cp-{op}-{i}",
                                    cp_pids,
                                    lead,
                                    nodes.nodes[lead] if op != "get_stale" else None,
                                )
                            )
                        elif etcd is not None:
                            member = etcd.leader()
                            assert member is not None
                            etcd_pids: dict[str, int | None] = {
                                n: p.pid for n, p in etcd.procs.items()
                            }
                            rounds[system].append(
                                _load(
                                    "etcd",
                                    op,
                                    [str(etcd.client[member])],
                                    params,
                                    f"etcd-{op}-{i}",
                                    etcd_pids,
                                    member,
                                )
                            )
                for system, done in rounds.items():
                    if done:
                        results[system][op] = _summary(done)
            pair: dict[str, list[dict[str, Any]]] = {"put_pair": [], "put_switch": []}
            for i in range(int(params["rounds"])):
                variants = ("put_pair", "put_switch") if i % 2 == 0 else ("put_switch", "put_pair")
                for variant in variants:
                    seconds = SWITCH_INTERVAL_S if variant == "put_switch" else None
                    for node in nodes.nodes.values():
                        node.request("switch_interval", seconds=seconds)
                    lead = nodes.leader_id()
                    pair[variant].append(
                        _load(
                            "coreplane",
                            "put",
                            targets,
                            params,
                            f"cp-{variant}-{i}",
                            cp_pids,
                            lead,
                            nodes.nodes[lead],
                        )
                    )
            for node in nodes.nodes.values():
                node.request("switch_interval", seconds=None)
            for variant, done in pair.items():
                results["coreplane"][variant] = _summary(done)
    cp, et = results["coreplane"], results["etcd"]

    def pick(system: dict[str, Any], op: str, key: str) -> float | None:
        value = system.get(op, {}).get(key)
        return None if value is None else float(value)

    summary: dict[str, Any] = {"etcd": etcd_state}
    for name, op, key, better in (
        ("put_per_s", "put", "ops_per_s", "higher"),
        ("get_per_s", "get", "ops_per_s", "higher"),
        ("get_stale_per_s", "get_stale", "ops_per_s", "higher"),
        ("get_stale_p50_ms", "get_stale", "p50_ms", "lower"),
        ("put_p50_ms", "put", "p50_ms", "lower"),
        ("lock_cycle_per_s", "lock", "ops_per_s", "higher"),
        ("lock_p50_ms", "lock", "p50_ms", "lower"),
    ):
        ours, theirs = pick(cp, op, key), pick(et, op, key)
        summary[name] = ours
        summary[f"{name}_etcd"] = theirs
        summary[f"{name}_ratio_vs_etcd"] = (
            _ratio(ours, theirs) if better == "higher" else _ratio(theirs, ours)
        )
    for op in OPS:
        for key in ("gen_cpu_us_per_op", "servers_cpu_us_per_op", "machine_busy_cores"):
            summary[f"{op}_{key}"] = pick(cp, op, key)
            summary[f"{op}_{key}_etcd"] = pick(et, op, key)
    summary["lock_sync_cycle_per_s"] = pick(cp, "lock_sync", "ops_per_s")
    summary["lock_sync_p50_ms"] = pick(cp, "lock_sync", "p50_ms")
    summary["lock_sync_gen_cpu_us_per_op"] = pick(cp, "lock_sync", "gen_cpu_us_per_op")
    summary["lock_sync_servers_cpu_us_per_op"] = pick(cp, "lock_sync", "servers_cpu_us_per_op")
    for op in ("put", "get", "lock"):
        for key in ("server_p50_ms", "leader_api_cpu_us_per_op", "leader_raft_cpu_us_per_op"):
            summary[f"{op}_{key}"] = pick(cp, op, key)
    for variant in ("put_pair", "put_switch"):
        summary[f"{variant}_per_s"] = pick(cp, variant, "ops_per_s")
        summary[f"{variant}_p50_ms"] = pick(cp, variant, "p50_ms")
        summary[f"{variant}_leader_cpu_us_per_op"] = pick(cp, variant, "leader_cpu_us_per_op")
    summary["put_switch_ratio"] = _ratio(summary["put_switch_per_s"], summary["put_pair_per_s"])
    summary["put_local_per_s"] = pick(cp, "put_local", "ops_per_s")
    summary["put_local_p50_ms"] = pick(cp, "put_local", "p50_ms")
    summary["errors"] = {
        s: {op: r.get("errors") for op, r in res.items() if op in OPS} for s, res in results.items()
    }
    return {"params": {**params, "smoke": smoke}, "results": results, "summary": summary}

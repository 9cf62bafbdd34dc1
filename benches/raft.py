"""Replication: coreplane vs raw pysyncobj vs etcd, 3 processes each on 127.0.0.1, durable.

Measured in one run, each system a fresh 3-member cluster with its own data dirs, all three up
at once and measured in turn, phase by phase and round by round (so a change in the shared
machine's background load hits every system alike): latency first, on a small state, then
throughput, then the kills:
- ``tput``: committed writes/s with many writes in flight (closed loop);
- ``lat``: commit latency p50/p99 at 100 and 1,000 writes/s (open loop: latency from the
  scheduled send time to the acknowledgement, so queueing counts);
- ``failover``: leader kill -9 -> the first acknowledged write among those sent after the kill
  (sequential writers on every survivor, so this includes the client's own retry; median and
  max over the kills), and ``acked_lost``: acknowledged writes missing from every replica at
  the end.

Durability: coreplane fsyncs its LMDB journal before any message leaves a node (default);
etcd fsyncs its WAL (default); raw pysyncobj uses its file journal (an mmap it msyncs once a
second: its only durable mode) with its full dump file (which a restart after log compaction
needs) and every other option at its default (100 ms batching,
0.4-1.4 s election timeout). Load: coreplane and pysyncobj are libraries, so the load runs in
the leader's process through their asynchronous propose (callback on commit + apply). etcd is
a server: its load comes from separate client processes over the v3 JSON gateway on keep-alive
HTTP/1.1 connections (one per client thread, writes in flight = threads x processes), sent to
the leader member, as etcd's own benchmark does. Each config runs `repeats` times; medians are
reported. The anchor is etcd measured in the same run (``tput_ratio_vs_etcd``); when etcd is
not installed it is recorded as ``"not installed"`` and the ratio is null.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benches._raft_procs import (
    ROOT,
    EtcdCluster,
    EtcdPutter,
    NodeCluster,
    etcd_binary,
    etcd_keys,
)

FULL = {"tput_s": 5.0, "inflight": 256, "lat_s": 5.0, "rates": [100, 1000], "kills": 9,
        "raw_kills": 3, "repeats": 3, "etcd_client_procs": 4, "etcd_client_threads": 64}
SMOKE = {"tput_s": 1.5, "inflight": 32, "lat_s": 1.0, "rates": [100], "kills": 1,
         "raw_kills": 0, "repeats": 1, "etcd_client_procs": 0, "etcd_client_threads": 0}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _median(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _lat_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    p50s = [_pct(r["lat_ms"], 0.50) for r in runs]
    p99s = [_pct(r["lat_ms"], 0.99) for r in runs]
    return {"p50_ms": _median(p50s), "p99_ms": _median(p99s), "p50_ms_runs": p50s,
            "p99_ms_runs": p99s, "ok": [r["ok"] for r in runs], "sent": [r["sent"] for r in runs]}


# ------------------------------------------------------------------ coreplane and pysyncobj


class _Library:
    """Load phases of one library cluster (coreplane or raw pysyncobj), load in the leader."""

    def __init__(self, cluster: NodeCluster) -> None:
        self.cluster = cluster

    def warm(self) -> None:
        self.cluster.leader().request("closed", inflight=8, duration_s=0.5, prefix="warm-")

    def lat(self, rate: int, r: int, p: dict[str, Any]) -> dict[str, Any]:
        return self.cluster.leader().request("open", rate=rate, duration_s=p["lat_s"],
                                             prefix=f"l{rate}-{r}-", timeout_s=p["lat_s"] + 60)

    def tput(self, r: int, p: dict[str, Any]) -> float:
        res = self.cluster.leader().request("closed", inflight=p["inflight"],
                                            duration_s=p["tput_s"], prefix=f"t{r}-",
                                            timeout_s=p["tput_s"] + 60)
        return float(res["writes_per_s"])


class _Etcd:
    """Load phases of the etcd cluster, from separate client processes to the leader."""

    def __init__(self, etcd: EtcdCluster) -> None:
        self.etcd = etcd

    def _port(self) -> int:
        deadline = time.monotonic() + 20
        leader = self.etcd.leader()
        while leader is None and time.monotonic() < deadline:
            time.sleep(0.05)
            leader = self.etcd.leader()
        assert leader is not None
        return self.etcd.client[leader]

    def warm(self) -> None:
        _etcd_clients("closed", self._port(), ["8", "0.5", "warm-"], 1)

    def lat(self, rate: int, r: int, p: dict[str, Any]) -> dict[str, Any]:
        return _etcd_clients("open", self._port(), [str(rate), str(p["lat_s"]),
                                                    f"l{rate}-{r}-"], 1)[0]

    def tput(self, r: int, p: dict[str, Any]) -> float:
        res = _etcd_clients("closed", self._port(), [str(p["etcd_client_threads"]),
                                                     str(p["tput_s"]), f"t{r}-"],
                            p["etcd_client_procs"])
        return sum(x["ok"] for x in res) / max(x["elapsed_s"] for x in res)


def _measure(systems: dict[str, Any], p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every phase runs once per system in turn, `repeats` rounds, so a change in the
    machine's background load hits all systems alike (the machine is shared)."""
    out: dict[str, dict[str, Any]] = {name: {} for name in systems}
    for system in systems.values():
        system.warm()
    for rate in p["rates"]:  # latency first, on a small state, for every system alike
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
        for r in range(p["repeats"]):
            for name, system in systems.items():
                runs[name].append(system.lat(rate, r, p))
        for name in systems:
            out[name][f"lat_at_{rate}"] = _lat_summary(runs[name])
    tputs: dict[str, list[float]] = {name: [] for name in systems}
    for r in range(p["repeats"]):
        for name, system in systems.items():
            tputs[name].append(system.tput(r, p))
    for name in systems:
        out[name]["tput_writes_per_s"] = _median(tputs[name])
        out[name]["tput_runs"] = tputs[name]
    return out


def _kills_library(cluster: NodeCluster, kills: int) -> dict[str, Any]:
    failovers: list[float | None] = []
    acked: list[str] = []
    for k in range(kills):
        leader = cluster.leader()
        survivors = [n for n in cluster.nodes.values() if n is not leader]
        prefixes = {n.node_id: f"k{k}{n.node_id}-" for n in survivors}
        for n in survivors:
            n.request("writer_start", prefix=prefixes[n.node_id])
        time.sleep(0.3)
        killed_at = time.monotonic()
        leader.kill9()
        deadline = killed_at + 10
        while time.monotonic() < deadline:
            lasts = [n.request("writer_last", prefix=prefixes[n.node_id])["last"]
                     for n in survivors]
            if any(t is not None and t >= killed_at for t in lasts):
                break
            time.sleep(0.05)
        firsts = []
        for n in survivors:
            res = n.request("writer_stop", prefix=prefixes[n.node_id])
            acked.extend(res["acked"])
            firsts += [done for started, done in zip(res["started_at"], res["done_at"],
                                                     strict=True) if started >= killed_at]
        failovers.append(min(firsts) - killed_at if firsts else None)
        leader.start()
        time.sleep(1.0)  # catch up before the next kill
    cluster.leader()
    time.sleep(3.0)  # let a restarted node catch up (raw pysyncobj redials every 5 s)
    present: set[str] = set()
    for n in cluster.nodes.values():  # a write is lost if no replica has it
        present |= set(n.request("keys", prefix="k")["keys"])
    lost = [key for key in acked if key not in present]
    return _failover_summary(failovers, len(acked), lost)


def _failover_summary(failovers: list[float | None], acked: int,
                      lost: list[str]) -> dict[str, Any]:
    measured = [f for f in failovers if f is not None]
    return {"kills": len(failovers), "failover_s": failovers,
            "failover_s_median": _median(measured),
            "failover_s_max": max(measured) if len(measured) == len(failovers) and measured
            else None,
            "acked": acked, "acked_lost": len(lost), "lost_sample": lost[:10]}


# ---------------------------------------------------------------------------------- etcd


def _etcd_clients(mode: str, port: int, args: list[str], procs: int) -> list[dict[str, Any]]:
    running = [subprocess.Popen([sys.executable, "-m", "benches._raft_etcd_client", mode,
                                 str(port), *args[:-1], f"{args[-1]}{i}-"], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True) for i in range(procs)]
    results = []
    for proc in running:
        try:
            stdout, _ = proc.communicate(timeout=120)
            results.append(json.loads(stdout))
        except (subprocess.TimeoutExpired, ValueError):
            proc.kill()
            proc.wait(timeout=10)
    return results


def _kills_etcd(etcd: EtcdCluster, kills: int) -> dict[str, Any]:
    failovers: list[float | None] = []
    acked: list[str] = []
    for k in range(kills):
        leader = etcd.leader()
        deadline = time.monotonic() + 20
        while leader is None and time.monotonic() < deadline:
            time.sleep(0.05)
            leader = etcd.leader()
        assert leader is not None
        survivors = [n for n in etcd.names if n != leader]
        done_at: list[tuple[float, float]] = []  # (sent, acknowledged) per write
        stop = threading.Event()

        def writer(name: str, k: int = k, sink: list[tuple[float, float]] = done_at,
                   stop: threading.Event = stop) -> None:
            putter = EtcdPutter(etcd.client[name], timeout_s=0.5)
            i = 0
            while not stop.is_set():
                key = f"k{k}{name}-{i}"
                started = time.monotonic()
                if putter.put(key):
                    acked.append(key)
                    sink.append((started, time.monotonic()))
                    i += 1
                time.sleep(0.002)

        threads = [threading.Thread(target=writer, args=(n,)) for n in survivors]
        for t in threads:
            t.start()
        time.sleep(0.3)
        killed_at = time.monotonic()
        etcd.kill9(leader)
        end = killed_at + 10
        while time.monotonic() < end and not any(s >= killed_at for s, _ in list(done_at)):
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        after = [done for started, done in done_at if started >= killed_at]
        failovers.append(min(after) - killed_at if after else None)
        etcd.start(leader, state="existing")
        time.sleep(1.0)
        settle = time.monotonic() + 10
        while etcd.leader() is None and time.monotonic() < settle:
            time.sleep(0.05)
    time.sleep(1.0)
    present: set[str] = set()
    for name in etcd.names:
        with contextlib.suppress(OSError):
            present |= set(etcd_keys(etcd.client[name], "k"))
    lost = [key for key in acked if key not in present]
    return _failover_summary(failovers, len(acked), lost)


# ---------------------------------------------------------------------------------- run


def run(*, json_out: str | None, smoke: bool) -> dict[str, Any]:
    p = dict(SMOKE if smoke else FULL)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-raft-") as tmp, \
            contextlib.ExitStack() as stack:
        base = Path(tmp)
        core = stack.enter_context(NodeCluster("coreplane", base / "coreplane"))
        raw = stack.enter_context(NodeCluster("pysyncobj", base / "pysyncobj"))
        systems: dict[str, Any] = {"coreplane": _Library(core), "pysyncobj": _Library(raw)}
        etcd: EtcdCluster | None = None
        if smoke:
            results["etcd"] = "skipped (--smoke)"
        elif etcd_binary() is None:
            results["etcd"] = "not installed"
        else:
            etcd = stack.enter_context(EtcdCluster(base / "etcd"))
            systems["etcd"] = _Etcd(etcd)
        results.update(_measure(systems, p))
        results["coreplane"]["failover"] = _kills_library(core, p["kills"])
        if p["raw_kills"]:
            results["pysyncobj"]["failover"] = _kills_library(raw, p["raw_kills"])
        if etcd is not None:
            results["etcd"]["writes_in_flight"] = (p["etcd_client_threads"]
                                                   * p["etcd_client_procs"])
            results["etcd"]["failover"] = _kills_etcd(etcd, p["kills"])
    cp = results["coreplane"]
    etcd = results["etcd"] if isinstance(results["etcd"], dict) else None
    failover = cp.get("failover", {})
    summary = {
        "tput_writes_per_s": cp["tput_writes_per_s"],
        "tput_ratio_vs_etcd": (cp["tput_writes_per_s"] / etcd["tput_writes_per_s"]
                               if etcd and etcd["tput_writes_per_s"] else None),
        "tput_ratio_vs_pysyncobj": (cp["tput_writes_per_s"]
                                    / results["pysyncobj"]["tput_writes_per_s"]),
        "p50_ms_at_100": cp["lat_at_100"]["p50_ms"],
        "p99_ms_at_100": cp["lat_at_100"]["p99_ms"],
        "p50_ms_at_1000": cp.get("lat_at_1000", {}).get("p50_ms"),
        "p99_ms_at_1000": cp.get("lat_at_1000", {}).get("p99_ms"),
        "failover_s_median": failover.get("failover_s_median"),
        "failover_s_max": failover.get("failover_s_max"),
        "acked_lost": failover.get("acked_lost"),
        "etcd": "measured" if etcd else results["etcd"],
    }
    return {"bench": "raft", "params": {**p, "smoke": smoke}, "results": results,
            "summary": summary}

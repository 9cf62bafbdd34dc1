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
  the end. The killed node restarts and the next kill waits until it has applied what the
  cluster had committed when it came back (``catch_up_s`` per kill, both systems alike): each
  failover starts from a healthy cluster.

Load, public paths only. coreplane is a library: its load runs in the leader's process, once
through ``kv.put`` from `threads` threads (``coreplane_sync``: the common embedding, one
waiting thread per write in flight; its latency through ``kv.put`` from a pool of threads) and
once through the pipelined ``kv.put_async`` with `inflight` writes outstanding
(``coreplane_async``). Raw pysyncobj is driven like the pipelined path (its callback
``set``). etcd is a server: its load comes from separate processes on its native gRPC API
(`benches._raft_etcd_client`, `etcd_inflight` Puts outstanding each) sent to the leader
member, as etcd's own benchmark does; how many processes is found in the warm-up: every count
from one to `etcd_procs_max` is measured, and the largest count within `etcd_sweep_gain` of
the best is used (the sweep is in the record). Not the first that stopped gaining: a noisy
first step once settled on one process at 7.7k writes/s in the sweep, and that one process
then drove etcd at 4.3-5.3k in the measured phases, where five drove it at 8.5-8.9k.

CPU (`benches._cpu`, /proc utime + stime before and after each throughput phase): every
member's CPU per committed write (``leader_cpu_us_per_write`` is the leader's), and every load
generator's CPU per write, the cores it used and whether it was near its ceiling (>= 90% of
the cores it could use: one per Python process, its GIL, at most the machine's). coreplane's
generator is the leader process itself (it shares the GIL), so its ceiling is that process's
one core and ``caller_cpu_us_per_write`` is the load threads' own CPU (the bench loop plus the
part of ``kv.put`` that runs on the caller's thread). A figure for etcd measured while its
generator was near its ceiling is a floor.

Durability: coreplane fsyncs its LMDB journal before any message leaves a node (default);
etcd fsyncs its WAL (default); raw pysyncobj uses its file journal (an mmap it msyncs once a
second: its only durable mode) with its full dump file (which a restart after log compaction
needs) and every other option at its default (100 ms batching, 0.4-1.4 s election timeout).
Each config runs `repeats` times; medians are reported. The anchor is etcd measured in the same
run (``tput_ratio_vs_etcd_sync`` / ``_async``). The full run installs what etcd's side needs
where it is missing (etcd: ``apt-get install -y etcd-server`` as root; grpcio: pip); when it
cannot, etcd is recorded as ``"not installed"`` with the command to run, and the ratios are
null. ``--smoke`` installs nothing and skips etcd.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benches import _cpu
from benches._raft_procs import (
    ROOT,
    EtcdCluster,
    EtcdPutter,
    NodeCluster,
    etcd_binary,
    etcd_keys,
    post,
)

FULL = {
    "tput_s": 5.0,
    "threads": 256,
    "inflight": 256,
    "lat_s": 5.0,
    "rates": [100, 1000],
    "kills": 9,
    "raw_kills": 3,
    "repeats": 3,
    "etcd_inflight": 256,
    "etcd_procs_max": 6,
    "etcd_sweep_s": 3.0,
    "etcd_sweep_gain": 0.05,
}
SMOKE = {
    "tput_s": 1.5,
    "threads": 32,
    "inflight": 32,
    "lat_s": 1.0,
    "rates": [100],
    "kills": 1,
    "raw_kills": 0,
    "repeats": 1,
    "etcd_inflight": 0,
    "etcd_procs_max": 0,
    "etcd_sweep_s": 0.0,
    "etcd_sweep_gain": 0.0,
}
ETCD_INSTALL = ["apt-get", "install", "-y", "etcd-server"]
CLIENT_START_S = 2.0  # etcd client processes start (import grpc) before their common window


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
    return {
        "p50_ms": _median(p50s),
        "p99_ms": _median(p99s),
        "p50_ms_runs": p50s,
        "p99_ms_runs": p99s,
        "ok": [r["ok"] for r in runs],
        "sent": [r["sent"] for r in runs],
    }


def _tput_record(
    ok: int,
    elapsed_s: float,
    meter: _cpu.Meter,
    leader: str,
    generator: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """One throughput phase: writes/s, every member's CPU per write, the generator's cost."""
    members = {name: _cpu.per_write_us(cpu, ok) for name, cpu in meter.cpu_s.items()}
    leader_cpu = meter.cpu_s.get(leader)
    return {
        "writes_per_s": ok / elapsed_s if elapsed_s > 0 else 0.0,
        "ok": ok,
        "elapsed_s": elapsed_s,
        "leader_cpu_us_per_write": members.get(leader),
        "leader_sys_us_per_write": _cpu.per_write_us(meter.sys_s.get(leader), ok),
        "leader_cores": None if leader_cpu is None else leader_cpu / meter.wall_s,
        "members_cpu_us_per_write": members,
        "machine_busy_cores": meter.machine_busy_cores,
        "generator": generator,
        **extra,
    }


def _tput_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    gens = [r["generator"] for r in runs]
    return {
        "tput_writes_per_s": _median([r["writes_per_s"] for r in runs]),
        "tput_runs": [r["writes_per_s"] for r in runs],
        "leader_cpu_us_per_write": _median([r["leader_cpu_us_per_write"] for r in runs]),
        "leader_sys_us_per_write": _median([r["leader_sys_us_per_write"] for r in runs]),
        "leader_cores": _median([r["leader_cores"] for r in runs]),
        "machine_busy_cores": _median([r["machine_busy_cores"] for r in runs]),
        "generator": {
            "cpu_us_per_write": _median([g["cpu_us_per_write"] for g in gens]),
            "cores": _median([g["cores"] for g in gens]),
            "ceiling_cores": gens[0]["ceiling_cores"] if gens else None,
            "near_ceiling_runs": [g["near_ceiling"] for g in gens],
            "near_ceiling": any(bool(g["near_ceiling"]) for g in gens),
            **(
                {"caller_cpu_us_per_write": _median([g["caller_cpu_us_per_write"] for g in gens])}
                if gens and "caller_cpu_us_per_write" in gens[0]
                else {}
            ),
            **({"procs": gens[0]["procs"]} if gens and "procs" in gens[0] else {}),
        },
        "tput_phases": runs,
    }


# ------------------------------------------------------------------ coreplane and pysyncobj


class _Library:
    """Load phases of one library cluster, load in the leader's process: the pipelined path
    (coreplane's ``kv.put_async``, raw pysyncobj's callback ``set``)."""

    TPUT_OP, LAT_OP, WIDTH = "closed", "open", "inflight"

    def __init__(self, cluster: NodeCluster) -> None:
        self.cluster = cluster

    def warm(self, p: dict[str, Any]) -> None:
        self.cluster.leader().request(
            self.TPUT_OP, **{self.WIDTH: 8}, duration_s=0.5, prefix=f"warm{self.TPUT_OP}-"
        )

    def lat(self, rate: int, r: int, p: dict[str, Any]) -> dict[str, Any]:
        return self.cluster.leader().request(
            self.LAT_OP,
            rate=rate,
            duration_s=p["lat_s"],
            prefix=f"l{self.LAT_OP}{rate}-{r}-",
            timeout_s=p["lat_s"] + 60,
        )

    def tput(self, r: int, p: dict[str, Any]) -> dict[str, Any]:
        leader = self.cluster.leader()
        pids = {nid: node.pid for nid, node in self.cluster.nodes.items()}
        with _cpu.Meter(pids) as meter:
            res = leader.request(
                self.TPUT_OP,
                **{self.WIDTH: p[self.WIDTH]},
                duration_s=p["tput_s"],
                prefix=f"t{self.TPUT_OP}{r}-",
                timeout_s=p["tput_s"] + 90,
            )
        leader_cpu = meter.cpu_s.get(leader.node_id)
        # The generator is the leader process (same GIL): its ceiling is that one core.
        generator = _cpu.generator(
            leader_cpu,
            meter.wall_s,
            res["ok"],
            _cpu.ceiling_cores(1),
            in_process=True,
            caller_cpu_us_per_write=_cpu.per_write_us(res["caller_cpu_s"], res["ok"]),
        )
        return _tput_record(
            res["ok"],
            res["elapsed_s"],
            meter,
            leader.node_id,
            generator,
            failed=res["failed"],
            unfinished=res["unfinished"],
            **{k: res[k] for k in ("batch_entries", "batched_writes") if k in res},
        )


class _LibrarySync(_Library):
    """coreplane's synchronous ``kv.put``: `threads` threads of the leader's process."""

    TPUT_OP, LAT_OP, WIDTH = "threads", "open_sync", "threads"


# ---------------------------------------------------------------------------------- etcd


class _Etcd:
    """Load phases of the etcd cluster: gRPC client processes sending to the leader."""

    def __init__(self, etcd: EtcdCluster) -> None:
        self.etcd = etcd
        self.procs = 1
        self.sweep: list[dict[str, Any]] = []

    def _leader(self) -> str:
        deadline = time.monotonic() + 20
        leader = self.etcd.leader()
        while leader is None and time.monotonic() < deadline:
            time.sleep(0.05)
            leader = self.etcd.leader()
        assert leader is not None
        return leader

    def warm(self, p: dict[str, Any]) -> None:
        """Warm up, then find how many client processes etcd needs: measure every count up
        to `etcd_procs_max` and load with the largest whose writes/s is within
        `etcd_sweep_gain` of the best (more writes in flight never starve etcd's batching;
        its generator's CPU is reported, so a count that crowds it out shows)."""
        self._closed(1, 8, 0.5, "warm-")
        for procs in range(1, p["etcd_procs_max"] + 1):
            rec = self._closed(procs, p["etcd_inflight"], p["etcd_sweep_s"], f"s{procs}-")
            self.sweep.append(
                {
                    "procs": procs,
                    "writes_per_s": rec["writes_per_s"],
                    "generator_cores": rec["generator"]["cores"],
                    "generator_near_ceiling": rec["generator"]["near_ceiling"],
                    "leader_cores": rec["leader_cores"],
                    "machine_busy_cores": rec["machine_busy_cores"],
                }
            )
        if self.sweep:
            best = max(s["writes_per_s"] for s in self.sweep)
            floor = best * (1 - p["etcd_sweep_gain"])
            self.procs = max(s["procs"] for s in self.sweep if s["writes_per_s"] >= floor)

    def lat(self, rate: int, r: int, p: dict[str, Any]) -> dict[str, Any]:
        port = self.etcd.client[self._leader()]
        return _etcd_clients("open", port, rate, p["lat_s"], f"l{rate}-{r}-", 1)[0]

    def tput(self, r: int, p: dict[str, Any]) -> dict[str, Any]:
        return self._closed(self.procs, p["etcd_inflight"], p["tput_s"], f"t{r}-")

    def _closed(self, procs: int, inflight: int, duration_s: float, prefix: str) -> dict[str, Any]:
        leader = self._leader()
        pids = {name: proc.pid for name, proc in self.etcd.procs.items()}
        meter = _cpu.Meter(pids)
        res = _etcd_clients(
            "closed", self.etcd.client[leader], inflight, duration_s, prefix, procs, meter=meter
        )
        ok = sum(x["ok"] for x in res)
        elapsed = max((x["elapsed_s"] for x in res), default=0.0)
        cpu_s = _cpu.total(x.get("cpu_s") for x in res) if res else None
        generator = _cpu.generator(
            cpu_s,
            elapsed,
            ok,
            _cpu.ceiling_cores(procs),
            procs=procs,
            procs_answered=len(res),
            cores_per_proc=[x["cpu_s"] / x["elapsed_s"] for x in res if x["elapsed_s"] > 0],
        )
        return _tput_record(
            ok, elapsed, meter, leader, generator, failed=sum(x["failed"] for x in res)
        )


def _etcd_clients(
    mode: str,
    port: int,
    load: float,
    duration_s: float,
    prefix: str,
    procs: int,
    meter: _cpu.Meter | None = None,
) -> list[dict[str, Any]]:
    """Run `procs` client processes over one common window (starting CLIENT_START_S from
    now, so that every one has imported grpc); `meter` spans that window."""
    start_at = time.monotonic() + CLIENT_START_S
    running = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benches._raft_etcd_client",
                mode,
                str(port),
                str(load),
                str(duration_s),
                f"{prefix}{i}-",
                repr(start_at),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(procs)
    ]
    time.sleep(max(0.0, start_at - time.monotonic()))
    results = []
    with meter if meter is not None else contextlib.nullcontext():
        for proc in running:
            try:
                stdout, _ = proc.communicate(timeout=duration_s + 120)
                results.append(json.loads(stdout))
            except (subprocess.TimeoutExpired, ValueError):
                proc.kill()
                proc.wait(timeout=10)
    return results


def _measure(systems: dict[str, Any], p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every phase runs once per system in turn, `repeats` rounds, so a change in the
    machine's background load hits all systems alike (the machine is shared)."""
    out: dict[str, dict[str, Any]] = {name: {} for name in systems}
    for system in systems.values():
        system.warm(p)
    for rate in p["rates"]:  # latency first, on a small state, for every system alike
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
        for r in range(p["repeats"]):
            for name, system in systems.items():
                runs[name].append(system.lat(rate, r, p))
        for name in systems:
            out[name][f"lat_at_{rate}"] = _lat_summary(runs[name])
    tputs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    for r in range(p["repeats"]):
        for name, system in systems.items():
            tputs[name].append(system.tput(r, p))
    for name in systems:
        out[name].update(_tput_summary(tputs[name]))
    return out


def _setup_etcd() -> str | None:
    """None when etcd and grpcio are there (installing what is missing, as root), else why
    etcd is not measured; the command to run goes to stderr."""
    if etcd_binary() is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"bench raft: installing etcd: {' '.join(ETCD_INSTALL)}", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if not _run(ETCD_INSTALL, env) and _run(["apt-get", "update"], env):
            _run(ETCD_INSTALL, env)
    if etcd_binary() is None:
        print(
            f"bench raft: etcd is not installed; to compare with it: sudo {' '.join(ETCD_INSTALL)}",
            file=sys.stderr,
        )
        return "not installed"
    if importlib.util.find_spec("grpc") is None:
        print("bench raft: installing grpcio (etcd's load client)", file=sys.stderr)
        _run([sys.executable, "-m", "pip", "install", "-q", "grpcio"], dict(os.environ))
        importlib.invalidate_caches()
    if importlib.util.find_spec("grpc") is None:
        print(
            f"bench raft: grpcio is missing; to compare with etcd: {sys.executable} -m pip "
            "install grpcio  (or: pip install -e '.[bench]')",
            file=sys.stderr,
        )
        return "not installed (grpcio)"
    return None


def _run(argv: list[str], env: dict[str, str]) -> bool:
    try:
        return (
            subprocess.run(
                argv, env=env, stdout=subprocess.DEVNULL, timeout=900, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


# ---------------------------------------------------------------------------------- kills


def _caught_up_library(cluster: NodeCluster, restarted: Any, timeout_s: float = 60.0) -> float:
    """Seconds until a restarted node has applied what its leader had committed when it came
    back. The next kill waits for it: a failover is measured from a healthy cluster, not from
    one whose other survivor is still loading a large snapshot (which once made later kills
    look 5x slower than the first)."""
    started = time.monotonic()
    target = cluster.leader().request("indexes")["commit"]
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(ConnectionError, TimeoutError):
            if restarted.request("indexes", timeout_s=2)["applied"] >= target:
                break
        time.sleep(0.05)
    return time.monotonic() - started


def _kills_library(cluster: NodeCluster, kills: int) -> dict[str, Any]:
    failovers: list[float | None] = []
    acked: list[str] = []
    catch_up: list[float] = []
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
            lasts = [
                n.request("writer_last", prefix=prefixes[n.node_id])["last"] for n in survivors
            ]
            if any(t is not None and t >= killed_at for t in lasts):
                break
            time.sleep(0.05)
        firsts = []
        for n in survivors:
            res = n.request("writer_stop", prefix=prefixes[n.node_id])
            acked.extend(res["acked"])
            firsts += [
                done
                for started, done in zip(res["started_at"], res["done_at"], strict=True)
                if started >= killed_at
            ]
        failovers.append(min(firsts) - killed_at if firsts else None)
        leader.start()
        catch_up.append(_caught_up_library(cluster, leader))
        time.sleep(1.0)
    cluster.leader()
    time.sleep(3.0)  # let a restarted node catch up (raw pysyncobj redials every 5 s)
    present: set[str] = set()
    for n in cluster.nodes.values():  # a write is lost if no replica has it
        present |= set(n.request("keys", prefix="k")["keys"])
    lost = [key for key in acked if key not in present]
    return {**_failover_summary(failovers, len(acked), lost), "catch_up_s": catch_up}


def _failover_summary(failovers: list[float | None], acked: int, lost: list[str]) -> dict[str, Any]:
    measured = [f for f in failovers if f is not None]
    return {
        "kills": len(failovers),
        "failover_s": failovers,
        "failover_s_median": _median(measured),
        "failover_s_max": max(measured) if len(measured) == len(failovers) and measured else None,
        "acked": acked,
        "acked_lost": len(lost),
        "lost_sample": lost[:10],
    }


def _raft_index(etcd: EtcdCluster, name: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        status = post(etcd.client[name], "/v3/maintenance/status", {}, timeout_s=1)
        return int(status["raftIndex"])
    return None


def _caught_up_etcd(etcd: EtcdCluster, restarted: str, timeout_s: float = 60.0) -> float:
    """As `_caught_up_library`: until the restarted member's raft index reaches what the
    others had when it came back."""
    started = time.monotonic()
    others = [i for i in (_raft_index(etcd, n) for n in etcd.names if n != restarted) if i]
    target = max(others, default=0)
    while time.monotonic() - started < timeout_s:
        index = _raft_index(etcd, restarted)
        if index is not None and index >= target:
            break
        time.sleep(0.05)
    return time.monotonic() - started


def _kills_etcd(etcd: EtcdCluster, kills: int) -> dict[str, Any]:
    failovers: list[float | None] = []
    acked: list[str] = []
    catch_up: list[float] = []
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

        def writer(
            name: str,
            k: int = k,
            sink: list[tuple[float, float]] = done_at,
            stop: threading.Event = stop,
        ) -> None:
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
        catch_up.append(_caught_up_etcd(etcd, leader))
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
    return {**_failover_summary(failovers, len(acked), lost), "catch_up_s": catch_up}


# ---------------------------------------------------------------------------------- run


def _load_average() -> float | None:
    """The machine's 1-minute load average (a shared machine: how loaded it was)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def run(*, json_out: str | None, smoke: bool) -> dict[str, Any]:
    p = dict(SMOKE if smoke else FULL)
    results: dict[str, Any] = {}
    load_at_start = _load_average()
    etcd_state = "skipped (--smoke)" if smoke else _setup_etcd()
    with tempfile.TemporaryDirectory(prefix="bench-raft-") as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        core = stack.enter_context(NodeCluster("coreplane", base / "coreplane"))
        raw = stack.enter_context(NodeCluster("pysyncobj", base / "pysyncobj"))
        systems: dict[str, Any] = {
            "coreplane_sync": _LibrarySync(core),
            "coreplane_async": _Library(core),
            "pysyncobj": _Library(raw),
        }
        etcd: EtcdCluster | None = None
        if etcd_state is None:
            etcd = stack.enter_context(EtcdCluster(base / "etcd"))
            systems["etcd"] = _Etcd(etcd)
        measured = _measure(systems, p)
        results["coreplane"] = {
            "sync": measured["coreplane_sync"],
            "async": measured["coreplane_async"],
        }
        results["pysyncobj"] = measured["pysyncobj"]
        results["etcd"] = measured.get("etcd", etcd_state)
        results["coreplane"]["failover"] = _kills_library(core, p["kills"])
        if p["raw_kills"]:
            results["pysyncobj"]["failover"] = _kills_library(raw, p["raw_kills"])
        if etcd is not None:
            results["etcd"]["client_procs"] = systems["etcd"].procs
            results["etcd"]["client_procs_sweep"] = systems["etcd"].sweep
            results["etcd"]["writes_in_flight"] = p["etcd_inflight"] * systems["etcd"].procs
            results["etcd"]["failover"] = _kills_etcd(etcd, p["kills"])
    return {
        "bench": "raft",
        "params": {**p, "smoke": smoke},
        "results": results,
        "summary": _summary(results),
        # 1-minute load averages at the start and the end (2 cores: above ~2 the systems
        # competed with other work for CPU, and every figure here is noisier)
        "load_average": [load_at_start, _load_average()],
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _writes_per_batch(system: dict[str, Any]) -> float | None:
    """Mean writes per batch entry the leader wrote in the throughput phases (batch entries
    only: a write alone in the queue is a plain entry and not counted)."""
    phases = system.get("tput_phases", [])
    entries = sum(p.get("batch_entries", 0) for p in phases)
    writes = sum(p.get("batched_writes", 0) for p in phases)
    return writes / entries if entries else None


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    sync, asyn = results["coreplane"]["sync"], results["coreplane"]["async"]
    raw = results["pysyncobj"]
    etcd = results["etcd"] if isinstance(results["etcd"], dict) else None
    failover = results["coreplane"].get("failover", {})
    etcd_failover = etcd.get("failover", {}) if etcd else {}

    def lat(system: dict[str, Any] | None, rate: int, q: str) -> float | None:
        return system.get(f"lat_at_{rate}", {}).get(f"{q}_ms") if system else None

    def tput(system: dict[str, Any] | None) -> float | None:
        return system["tput_writes_per_s"] if system else None

    generators = {
        "coreplane_sync": sync["generator"],
        "coreplane_async": asyn["generator"],
        "pysyncobj": raw["generator"],
    }
    if etcd:
        generators["etcd"] = etcd["generator"]
    return {
        "tput_writes_per_s_sync": tput(sync),
        "tput_writes_per_s_async": tput(asyn),
        "etcd_tput_writes_per_s": tput(etcd),
        "tput_ratio_vs_etcd_sync": _ratio(tput(sync), tput(etcd)),
        "tput_ratio_vs_etcd_async": _ratio(tput(asyn), tput(etcd)),
        "tput_ratio_vs_pysyncobj": _ratio(tput(asyn), tput(raw)),  # both pipelined
        "p50_ms_at_100_sync": lat(sync, 100, "p50"),
        "p99_ms_at_100_sync": lat(sync, 100, "p99"),
        "p50_ms_at_1000_sync": lat(sync, 1000, "p50"),
        "p99_ms_at_1000_sync": lat(sync, 1000, "p99"),
        "p50_ms_at_100_async": lat(asyn, 100, "p50"),
        "p99_ms_at_1000_async": lat(asyn, 1000, "p99"),
        "etcd_p50_ms_at_100": lat(etcd, 100, "p50"),
        "etcd_p99_ms_at_1000": lat(etcd, 1000, "p99"),
        "p50_at_100_ratio_vs_etcd_sync": _ratio(lat(sync, 100, "p50"), lat(etcd, 100, "p50")),
        "p99_at_1000_ratio_vs_etcd_sync": _ratio(lat(sync, 1000, "p99"), lat(etcd, 1000, "p99")),
        "failover_s_median": failover.get("failover_s_median"),
        "failover_s_max": failover.get("failover_s_max"),
        "etcd_failover_s_median": etcd_failover.get("failover_s_median"),
        "failover_ratio_vs_etcd": _ratio(
            failover.get("failover_s_median"), etcd_failover.get("failover_s_median")
        ),
        "acked_lost": failover.get("acked_lost"),
        "etcd_acked_lost": etcd_failover.get("acked_lost"),
        "writes_per_batch_entry_sync": _writes_per_batch(sync),
        "writes_per_batch_entry_async": _writes_per_batch(asyn),
        "leader_cpu_us_per_write_sync": sync["leader_cpu_us_per_write"],
        "leader_cpu_us_per_write_async": asyn["leader_cpu_us_per_write"],
        "pysyncobj_leader_cpu_us_per_write": raw["leader_cpu_us_per_write"],
        "etcd_leader_cpu_us_per_write": etcd["leader_cpu_us_per_write"] if etcd else None,
        "generators": {
            name: {
                k: g.get(k)
                for k in (
                    "cpu_us_per_write",
                    "cores",
                    "ceiling_cores",
                    "near_ceiling",
                    "caller_cpu_us_per_write",
                    "procs",
                )
                if k in g
            }
            for name, g in generators.items()
        },
        "etcd_generator_near_ceiling": etcd["generator"]["near_ceiling"] if etcd else None,
        "etcd": "measured" if etcd else results["etcd"],
    }

"""Processes for `benches.raft`: node processes (coreplane, raw pysyncobj) and etcd members.

Every process started here is killed by its owner's ``close()`` (used as a context manager);
ports are free ports on 127.0.0.1. etcd's throughput and latency load goes through its gRPC
API from separate processes (`benches._raft_etcd_client`); the helpers here speak its v3 JSON
gateway (``POST /v3/...``, base64 keys) for what is not load: the leader each member names,
the keys present after the kills, and the kill runs' sequential writers (`EtcdPutter`), so the
driver itself needs no grpcio.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from coreplane.testing.ports import free_ports
from coreplane.testing.procs import JsonLineChild

ROOT = Path(__file__).resolve().parents[1]


class NodeProcess(JsonLineChild):
    """One `_raft_node` process and its JSON-line channel (`coreplane.testing.procs`)."""

    def __init__(self, cfg: dict[str, Any], log_path: Path, secret_hex: str) -> None:
        super().__init__(
            str(cfg["node_id"]),
            [sys.executable, "-m", "benches._raft_node", json.dumps(cfg)],
            log_path=log_path,
            env={"BENCH_SECRET": secret_hex},
            cwd=ROOT,
        )
        self.cfg = cfg

    @property
    def node_id(self) -> str:
        return self.name

    def start(self, timeout_s: float = 20.0) -> None:
        super().start(timeout_s)

    def request(self, op: str, *, timeout_s: float = 30.0, **fields: Any) -> dict[str, Any]:
        return super().request(op, timeout_s=timeout_s, **fields)


class NodeCluster:
    """Three `NodeProcess`es of one kind ("coreplane" or "pysyncobj") on 127.0.0.1."""

    def __init__(
        self,
        kind: str,
        base: Path,
        options: dict[str, Any] | None = None,
        switch_interval_s: float | None = None,
    ) -> None:
        base.mkdir(parents=True, exist_ok=True)
        ids = ("a", "b", "c")
        addrs = {nid: f"127.0.0.1:{p}" for nid, p in zip(ids, free_ports(3), strict=True)}
        secret = os.urandom(32).hex()
        self.nodes = {
            nid: NodeProcess(
                {
                    "kind": kind,
                    "node_id": nid,
                    "address": addrs[nid],
                    "peers": {p: a for p, a in addrs.items() if p != nid},
                    "data_dir": str(base / nid),
                    "options": options or {},
                    "switch_interval_s": switch_interval_s,
                },
                base / f"{nid}.log",
                secret,
            )
            for nid in ids
        }

    def __enter__(self) -> NodeCluster:
        for node in self.nodes.values():
            node.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.stop()
            with contextlib.suppress(Exception):
                node.kill9()

    def leader(self, timeout_s: float = 20.0) -> NodeProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in self.nodes.values():
                with contextlib.suppress(ConnectionError, TimeoutError):
                    if node.alive and node.request("role", timeout_s=2)["leader"]:
                        return node
            time.sleep(0.05)
        raise TimeoutError("no leader")


# ---------------------------------------------------------------------------------- etcd


def etcd_binary() -> str | None:
    return shutil.which("etcd")


class EtcdCluster:
    """Three etcd members on 127.0.0.1, fsync on (etcd's default), fresh data dirs."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        ports = free_ports(6)
        self.names = ["e0", "e1", "e2"]
        self.client = {n: ports[2 * i] for i, n in enumerate(self.names)}
        self.peer = {n: ports[2 * i + 1] for i, n in enumerate(self.names)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.initial = ",".join(f"{n}=http://127.0.0.1:{self.peer[n]}" for n in self.names)

    def _args(self, name: str, state: str) -> list[str]:
        return [
            str(etcd_binary()),
            "--name",
            name,
            "--data-dir",
            str(self.base / name),
            "--listen-client-urls",
            f"http://127.0.0.1:{self.client[name]}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{self.client[name]}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{self.peer[name]}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{self.peer[name]}",
            "--initial-cluster",
            self.initial,
            "--initial-cluster-state",
            state,
            "--initial-cluster-token",
            "bench",
            "--log-level",
            "error",
        ]

    def start(self, name: str, state: str = "new") -> None:
        with open(self.base / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(self._args(name, state), stdout=log, stderr=log)

    def __enter__(self) -> EtcdCluster:
        for n in self.names:
            self.start(n)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.leader() is None:
            time.sleep(0.1)
        if self.leader() is None:
            raise TimeoutError("etcd elected no leader")
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def leader(self) -> str | None:
        """The leader every live member names (maintenance status), or None while they
        disagree (an election is under way)."""
        named: dict[str, str] = {}  # member name -> the leader's member id it reports
        ids: dict[str, str] = {}  # member id -> name
        for name in self.names:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            try:
                status = post(self.client[name], "/v3/maintenance/status", {}, timeout_s=1)
            except OSError:
                return None
            ids[str(status.get("header", {}).get("member_id"))] = name
            named[name] = str(status.get("leader"))
        leaders = set(named.values())
        if len(leaders) != 1:
            return None
        return ids.get(leaders.pop())


def post(port: int, path: str, body: dict[str, Any], timeout_s: float = 5) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise OSError(f"etcd {path}: HTTP {resp.status} {data[:200]!r}")
        return dict(json.loads(data))
    finally:
        conn.close()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


VALUE_B64 = base64.b64encode(b"v" * 64).decode()


class EtcdPutter:
    """A keep-alive HTTP connection that PUTs keys; reconnects after an error."""

    def __init__(self, port: int, timeout_s: float = 2.0) -> None:
        self.port, self.timeout_s = port, timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def put(self, key: str) -> bool:
        body = json.dumps({"key": _b64(key), "value": VALUE_B64})
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=self.timeout_s
                )
            self.conn.request("POST", "/v3/kv/put", body, {"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            resp.read()
            return resp.status == 200
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return False


def etcd_keys(port: int, prefix: str) -> list[str]:
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    got = post(
        port,
        "/v3/kv/range",
        {"key": _b64(prefix), "range_end": _b64(end), "keys_only": True},
        timeout_s=30,
    )
    return [base64.b64decode(kv["key"]).decode() for kv in got.get("kvs", [])]

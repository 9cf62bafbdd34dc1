"""Run coreplane nodes as OS processes on 127.0.0.1 and talk to them (demo and kill -9 tests).

Each node is `_demo_node.py` in its own process; `NodeProc` sends JSON-line requests and waits
for the reply with the same id, with a bounded wait, so a killed or hung node shows up as a
`TimeoutError`/`NodeDown`, never as a hang of the caller. `ProcCluster` owns ports, data dirs
and the processes, and always kills what it started (use it as a context manager).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from coreplane.testing.ports import free_ports

NODE_SCRIPT = Path(__file__).resolve().parent / "_demo_node.py"


class NodeDown(Exception):
    """The node process is not running (killed, crashed or not started)."""



class NodeProc:
    """One node process and its JSON-line channel."""

    def __init__(self, node_id: str, config: dict[str, Any], secret_hex: str,
                 log_path: Path) -> None:
        self.node_id = node_id
        self.config = config
        self._secret_hex = secret_hex
        self._log_path = log_path
        self._proc: subprocess.Popen[str] | None = None
        self._ids = itertools.count(1)
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._stopped = threading.Event()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self, timeout_s: float = 15.0) -> None:
        env = dict(os.environ, COREPLANE_DEMO_SECRET=self._secret_hex, PYTHONUNBUFFERED="1")
        self._ready.clear()
        self._stopped.clear()
        log = open(self._log_path, "a")  # noqa: SIM115 - owned by the process's lifetime
        self._proc = subprocess.Popen(
            [sys.executable, str(NODE_SCRIPT), json.dumps(self.config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
            env=env,
        )
        log.close()
        threading.Thread(target=self._read, args=(self._proc,), daemon=True).start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"node {self.node_id} did not start within {timeout_s} s")

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "id" in msg and msg["id"] is not None:
                with self._lock:
                    box = self._replies.get(msg["id"])
                if box is not None:
                    box.put(msg)
                continue
            msg["at"] = time.monotonic()
            self.events.append(msg)
            if msg.get("event") == "ready":
                self._ready.set()
            elif msg.get("event") == "stopped":
                self._stopped.set()

    def request(self, op: str, *, timeout_s: float = 5.0, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its reply (node-side timeout plus slack)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise NodeDown(self.node_id)
        rid = next(self._ids)
        box: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._replies[rid] = box
        try:
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps({"id": rid, "op": op, "timeout_s": timeout_s,
                                             **fields}) + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise NodeDown(self.node_id) from exc
            deadline = time.monotonic() + timeout_s + 2.0
            while True:
                try:
                    return box.get(timeout=0.05)
                except queue.Empty:
                    if proc.poll() is not None:
                        raise NodeDown(self.node_id) from None
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{self.node_id}: no reply to {op}") from None
        finally:
            with self._lock:
                self._replies.pop(rid, None)

    def kill9(self) -> None:
        """SIGKILL: no cleanup runs in the node, exactly like a crash."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Ask the node to stop cleanly; kill it if it does not. Returns its exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"op": "stop"}) + "\n")
                proc.stdin.flush()
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode


class ProcCluster:
    """Nodes `ids` as processes on 127.0.0.1 with data dirs under `base_dir`."""

    def __init__(self, base_dir: Path, ids: tuple[str, ...] = ("a", "b", "c"), *,
                 options: dict[str, Any] | None = None, log_level: str = "WARNING") -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(len(ids))
        self.addresses = {nid: f"127.0.0.1:{port}" for nid, port in zip(ids, ports, strict=True)}
        secret_hex = os.urandom(32).hex()
        self.nodes: dict[str, NodeProc] = {}
        for nid in ids:
            config = {
                "node_id": nid,
                "address": self.addresses[nid],
                "peers": {p: a for p, a in self.addresses.items() if p != nid},
                "data_dir": str(self.base_dir / nid),
                "options": options or {},
                "log_level": log_level,
            }
            self.nodes[nid] = NodeProc(nid, config, secret_hex, self.base_dir / f"{nid}.log")

    def __enter__(self) -> ProcCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_all()

    def start_all(self) -> None:
        for node in self.nodes.values():
            node.start()

    def kill_all(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):  # cleanup must reach every node
                node.kill9()

    def alive(self) -> list[NodeProc]:
        return [n for n in self.nodes.values() if n.alive]

    def wait_leader(self, timeout_s: float = 15.0, *, exclude: str | None = None) -> str:
        """The established leader as seen by a live node (not `exclude`)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in self.alive():
                if node.node_id == exclude:
                    continue
                try:
                    reply = node.request("wait_leader", timeout_s=0.5)
                except (NodeDown, TimeoutError):
                    continue
                if reply.get("ok") and reply["leader"] != exclude:
                    # A follower keeps naming a killed leader until its election timeout, and
                    # a restarted process of that name is not the leader: ask the node itself.
                    leader_id = str(reply["leader"])
                    try:
                        status = self.status(leader_id)
                    except (KeyError, NodeDown, TimeoutError):
                        continue
                    if status["role"] == "leader" and status["fencing_token"] is not None:
                        return leader_id
            time.sleep(0.05)
        raise TimeoutError(f"no leader within {timeout_s} s")

    def status(self, node_id: str) -> dict[str, Any]:
        return dict(self.nodes[node_id].request("status", timeout_s=2.0)["status"])

    def wait_caught_up(self, timeout_s: float = 20.0) -> None:
        """Every live node has applied the leader's commit index (taken once, up front)."""
        deadline = time.monotonic() + timeout_s
        leader = self.wait_leader(timeout_s)
        target = self.status(leader)["commit_index"]
        while time.monotonic() < deadline:
            behind = []
            for node in self.alive():
                try:
                    applied = self.status(node.node_id)["applied_index"] or 0
                except (NodeDown, TimeoutError):
                    applied = 0
                if applied < target:
                    behind.append(node.node_id)
            if not behind:
                return
            time.sleep(0.05)
        raise TimeoutError(f"nodes {behind} did not reach index {target}")

    def dumps(self) -> dict[str, dict[str, str]]:
        """Every live node's whole KV (local reads)."""
        return {n.node_id: n.request("dump", timeout_s=5.0)["items"] for n in self.alive()}

    def equal_hashes(self, rounds: int = 100) -> tuple[int, str]:
        """Poll (applied index, state hash) until all live nodes report the same index;
        AssertionError if their hashes then differ. Ticks keep indexes moving, so retry."""
        last: dict[str, tuple[int, str]] = {}
        for _ in range(rounds):
            results: dict[str, tuple[int, str]] = {}
            threads = []

            def ask(node: NodeProc, out: dict[str, tuple[int, str]] = results) -> None:
                try:
                    r = node.request("hash", timeout_s=2.0)
                    out[node.node_id] = (r["index"], r["hash"])
                except (NodeDown, TimeoutError):
                    pass

            for node in self.alive():
                t = threading.Thread(target=ask, args=(node,))
                t.start()
                threads.append(t)
            for t in threads:
                t.join()
            last = results
            indexes = {idx for idx, _ in results.values()}
            if len(results) == len(self.alive()) and len(indexes) == 1:
                hashes = {h for _, h in results.values()}
                if len(hashes) != 1:
                    raise AssertionError(f"state hashes differ at one index: {results}")
                (index,) = indexes
                return index, hashes.pop()
            time.sleep(0.01)
        raise TimeoutError(f"replicas never reported the same index: {last}")

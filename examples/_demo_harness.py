"""Run coreplane nodes as OS processes on 127.0.0.1 and talk to them (demo and kill -9 tests).

Each node is `_demo_node.py` in its own process, driven over the JSON-line channel of
`coreplane.testing.procs` (bounded waits: a killed or hung node shows up as a
`TimeoutError`/`NodeDown`, never as a hang of the caller). `ProcCluster` owns ports, data dirs
and the processes, and always kills what it started (use it as a context manager).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from coreplane.testing.ports import free_ports
from coreplane.testing.procs import JsonLineChild, ProcessDown

NODE_SCRIPT = Path(__file__).resolve().parent / "_demo_node.py"


NodeDown = ProcessDown  # the node process is not running (killed, crashed or not started)


class NodeProc(JsonLineChild):
    """One `_demo_node.py` process; the cluster secret travels in its environment."""

    def __init__(
        self,
        node_id: str,
        config: dict[str, Any],
        secret_hex: str,
        log_path: Path,
        *,
        api_tokens: dict[str, str] | None = None,
    ) -> None:
        env = {"COREPLANE_DEMO_SECRET": secret_hex}
        if api_tokens:
            env["COREPLANE_DEMO_TOKENS"] = json.dumps(api_tokens)  # never on a command line
        super().__init__(
            node_id,
            [sys.executable, str(NODE_SCRIPT), json.dumps(config)],
            log_path=log_path,
            env=env,
        )
        self.node_id = node_id
        self.config = config


class ProcCluster:
    """Nodes `ids` as processes on 127.0.0.1 with data dirs under `base_dir`.

    With `api_tokens` each node also serves the HTTP API on a port of its own (`api_urls`),
    knowing the others' URLs; `config` adds keys to every node's configuration (see
    `_demo_node.py`: ``provider_dir``, ``fleet_attrs``).
    """

    def __init__(
        self,
        base_dir: Path,
        ids: tuple[str, ...] = ("a", "b", "c"),
        *,
        options: dict[str, Any] | None = None,
        log_level: str = "WARNING",
        api_tokens: dict[str, str] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * len(ids) if api_tokens else len(ids))  # one call: distinct
        self.addresses = {nid: f"127.0.0.1:{port}" for nid, port in zip(ids, ports, strict=False)}
        self.api_urls: dict[str, str] = {}
        if api_tokens:
            api_ports = ports[len(ids) :]
            self.api_urls = {
                n: f"http://127.0.0.1:{p}" for n, p in zip(ids, api_ports, strict=True)
            }
        secret_hex = os.urandom(32).hex()
        self.nodes: dict[str, NodeProc] = {}
        for nid in ids:
            node_options = dict(options or {})
            if api_tokens:
                node_options["api_address"] = self.api_urls[nid].removeprefix("http://")
                node_options["api_peers"] = {p: u for p, u in self.api_urls.items() if p != nid}
            node_config = {
                "node_id": nid,
                "address": self.addresses[nid],
                "peers": {p: a for p, a in self.addresses.items() if p != nid},
                "data_dir": str(self.base_dir / nid),
                "options": node_options,
                "log_level": log_level,
                **(config or {}),
            }
            self.nodes[nid] = NodeProc(
                nid, node_config, secret_hex, self.base_dir / f"{nid}.log", api_tokens=api_tokens
            )

    def __enter__(self) -> ProcCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_all()

    def start_all(self, *, parallel: bool = False) -> None:
        """Start every node (`parallel`: all at once, each waited for on its own thread)."""
        if not parallel:
            for node in self.nodes.values():
                node.start()
            return
        errors: list[BaseException] = []

        def start(node: NodeProc) -> None:
            try:
                node.start(timeout_s=30)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, on the caller
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(n,)) for n in self.nodes.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

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

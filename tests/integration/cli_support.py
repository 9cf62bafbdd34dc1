"""A real three-voter cluster serving the HTTP API on 127.0.0.1, and the `coreplane` CLI run
against it as a separate process (`python3 -m coreplane.ops`), as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import coreplane
from coreplane.testing.ports import free_ports

ADMIN = "cli-admin-token-0123456789abcdef"
SECRET = b"cli-test-cluster-secret-0123456789"
FAST = {"election_timeout_ms": (300, 600), "heartbeat_ms": 50, "tick_interval_ms": 100}
ROOT = Path(__file__).resolve().parents[2]
IDS = ("a", "b", "c")


class Cluster:
    """Three `coreplane.ControlPlane` voters with their APIs; `cli()` runs the command."""

    def __init__(self, tmp: Path, **node_options: Any) -> None:
        self.tmp = tmp
        raft_ports, api_ports = free_ports(3), free_ports(3)
        self.raft = {n: f"127.0.0.1:{p}" for n, p in zip(IDS, raft_ports, strict=True)}
        self.apis = {n: f"http://127.0.0.1:{p}" for n, p in zip(IDS, api_ports, strict=True)}
        self.options = {**FAST, **node_options}
        self.nodes: dict[str, Any] = {}
        for n in IDS:
            self.start_node(n)
        next(iter(self.nodes.values())).wait_for_leader(timeout_s=20)
        self.config = tmp / "cli-config.yaml"

    def start_node(self, n: str) -> Any:
        cp = coreplane.ControlPlane(
            n,
            self.raft[n],
            {k: v for k, v in self.raft.items() if k != n},
            self.tmp / n,
            SECRET,
            api_address=self.apis[n].removeprefix("http://"),
            api_tokens={ADMIN: "admin"},
            api_peers={k: v for k, v in self.apis.items() if k != n},
            **self.options,
        )
        cp.start()
        self.nodes[n] = cp
        return cp

    def leader(self) -> str:
        for _ in range(200):
            for n, cp in self.nodes.items():
                if cp.is_leader():
                    return n
            time.sleep(0.05)
        raise AssertionError("no leader")

    def stop(self) -> None:
        for cp in self.nodes.values():
            cp.stop()

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COREPLANE_")}
        env.update(
            {
                "COREPLANE_ENDPOINTS": ",".join(self.apis.values()),
                "COREPLANE_TOKEN": ADMIN,
                "COREPLANE_CONFIG": str(self.config),
                "PYTHONPATH": str(ROOT),
                "COLUMNS": "160",
            }
        )
        env.update(extra)
        return env

    def cli(
        self, *args: str, stdin: str | None = None, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "coreplane.ops", *args],
            cwd=ROOT,
            env=self.env(**env),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "coreplane.ops", *args],
            cwd=ROOT,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def pause_ticks(self) -> None:
        """Stop the leaders' Tick entries (test-only: the tick period is read each step), so
        the log stands still unless something is proposed."""
        for cp in self.nodes.values():
            cp._tick_interval_s = 3600.0
        time.sleep(0.5)

    def resume_ticks(self) -> None:
        for cp in self.nodes.values():
            cp._tick_interval_s = self.options["tick_interval_ms"] / 1000
            cp._next_tick_at = 0.0

    def hashes(self) -> dict[str, tuple[int, str]]:
        """Every voter's (applied index, state hash) once they agree on the index."""
        for _ in range(100):
            got = {n: cp.state_hash() for n, cp in self.nodes.items()}
            if len({h[0] for h in got.values()}) == 1:
                return got
            time.sleep(0.05)
        return got

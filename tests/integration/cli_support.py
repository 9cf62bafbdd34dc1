"""A real three-voter cluster serving the HTTP API on 127.0.0.1, and the `coreplane` CLI run
against it as a separate process (`python3 -m coreplane.ops`), as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import coreplane
from coreplane.testing.ports import free_ports

ADMIN = "cli-admin-token-0123456789abcdef"
SECRET = b"cli-test-cluster-secret-0123456789"
FAST = {"election_timeout_ms": (300, 600), "heartbeat_ms": 50, "tick_interval_ms": 100}
ROOT = Path(__file__).resolve().parents[2]
IDS = ("a", "b", "c")
QUIET_POLLS = 3  # `pause_ticks`: polls in a row that must see the same still log
POLL_S = 0.05  # a bound on how often it looks, not a timing claim


def cli_env(endpoints: Iterable[str], token: str, config: Path, **extra: str) -> dict[str, str]:
    """The environment the CLI runs in: this process's, less any COREPLANE_* setting, plus the
    cluster's endpoints, the token, a config file of its own and this checkout on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COREPLANE_")}
    env.update(
        {
            "COREPLANE_ENDPOINTS": ",".join(endpoints),
            "COREPLANE_TOKEN": token,
            "COREPLANE_CONFIG": str(config),
            "PYTHONPATH": str(ROOT),
            "COLUMNS": "160",
        }
    )
    env.update(extra)
    return env


def run_cli(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python3 -m coreplane.ops ARGS`` to completion, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "coreplane.ops", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def popen_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``python3 -m coreplane.ops ARGS`` started, its output on pipes (to kill it midway)."""
    return subprocess.Popen(
        [sys.executable, "-m", "coreplane.ops", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


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
        return cli_env(self.apis.values(), ADMIN, self.config, **extra)

    def cli(
        self, *args: str, stdin: str | None = None, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(self.env(**env), *args, stdin=stdin, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return popen_cli(self.env(), *args)

    def pause_ticks(self, timeout_s: float = 60.0) -> None:
        """Stop the leaders' Tick entries (test-only knobs: the tick period is read each step)
        and wait until the log stands still, so it moves only if something is proposed.

        Waits on conditions, not for a fixed time (a loaded machine only makes it wait
        longer): the leader proposed a tick after the change (the one after it is an hour
        away), every running voter applied it, and then, over `QUIET_POLLS` polls in a row,
        no proposal of the leader's work is in flight, every running voter has applied the
        leader's commit index and no state hash moved (the leader's per-tick work, e.g. the
        fleet's report for that last tick, commits right after the tick). AssertionError
        after `timeout_s`."""
        for cp in self.nodes.values():
            cp._tick_interval_s = 3600.0
            cp._next_tick_at = 0.0  # the last tick at the next step, the one after in an hour
        paused_at = time.monotonic()
        deadline = paused_at + timeout_s
        quiet, last = 0, None
        while quiet < QUIET_POLLS:
            if time.monotonic() > deadline:
                raise AssertionError(f"the log did not stand still within {timeout_s} s")
            time.sleep(POLL_S)
            now = self._still_since(paused_at)
            quiet = quiet + 1 if now is not None and now == last else 0
            last = now

    def _still_since(self, paused_at: float) -> tuple[Any, ...] | None:
        """(commit index, every running voter's state hash) if the log looks still now: the
        leader's newest tick was proposed after `paused_at` and is applied everywhere, and no
        proposal is in flight; else None."""
        running = [cp for cp in self.nodes.values() if cp.status().role != "stopped"]
        leader = next((cp for cp in running if cp.is_leader()), None)
        if leader is None or not leader.step_ready:
            return None
        sent = leader._tick_sent  # (n, monotonic time) of its newest tick proposal
        if sent is None or sent[1] < paused_at:
            return None
        commit = leader.status().commit_index
        statuses = [cp.status() for cp in running]
        if any(st.tick_n < sent[0] or st.applied_index != commit for st in statuses):
            return None
        return (commit, *(cp.state_hash() for cp in running))

    def resume_ticks(self) -> None:
        for cp in self.nodes.values():
            cp._tick_interval_s = self.options["tick_interval_ms"] / 1000
            cp._next_tick_at = 0.0

    def hashes(self, timeout_s: float = 30.0) -> dict[str, tuple[int, str]]:
        """Every voter's (applied index, state hash) once they agree on the index; as they
        stand after `timeout_s` if they never do (the caller's assertion shows them)."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = {n: cp.state_hash() for n, cp in self.nodes.items()}
            if len({h[0] for h in got.values()}) == 1 or time.monotonic() > deadline:
                return got
            time.sleep(POLL_S)

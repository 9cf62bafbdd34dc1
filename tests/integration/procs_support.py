"""Three coreplane voters in their own OS processes on 127.0.0.1 (tests/integration/obs_node.py:
a ControlPlane and its HTTP API each), for the multi-process diagnose and CLI tests."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from coreplane.testing.ports import free_ports
from coreplane.testing.procs import JsonLineChild

__all__ = ["IDS", "ROOT", "SECRET", "VoterProcs", "eventually"]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "0123456789abcdef0123456789abcdef"  # hex: 16 bytes
IDS = ("a", "b", "c")


def eventually(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """`cond()` once truthy; errors count as "not yet" (a node mid-failover answers nothing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception:  # noqa: BLE001 - look again
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class VoterProcs:
    """Voters a, b, c started and ready: `urls` their APIs, `nodes` their processes.

    `tokens` maps API bearer tokens to roles; `secrets` overrides a voter's cluster secret
    (hex); `node_options` adds to a voter's obs_node configuration (its faults)."""

    def __init__(
        self,
        base: Path,
        *,
        tokens: Mapping[str, str],
        secrets: Mapping[str, str] | None = None,
        node_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        base.mkdir(parents=True, exist_ok=True)
        ports = free_ports(6)  # one call: six distinct ports
        raft = dict(zip(IDS, ports[:3], strict=True))
        http = dict(zip(IDS, ports[3:], strict=True))
        self.base = base
        self.urls = {n: f"http://127.0.0.1:{p}" for n, p in http.items()}
        self.nodes: dict[str, JsonLineChild] = {}
        for nid in IDS:
            cfg = {
                "node_id": nid,
                "address": f"127.0.0.1:{raft[nid]}",
                "peers": {p: f"127.0.0.1:{raft[p]}" for p in IDS if p != nid},
                "data_dir": str(base / nid),
                "api_address": f"127.0.0.1:{http[nid]}",
                "api_peers": {p: u for p, u in self.urls.items() if p != nid},
                "tokens": dict(tokens),
                **(node_options or {}).get(nid, {}),
            }
            self.nodes[nid] = JsonLineChild(
                nid,
                [sys.executable, "-m", "tests.integration.obs_node", json.dumps(cfg)],
                log_path=base / f"{nid}.log",
                env={"COREPLANE_TEST_SECRET": (secrets or {}).get(nid, SECRET)},
                cwd=ROOT,
            )
        for child in self.nodes.values():
            child.start(timeout_s=30)

    def leader(self, wait: Callable[[Callable[[], Any], float, str], Any] = eventually) -> str:
        """The established leader among the live voters, waited for with `wait(cond,
        timeout_s, what)` (`eventually` unless the caller has its own)."""

        def find() -> str | None:
            for nid, child in self.nodes.items():
                if not child.alive:
                    continue
                st = child.request("status")["status"]
                if st["role"] == "leader" and st.get("fencing_token"):
                    return nid
            return None

        found: str = wait(find, 20.0, "a leader")
        return found

    def stop(self) -> None:
        for child in self.nodes.values():
            child.stop()

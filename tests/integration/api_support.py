"""API servers in front of an in-process cluster (used by the `api_cluster` fixture)."""

from __future__ import annotations

from typing import Any

from coreplane.api.server import ApiServer
from coreplane.sdk import LongRunningConfig
from coreplane.testing.ports import free_ports

TOKEN = "integration-client-token-0123"
CONFIG = LongRunningConfig(
    backoff_base_ms=20,
    backoff_cap_ms=500,
    lock_poll_ms=20,
    health_check_interval_ms=500,
    request_timeout_ms=5_000,
    max_attempts=8,
    budget_min_retries_per_s=5.0,
)


def start_api_servers(nodes: dict[str, Any]) -> dict[str, ApiServer]:
    """One started ApiServer per node (client token `TOKEN`), each knowing the others' URLs."""
    ports = dict(zip(nodes, free_ports(len(nodes)), strict=True))
    urls = {nid: f"http://127.0.0.1:{port}" for nid, port in ports.items()}
    servers: dict[str, ApiServer] = {}
    for nid, cp in nodes.items():
        server = ApiServer(
            cp,
            f"127.0.0.1:{ports[nid]}",
            tokens={TOKEN: "client"},
            api_peers={n: u for n, u in urls.items() if n != nid},
        )
        server.start()
        servers[nid] = server
    return servers

"""One coreplane node in its own OS process, driven over stdin/stdout with JSON lines.

Used by `three_node_demo.py` and the kill -9 tests: the parent writes one request per line
(``{"id": 1, "op": "put", "key": "k", "value": "v"}``) and reads one reply per line
(``{"id": 1, "ok": true, ...}``). The node's configuration comes as one JSON argument; the
cluster secret comes in the environment (``COREPLANE_DEMO_SECRET``, hex) so it is never on a
command line that `ps` shows. The channel is `coreplane.testing.procs`: requests are served on
their own threads, so a slow write does not hold up a status query.

With an ``api_address`` in its options the node is the package's `coreplane.ControlPlane`,
which also serves the HTTP API; its bearer tokens come in ``COREPLANE_DEMO_TOKENS`` (JSON), for
the same reason as the secret. Without one it is the plain node (aiohttp is not even imported,
so the kill -9 tests' restarts stay quick). ``provider_dir`` gives it a `DirProvider` (new
storage nodes are asked for by writing a file there; the demo starts their agents);
``fleet_attrs`` sets the fleet's leader-side options (``silent_after_ms``,
``solve_interval_ms``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from coreplane.core.machines.fleet import FleetConfig
from coreplane.runtime.controlplane import ControlPlane
from coreplane.testing.procs import emit, serve_json_lines

_FLEET_ATTRS = ("silent_after_ms", "solve_interval_ms")


class DirProvider:
    """The fleet's provider for the demo: a storage node is "provisioned" by writing
    ``<dir>/s<n>.json`` ({request_id, node_id, zone}); the process that runs the agents watches
    the directory and starts one. Every voter of the demo shares the directory, and a lock file
    (flock) serializes them, so a request id asked again (by a new leader after a failover)
    gets the first answer, as the provider contract asks. `decommission` writes
    ``<dir>/decommission-<node>.json``."""

    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def provision(
        self, zone: str | None, spec: dict[str, Any], request_id: str, *, token: int
    ) -> str:
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            rows = [json.loads(p.read_text()) for p in sorted(self.dir.glob("s*.json"))]
            for row in rows:
                if row["request_id"] == request_id:
                    return str(row["node_id"])
            node_id = f"s{100 + len(rows)}"
            row = {"request_id": request_id, "node_id": node_id, "zone": zone or spec["reason"]}
            tmp = self.dir / f".{node_id}.tmp"
            tmp.write_text(json.dumps(row))
            tmp.replace(self.dir / f"{node_id}.json")  # whole, for the watcher
            return node_id

    def decommission(self, node_id: str, request_id: str, *, token: int) -> None:
        (self.dir / f"decommission-{node_id}.json").write_text(json.dumps({"node_id": node_id}))


def _handle(cp: ControlPlane, req: dict[str, Any]) -> dict[str, Any]:
    op = req.get("op")
    timeout_s = float(req.get("timeout_s", 5.0))
    if op == "put":
        rev = cp.kv.put(req["key"], req["value"].encode(), timeout_s=timeout_s)
        return {"rev": rev}
    if op == "get":
        got = cp.kv.get(req["key"], stale_ok=bool(req.get("stale_ok")), timeout_s=timeout_s)
        return {
            "value": None if got is None else got[0].decode(),
            "rev": None if got is None else got[1],
        }
    if op == "dump":
        items = cp.kv.range(req.get("prefix", ""), stale_ok=True)
        return {"items": {k: v.decode() for k, v, _ in items}}
    if op == "hash":
        index, digest = cp.state_hash()
        return {"index": index, "hash": digest}
    if op == "status":
        return {"status": cp.status().to_dict()}
    if op == "wait_leader":
        return {"leader": cp.wait_for_leader(timeout_s=timeout_s)}
    if op == "quota_set_limit":
        cp.quotas.set_limit(
            req["key"], req["limit_milli"], routers_max=req["routers_max"], timeout_s=timeout_s
        )
        return {}
    if op.startswith("fleet_"):
        return _fleet(cp, op[6:], req, timeout_s)
    raise ValueError(f"unknown op {op!r}")


def _fleet(cp: ControlPlane, op: str, req: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """The fleet agent protocol and desired state (tests/integration/test_fleet_procs.py)."""
    fleet = cp.fleet
    if op == "heartbeat":
        return fleet.heartbeat(
            req["node_id"],
            zone=req["zone"],
            slots=req.get("slots", 1000),
            heat=req.get("heat") or {},
        )
    if op == "actions":
        return {
            "actions": [dataclasses.asdict(a) for a in fleet.actions(req["node_id"], stale_ok=True)]
        }
    if op == "ack":
        return {
            "result": fleet.ack(
                req["node_id"],
                req["action_id"],
                req["token"],
                req["ok"],
                req.get("detail", ""),
                timeout_s=timeout_s,
            )
        }
    if op == "create_partition":
        return {
            "result": fleet.create_partition(req["pid"], rf=req.get("rf", 3), timeout_s=timeout_s)
        }
    if op == "drain":
        return {"result": fleet.drain(req["node_id"], timeout_s=timeout_s)}
    if op == "partitions":
        return {"partitions": fleet.partitions(stale_ok=True)}
    if op == "operations":
        return {"operations": fleet.operations(stale_ok=True)}
    if op == "nodes":
        return {"nodes": fleet.nodes(stale_ok=True)}
    raise ValueError(f"unknown fleet op {op!r}")


def main() -> int:
    config = json.loads(sys.argv[1])
    logging.basicConfig(
        level=getattr(logging, config.get("log_level", "WARNING")),
        format=f"[{config['node_id']}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    secret = bytes.fromhex(os.environ["COREPLANE_DEMO_SECRET"])
    options = dict(config.get("options", {}))
    if "fleet_config" in options:
        options["fleet_config"] = FleetConfig(**options["fleet_config"])
    tokens = os.environ.get("COREPLANE_DEMO_TOKENS")
    if tokens:
        options["api_tokens"] = json.loads(tokens)
    if config.get("provider_dir"):
        options["provider"] = DirProvider(config["provider_dir"])
    node_class = ControlPlane
    if "api_address" in options:
        from coreplane import ControlPlane as node_class  # the node and its HTTP API
    cp = node_class(
        config["node_id"],
        config["address"],
        config["peers"],
        config["data_dir"],
        secret,
        **options,
    )
    for name, value in (config.get("fleet_attrs") or {}).items():
        if name not in _FLEET_ATTRS:
            raise ValueError(f"unknown fleet attribute {name!r}")
        setattr(cp.fleet, name, value)
    cp.on_leadership(
        lambda gained, token: emit({"event": "leadership", "gained": gained, "token": token})
    )
    cp.start()
    emit({"event": "ready", "node_id": cp.node_id, "api_url": getattr(cp, "api_url", None)})
    try:
        serve_json_lines(lambda req: _handle(cp, req))
    finally:
        cp.stop()
        emit({"event": "stopped"})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One coreplane node in its own OS process, driven over stdin/stdout with JSON lines.

Used by `three_node_demo.py` and the kill -9 tests: the parent writes one request per line
(``{"id": 1, "op": "put", "key": "k", "value": "v"}``) and reads one reply per line
(``{"id": 1, "ok": true, ...}``). The node's configuration comes as one JSON argument; the
cluster secret comes in the environment (``COREPLANE_DEMO_SECRET``, hex) so it is never on a
command line that `ps` shows. The channel is `coreplane.testing.procs`: requests are served on
their own threads, so a slow write does not hold up a status query.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from typing import Any

from coreplane.core.machines.fleet import FleetConfig
from coreplane.runtime.controlplane import ControlPlane
from coreplane.testing.procs import emit, serve_json_lines


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
    cp = ControlPlane(
        config["node_id"],
        config["address"],
        config["peers"],
        config["data_dir"],
        secret,
        **options,
    )
    cp.on_leadership(
        lambda gained, token: emit({"event": "leadership", "gained": gained, "token": token})
    )
    cp.start()
    emit({"event": "ready", "node_id": cp.node_id})
    try:
        serve_json_lines(lambda req: _handle(cp, req))
    finally:
        cp.stop()
        emit({"event": "stopped"})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One coreplane node with its HTTP API, for `benches.api` (a JSON-line child process).

Started with a JSON config on argv; the cluster secret and the API token in the environment.
Answers ``{"op": "role"}`` with ``{"leader": bool}``; stops on ``{"op": "stop"}`` or EOF.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from coreplane.api.server import ApiServer
from coreplane.runtime.controlplane import ControlPlane
from coreplane.testing.procs import emit, serve_json_lines


def main() -> None:
    cfg = json.loads(sys.argv[1])
    cp = ControlPlane(
        cfg["node_id"],
        cfg["address"],
        cfg["peers"],
        cfg["data_dir"],
        bytes.fromhex(os.environ["BENCH_SECRET"]),
    )
    cp.start()
    api = ApiServer(
        cp,
        cfg["api_address"],
        tokens={os.environ["BENCH_TOKEN"]: "client"},
        api_peers=cfg["api_peers"],
    )
    api.start()

    def handle(req: dict[str, Any]) -> dict[str, Any]:
        if req.get("op") == "role":
            return {"leader": cp.is_leader() and cp.fencing_token is not None}
        return {}

    emit({"event": "ready", "url": api.url})
    try:
        serve_json_lines(handle)
    finally:
        api.stop()
        cp.stop()


if __name__ == "__main__":
    main()

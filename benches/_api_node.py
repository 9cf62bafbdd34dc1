"""One coreplane node with its HTTP API, for `benches.api` (a JSON-line child process).

Started with a JSON config on argv; the cluster secret and the API token in the environment.
Answers ``{"op": "role"}`` with ``{"leader": bool}``; ``{"op": "local_puts", "concurrency": N,
"duration_s": S}`` runs puts in this process (`kv.put_async`, N in flight, no HTTP) and answers
their count and latencies: the commit path alone, the reference for what the API adds. Stops on
``{"op": "stop"}`` or EOF.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
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
        if req.get("op") == "local_puts":
            return local_puts(cp, int(req["concurrency"]), float(req["duration_s"]))
        return {}

    emit({"event": "ready", "url": api.url})
    try:
        serve_json_lines(handle)
    finally:
        api.stop()
        cp.stop()


def local_puts(cp: ControlPlane, concurrency: int, duration_s: float) -> dict[str, Any]:
    slots = threading.Semaphore(concurrency)
    lat_ms: list[float] = []
    errors = [0]
    mu = threading.Lock()

    def done(future: Any, started: float) -> None:
        with mu:
            if future.exception() is None:
                lat_ms.append((time.monotonic() - started) * 1000)
            else:
                errors[0] += 1
        slots.release()

    start = time.monotonic()
    cpu = time.process_time()
    end, i = start + duration_s, 0
    while time.monotonic() < end:
        slots.acquire()
        t0 = time.monotonic()
        cp.kv.put_async(f"local/{i}", b"v" * 64).add_done_callback(lambda f, t0=t0: done(f, t0))
        i += 1
    for _ in range(concurrency):  # the last ones in flight
        slots.acquire(timeout=10)
    elapsed = time.monotonic() - start
    return {
        "ok": len(lat_ms),
        "errors": errors[0],
        "elapsed_s": elapsed,
        "cpu_s": time.process_time() - cpu,
        "lat_ms": lat_ms,
    }


if __name__ == "__main__":
    main()

"""One coreplane node with its HTTP API, for `benches.api` (a JSON-line child process).

Started with a JSON config on argv; the cluster secret and the API token in the environment.
Answers ``{"op": "role"}`` with ``{"leader": bool}``; ``{"op": "local_puts", "concurrency": N,
"duration_s": S}`` runs puts in this process (`kv.put_async`, N in flight, no HTTP) and answers
their count and latencies: the commit path alone, the reference for what the API adds. Stops on
``{"op": "stop"}`` or EOF.

``{"op": "switch_interval", "seconds": S}`` sets this process's `sys.setswitchinterval` (None:
back to the default), for the bench's same-run A/B of the GIL's switch interval.

Where a request's time goes, for `benches.api`: ``{"op": "phase_start"}`` and ``{"op":
"phase_end"}`` bracket a load phase; the end answers, per route, the server's own time of
each request (from the middleware seeing it, the request parsed, to its answer built: what the
server adds between a client's send and its receive is the rest) and the CPU of this process's
threads over the phase by role: ``api_loop`` (the API's event loop), ``api_pool`` (its thread
pool), ``raft`` (the engine's tick thread), ``other``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from aiohttp import web

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
    default_switch_s = sys.getswitchinterval()
    timings = _Timings()
    api.add_middleware(timings.middleware)
    api.start()

    def handle(req: dict[str, Any]) -> dict[str, Any]:
        if req.get("op") == "role":
            return {"leader": cp.is_leader() and cp.fencing_token is not None}
        if req.get("op") == "switch_interval":  # benches.api's A/B of the GIL's switch interval
            seconds = req.get("seconds")
            sys.setswitchinterval(default_switch_s if seconds is None else float(seconds))
            return {"seconds": sys.getswitchinterval()}
        if req.get("op") == "phase_start":
            timings.start()
            return {}
        if req.get("op") == "phase_end":
            return timings.end()
        if req.get("op") == "local_puts":
            return local_puts(cp, int(req["concurrency"]), float(req["duration_s"]))
        return {}

    emit({"event": "ready", "url": api.url})
    try:
        serve_json_lines(handle)
    finally:
        api.stop()
        cp.stop()


_SAMPLES_MAX = 50_000  # per route and phase: a 5 s phase at 10k/s fits


class _Timings:
    """Server time per request by route, and CPU per thread role, over a phase."""

    def __init__(self) -> None:
        self._ms: dict[str, list[float]] = {}
        self._cpu: dict[str, float] = {}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.monotonic()
        response = await handler(request)
        samples = self._ms.setdefault(request.path, [])
        if len(samples) < _SAMPLES_MAX and request.path.startswith("/v1/"):
            samples.append(round((time.monotonic() - started) * 1000, 3))
        return response

    def start(self) -> None:
        self._ms = {}
        self._cpu = _threads_cpu_s()

    def end(self) -> dict[str, Any]:
        now = _threads_cpu_s()
        roles: dict[str, float] = {"api_loop": 0.0, "api_pool": 0.0, "raft": 0.0, "other": 0.0}
        for key, cpu_s in now.items():
            name = key.partition(":")[2]
            role = (
                "api_pool"
                if name.startswith("coreplane-api_")
                else "api_loop"
                if name == "coreplane-api"
                else "raft"
                if "_autoTickThread" in name
                else "other"
            )
            roles[role] += cpu_s - self._cpu.get(key, 0.0)
        return {"server_ms": self._ms, "threads_cpu_s": roles}


def _threads_cpu_s() -> dict[str, float]:
    """CPU seconds of each live thread of this process, keyed "tid:name" (Linux; else {})."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                text = f.read().decode()
        except OSError:
            continue  # the thread ended
        fields = text[text.rindex(")") + 2 :].split()
        out[f"{tid}:{names.get(int(tid), '?')}"] = (int(fields[11]) + int(fields[12])) * tick_s
    return out


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

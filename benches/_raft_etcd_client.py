"""etcd load client process for `benches.raft`: etcd's native gRPC API, one JSON line out.

``closed PORT INFLIGHT DURATION_S PREFIX START_AT``: INFLIGHT coroutines, each keeping one
``KV/Put`` outstanding (INFLIGHT writes in flight from this process), over a few HTTP/2
connections, from START_AT (CLOCK_MONOTONIC, shared by every process of the machine, so
several client processes load the same window) for DURATION_S.
``open PORT RATE DURATION_S PREFIX START_AT``: one Put every 1/RATE s; latency from the
scheduled send time to the response, so queueing counts.

Both report ``cpu_s``: this process's CPU time (every thread, gRPC's own included) over the
load, so the bench can say what the generator cost per write and whether it was near its
ceiling. No protobuf stubs: the PutRequest is hand-encoded (`benches._etcd_proto`). grpcio is
imported here only: the bench's --smoke mode never needs it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import grpc  # the bench's full mode installs it (benches/raft.py); see pyproject's `bench`

from benches._etcd_proto import PUT_METHOD, put_request

VALUE = b"v" * 64
CHANNELS = 4  # HTTP/2 connections per process; the in-flight calls are spread over them


def _raw(data: bytes) -> bytes:
    return data


def _puts(port: int) -> list[Any]:
    """One unary Put callable per channel; a private subchannel each (separate
    connections, not one connection shared by every channel of the process)."""
    calls = []
    for _ in range(CHANNELS):
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        calls.append(
            channel.unary_unary(PUT_METHOD, request_serializer=_raw, response_deserializer=_raw)
        )
    return calls


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def closed(
    port: int, inflight: int, duration_s: float, prefix: str, start_at: float
) -> dict[str, Any]:
    calls = _puts(port)
    counts = {"ok": 0, "failed": 0}
    end = start_at + duration_s

    async def worker(t: int) -> None:
        call = calls[t % len(calls)]
        i = 0
        while time.monotonic() < end:
            try:
                await call(put_request(f"{prefix}{t}-{i}".encode(), VALUE), timeout=10)
                counts["ok"] += 1
            except grpc.RpcError:
                counts["failed"] += 1
            i += 1

    await _sleep_until(start_at)
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker(t) for t in range(inflight)))
    return {**counts, "elapsed_s": time.monotonic() - t0, "cpu_s": time.process_time() - cpu0}


async def open_loop(
    port: int, rate: float, duration_s: float, prefix: str, start_at: float
) -> dict[str, Any]:
    calls = _puts(port)
    n = int(rate * duration_s)
    lat: list[float] = []

    async def one(i: int, scheduled: float) -> None:
        try:
            await calls[i % len(calls)](put_request(f"{prefix}{i}".encode(), VALUE), timeout=10)
        except grpc.RpcError:
            return
        lat.append((time.monotonic() - scheduled) * 1000)

    await _sleep_until(start_at)
    cpu0 = time.process_time()
    tasks = []
    for i in range(n):
        scheduled = start_at + i / rate
        await _sleep_until(scheduled)
        tasks.append(asyncio.ensure_future(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return {"sent": n, "ok": len(lat), "lat_ms": sorted(lat), "cpu_s": time.process_time() - cpu0}


def main() -> int:
    mode, port, load, duration_s, prefix, start_at = sys.argv[1:7]
    run = closed if mode == "closed" else open_loop
    out = asyncio.run(
        run(
            int(port),
            int(float(load)) if mode == "closed" else float(load),
            float(duration_s),
            prefix,
            float(start_at),
        )
    )
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

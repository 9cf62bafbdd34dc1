"""A load client process for `benches.api`: one JSON line of results on stdout.

``python -m benches._api_client SYSTEM OP THREADS DURATION_S PREFIX TARGET...``: SYSTEM is
``coreplane`` (TARGETs are API URLs, the SDK's sync `Client`, one per thread) or ``etcd``
(TARGET is the client port of the leader member; etcd's v3 JSON gateway on one keep-alive
HTTP/1.1 connection per thread). OP is ``put``, ``get``, ``get_stale`` (a read of the
replica it reaches: ``stale_ok``; etcd: ``serializable``) or ``lock`` (a lock cycle: acquire
and release; etcd: its v3lock service with a lease granted once per thread); ``lock_sync``
(coreplane only) is ``lock`` with the SDK's deferred release off (`lock_release_linger_ms=0`).
Closed loop: each thread keeps one request outstanding. Reports completed operations, per-op
latencies and the process's own CPU time (every thread, user + system) over the measured
span: the load generator's cost per operation, so the two systems' generators can be compared.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import sys
import threading
import time
from collections.abc import Callable

VALUE = b"v" * 64


def _etcd_op(port: int, op: str, prefix: str, t: int) -> Callable[[int], bool]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def post(path: str, body: dict[str, object]) -> dict[str, object]:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}")
        return dict(json.loads(data))

    b64 = lambda s: base64.b64encode(s.encode() if isinstance(s, str) else s).decode()  # noqa: E731
    if op == "put":
        return lambda i: bool(
            post("/v3/kv/put", {"key": b64(f"{prefix}{t}-{i}"), "value": b64(VALUE)}) is not None
        )
    if op in ("get", "get_stale"):
        post("/v3/kv/put", {"key": b64(f"{prefix}{t}"), "value": b64(VALUE)})
        ask = {"key": b64(f"{prefix}{t}"), **({"serializable": True} if op != "get" else {})}
        return lambda i: "kvs" in post("/v3/kv/range", ask)
    lease = post("/v3/lease/grant", {"TTL": 30})["ID"]

    def cycle(_i: int) -> bool:
        got = post("/v3/lock/lock", {"name": b64(f"{prefix}lock{t}"), "lease": lease})
        post("/v3/lock/unlock", {"key": got["key"]})
        return True

    return cycle


def _coreplane_op(urls: list[str], op: str, prefix: str, t: int) -> Callable[[int], bool]:
    from coreplane.sdk import Client, LongRunningConfig

    config = LongRunningConfig(health_check_interval_ms=0, lock_poll_ms=5)
    if op == "lock_sync":  # every release sent on its own and waited for
        op, config = "lock", config.with_(lock_release_linger_ms=0)
    client = Client(urls, os.environ["BENCH_TOKEN"], config)
    client.refresh()  # leader first
    if op == "put":
        return lambda i: client.put(f"{prefix}{t}-{i}", VALUE) > 0
    if op in ("get", "get_stale"):
        client.put(f"{prefix}{t}", VALUE)
        stale = op == "get_stale"
        deadline = time.monotonic() + 10
        # Replicated yet? Stale reads go to the replicas in turn, so one that answered says
        # nothing of the next: wait until as many reads in a row as there are endpoints saw
        # the key (a lagging replica's None once counted as a failed read).
        seen = 0
        while stale and seen < len(urls):
            if client.get(f"{prefix}{t}", stale_ok=True) is None:
                seen = 0
                if time.monotonic() > deadline:
                    raise RuntimeError("a replica never saw the key")
                time.sleep(0.01)
            else:
                seen += 1
        return lambda i: client.get(f"{prefix}{t}", stale_ok=stale) is not None

    def cycle(_i: int) -> bool:
        with client.lock(f"{prefix}lock{t}", ttl_ms=30_000):
            return True

    return cycle


def main() -> None:
    system, op, threads, duration_s, prefix, *targets = sys.argv[1:]
    n, duration = int(threads), float(duration_s)
    counts = [0] * n
    lat: list[list[float]] = [[] for _ in range(n)]
    errors = [0] * n
    ready = threading.Barrier(n + 1)
    go = threading.Event()

    def work(t: int) -> None:
        if system == "etcd":
            fn = _etcd_op(int(targets[0]), op, prefix, t)
        else:
            fn = _coreplane_op(targets, op, prefix, t)
        ready.wait()
        go.wait()
        end = time.monotonic() + duration
        i = 0
        while time.monotonic() < end:
            start = time.monotonic()
            try:
                ok = fn(i)
            except Exception:  # noqa: BLE001 - counted, the load goes on
                ok = False
            if ok:
                counts[t] += 1
                lat[t].append((time.monotonic() - start) * 1000)
            else:
                errors[t] += 1
            i += 1

    workers = [threading.Thread(target=work, args=(t,)) for t in range(n)]
    for w in workers:
        w.start()
    ready.wait()
    start = time.monotonic()
    cpu_start = time.process_time()
    go.set()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - start
    cpu_s = time.process_time() - cpu_start
    print(
        json.dumps(
            {
                "ok": sum(counts),
                "errors": sum(errors),
                "elapsed_s": elapsed,
                "cpu_s": cpu_s,
                "lat_ms": [x for xs in lat for x in xs],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()

"""etcd load client process for `benches.raft` (one JSON line of results on stdout).

``closed PORT THREADS DURATION_S PREFIX``: every thread keeps one PUT outstanding on its own
keep-alive connection (THREADS writes in flight from this process).
``open PORT RATE DURATION_S PREFIX``: one PUT every 1/RATE s from a pool of connections;
latency from the scheduled send time to the response, so queueing counts.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time

from benches._raft_procs import EtcdPutter


def closed(port: int, threads: int, duration_s: float, prefix: str) -> dict[str, float]:
    counts = [0] * threads
    start = time.monotonic()
    end = start + duration_s

    def work(t: int) -> None:
        putter = EtcdPutter(port)
        i = 0
        while time.monotonic() < end:
            if putter.put(f"{prefix}{t}-{i}"):
                counts[t] += 1
            i += 1

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"ok": sum(counts), "elapsed_s": time.monotonic() - start}


def open_loop(port: int, rate: float, duration_s: float, prefix: str) -> dict[str, object]:
    n = int(rate * duration_s)
    jobs: queue.Queue[tuple[int, float] | None] = queue.Queue()
    lat: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        putter = EtcdPutter(port)
        while True:
            job = jobs.get()
            if job is None:
                return
            i, scheduled = job
            if putter.put(f"{prefix}{i}"):
                with lock:
                    lat.append((time.monotonic() - scheduled) * 1000)

    workers = [threading.Thread(target=work) for _ in range(16)]
    for w in workers:
        w.start()
    start = time.monotonic() + 0.05
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        jobs.put((i, scheduled))
    for _ in workers:
        jobs.put(None)
    for w in workers:
        w.join(timeout=30)
    return {"sent": n, "ok": len(lat), "lat_ms": sorted(lat)}


def main() -> int:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "closed":
        out: dict[str, object] = dict(closed(port, int(sys.argv[3]), float(sys.argv[4]),
                                             sys.argv[5]))
    else:
        out = open_loop(port, float(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

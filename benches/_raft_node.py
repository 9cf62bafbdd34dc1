"""One replicated node in its own process for `benches.raft`, with its load generator inside.

coreplane is embedded: its clients are threads of the host process, so the load runs in the
node process and goes through the public API only: `kv.put` from many threads (the common
embedding: one waiting thread per write in flight) and the pipelined `kv.put_async` (each
write's completion callback sends the next: see `closed_loop`). Raw pysyncobj is driven like the pipelined path (a
replicated ``set`` with a callback). Requests arrive as JSON lines on stdin, replies leave on
stdout (`coreplane.testing.procs`).

Ops: ``role`` (am I the leader), ``indexes`` (commit and applied index), ``closed`` (keep `inflight`
pipelined writes outstanding for `duration_s`), ``threads`` (`threads` threads each calling the
synchronous put in a loop for `duration_s`), ``open`` / ``open_sync`` (one write every 1/`rate` s
for `duration_s`, pipelined or through the synchronous put from a pool of threads; latency from the
scheduled send time to the acknowledgement, so queueing counts), ``writer_start``/``writer_stop``
(sequential acknowledged writes for the kill -9 runs, with completion times on the shared
CLOCK_MONOTONIC), ``keys`` (local keys with a prefix), ``stop``. The load ops also return
``caller_cpu_s``: the CPU time of the load's own threads (`time.thread_time`), i.e. the bench
loop plus whatever the write call does on its caller's thread; everything else (replication,
the journal, apply, callbacks) runs on the node's threads.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from coreplane.testing.procs import emit, serve_json_lines

VALUE = b"v" * 64


class CoreplaneNode:
    """A ControlPlane; writes through its public API (commit + apply here)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from coreplane import ControlPlane

        self.cp = ControlPlane(
            cfg["node_id"],
            cfg["address"],
            cfg["peers"],
            cfg["data_dir"],
            bytes.fromhex(cfg["secret"]),
            **cfg.get("options", {}),
        )
        self.cp.start()
        self._keys: set[str] = set()

    def is_leader(self) -> bool:
        return self.cp.is_leader() and self.cp.fencing_token is not None

    def indexes(self) -> tuple[int, int]:
        """(commit index, applied index) as this node knows them (`cp.status()`)."""
        st = self.cp.status()
        return int(st.commit_index or 0), int(st.applied_index or 0)

    def propose(self, key: str, done: Callable[[bool], None]) -> None:
        """The public pipelined write (`kv.put_async`): retries and sessions included."""
        try:
            future = self.cp.kv.put_async(key, VALUE, timeout_s=10.0)
        except Exception:  # noqa: BLE001 - not running: "not acknowledged"
            done(False)
            return
        future.add_done_callback(lambda f: done(f.exception() is None))

    def put_sync(self, key: str, timeout_s: float) -> bool:
        try:
            self.cp.kv.put(key, VALUE, timeout_s=timeout_s)
            return True
        except Exception:  # noqa: BLE001 - any failure is "not acknowledged"
            return False

    def keys(self, prefix: str) -> list[str]:
        return [k for k, _, _ in self.cp.kv.range(prefix, stale_ok=True)]

    def batch_stats(self) -> tuple[int, int]:
        """(batch entries, writes in them) this node wrote so far (diagnostics), from the
        public `observations()` (its ``raft["batches"]``; empty while stopped)."""
        batches = self.cp.observations(rows_max=0).raft.get("batches") or {}
        return int(batches.get("entries", 0)), int(batches.get("commands", 0))

    def stop(self) -> None:
        self.cp.stop()


class RawNode:
    """Stock pysyncobj: TCP transport, its file journal and full dump file (the pair it needs
    to restart after log compaction), every other option at its default."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from pysyncobj import SyncObj, SyncObjConf, replicated

        class KV(SyncObj):  # type: ignore[misc]
            def __init__(self, self_addr: str, peers: list[str], conf: Any) -> None:
                super().__init__(self_addr, peers, conf)
                # After super().__init__, as pysyncobj's examples do: attributes that exist
                # when SyncObj.__init__ ends are its own and left out of every snapshot, so
                # a node restored from a snapshot (or a restart after compaction) had no data.
                self._data: dict[str, bytes] = {}

            @replicated  # type: ignore[misc]
            def set(self, key: str, value: bytes) -> bool:
                self._data[key] = value
                return True

        os.makedirs(cfg["data_dir"], exist_ok=True)
        conf = SyncObjConf(
            journalFile=os.path.join(cfg["data_dir"], "journal.bin"),
            fullDumpFile=os.path.join(cfg["data_dir"], "dump.bin"),
        )
        self.obj = KV(cfg["address"], list(cfg["peers"].values()), conf)

    def is_leader(self) -> bool:
        return bool(self.obj._isLeader())

    def indexes(self) -> tuple[int, int]:
        status = self.obj.getStatus()
        return int(status["commit_idx"]), int(status["last_applied"])

    def propose(self, key: str, done: Callable[[bool], None]) -> None:
        self.obj.set(key, VALUE, callback=lambda result, err: done(err == 0))

    def put_sync(self, key: str, timeout_s: float) -> bool:
        box: list[bool] = []
        event = threading.Event()

        def done(ok: bool) -> None:
            box.append(ok)
            event.set()

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            event.clear()
            box.clear()
            self.propose(key, done)
            if event.wait(max(0.0, deadline - time.monotonic())) and box[0]:
                return True
            time.sleep(0.02)
        return False

    def keys(self, prefix: str) -> list[str]:
        return [k for k in list(self.obj._data) if k.startswith(prefix)]

    def stop(self) -> None:
        self.obj.destroy()


def _batches(node: Any) -> tuple[int, int] | None:
    stats = getattr(node, "batch_stats", None)
    return stats() if stats is not None else None


def _batched(before: tuple[int, int] | None, node: Any) -> dict[str, Any]:
    """How many batch entries a load phase wrote and how many writes they held."""
    after = _batches(node)
    if before is None or after is None:
        return {}
    return {"batch_entries": after[0] - before[0], "batched_writes": after[1] - before[1]}


def closed_loop(node: Any, inflight: int, duration_s: float, prefix: str) -> dict[str, Any]:
    """Keep `inflight` writes outstanding; committed writes per second.

    A pipelined host chains: a write's completion callback sends the next one, on whatever
    thread completed it (as an asyncio host's done-callback would), so no thread is woken per
    write. The first version woke a submitting thread per completion through a token queue:
    py-spy --gil put that hand-off at ~16% of the leader's GIL time under `kv.put_async`, a
    cost of the load generator, not of the write. A write that fails hands its slot back to
    the submitting thread (no chaining on failure: a node that refuses at once would recurse),
    which sends again until the end; the drain waits for every slot to come back."""
    slots: queue.SimpleQueue[None] = queue.SimpleQueue()
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    seq = itertools.count()
    end = time.monotonic() + duration_s

    def done(ok: bool) -> None:
        with lock:
            counts["ok" if ok else "failed"] += 1
        if ok and time.monotonic() < end:
            node.propose(f"{prefix}{next(seq)}", done)
        else:
            slots.put(None)

    batches0 = _batches(node)
    cpu0 = time.thread_time()
    start = time.monotonic()
    end = start + duration_s
    for _ in range(inflight):
        node.propose(f"{prefix}{next(seq)}", done)
    returned = 0
    while time.monotonic() < end:
        try:
            slots.get(timeout=0.5)
        except queue.Empty:
            continue
        node.propose(f"{prefix}{next(seq)}", done)  # a failed write's slot, sent again
    caller_cpu_s = time.thread_time() - cpu0
    # Drain, bounded in total (not per write: the reply must beat the caller's timeout). A
    # write whose callback never comes (raw pysyncobj keeps a deposed leader's callbacks until
    # its log reaches their index) is counted, not waited for.
    drain_until = time.monotonic() + 10.0
    while returned < inflight:
        try:
            slots.get(timeout=max(0.0, drain_until - time.monotonic()))
        except queue.Empty:
            break
        returned += 1
    elapsed = time.monotonic() - start
    return {
        "ok": counts["ok"],
        "failed": counts["failed"],
        "unfinished": inflight - returned,
        "elapsed_s": elapsed,
        "writes_per_s": counts["ok"] / elapsed,
        "caller_cpu_s": caller_cpu_s,
        **_batched(batches0, node),
    }


def closed_threads(node: Any, threads: int, duration_s: float, prefix: str) -> dict[str, Any]:
    """`threads` threads, each calling the synchronous put in a loop (one write in flight per
    thread); committed writes per second. Threads are started before the clock starts."""
    ok = [0] * threads
    failed = [0] * threads
    cpu = [0.0] * threads
    go = threading.Barrier(threads + 1)
    window: dict[str, float] = {}

    def work(t: int) -> None:
        go.wait()
        cpu0 = time.thread_time()
        end = window["end"]
        i = 0
        while time.monotonic() < end:
            if node.put_sync(f"{prefix}{t}-{i}", timeout_s=10.0):
                ok[t] += 1
            else:
                failed[t] += 1
            i += 1
        cpu[t] = time.thread_time() - cpu0

    workers = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    batches0 = _batches(node)
    start = time.monotonic()
    window["end"] = start + duration_s
    go.wait()
    for w in workers:
        w.join(timeout=duration_s + 60)
    elapsed = time.monotonic() - start
    return {
        "ok": sum(ok),
        "failed": sum(failed),
        "unfinished": sum(w.is_alive() for w in workers),
        "elapsed_s": elapsed,
        "writes_per_s": sum(ok) / elapsed,
        "caller_cpu_s": sum(cpu),
        **_batched(batches0, node),
    }


def open_loop(node: Any, rate: float, duration_s: float, prefix: str) -> dict[str, Any]:
    """One write every 1/rate s; latency from its scheduled time to its commit callback."""
    n = int(rate * duration_s)
    lat: list[float] = [-1.0] * n
    finished = threading.Semaphore(0)
    cpu0 = time.thread_time()
    start = time.monotonic() + 0.05

    def make_done(i: int, scheduled: float) -> Callable[[bool], None]:
        def done(ok: bool) -> None:
            lat[i] = (time.monotonic() - scheduled) * 1000 if ok else -1.0
            finished.release()

        return done

    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        node.propose(f"{prefix}{i}", make_done(i, scheduled))
    caller_cpu_s = time.thread_time() - cpu0
    for _ in range(n):
        if not finished.acquire(timeout=10):
            break
    ok = sorted(x for x in lat if x >= 0)
    return {"sent": n, "ok": len(ok), "lat_ms": ok, "caller_cpu_s": caller_cpu_s}


OPEN_SYNC_THREADS = 64  # at 1,000/s a write in flight for up to 64 ms finds a free thread


def open_sync(node: Any, rate: float, duration_s: float, prefix: str) -> dict[str, Any]:
    """One synchronous put every 1/rate s, each handed to a free thread of a pool (as a
    threaded server would); latency from its scheduled time to the put's return."""
    n = int(rate * duration_s)
    lat: list[float] = [-1.0] * n
    jobs: queue.SimpleQueue[tuple[int, float] | None] = queue.SimpleQueue()
    cpu = [0.0] * OPEN_SYNC_THREADS

    def work(t: int) -> None:
        cpu0 = time.thread_time()
        while (job := jobs.get()) is not None:
            i, scheduled = job
            if node.put_sync(f"{prefix}{i}", timeout_s=10.0):
                lat[i] = (time.monotonic() - scheduled) * 1000
        cpu[t] = time.thread_time() - cpu0

    workers = [
        threading.Thread(target=work, args=(t,), daemon=True) for t in range(OPEN_SYNC_THREADS)
    ]
    for w in workers:
        w.start()
    cpu0 = time.thread_time()
    start = time.monotonic() + 0.05
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        jobs.put((i, scheduled))
    for _ in workers:
        jobs.put(None)
    dispatch_cpu_s = time.thread_time() - cpu0
    for w in workers:
        w.join(timeout=60)
    ok = sorted(x for x in lat if x >= 0)
    return {"sent": n, "ok": len(ok), "lat_ms": ok, "caller_cpu_s": dispatch_cpu_s + sum(cpu)}


class Writer:
    """Sequential writes of unique keys; what was acknowledged and when (CLOCK_MONOTONIC)."""

    def __init__(self, node: Any, prefix: str) -> None:
        self.node, self.prefix = node, prefix
        self.acked: list[str] = []
        self.started_at: list[float] = []  # when each acknowledged write was first sent
        self.done_at: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            key = f"{self.prefix}{i}"
            started = time.monotonic()
            if self.node.put_sync(key, timeout_s=0.5):
                self.acked.append(key)
                self.started_at.append(started)
                self.done_at.append(time.monotonic())
                i += 1
            time.sleep(0.002)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=10)
        return {"acked": self.acked, "started_at": self.started_at, "done_at": self.done_at}


def _sample_stacks(path: str, stop: threading.Event) -> None:
    """Diagnostics (BENCH_SAMPLE=path): where every thread spends wall time, 1 ms samples."""
    from collections import Counter

    counts: Counter[str] = Counter()
    me = threading.get_ident()
    while not stop.wait(0.001):
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            names = []
            f: Any = frame
            while f is not None and len(names) < 40:
                names.append(
                    f"{f.f_code.co_name}:{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"
                )
                f = f.f_back
            counts[" <- ".join(names)] += 1
    with open(path, "w") as out:
        for stack, n in counts.most_common(100000):
            out.write(f"{n}\t{stack}\n")


def main() -> int:
    cfg = json.loads(sys.argv[1])
    if cfg.get("switch_interval_s"):
        sys.setswitchinterval(cfg["switch_interval_s"])
    sample_stop = threading.Event()
    sample_path = os.environ.get("BENCH_SAMPLE")
    sampler = None
    if sample_path:
        sampler = threading.Thread(
            target=_sample_stacks,
            args=(f"{sample_path}.{cfg['node_id']}", sample_stop),
            daemon=True,
        )
        sampler.start()
    cfg["secret"] = os.environ.get("BENCH_SECRET", "00" * 32)
    node: Any = CoreplaneNode(cfg) if cfg["kind"] == "coreplane" else RawNode(cfg)
    writers: dict[str, Writer] = {}

    def handle(req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        if op == "role":
            return {"leader": node.is_leader()}
        if op == "closed":
            return closed_loop(node, req["inflight"], req["duration_s"], req["prefix"])
        if op == "threads":
            return closed_threads(node, req["threads"], req["duration_s"], req["prefix"])
        if op == "open":
            return open_loop(node, req["rate"], req["duration_s"], req["prefix"])
        if op == "open_sync":
            return open_sync(node, req["rate"], req["duration_s"], req["prefix"])
        if op == "writer_start":
            writers[req["prefix"]] = Writer(node, req["prefix"])
            return {}
        if op == "writer_last":
            w = writers[req["prefix"]]
            return {"last": w.started_at[-1] if w.started_at else None}
        if op == "writer_stop":
            return writers.pop(req["prefix"]).stop()
        if op == "indexes":
            commit, applied = node.indexes()
            return {"commit": commit, "applied": applied}
        if op == "keys":
            return {"keys": node.keys(req["prefix"])}
        raise ValueError(f"unknown op {op!r}")

    emit({"event": "ready"})
    try:
        serve_json_lines(handle)
    finally:
        node.stop()
        sample_stop.set()
        if sampler is not None:
            sampler.join(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where one write's milliseconds go: a diagnostic for `benches.raft`'s latency phase.

Not a bench (it patches coreplane internals to timestamp them, and it is not run by
``python -m benches``). Three coreplane nodes in their own processes on 127.0.0.1; the leader
calls ``kv.put`` `writes` times at `rate` per second (each write alone at a low rate), and every
process records, on the shared CLOCK_MONOTONIC: proposals, log appends, journal syncs (start,
duration), frames queued, socket writes, frames received, applies and callbacks. The driver
then matches each write's log index across the three traces and prints the median, mean and
p90 of each step::

    python3 -m benches._raft_trace [--writes 300] [--rate 100]

Steps: the tick thread waking for the proposal, the leader's append and send, the network,
the follower's append, sync and reply, the leader's own sync, commit and apply after the
quorum, the callback and the caller's wake-up. Run with ``PYTHONPATH=$PWD``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

Event = tuple[float, str, dict[str, Any]]


def _instrument(events: list[Event]) -> None:
    """Wrap the engine, journal and wire methods one write passes through."""
    from coreplane.raft import engine as E
    from coreplane.raft import journal as J
    from coreplane.raft import wire as W

    def rec(name: str, **kw: Any) -> None:
        events.append((time.monotonic(), name, kw))

    add, flush = J.LmdbJournal.add, J.LmdbJournal.flush
    write, deliver = W.WireTransport._write, W.WireTransport._deliver
    propose = E.RaftEngine.propose

    def t_add(self: Any, command: bytes, idx: int, term: int) -> None:
        rec("log_add", idx=idx)
        add(self, command, idx, term)

    def t_flush(self: Any) -> None:
        dirty, started = bool(self.dirty), time.monotonic()
        flush(self)
        if dirty:
            rec("fsync", start=started)

    def t_write(self: Any, conn: Any) -> None:
        queued = len(conn.wbuf)
        write(self, conn)
        if queued:
            rec("sock_send")

    def t_deliver(self: Any, conn: Any, payload: bytes) -> None:
        rec("recv", size=len(payload))
        deliver(self, conn, payload)

    def t_propose(self: Any, data: bytes, callback: Any, **kw: Any) -> None:
        rec("propose")

        def done(result: Any, code: int) -> None:
            rec("callback")
            callback(result, code)

        propose(self, data, done, **kw)

    J.LmdbJournal.add = t_add  # type: ignore[method-assign]
    J.LmdbJournal.flush = t_flush  # type: ignore[method-assign]
    W.WireTransport._write = t_write  # type: ignore[method-assign]
    W.WireTransport._deliver = t_deliver  # type: ignore[method-assign]
    E.RaftEngine.propose = t_propose  # type: ignore[method-assign]


def _node(cfg: dict[str, Any]) -> None:
    events: list[Event] = []
    _instrument(events)
    from coreplane import ControlPlane

    cp = ControlPlane(
        cfg["node_id"],
        cfg["address"],
        cfg["peers"],
        cfg["data_dir"],
        bytes.fromhex(cfg["secret"]),
    )
    cp.start()
    time.sleep(cfg["warm_s"])
    leader = cp.is_leader()
    if leader:
        start = time.monotonic()
        for i in range(cfg["writes"]):
            due = start + i / cfg["rate"]
            time.sleep(max(0.0, due - time.monotonic()))
            events.append((time.monotonic(), "put_call", {}))
            cp.kv.put(f"k{i}", b"v" * 64)
            events.append((time.monotonic(), "put_return", {}))
    else:
        time.sleep(cfg["writes"] / cfg["rate"] + 1.0)
    time.sleep(1.0)
    Path(cfg["out"]).write_text(json.dumps({"leader": leader, "events": events}))
    cp.stop()


def _follower_replies(events: list[Any]) -> dict[int, dict[str, float]]:
    """index -> when a follower received it, synced it (start, end) and replied."""
    out: dict[int, dict[str, float]] = {}
    pending: list[tuple[int, float | None]] = []
    received: float | None = None
    synced: tuple[float, float] | None = None
    for t, name, kw in events:
        if name == "recv":
            received = t
        elif name == "log_add":
            pending.append((kw["idx"], received))
        elif name == "fsync" and pending:
            synced = (kw["start"], t)
        elif name == "sock_send" and pending:
            for idx, got in pending:
                step = {"reply": t}
                if got is not None:
                    step["recv"] = got
                if synced is not None:
                    step["sync_start"], step["sync_end"] = synced
                if idx not in out or out[idx]["reply"] > t:
                    out[idx] = step
            pending, synced = [], None
    return out


def _steps(traces: list[dict[str, Any]]) -> dict[str, list[float]]:
    leader = next(t["events"] for t in traces if t["leader"])
    replies: dict[int, dict[str, float]] = {}
    for trace in traces:
        if not trace["leader"]:
            for idx, step in _follower_replies(trace["events"]).items():
                if idx not in replies or replies[idx]["reply"] > step["reply"]:
                    replies[idx] = step  # the first follower to answer makes the quorum
    steps: dict[str, list[float]] = {}

    def put(name: str, a: float | None, b: float | None) -> None:
        if a is not None and b is not None:
            steps.setdefault(name, []).append(1000 * (b - a))

    calls = [i for i, (_, name, _) in enumerate(leader) if name == "put_call"]
    for i in calls:
        t0, m = leader[i][0], {}
        j = i
        while leader[j][1] != "put_return":
            t, name, kw = leader[j]
            if name == "log_add" and "add" not in m:
                m["add"], m["idx"] = t, kw["idx"]
            elif name == "sock_send" and "add" in m:
                m.setdefault("send", t)
            elif name == "fsync" and "add" in m and "sync_end" not in m:
                m["sync_start"], m["sync_end"] = kw["start"], t
            elif name == "callback":
                m.setdefault(name, t)
            j += 1
        f = replies.get(m.get("idx", -1))
        if f is None or "add" not in m:
            continue
        quorum = max(f["reply"], m.get("sync_end", f["reply"]))
        put("1 propose -> leader append (tick wakes)", t0, m["add"])
        put("2 leader append -> on the socket", m["add"], m.get("send"))
        put("3 socket -> follower received", m.get("send"), f.get("recv"))
        put("4 follower received -> its sync starts", f.get("recv"), f.get("sync_start"))
        put("5 follower sync", f.get("sync_start"), f.get("sync_end"))
        put("6 follower sync -> reply on the socket", f.get("sync_end"), f["reply"])
        put("7 leader sync (in parallel)", m.get("sync_start"), m.get("sync_end"))
        put("8 quorum durable -> callback", quorum, m.get("callback"))
        put("9 callback -> caller returns", m.get("callback"), leader[j][0])
        put("total", t0, leader[j][0])
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches._raft_trace")
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.node:
        _node(json.loads(args.node))
        return 0
    from coreplane.testing.ports import free_ports

    base = Path(tempfile.mkdtemp(prefix="raft-trace-"))
    try:
        ids = ("a", "b", "c")
        addrs = {n: f"127.0.0.1:{p}" for n, p in zip(ids, free_ports(3), strict=True)}
        secret = os.urandom(32).hex()
        procs = []
        for n in ids:
            cfg = {
                "node_id": n,
                "address": addrs[n],
                "peers": {p: a for p, a in addrs.items() if p != n},
                "data_dir": str(base / n),
                "secret": secret,
                "warm_s": 4.0,
                "writes": args.writes,
                "rate": args.rate,
                "out": str(base / f"{n}.json"),
            }
            cmd = [sys.executable, "-m", "benches._raft_trace", "--node", json.dumps(cfg)]
            procs.append(subprocess.Popen(cmd))
        for proc in procs:
            proc.wait()
        traces = [json.loads((base / f"{n}.json").read_text()) for n in ids]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    with open("/proc/loadavg") as f:
        print(f"load average: {f.read().split()[0]}; ms per step (median / mean / p90):")
    for name, values in _steps(traces).items():
        values.sort()
        p90 = values[int(0.9 * len(values))]
        print(
            f"  {name:42s} {statistics.median(values):6.2f} / "
            f"{statistics.mean(values):6.2f} / {p90:6.2f}  (n={len(values)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One coreplane voter with its HTTP API in its own OS process, for test_diagnose_procs.py.

Configuration is one JSON argument (node_id, address, peers, data_dir, api_address, api_peers,
tokens, and the faults clock_skew_s, slow_flush_ms, map_max_bytes); the cluster secret comes
hex-encoded in COREPLANE_TEST_SECRET (never on a command line). `clock_skew_s` shifts the wall
clock coreplane.obs reads in this process (what a wrong system clock would be);
`slow_flush_ms` delays every journal write transaction (a slow disk); `map_max_bytes` caps the
LMDB map. Emits {"event": "ready"} once both listen and serves JSON lines (`status`, `put`)
until stopped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from coreplane.api.server import ApiServer
from coreplane.raft.journal import LmdbJournal
from coreplane.runtime.controlplane import ControlPlane
from coreplane.runtime.seams import Seams
from coreplane.testing.procs import emit, serve_json_lines


def _journal_factory(cfg: dict[str, Any]) -> Any:
    slow_s = float(cfg.get("slow_flush_ms", 0)) / 1000
    cap = cfg.get("map_max_bytes")
    if not slow_s and not cap:
        return None

    class FaultyJournal(LmdbJournal):
        def _flush_txn(self) -> None:
            time.sleep(slow_s)
            super()._flush_txn()

    def make(path: str, **kw: Any) -> LmdbJournal:
        sizes = {"map_size_bytes": cap, "map_size_max_bytes": cap} if cap else {}
        return FaultyJournal(path, **sizes, **kw)

    return make


def main() -> None:
    cfg = json.loads(sys.argv[1])
    secret = bytes.fromhex(os.environ["COREPLANE_TEST_SECRET"])
    factory = _journal_factory(cfg)
    cp = ControlPlane(
        cfg["node_id"],
        cfg["address"],
        cfg["peers"],
        cfg["data_dir"],
        secret,
        election_timeout_ms=(200, 400),
        heartbeat_ms=40,
        tick_interval_ms=100,
        seams=Seams(journal_factory=factory) if factory else None,
    )
    cp.start()
    api = ApiServer(cp, cfg["api_address"], tokens=cfg["tokens"], api_peers=cfg["api_peers"])
    skew_s = float(cfg.get("clock_skew_s", 0.0))
    if skew_s and api.obs is not None:
        api.obs.observer.wall_clock_s = lambda: time.time() + skew_s
    api.start()
    emit({"event": "ready"})

    def handle(req: dict[str, Any]) -> dict[str, Any]:
        if req.get("op") == "status":
            return {"status": cp.status().to_dict()}
        if req.get("op") == "put":
            return {"rev": cp.kv.put(req["key"], req["value"].encode(), timeout_s=5.0)}
        raise ValueError(f"unknown op {req.get('op')!r}")

    try:
        serve_json_lines(handle)
    finally:
        api.stop()
        cp.stop()


if __name__ == "__main__":
    main()

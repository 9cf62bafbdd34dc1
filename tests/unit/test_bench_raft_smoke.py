"""The replication bench runs at a small size inside the suite so it never rots.

Three coreplane processes and three raw pysyncobj processes on 127.0.0.1 for a few seconds,
one leader kill; etcd is never needed here. No timing assertions: only that every figure the
summary promises is there and that no acknowledged write was lost.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_raft_bench_smoke_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "raft.json"
    done = subprocess.run([sys.executable, "-m", "benches", "raft", "--json", str(out),
                           "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]  # the bench's traceback, in CI's log
    record = json.loads(out.read_text())
    assert record["bench"] == "raft" and record["params"]["smoke"] is True
    summary = record["summary"]
    for key in ("tput_writes_per_s", "tput_ratio_vs_pysyncobj", "p50_ms_at_100",
                "failover_s_median", "failover_s_max"):
        assert summary[key] > 0, key
    assert summary["acked_lost"] == 0
    assert summary["tput_ratio_vs_etcd"] is None and summary["etcd"] == "skipped (--smoke)"
    assert record["results"]["pysyncobj"]["tput_writes_per_s"] > 0
    assert record["git_revision"]

"""The API bench runs at a small size inside the suite so it never rots (no etcd, no timing
assertions: only that every figure the summary promises is there and nothing failed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_api_bench_smoke_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    done = subprocess.run(
        [sys.executable, "-m", "benches", "api", "--json", str(out), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    record = json.loads(out.read_text())
    summary = record["summary"]
    for key in (
        "put_per_s",
        "get_per_s",
        "get_stale_per_s",
        "put_p50_ms",
        "lock_cycle_per_s",
        "lock_p50_ms",
    ):
        assert summary[key] > 0, key
        assert summary[f"{key}_ratio_vs_etcd"] is None  # etcd is skipped under --smoke
    assert summary["errors"]["coreplane"] == {"put": 0, "get": 0, "get_stale": 0, "lock": 0}
    assert summary["lock_sync_cycle_per_s"] > 0  # the lock cycle with every release waited for
    for op in ("put", "get", "get_stale", "lock"):  # CPU per op of the generator and of the members
        assert summary[f"{op}_gen_cpu_us_per_op"] > 0, op
        assert summary[f"{op}_servers_cpu_us_per_op"] > 0, op
    for op in ("put", "get", "lock"):  # read from the leader: its server time and thread roles
        assert summary[f"{op}_server_p50_ms"] > 0, op
        assert summary[f"{op}_leader_api_cpu_us_per_op"] is not None, op
        assert summary[f"{op}_leader_raft_cpu_us_per_op"] is not None, op
    # the switch interval's A/B: both variants ran, and their ratio is reported
    assert summary["put_pair_per_s"] > 0 and summary["put_switch_per_s"] > 0
    assert summary["put_switch_ratio"] > 0

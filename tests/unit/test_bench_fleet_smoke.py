"""The fleet bench runs at a small size inside the suite so it never rots (no timing asserts;
the correctness counters it reports must be zero even at this size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fleet_bench_smoke_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    subprocess.run(
        [sys.executable, "-m", "benches", "fleet", "--json", str(out), "--smoke"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    record = json.loads(out.read_text())
    assert record["bench"] == "fleet" and record["params"]["smoke"] is True
    summary = record["summary"]
    for key in (
        "tick_apply_us_p50",
        "tick_apply_us_p99",
        "plan_apply_ms",
        "detect_to_plan_s",
        "heal_moves_over_lb",
        "anchor_tick_decode_us",
    ):
        assert summary[key] > 0, key
    for key in ("liveness_entries_per_s", "liveness_bytes_per_s"):
        assert summary[key] >= 0, key
    assert summary["oscillating_moves"] == 0
    assert summary["exactly_once_violations"] == 0
    assert summary["churn_under_replicated_at_end"] == 0
    assert summary["plan_moves"] > 0 and summary["churn_repairs"] > 0

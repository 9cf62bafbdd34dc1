"""The apply bench runs at a small size inside the suite so it never rots (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_apply_bench_smoke_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "apply.json"
    subprocess.run(
        [sys.executable, "-m", "benches", "apply", "--json", str(out), "--smoke"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    record = json.loads(out.read_text())
    assert record["bench"] == "apply"
    assert record["params"]["smoke"] is True
    summary = record["summary"]
    for key in ("put_us", "put_over_anchor", "mix_apply_per_s", "snapshot_s", "restore_s"):
        assert summary[key] > 0, key
    assert record["git_revision"]

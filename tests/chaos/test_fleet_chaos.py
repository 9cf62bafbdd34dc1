"""CI-scale fleet chaos: 200 seeded fleet schedules (agents crash or lose their disk,
agent-to-leader partitions, lost replicas, slow copies, leader failover mid-operation,
control-plane crashes and partitions, clock drift and follower clock jumps, drains and RF
changes) with 0 violations of the fleet invariants (orphan copies garbage-collected
included), and both fleet canaries caught
(remove-before-add, death after a failover). A failure prints its replay command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SEED = 20261207


@pytest.mark.chaos
def test_two_hundred_fleet_schedules_are_clean_and_the_canaries_caught(tmp_path: Path) -> None:
    out = tmp_path / "fleet-chaos.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "coreplane.testing.chaos",
            "--schedules",
            "0",
            "--fleet-schedules",
            "200",
            "--seed",
            str(SEED),
            "--jobs",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=3000,
    )
    report = json.loads(out.read_text())
    summary = report["summary"]
    failing = [
        f"seed {r['seed']}: {sorted({v['invariant'] for v in r['violations']})} -> {r['replay']}"
        for r in report["fleet_schedules"]
        if r["violations"]
    ]
    print(json.dumps(summary, sort_keys=True))
    assert summary["fleet_schedules"] == 200
    assert summary["fleet_violations"] == 0, "\n".join(failing[:20])
    assert summary["fleet_repairs"] > 0 and summary["fleet_moves_completed"] > 1_000
    assert summary["fleet_orphans_removed"] > 0  # orphan GC ran, and left no orphan behind
    assert summary["fleet_canaries_total"] == 2
    assert summary["fleet_canaries_caught"] == 2, report["fleet_canaries"]
    assert proc.returncode == 0, proc.stderr[-2000:]

"""The CI-scale chaos run: 250 three-node and 50 five-node seeded schedules, and the canaries.

Runs the public runner as CI would (``python -m coreplane.testing.chaos``) and reads its JSON:
0 violations, 0 unknown checker results, at least 50,000 client operations checked, and every
known-bug canary caught. A failing schedule is printed with its replay command.
Nightly scale: ``python -m coreplane.testing.chaos --schedules 10000 --five-node-schedules
2000 --jobs 8 --json nightly.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SEED = 20261129


@pytest.mark.chaos
def test_ci_scale_chaos_run_is_clean(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "coreplane.testing.chaos",
            "--schedules",
            "250",
            "--five-node-schedules",
            "50",
            "--seed",
            str(SEED),
            "--jobs",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    report = json.loads(out.read_text())
    summary = report["summary"]
    failing = [
        f"seed {r['seed']} ({r['nodes']} nodes): "
        f"{sorted({v['invariant'] for v in r['violations']})} -> {r['replay']}"
        for r in report["schedules"]
        if r["violations"] or r["unknown_results"]
    ]
    print(json.dumps(summary, sort_keys=True))
    assert summary["schedules_3_nodes"] >= 250 and summary["schedules_5_nodes"] >= 50
    assert summary["violations"] == 0, "\n".join(failing[:20])
    assert summary["unknown_results"] == 0, "\n".join(failing[:20])
    assert summary["ops_checked"] >= 50_000, summary
    assert summary["canaries_total"] == 5
    assert summary["canaries_caught"] == 5, report["canaries"]
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.chaos
def test_lmdb_journal_schedules_are_clean() -> None:
    """The real LmdbJournal in a temporary directory, crashed without its last flush."""
    from coreplane.testing import run_schedule

    for seed in range(SEED, SEED + 6):
        result = run_schedule(seed, journal="lmdb", chaos_ms=(3_000, 5_000))
        assert result.ok, f"{result.violations[:3]}; replay: {result.replay}"
        assert result.ops_checked > 50

"""The placement bench runs small inside the suite so it never rots (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = (
    "solve_s",
    "moves",
    "lower_bound",
    "moves_over_lb",
    "heat_max_over_fair",
    "band_violations",
    "hard_violations",
    "waves",
    "speedup_vs_twin",
)


def test_placement_bench_smoke_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "placement.json"
    subprocess.run(
        [sys.executable, "-m", "benches", "placement", "--json", str(out), "--smoke"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    record = json.loads(out.read_text())
    assert record["bench"] == "placement"
    assert record["params"]["smoke"] is True
    assert record["git_revision"]
    for size, events in record["summary"].items():
        assert set(events) == {
            "bootstrap",
            "add_nodes",
            "node_dead",
            "drain",
            "heat_shift",
            "rf_change",
            "budget",
        }, size
        for event, entry in events.items():
            if entry["infeasible"] == entry["cases"]:
                continue
            for key in KEYS:
                assert key in entry, (size, event, key)
            assert entry["hard_violations"] == 0, (size, event)
            assert entry["twin_identical"], (size, event)
            assert entry["moves"] >= 0 and entry["lower_bound"] >= 0
    reasons = record["summary"]["P=600/N=15"]["drain"]["infeasible_reasons"]
    assert any("needs 3 zones" in r for r in reasons)  # draining a zone of three is refused
    budget = record["summary"]["P=600/N=15"]["budget"]
    assert {"band_violations", "count_max_off_fair"} <= set(budget["out_of_band"])
    family = record["family"]["summary"]
    assert set(family) == {f"P=600/N=15/{skew}" for skew in ("mild", "moderate", "boundary")}
    for name, per_event in family.items():
        assert set(per_event) == {"bootstrap", "add_nodes", "node_dead", "drain", "heat_shift"}
        for event, entry in per_event.items():
            if entry["infeasible"] == entry["cases"]:
                continue
            for key in (
                "heat_over_cap_nodes",
                "moves_over_lb",
                "greedy_heat_over_cap_nodes",
                "greedy_moves_over_lb",
                "heat_max_over_fair",
                "solve_s",
                "heat_over_cap_floor",
                "heat_over_cap_above_floor",
                "greedy_heat_over_cap_above_floor",
            ):
                assert key in entry, (name, event, key)
            assert entry["hard_violations"] == 0 and entry["twin_identical"], (name, event)
            if event in ("add_nodes", "node_dead", "drain"):  # held to 1.02 x the bound
                for key in (
                    "heat_max_floor",
                    "heat_max_above_floor",
                    "greedy_heat_max_above_floor",
                    "heat_max_le_greedy_within_bound",
                ):
                    assert key in entry, (name, event, key)
    for r in record["family"]["records"]:  # the floor bounds every plan within 1.02 x LB
        if r.get("heat_max_floor") is not None and r["kernel"]["moves"] <= 1.02 * r["lower_bound"]:
            assert r["kernel"]["heat_max_over_fair_all"] >= r["heat_max_floor"], r
    budget = record["family"]["budget"]  # both budget objectives on the family's add
    assert set(budget) == set(family)
    for name, entry in budget.items():
        for objective in ("worst", "out_of_band"):
            assert {"band_violations", "count_max_off_fair", "moves"} <= set(entry[objective])
            assert entry[objective]["moves"] <= entry["moves_max"], (name, objective)
            assert entry[objective]["hard_violations"] == 0, (name, objective)

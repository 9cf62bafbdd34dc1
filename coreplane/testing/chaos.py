"""The chaos runner: N seeded schedules, the canaries, one JSON report.

``python -m coreplane.testing.chaos --schedules N --nodes 3 --seed S --json OUT`` runs N
schedules (`workload.run_schedule`, seeds S, S+1, ...), plus ``--five-node-schedules M``
five-node ones (seeds S+1000000, ...), then the five known-bug canaries (``--no-canaries`` to
skip), and writes per-schedule results and a summary with `SUMMARY_KEYS`. It exits 1 on any
violation, unknown checker result or missed canary, and prints the command that replays each
failing schedule (``--replay SEED``). ``--jobs K`` runs schedules in K processes; results do
not depend on it. Nightly scale: ``--schedules 10000 --five-node-schedules 2000 --jobs 8``.

``--fleet-schedules F`` adds F fleet schedules (`fleet_chaos.run_fleet_schedule`, seeds
S+2000000, ...: storage agents, failovers mid-operation, the fleet invariants) and the two fleet
canaries; ``--replay-fleet SEED`` replays one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from coreplane.testing.canaries import CANARIES, catch
from coreplane.testing.fleet_chaos import FLEET_CANARIES, catch_fleet, run_fleet_schedule
from coreplane.testing.workload import ScheduleResult, run_schedule

__all__ = ["SUMMARY_KEYS", "main", "run"]

SUMMARY_KEYS = (
    "schedules",
    "violations",
    "ops_checked",
    "unknown_results",
    "sim_seconds",
    "wall_seconds",
    "canaries_caught",
    "canaries_total",
)
FIVE_NODE_SEED_OFFSET = 1_000_000
FLEET_SEED_OFFSET = 2_000_000


def _one(args: tuple[int, int, str]) -> dict[str, Any]:
    seed, nodes, journal = args
    return run_schedule(seed, nodes, journal=journal).to_json()


def _one_fleet(seed: int) -> dict[str, Any]:
    return run_fleet_schedule(seed).to_json()


def _fleet(
    count: int, seed: int, jobs: int, canaries: bool, progress: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    seeds = [seed + FLEET_SEED_OFFSET + i for i in range(count)]
    results: list[dict[str, Any]] = []
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_one_fleet, seeds, chunksize=2))
    else:
        results = [_one_fleet(s) for s in seeds]
    if progress is not None:
        for r in results:
            if r["violations"]:
                kinds = sorted({v["invariant"] for v in r["violations"]})
                print(
                    f"FAIL fleet seed {r['seed']}: {kinds}; replay: {r['replay']}",
                    file=progress,
                    flush=True,
                )
    found = []
    if canaries and count:
        for name in sorted(FLEET_CANARIES):
            caught, at, invariants = catch_fleet(name)
            found.append(
                {"name": name, "caught": caught, "seed": at, "invariants": list(invariants)}
            )
            if progress is not None:
                print(
                    f"fleet canary {name}: {'caught' if caught else 'MISSED'} "
                    f"(seed {at}, {list(invariants)})",
                    file=progress,
                )
    return results, found


def run(
    *,
    schedules: int,
    nodes: int = 3,
    seed: int = 0,
    five_node_schedules: int = 0,
    journal: str = "memory",
    canaries: bool = True,
    jobs: int = 1,
    progress: Any = None,
    fleet_schedules: int = 0,
) -> dict[str, Any]:
    """Run everything and return the report (``{"summary": ..., "schedules": [...],
    "canaries": [...]}``)."""
    wall0 = time.perf_counter()
    work = [(seed + i, nodes, journal) for i in range(schedules)]
    work += [(seed + FIVE_NODE_SEED_OFFSET + i, 5, journal) for i in range(five_node_schedules)]
    results: list[dict[str, Any]] = []
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for result in pool.map(_one, work, chunksize=4):
                results.append(result)
                _report_progress(progress, result)
    else:
        for item in work:
            result = _one(item)
            results.append(result)
            _report_progress(progress, result)
    canary_results = []
    if canaries:
        for name in sorted(CANARIES):
            found = catch(name)
            canary_results.append(
                {
                    "name": name,
                    "caught": found.caught,
                    "seed": found.seed,
                    "seeds_tried": found.seeds_tried,
                    "invariants": list(found.invariants),
                }
            )
            if progress is not None:
                print(
                    f"canary {name}: {'caught' if found.caught else 'MISSED'} "
                    f"(seed {found.seed}, {list(found.invariants)})",
                    file=progress,
                )
    fleet_results, fleet_canaries = _fleet(fleet_schedules, seed, jobs, canaries, progress)
    summary = {
        "fleet_schedules": len(fleet_results),
        "fleet_violations": sum(len(r["violations"]) for r in fleet_results),
        "fleet_failed_schedules": sum(1 for r in fleet_results if r["violations"]),
        "fleet_moves_completed": sum(r["moves_completed"] for r in fleet_results),
        "fleet_repairs": sum(r["repairs"] for r in fleet_results),
        "fleet_orphans_removed": sum(r["orphans_removed"] for r in fleet_results),
        "fleet_restore_ms_max": max((r["restore_ms"] for r in fleet_results), default=0),
        "fleet_canaries_caught": sum(1 for c in fleet_canaries if c["caught"]),
        "fleet_canaries_total": len(fleet_canaries),
        "schedules": len(results),
        "schedules_3_nodes": sum(1 for r in results if r["nodes"] == 3),
        "schedules_5_nodes": sum(1 for r in results if r["nodes"] == 5),
        "violations": sum(len(r["violations"]) for r in results),
        "failed_schedules": sum(1 for r in results if r["violations"]),
        "ops_checked": sum(r["ops_checked"] for r in results),
        "ops_unknown_outcome": sum(r["ops_unknown_outcome"] for r in results),
        "unknown_results": sum(r["unknown_results"] for r in results),
        "sim_seconds": round(sum(r["sim_seconds"] for r in results), 3),
        "schedule_wall_seconds": round(sum(r["wall_seconds"] for r in results), 3),
        "wall_seconds": round(time.perf_counter() - wall0, 3),
        "canaries_caught": sum(1 for c in canary_results if c["caught"]),
        "canaries_total": len(canary_results),
        "journal": journal,
        "seed": seed,
    }
    per_wall = summary["schedule_wall_seconds"] or 1.0
    summary["sim_seconds_per_wall_second"] = round(summary["sim_seconds"] / per_wall, 2)
    return {
        "summary": summary,
        "schedules": results,
        "canaries": canary_results,
        "fleet_schedules": fleet_results,
        "fleet_canaries": fleet_canaries,
    }


def _report_progress(progress: Any, result: dict[str, Any]) -> None:
    if progress is None:
        return
    if result["violations"] or result["unknown_results"]:
        kinds = sorted({v["invariant"] for v in result["violations"]})
        print(
            f"FAIL seed {result['seed']} ({result['nodes']} nodes): {kinds}; replay: "
            f"{result['replay']}",
            file=progress,
            flush=True,
        )


def failed(report: dict[str, Any]) -> bool:
    s = report["summary"]
    return bool(
        s["violations"]
        or s["unknown_results"]
        or s["canaries_caught"] != s["canaries_total"]
        or s["fleet_violations"]
        or s["fleet_canaries_caught"] != s["fleet_canaries_total"]
    )


def _replay(seed: int, nodes: int, journal: str, canary: Sequence[str]) -> int:
    result: ScheduleResult = run_schedule(seed, nodes, journal=journal, canaries=tuple(canary))
    print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coreplane.testing.chaos", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--schedules", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    parser.add_argument("--five-node-schedules", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--journal", default="memory", choices=("memory", "lmdb"))
    parser.add_argument("--json", dest="json_out", default=None)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--no-canaries", action="store_true")
    parser.add_argument(
        "--replay",
        type=int,
        default=None,
        metavar="SEED",
        help="run one schedule and print its full result",
    )
    parser.add_argument(
        "--canary",
        action="append",
        default=[],
        choices=sorted({*CANARIES, *FLEET_CANARIES}),
        help="with --replay or --replay-fleet: switch a known bug on",
    )
    parser.add_argument("--fleet-schedules", type=int, default=0)
    parser.add_argument(
        "--replay-fleet",
        type=int,
        default=None,
        metavar="SEED",
        help="run one fleet schedule and print its full result",
    )
    args = parser.parse_args(argv)
    if args.replay_fleet is not None:
        fleet_result = run_fleet_schedule(args.replay_fleet, canaries=tuple(args.canary))
        print(json.dumps(fleet_result.to_json(), indent=2, sort_keys=True))
        return 0 if fleet_result.ok else 1
    if args.replay is not None:
        return _replay(args.replay, args.nodes, args.journal, args.canary)
    report = run(
        schedules=args.schedules,
        nodes=args.nodes,
        seed=args.seed,
        five_node_schedules=args.five_node_schedules,
        journal=args.journal,
        canaries=not args.no_canaries,
        jobs=max(1, args.jobs),
        progress=sys.stdout,
        fleet_schedules=args.fleet_schedules,
    )
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, sort_keys=True)
    summary = report["summary"]
    print(json.dumps(summary, sort_keys=True))
    if failed(report):
        print(
            "chaos: FAILED; replay a schedule with: python -m coreplane.testing.chaos "
            "--replay SEED --nodes N",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

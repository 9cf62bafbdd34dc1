"""Backend switch and the solve entry point shared by the Cython kernel and the pure twin.

`COREPLANE_PURE_PYTHON=1` forces the twin; `COREPLANE_REQUIRE_EXT=1` makes a missing kernel an
import error instead of a silent fallback; `BACKEND` names what runs ("cython" or "python").
Both backends get the same dense input and their raw moves go through the same assembly, so a
plan's bytes depend only on the moves. Imports only coreplane.errors and placement modules.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from coreplane.errors import InvalidArgument, require
from coreplane.placement import _pure
from coreplane.placement.bounds import Accel, Dense, compile_problem, lower_bound_dense
from coreplane.placement.model import Assignment, Metrics, MoveList, Plan, Problem

__all__ = ["BACKEND", "available_backends", "solve", "solve_timed"]

Core = Callable[[Dense], tuple[Any, ...]]


class Raw(NamedTuple):
    """A core's raw answer, named: both cores return this 12-tuple positionally (the twin as
    `_pure.Raw`, the kernel as a plain tuple) and `_solve_timed` names it once. The lists are
    empty unless status is `_pure.OK`; the kernel hands the move arrays and the CSR as
    array('q'), the twin as lists, and the plan's bytes do not depend on which."""

    status: int  # _pure.OK, NO_ROOM or OVER_BUDGET
    arg: int  # NO_ROOM: the partition index that found no node; OVER_BUDGET: moves needed
    lb: int  # lower bound: the plan's own when OK, else the problem's
    mp: Sequence[int]  # per move: partition
    ms: Sequence[int]  # per move: source node (-1: a new replica)
    md: Sequence[int]  # per move: destination node (-1: a dropped replica)
    mw: Sequence[int]  # per move: its wave
    node_count: Sequence[int]  # final replicas per node
    mheat: Sequence[int]  # final heat per node without split candidates
    off: Sequence[int]  # final assignment, CSR offsets (P + 1)
    rep: Sequence[int]  # final assignment, CSR node indexes, ascending per partition
    wave_count: int  # number of waves


def _load_kernel() -> tuple[Core, Accel] | None:
    try:
        kernel = importlib.import_module("coreplane.placement._kernel")
    except ImportError as exc:
        if os.environ.get("COREPLANE_REQUIRE_EXT") == "1":
            raise ImportError(
                "COREPLANE_REQUIRE_EXT=1 but the placement kernel "
                "coreplane.placement._kernel is not built (pip install .)"
            ) from exc
        return None
    solve_dense: Core = kernel.solve_dense
    return solve_dense, Accel(
        kernel.dense_replicas,
        kernel.remap_nodes,
        kernel.touched_rows,
        kernel.plan_metrics,
        kernel.hotter_than,
        kernel.parts_delta,
        kernel.same_items,
    )


_KERNEL = _load_kernel()
# backend -> (core, compiler of the current replicas); the pure one is all Python.
_CORES: dict[str, tuple[Core, Accel]] = {"python": (_pure.solve_dense, Accel())}
if _KERNEL is not None:
    _CORES["cython"] = _KERNEL
BACKEND = (
    "python" if os.environ.get("COREPLANE_PURE_PYTHON") == "1" or _KERNEL is None else "cython"
)


def available_backends() -> tuple[str, ...]:
    """Backends importable here, sorted: tests compare every pair on the same problem."""
    return tuple(sorted(_CORES))


def _precheck(d: Dense) -> str:
    """The reason an instance is infeasible before any search, or ""."""
    if d.rf_max > d.eligible_zones:
        p = next(p for p, rf in enumerate(d.rf) if rf > d.eligible_zones)
        return (
            f"partition {d.part_ids[p]!r} needs {d.rf[p]} zones but only "
            f"{d.eligible_zones} zones have alive nodes"
        )
    slots = sum(s for s, e in zip(d.slots, d.elig, strict=True) if e)
    if slots < d.replicas:
        return f"{d.replicas} replicas do not fit in the {slots} slots of alive nodes"
    return ""


def _empty(problem: Problem, d: Dense, lb: int, reason: str, backend: str) -> Plan:
    metrics = Metrics(0, lb, 0.0, 0.0, 0, 0, 0)
    return Plan(False, reason, (), problem.assignment, (), metrics, backend)


def solve(problem: Problem, *, backend: str | None = None) -> Plan:
    """Plan where every replica lives; infeasible instances come back with a reason, no moves."""
    return solve_timed(problem, backend=backend)[0]


def solve_timed(problem: Problem, *, backend: str | None = None) -> tuple[Plan, dict[str, float]]:
    """`solve`, plus the seconds spent compiling, in the backend core and assembling the plan.

    For benchmarks and the leader's metrics only; the plan never depends on a clock.
    """
    name = BACKEND if backend is None else backend
    if name not in _CORES:
        raise InvalidArgument("backend", f"must be one of {available_backends()}")
    # The collector stays on. Disabling it for the solve (as this once did) paused collection
    # for every thread of the host for the whole solve. Measured at P=100k / N=1k with a host
    # heap of 500k tracked objects (bootstrap, node-dead, drain; median/max of 9 solves): 104-107
    # / 133-135 ms with the collector off, 112-113 / 132-136 ms with it on. The pause is the
    # young generations' passes over the solve's own objects (freezing the host heap first
    # changed nothing), so it is local to the solver and bounded by what it allocates.
    return _solve_timed(problem, name)


def _solve_timed(problem: Problem, name: str) -> tuple[Plan, dict[str, float]]:
    t0 = time.perf_counter()
    core, accel = _CORES[name]
    d = compile_problem(problem, accel)
    t1 = time.perf_counter()
    timings = {"compile_s": t1 - t0, "core_s": 0.0, "assemble_s": 0.0}
    reason = _precheck(d)
    if reason:
        return _empty(problem, d, lower_bound_dense(d), reason, name), timings
    raw = Raw._make(core(d))
    t2 = time.perf_counter()
    timings["core_s"] = t2 - t1
    status, arg, lb = raw.status, raw.arg, raw.lb
    if status == _pure.NO_ROOM:
        plan = _empty(
            problem,
            d,
            lb,
            f"no alive node with a free slot in a free zone for partition {d.part_ids[arg]!r}",
            name,
        )
    elif status == _pure.OVER_BUDGET:
        plan = _empty(
            problem,
            d,
            lb,
            f"moves_max={d.budget} is below the {arg} moves the hard constraints need",
            name,
        )
    else:
        require(status == _pure.OK, f"placement core returned status {status}")
        plan = _assemble(problem, d, name, raw, accel)
    timings["assemble_s"] = time.perf_counter() - t2
    return plan, timings


def _assemble(problem: Problem, d: Dense, name: str, raw: Raw, accel: Accel) -> Plan:
    """Turn a core's raw answer into a Plan; shared, so plan bytes depend only on the raw lists."""
    lb = int(raw.lb)
    mp, ms, md, mw, count, mheat = raw.mp, raw.ms, raw.md, raw.mw, raw.node_count, raw.mheat
    off, rep, wave_count = raw.off, raw.rep, raw.wave_count
    nid = [*d.node_ids, None]  # index -1 (no source / no target) maps to None
    pid = d.part_ids
    moves = MoveList(pid, nid, (mp, ms, md, mw))
    assignment = Assignment(problem.assignment)
    assignment.dense = (d.node_ids, d.part_ids, off, rep)
    # written with dict's methods: the Assignment refuses writes once handed out; this is its
    # construction.
    accel.rows(assignment, pid, d.node_ids, mp, off, rep)
    band, hot, ratio = accel.metrics(d, count, mheat, off, rep)
    over_lb = 1.0 if len(moves) == lb == 0 else len(moves) / max(lb, 1)
    metrics = Metrics(len(moves), lb, over_lb, ratio, band, hot, wave_count)
    return Plan(True, "", moves, assignment, d.split_ids, metrics, name)

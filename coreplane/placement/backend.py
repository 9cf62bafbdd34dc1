"""Backend switch and the solve entry point shared by the Cython kernel and the pure twin.

`COREPLANE_PURE_PYTHON=1` forces the twin; `COREPLANE_REQUIRE_EXT=1` makes a missing kernel an
import error instead of a silent fallback; `BACKEND` names what runs ("cython" or "python").
Both backends get the same dense input and their raw moves go through the same assembly, so a
plan's bytes depend only on the moves. Imports only coreplane.errors and placement modules.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from coreplane.errors import InvalidArgument, require
from coreplane.placement import _pure
from coreplane.placement.bounds import Dense, compile_problem, lower_bound_dense
from coreplane.placement.model import Metrics, Move, Plan, Problem

__all__ = ["BACKEND", "available_backends", "solve"]

Core = Callable[[Dense], tuple[Any, ...]]


def _load_kernel() -> Core | None:
    try:
        kernel = importlib.import_module("coreplane.placement._kernel")
    except ImportError as exc:
        if os.environ.get("COREPLANE_REQUIRE_EXT") == "1":
            raise ImportError("COREPLANE_REQUIRE_EXT=1 but the placement kernel "
                              "coreplane.placement._kernel is not built (pip install .)") from exc
        return None
    solve_dense: Core = kernel.solve_dense
    return solve_dense


_KERNEL = _load_kernel()
_CORES: dict[str, Core] = {"python": _pure.solve_dense}
if _KERNEL is not None:
    _CORES["cython"] = _KERNEL
BACKEND = ("python" if os.environ.get("COREPLANE_PURE_PYTHON") == "1" or _KERNEL is None
           else "cython")


def available_backends() -> tuple[str, ...]:
    """Backends importable here, sorted: tests compare every pair on the same problem."""
    return tuple(sorted(_CORES))


def _precheck(d: Dense) -> str:
    """The reason an instance is infeasible before any search, or ""."""
    for p, rf in enumerate(d.rf):
        if rf > d.eligible_zones:
            return (f"partition {d.part_ids[p]!r} needs {rf} zones but only "
                    f"{d.eligible_zones} zones have alive nodes")
    slots = sum(s for s, e in zip(d.slots, d.elig, strict=True) if e)
    if slots < sum(d.rf):
        return f"{sum(d.rf)} replicas do not fit in the {slots} slots of alive nodes"
    return ""


def _empty(problem: Problem, d: Dense, reason: str, backend: str) -> Plan:
    metrics = Metrics(0, lower_bound_dense(d), 0.0, 0.0, 0, 0, 0)
    return Plan(False, reason, (), MappingProxyType(dict(problem.assignment)), (), metrics,
                backend)


def solve(problem: Problem, *, backend: str | None = None) -> Plan:
    """Plan where every replica lives; infeasible instances come back with a reason, no moves."""
    name = BACKEND if backend is None else backend
    if name not in _CORES:
        raise InvalidArgument("backend", f"must be one of {available_backends()}")
    d = compile_problem(problem)
    reason = _precheck(d)
    if reason:
        return _empty(problem, d, reason, name)
    status, arg, mp, ms, md, mw, count, nheat = _CORES[name](d)
    if status == _pure.NO_ROOM:
        return _empty(problem, d, f"no alive node with a free slot in a free zone for "
                                  f"partition {d.part_ids[arg]!r}", name)
    if status == _pure.OVER_BUDGET:
        return _empty(problem, d, f"moves_max={d.budget} is below the {arg} moves the hard "
                                  f"constraints need", name)
    require(status == _pure.OK, f"placement core returned status {status}")
    return _assemble(problem, d, name, (list(mp), list(ms), list(md), list(mw)),
                     list(count), list(nheat))


def _assemble(problem: Problem, d: Dense, name: str,
              raw: tuple[list[int], list[int], list[int], list[int]],
              count: list[int], nheat: list[int]) -> Plan:
    mp, ms, md, mw = raw
    nid = d.node_ids
    moves = tuple(Move(d.part_ids[p], nid[s] if s >= 0 else None, nid[t] if t >= 0 else None, w)
                  for p, s, t, w in zip(mp, ms, md, mw, strict=True))
    touched: dict[int, list[int]] = {}
    for p, s, t in zip(mp, ms, md, strict=True):
        reps = touched.get(p)
        if reps is None:
            reps = touched[p] = list(d.rep[d.off[p]:d.off[p + 1]])
        if s >= 0:
            reps.remove(s)
        if t >= 0:
            reps.append(t)
    assignment = dict(problem.assignment)
    for p, reps in touched.items():
        assignment[d.part_ids[p]] = tuple(nid[n] for n in sorted(reps))
    split_heat = [0] * len(nid)
    for p in range(len(d.rf)):
        if d.split[p]:
            reps = touched.get(p)
            for n in reps if reps is not None else d.rep[d.off[p]:d.off[p + 1]]:
                split_heat[n] += d.heat[p]
    band = 0
    hot = 0
    ratio = 0.0
    for n in range(len(nid)):
        if not d.elig[n]:
            band += count[n] > 0
            continue
        band += not d.lo[n] <= count[n] <= d.hi[n]
        movable = nheat[n] - split_heat[n]
        hot += movable > d.hcap[n]
        if d.hfair[n] > 0:
            ratio = max(ratio, movable / d.hfair[n])
    lb = lower_bound_dense(d)
    over_lb = 1.0 if len(moves) == lb == 0 else len(moves) / max(lb, 1)
    metrics = Metrics(len(moves), lb, over_lb, ratio, band, hot, max(mw) + 1 if mw else 0)
    split = tuple(d.part_ids[p] for p in range(len(d.rf)) if d.split[p])
    return Plan(True, "", moves, MappingProxyType(assignment), split, metrics, name)

"""Placement solver: a pure leaf that knows only coreplane.errors.

`solve(problem)` plans where every partition replica lives (Cython kernel when built, else the
byte-identical pure-Python twin; `BACKEND` says which); `lower_bound(problem)` is the provable
minimum number of moves; `events` builds the problems of the usual cluster events.
"""

from coreplane.placement import events
from coreplane.placement.backend import BACKEND, available_backends, solve, solve_timed
from coreplane.placement.bounds import lower_bound
from coreplane.placement.model import (
    ALIVE,
    DEAD,
    DRAINING,
    Assignment,
    Metrics,
    Move,
    MoveList,
    Node,
    Partition,
    Plan,
    Problem,
)

__all__ = [
    "ALIVE",
    "BACKEND",
    "DEAD",
    "DRAINING",
    "Assignment",
    "Metrics",
    "Move",
    "MoveList",
    "Node",
    "Partition",
    "Plan",
    "Problem",
    "available_backends",
    "events",
    "lower_bound",
    "solve",
    "solve_timed",
]

"""The leader's solve job (`runtime.fleet._SolveJob`): what it can and cannot solve.

Claims: an infeasible problem (no node yet for a partition's RF) is a reason and an empty plan,
never an exception; an `InvalidArgument` from the translation (a bound of the placement model) is
such a reason too; anything else is a bug, logged with its traceback, and proposes no plan.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from coreplane.core import commands as C
from coreplane.core.machines.fleet import FleetConfig
from coreplane.core.state import StateMachine
from coreplane.errors import InvalidArgument
from coreplane.runtime import fleet as runtime_fleet
from coreplane.runtime.fleet import _SolveJob


def _machine(nodes: list[list[Any]]) -> StateMachine:
    sm = StateMachine(fleet=FleetConfig())
    entries: list[C.Command] = [C.Leader("cp1", 1), C.Tick(1, 1_000)]
    entries.append(C.FleetCreatePartition("p0", rf=3, heat=5, client_id="c", seq=1))
    if nodes:
        entries.append(C.FleetReport(nodes, [], [], [], []))
    for index, cmd in enumerate(entries, 1):
        internal = cmd.TAG in C.INTERNAL_TAGS
        result = sm.apply(C.encode_internal(cmd) if internal else C.encode(cmd), index)
        assert result.ok, result
    return sm


def _run(sm: StateMachine) -> _SolveJob:
    job = _SolveJob(sm.fleet.capture(), 2, 100, sm.tick_ms)
    job.run()
    assert job.done.is_set()
    return job


def test_no_node_for_the_rf_is_a_reason_and_an_empty_plan(caplog: Any) -> None:
    with caplog.at_level(logging.DEBUG):
        job = _run(_machine([]))
    assert caplog.records == []  # the leader logs it, once (Fleet._solved)
    assert job.plan == C.FleetPlan(base_index=3, moves=[], splits=[], more=False)
    assert job.left_out == ("p0",) and "0 zones have alive nodes" in job.reason
    assert (job.index, job.nodes) == (3, 0)


def test_one_zone_places_what_it_can_with_no_reason() -> None:
    job = _run(_machine([["n0", "z0", 1, 100]]))
    assert job.reason == "" and job.plan is not None
    assert job.plan.moves == [["p0", "", "n0"]]


def test_an_invalid_argument_from_the_translation_is_a_reason(
    caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(view: Any, **kw: Any) -> Any:
        raise InvalidArgument("partitions", "total heat must stay below 2**40")

    monkeypatch.setattr(runtime_fleet, "problem_from_capture", refuse)
    with caplog.at_level(logging.DEBUG):
        job = _run(_machine([]))
    assert caplog.records == []
    assert "total heat must stay below 2**40" in job.reason
    assert job.plan == C.FleetPlan(base_index=3, moves=[], splits=[], more=False)


def test_an_unexpected_exception_is_logged_with_its_traceback(
    caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(problem: Any) -> Any:
        raise RuntimeError("solver bug")

    monkeypatch.setattr(runtime_fleet.placement, "solve", broken)
    with caplog.at_level(logging.DEBUG):
        job = _run(_machine([["n0", "z0", 1, 100]]))
    assert job.plan is None and job.reason == ""
    [record] = caplog.records
    assert record.getMessage() == "fleet solve failed" and record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError

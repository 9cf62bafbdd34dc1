"""Partition sizes in the fleet machine (reported, committed, shown, snapshotted) and the
operator's per-move cancel (rolled back through the fenced action protocol)."""

from __future__ import annotations

from typing import Any

from coreplane.core import codec
from coreplane.core import commands as C
from coreplane.core.machines.fleet import FleetConfig
from coreplane.core.state import Applied, StateMachine

CFG = FleetConfig(copy_timeout_ms=4_000, cleanup_timeout_ms=4_000, retries_max=2)


class Log:
    """A StateMachine fed one command at a time (the same driver as test_fleet_machine)."""

    def __init__(self) -> None:
        self.sm = StateMachine(fleet=CFG)
        self.index = self.seq = 0

    def apply(self, command: C.Command) -> Applied:
        self.index += 1
        if command.TAG in C.INTERNAL_TAGS:
            return self.sm.apply(C.encode_internal(command), self.index)
        self.seq += 1
        body = {**command.to_body(), "client_id": "c", "seq": self.seq}
        return self.sm.apply(C.encode(type(command)(**body)), self.index)

    def ok(self, command: C.Command) -> Any:
        result = self.apply(command)
        assert result.ok, result
        return result.value

    def report(self, **lists: Any) -> Any:
        body = {k: lists.get(k, []) for k in ("nodes", "heard", "silent", "heat", "lost")}
        return self.ok(C.FleetReport(**body, sizes=lists.get("sizes", [])))

    @property
    def fleet(self) -> Any:
        return self.sm.fleet


def _fleet() -> Log:
    log = Log()
    log.ok(C.Leader("cp1", 1))
    log.ok(C.Tick(1, 1_000))
    log.report(nodes=[[f"n{i}", f"z{i}", 1, 100] for i in range(4)])
    log.ok(C.FleetCreatePartition("p", rf=2))
    for node in ("n0", "n1"):
        log.ok(C.FleetPlan(log.index, [["p", "", node]], []))
        for action in log.fleet.actions(node):
            log.ok(C.FleetAck(node, action["id"], action["token"]))
    return log


def test_sizes_are_committed_shown_and_snapshotted() -> None:
    log = _fleet()
    assert log.fleet.partition_view("p")["size_bytes"] is None  # never reported
    log.report(sizes=[["p", 5 << 30], ["gone", 7]])  # an unknown partition is dropped
    assert log.fleet.sizes == {"p": 5 << 30}
    assert log.fleet.partition_view("p")["size_bytes"] == 5 << 30
    assert log.fleet.node_view("n0")["size_bytes"] == 5 << 30
    assert log.fleet.node_view("n3")["size_bytes"] == 0
    snap = log.sm.snapshot()
    other = StateMachine(fleet=CFG)
    other.restore(snap)
    assert other.snapshot() == snap and other.fleet.sizes == {"p": 5 << 30}
    bad = log.apply(C.FleetReport([], [], [], [], [], [["p", -1]]))
    assert not bad.ok and log.fleet.sizes == {"p": 5 << 30}  # refused whole
    log.ok(C.FleetDeletePartition("p"))
    assert log.fleet.sizes == {}


def test_a_report_written_before_sizes_still_decodes() -> None:
    old = codec.encode(
        C.FleetReport.TAG,
        {"nodes": [], "heard": ["n1"], "silent": [], "heat": [], "lost": []},
        internal=True,
    )
    command, internal = C.decode_entry(old)
    assert internal and command == C.FleetReport([], ["n1"], [], [], [], [])


def test_cancel_rolls_a_copy_back_fenced_with_the_reason_journaled() -> None:
    log = _fleet()
    log.ok(C.FleetPlan(log.index, [["p", "n0", "n2"]], []))
    [copy] = log.fleet.actions("n2")
    [op_id] = log.fleet.ops
    answer = log.ok(C.FleetCancelMove(op_id, "wrong rack"))
    assert answer == {"op": op_id, "step": "abort"}
    [abort] = log.fleet.actions("n2")
    assert abort["kind"] == "remove_replica" and abort["token"] > copy["token"]
    late = log.apply(C.FleetAck("n2", copy["id"], copy["token"]))  # the copy's ack, too late
    assert (late.ok, late.code) == (False, "stale_token")
    assert log.ok(C.FleetCancelMove(op_id, "again")) == {"op": op_id, "step": "abort"}
    log.ok(C.FleetAck("n2", abort["id"], abort["token"]))
    assert not log.fleet.ops
    assert log.fleet.partition_view("p")["replicas"] == ["n0", "n1"]  # as before the move
    texts = [e["text"] for e in log.fleet.explain(op_id)]
    assert any("cancelled by the operator: wrong rack" in t for t in texts), texts
    assert texts[-1].startswith(f"{op_id} rolled back")
    gone = log.apply(C.FleetCancelMove(op_id, ""))
    assert (gone.ok, gone.code) == (False, "not_in_flight")


def test_cancel_after_the_cutover_is_too_late() -> None:
    log = _fleet()
    log.ok(C.FleetPlan(log.index, [["p", "n0", "n2"]], []))
    [copy] = log.fleet.actions("n2")
    log.ok(C.FleetAck("n2", copy["id"], copy["token"]))  # caught up: cut over
    [op_id] = log.fleet.ops
    refused = log.apply(C.FleetCancelMove(op_id, ""))
    assert (refused.ok, refused.code) == (False, "too_late")
    assert log.fleet.partition_view("p")["replicas"] == ["n1", "n2"]

"""The fleet machine through the real apply path: liveness from tick time, operations, journal.

Each test drives a `StateMachine` with encoded commands exactly as the log would, and asserts on
the views the host sees (`node_view`, `partition_view`, `actions`, `explain`).
"""

from __future__ import annotations

from typing import Any

import pytest

from coreplane.core import commands as C
from coreplane.core.machines.fleet import FleetConfig
from coreplane.core.state import Applied, StateMachine

CFG = FleetConfig(
    suspect_after_ms=5_000,
    dead_after_ms=10_000,
    copy_timeout_ms=4_000,
    cleanup_timeout_ms=4_000,
    retries_max=2,
    moves_in_flight_per_node=2,
    moves_in_flight_max=8,
)


class Log:
    """A StateMachine plus the log index and tick counter, fed one command at a time."""

    def __init__(self, config: FleetConfig = CFG) -> None:
        self.sm = StateMachine(fleet=config)
        self.index = 0
        self.tick_n = 0
        self.seq = 0

    def apply(self, command: C.Command) -> Applied:
        self.index += 1
        internal = command.TAG in C.INTERNAL_TAGS
        return self.sm.apply(
            C.encode_internal(command) if internal else C.encode(command), self.index
        )

    def ok(self, command: C.Command) -> Any:
        result = self.apply(command)
        assert result.ok, result
        return result.value

    def client(self, command: Any) -> Any:
        self.seq += 1
        return self.ok(type(command)(**{**command.to_body(), "client_id": "c", "seq": self.seq}))

    def tick(self, ms: int) -> None:
        """Advance cluster time to `ms` (ticks carry the elapsed step)."""
        self.tick_n += 1
        self.ok(C.Tick(self.tick_n, ms - self.sm.tick_ms))
        assert self.sm.tick_ms == ms

    def report(
        self, *, nodes: Any = (), heard: Any = (), silent: Any = (), heat: Any = (), lost: Any = ()
    ) -> Any:
        return self.ok(
            C.FleetReport(
                [list(n) for n in nodes],
                list(heard),
                [list(s) for s in silent],
                [list(h) for h in heat],
                [list(x) for x in lost],
            )
        )

    @property
    def fleet(self) -> Any:
        return self.sm.fleet


def _cluster(nodes: int = 4, zones: int = 4) -> Log:
    log = Log()
    log.ok(C.Leader("cp1", 1))
    log.tick(1_000)
    log.report(nodes=[(f"n{i}", f"z{i % zones}", 1, 100) for i in range(nodes)])
    return log


def _place(log: Log, pid: str, replicas: list[str]) -> None:
    """Create `pid` and bring it to `replicas` through real operations and acks."""
    log.client(C.FleetCreatePartition(pid, rf=len(replicas)))
    for node in replicas:
        log.ok(C.FleetPlan(log.index, [[pid, "", node]], []))
        _ack_all(log)


def _ack_all(log: Log, ok: bool = True) -> int:
    done = 0
    for node in sorted(log.fleet.nodes):
        for action in log.fleet.actions(node):
            log.client(C.FleetAck(node, action["id"], action["token"], ok))
            done += 1
    return done


def test_silence_turns_suspect_then_dead_in_tick_time_with_a_sentence() -> None:
    log = _cluster()
    log.tick(7_000)  # past the new leader's grace (first tick 1_000 + 5_000)
    log.report(silent=[("n1", 7_000)])
    log.tick(11_999)
    assert log.fleet.node_view("n1")["state"] == "alive"
    log.tick(12_000)
    assert log.fleet.node_view("n1")["state"] == "suspect"
    log.tick(16_999)
    assert log.fleet.node_view("n1")["state"] == "suspect"
    log.tick(17_000)
    view = log.fleet.node_view("n1")
    assert (view["state"], view["liveness_since_ms"]) == ("dead", 17_000)
    texts = [e["text"] for e in log.fleet.explain("n1")]
    assert (
        "n1 declared dead at tick time 17000 ms: last heartbeat at tick time 7000 ms, "
        "dead_after 10000 ms"
    ) in texts


def test_heard_again_cancels_the_pending_deadlines() -> None:
    log = _cluster()
    log.tick(7_000)
    log.report(silent=[("n1", 7_000)])
    log.tick(13_000)
    assert log.fleet.node_view("n1")["state"] == "suspect"
    log.report(heard=["n1"])
    log.tick(40_000)
    assert log.fleet.node_view("n1")["state"] == "alive"
    assert any("heard again" in e["text"] for e in log.fleet.explain("n1"))


def test_a_suspect_node_heard_again_asks_for_a_solve_and_ends_the_back_off() -> None:
    log = _cluster(nodes=3, zones=3)
    log.tick(7_000)
    log.report(silent=[("n2", 7_000)])
    log.tick(12_000)
    assert log.fleet.node_view("n2")["state"] == "suspect"
    log.client(C.FleetCreatePartition("p", rf=3))
    log.ok(C.FleetPlan(log.index, [], []))  # n2 suspect: no target for p's third replica
    assert not log.fleet.needs_plan() and log.fleet.solve_backoff_ms == 1_000
    log.report(heard=["n2"])
    assert log.fleet.node_view("n2")["state"] == "alive"
    assert log.fleet.needs_plan() and log.fleet.solve_backoff_ms == 0
    assert log.fleet.dirty_index == log.index


def test_a_new_leader_declares_nobody_dead_before_it_led_for_suspect_after() -> None:
    log = _cluster()
    log.tick(7_000)
    log.report(silent=[("n1", 7_000)])
    log.ok(C.Leader("cp2", 2))
    log.tick(30_000)  # the new leader's first tick: the grace runs to 35_000
    assert log.fleet.node_view("n1")["state"] == "alive"
    log.tick(34_999)
    assert log.fleet.node_view("n1")["state"] == "alive"
    log.tick(35_000)
    assert log.fleet.node_view("n1")["state"] == "dead"


def test_a_move_copies_then_cuts_over_then_cleans_up() -> None:
    log = _cluster()
    _place(log, "p", ["n0", "n1", "n2"])
    assert log.fleet.partition_view("p")["replicas"] == ["n0", "n1", "n2"]
    log.ok(C.FleetPlan(log.index, [["p", "n0", "n3"]], []))
    [action] = log.fleet.actions("n3")
    assert action["kind"] == "add_replica" and action["source"] in ("n0", "n1", "n2")
    assert log.fleet.partition_view("p")["replicas"] == ["n0", "n1", "n2"]  # not before caught up
    log.client(C.FleetAck("n3", action["id"], action["token"]))
    assert log.fleet.partition_view("p")["replicas"] == ["n1", "n2", "n3"]
    [cleanup] = log.fleet.actions("n0")
    assert cleanup["kind"] == "remove_replica" and cleanup["token"] > action["token"]
    log.client(C.FleetAck("n0", cleanup["id"], cleanup["token"]))
    assert not log.fleet.ops and not log.fleet.actions("n0")
    assert log.fleet.partition_view("p")["health"] == "healthy"


def test_one_operation_per_partition_and_stale_tokens_are_refused() -> None:
    log = _cluster()
    _place(log, "p", ["n0", "n1"])
    log.ok(C.FleetPlan(log.index, [["p", "n0", "n2"], ["p", "n1", "n3"]], []))
    assert len(log.fleet.ops) == 1 and len(log.fleet.queue) == 1
    [action] = log.fleet.actions("n2")
    refused = log.apply(C.FleetAck("n2", action["id"], action["token"] - 1))
    assert (refused.ok, refused.code) == (False, "stale_token")
    wrong = log.apply(C.FleetAck("n3", action["id"], action["token"]))
    assert (wrong.ok, wrong.code) == (False, "wrong_node")


def test_a_failing_copy_is_retried_then_rolled_back_with_the_reason() -> None:
    log = _cluster()
    _place(log, "p", ["n0"])
    log.client(C.FleetSetRF("p", 2))
    log.ok(C.FleetPlan(log.index, [["p", "", "n1"]], []))
    for _ in range(3):  # first try and two retries
        [action] = log.fleet.actions("n1")
        assert action["kind"] == "add_replica"
        log.client(C.FleetAck("n1", action["id"], action["token"], False, "disk full"))
    [abort] = log.fleet.actions("n1")
    assert abort["kind"] == "remove_replica"
    log.client(C.FleetAck("n1", abort["id"], abort["token"]))
    assert not log.fleet.ops
    assert log.fleet.partition_view("p")["replicas"] == ["n0"]
    texts = " | ".join(e["text"] for e in log.fleet.explain("p"))
    assert "disk full" in texts and "gave up after 2 retries" in texts and "rolled back" in texts
    assert log.fleet.needs_plan()


def test_a_missed_deadline_reissues_with_a_higher_token() -> None:
    log = _cluster()
    _place(log, "p", ["n0"])
    log.client(C.FleetSetRF("p", 2))
    log.ok(C.FleetPlan(log.index, [["p", "", "n1"]], []))
    [first] = log.fleet.actions("n1")
    log.tick(1_000 + 4_000)
    [second] = log.fleet.actions("n1")
    assert second["token"] > first["token"] and second["id"] != first["id"]
    late = log.apply(C.FleetAck("n1", first["id"], first["token"]))
    assert (late.ok, late.code) == (False, "stale_token")


def test_a_dead_node_is_replaced_exactly_once_without_cleanup() -> None:
    log = _cluster()
    _place(log, "p", ["n0", "n1", "n2"])
    log.tick(7_000)
    log.report(silent=[("n0", 7_000)])
    log.tick(17_000)
    view = log.fleet.partition_view("p")
    assert view["health"] == "under_replicated" and view["live_replicas"] == 2
    assert log.fleet.needs_plan()
    log.ok(C.FleetPlan(log.index, [["p", "n0", "n3"], ["p", "n0", "n3"]], []))
    [action] = log.fleet.actions("n3")
    assert action["source"] != "n0"
    log.client(C.FleetAck("n3", action["id"], action["token"]))
    assert log.fleet.partition_view("p")["replicas"] == ["n1", "n2", "n3"]
    assert not log.fleet.ops and not log.fleet.actions("n0")
    log.tick(18_000)  # the duplicate move is stale at admission and dropped
    assert not log.fleet.ops and not log.fleet.queue
    assert log.fleet.partition_view("p")["health"] == "healthy"


def test_the_copy_target_dying_rolls_the_move_back() -> None:
    log = _cluster()
    _place(log, "p", ["n0", "n1"])
    log.ok(C.FleetPlan(log.index, [["p", "n0", "n2"]], []))
    log.tick(7_000)
    log.report(silent=[("n2", 7_000)])
    log.tick(17_000)
    assert not log.fleet.ops
    assert log.fleet.partition_view("p")["replicas"] == ["n0", "n1"]
    assert any("target n2 is gone" in e["text"] for e in log.fleet.explain("p"))


def test_never_a_target_in_a_zone_that_already_holds_a_replica() -> None:
    log = _cluster(nodes=4, zones=2)  # n0,n2 in z0; n1,n3 in z1
    _place(log, "p", ["n0", "n1"])
    log.ok(C.FleetPlan(log.index, [["p", "n1", "n2"]], []))
    assert not log.fleet.ops and not log.fleet.queue


def test_throttles_per_node_hold_moves_in_the_queue() -> None:
    log = _cluster()
    for i in range(4):
        log.client(C.FleetCreatePartition(f"p{i}", rf=1))
    log.ok(C.FleetPlan(log.index, [[f"p{i}", "", "n0"] for i in range(4)], []))
    assert len(log.fleet.ops) == 2 and len(log.fleet.queue) == 2
    _ack_all(log)
    log.tick(2_000)
    assert len(log.fleet.ops) == 2 and not log.fleet.queue
    _ack_all(log)
    assert sorted(log.fleet.node_parts["n0"]) == ["p0", "p1", "p2", "p3"]


def test_drain_and_decommission() -> None:
    log = _cluster()
    _place(log, "p", ["n0", "n1"])
    log.client(C.FleetDecommission("n0"))
    assert log.fleet.node_view("n0")["state"] == "draining" and log.fleet.needs_plan()
    log.ok(C.FleetPlan(log.index, [["p", "n0", "n2"]], []))
    _ack_all(log)
    assert log.fleet.node_view("n0")["admin"] == "decommissioning"
    _ack_all(log)
    assert log.fleet.node_view("n0")["state"] == "decommissioned"
    assert log.fleet.partition_view("p")["replicas"] == ["n1", "n2"]
    again = log.client(C.FleetDecommission("n0"))
    assert again == "decommissioned"


def test_split_candidates_are_flagged_once_and_explained() -> None:
    log = _cluster()
    _place(log, "hot", ["n0"])
    log.ok(C.FleetPlan(log.index, [], ["hot"]))
    log.ok(C.FleetPlan(log.index, [], ["hot"]))
    assert log.fleet.partition_view("hot")["split_candidate"] is True
    flagged = [e for e in log.fleet.explain("hot") if "split candidate" in e["text"]]
    assert len(flagged) == 1


def test_bad_batches_are_refused_whole() -> None:
    log = _cluster()
    before = log.sm.state_hash()
    bad = log.apply(C.FleetReport([["n9", "z9", 1, 1]], ["n1"], [["n2", "soon"]], [], []))
    assert (bad.ok, bad.code) == (False, "bad_argument")
    assert "n9" not in log.fleet.nodes
    assert log.sm.state_hash() != before  # only the applied index moved
    garbage = log.apply(C.FleetPlan(0, [1, 2], []))
    assert (garbage.ok, garbage.code) == (False, "bad_argument")


def test_stale_plans_are_refused() -> None:
    log = _cluster()
    log.ok(C.FleetPlan(log.index, [], []))
    old = log.apply(C.FleetPlan(1, [], []))
    assert (old.ok, old.code) == (False, "stale_plan")


def test_snapshot_restores_an_identical_fleet() -> None:
    log = _cluster()
    _place(log, "p", ["n0", "n1"])
    log.ok(C.FleetPlan(log.index, [["p", "n0", "n2"]], []))
    log.report(silent=[("n3", 900)])
    snap = log.sm.snapshot()
    other = StateMachine(fleet=CFG)
    other.restore(snap)
    assert other.snapshot() == snap
    assert other.fleet.actions("n2") == log.fleet.actions("n2")


@pytest.mark.parametrize("field", ["suspect_after_ms", "retries_max"])
def test_config_is_validated(field: str) -> None:
    from coreplane.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=field):
        FleetConfig(**{field: 0}).validate()


def test_the_rebalance_cooldown_holds_moves_back_but_never_a_repair() -> None:
    log = _cluster()
    _place(log, "p", ["n0", "n1"])
    log.ok(C.FleetPlan(log.index, [["p", "n0", "n2"]], []))  # a rebalance: cooldown starts
    _ack_all(log)
    _ack_all(log)
    assert log.fleet.partition_view("p")["replicas"] == ["n1", "n2"]
    log.ok(C.FleetPlan(log.index, [["p", "n2", "n0"]], []))  # moving it back: held off
    assert not log.fleet.ops and not log.fleet.queue
    assert not log.fleet.needs_plan()  # a cooldown drop asks for no new solve
    log.client(C.FleetSetRF("p", 3))  # now below RF: its plan may move it again
    log.ok(C.FleetPlan(log.index, [["p", "n2", "n0"]], []))  # but never back (return cooldown)
    assert not log.fleet.ops
    log.ok(C.FleetPlan(log.index, [["p", "n2", "n3"]], []))
    assert len(log.fleet.ops) == 1


def test_a_plan_that_makes_no_progress_backs_the_next_solve_off_with_its_reason() -> None:
    log = _cluster(nodes=6, zones=3)  # z0: n0 n3, z1: n1 n4, z2: n2 n5
    _place(log, "p", ["n0", "n1", "n2"])
    swap = [["p", "n0", "n4"], ["p", "n1", "n3"]]  # a zone swap: each step alone breaks zones
    base = log.index
    log.ok(C.FleetPlan(base, swap, []))
    assert not log.fleet.ops and not log.fleet.queue
    assert not log.fleet.needs_plan()  # held back 1 s (tick time), not re-solved every tick
    log.tick(1_999)
    assert not log.fleet.needs_plan()
    log.tick(2_000)
    assert log.fleet.needs_plan()
    log.ok(C.FleetPlan(log.index, swap, []))
    log.tick(3_999)
    assert not log.fleet.needs_plan()  # doubled: 2 s
    log.tick(4_000)
    assert log.fleet.needs_plan()
    texts = [e["text"] for e in log.fleet.explain("plan") if "no progress" in e["text"]]
    assert texts[0] == (
        f"plan computed at index {base} made no progress (2 stale moves dropped, first "
        "p n0 -> n4: zone z1 already holds a replica): next solve not before tick time "
        "2000 ms (back-off 1000 ms)"
    )
    assert "(back-off 2000 ms)" in texts[1]
    log.ok(C.FleetPlan(log.index, swap, []))
    assert not log.fleet.needs_plan()
    log.report(nodes=[("n6", "z3", 1, 100)])  # a change in the fleet ends the back-off
    assert log.fleet.needs_plan() and log.fleet.solve_backoff_ms == 0


def test_backoff_survives_a_snapshot_and_an_empty_plan_for_stuck_partitions() -> None:
    log = _cluster(nodes=3, zones=3)
    log.client(C.FleetCreatePartition("p", rf=3))
    log.ok(C.FleetPlan(log.index, [], []))  # the solver found no move for an under partition
    assert not log.fleet.needs_plan()
    texts = [e["text"] for e in log.fleet.explain("p")]
    assert any("no move for 1 under-replicated partitions (p)" in t for t in texts)
    snap = log.sm.snapshot()
    other = StateMachine(fleet=CFG)
    other.restore(snap)
    assert (other.fleet.solve_backoff_ms, other.fleet.solve_after_ms) == (1_000, 2_000)
    assert other.snapshot() == snap


def _orphan_world() -> Log:
    """p on n0 n1 n2, and n3 holding a copy no replica set names."""
    log = _cluster()
    _place(log, "p", ["n0", "n1", "n2"])
    return log


def test_an_orphan_copy_is_removed_once_after_the_grace_with_a_fenced_action() -> None:
    cfg = CFG
    log = _orphan_world()
    since = log.sm.tick_ms
    early = log.ok(C.FleetOrphans([["n3", "p", since]]))
    assert early == {"started": 0, "skipped": 1}  # reported for less than the grace
    log.tick(since + cfg.orphan_grace_ms)
    member = log.ok(C.FleetOrphans([["n0", "p", since]]))
    assert member == {"started": 0, "skipped": 1}  # n0 is in the replica set: never removed
    assert log.ok(C.FleetOrphans([["n3", "p", since], ["n3", "p", since]])) == {
        "started": 1,
        "skipped": 1,
    }
    [action] = log.fleet.actions("n3")
    assert action["kind"] == "remove_replica" and action["partition"] == "p"
    assert action["token"] == log.index  # fenced by the entry that started it
    stale = log.apply(C.FleetAck("n3", action["id"], action["token"] - 1))
    assert (stale.ok, stale.code) == (False, "stale_token")
    log.client(C.FleetAck("n3", action["id"], action["token"]))
    assert not log.fleet.ops
    assert log.fleet.partition_view("p")["replicas"] == ["n0", "n1", "n2"]
    texts = [e["text"] for e in log.fleet.explain("n3")]
    assert any("started (gc): p n3 -> -" in t and "no replica set holds it" in t for t in texts)
    assert any("the orphan copy of p removed from n3" in t for t in texts)


def test_orphans_wait_for_operations_repairs_and_live_nodes() -> None:
    log = _orphan_world()
    log.tick(1_000 + CFG.orphan_grace_ms)
    log.ok(C.FleetPlan(log.index, [["p", "n0", "n3"]], []))  # n3's copy is a move's target
    assert log.ok(C.FleetOrphans([["n3", "p", 0]])) == {"started": 0, "skipped": 1}
    _ack_all(log)  # cutover: n3 holds it now
    _ack_all(log)  # n0 cleaned up
    assert log.fleet.partition_view("p")["replicas"] == ["n1", "n2", "n3"]
    log.report(silent=[("n0", log.sm.tick_ms)])
    assert log.ok(C.FleetOrphans([["n0", "p", 0]])) == {"started": 1, "skipped": 0}
    _ack_all(log)
    log.tick(log.sm.tick_ms + CFG.dead_after_ms)  # n0 silent: dead, never told anything
    assert log.fleet.node_view("n0")["state"] == "dead"
    assert log.ok(C.FleetOrphans([["n0", "p", 0]])) == {"started": 0, "skipped": 1}
    bad = log.apply(C.FleetOrphans([["n0", "p"]]))
    assert (bad.ok, bad.code) == (False, "bad_argument")


def test_a_node_over_its_heat_cap_is_never_a_copy_source_while_another_can_be() -> None:
    log = _cluster(nodes=8, zones=4)  # z0: n0 n4, z1: n1 n5, z2: n2 n6, z3: n3 n7
    for i in range(8):  # every node carries heat 10, so fair shares are even
        log.client(C.FleetCreatePartition(f"f{i}", rf=1, heat=10))
        log.ok(C.FleetPlan(log.index, [[f"f{i}", "", f"n{i}"]], []))
        _ack_all(log)
    _place(log, "p", ["n0", "n1"])
    log.client(C.FleetSetRF("p", 3))
    log.ok(C.FleetPlan(log.index, [["p", "", "n2"]], []))
    [copy] = log.fleet.actions("n2")
    assert copy["source"] == "n0"  # both cool and idle: the first by id
    log.report(heat=[["f0", 40]])  # n0 goes over its heat cap mid-copy
    assert log.fleet.over_cap("n0") and not log.fleet.over_cap("n1")
    [moved] = log.fleet.actions("n2")
    assert moved["source"] == "n1" and moved["token"] > copy["token"]
    assert log.fleet.ops[moved["operation"]].attempt == 0  # not counted as a retry
    assert any(
        "copy source n0 is over its heat cap: copy re-issued from n1" in e["text"]
        for e in log.fleet.explain("p")
    )
    late = log.apply(C.FleetAck("n2", copy["id"], copy["token"]))
    assert (late.ok, late.code) == (False, "stale_token")
    log.client(C.FleetAck("n2", moved["id"], moved["token"]))
    # A new copy never starts from it while a cool replica can serve, even a busier one.
    log.client(C.FleetCreatePartition("q", rf=1))
    log.ok(C.FleetPlan(log.index, [["q", "", "n1"]], []))  # n1 busy with one operation
    log.client(C.FleetSetRF("p", 4))
    log.ok(C.FleetPlan(log.index, [["p", "", "n3"]], []))
    [fresh] = log.fleet.actions("n3")
    assert fresh["source"] == "n2"
    log.report(heat=[["f1", 40], ["f2", 40]])  # every replica hot: the least loaded serves
    assert all(log.fleet.over_cap(n) for n in ("n0", "n1", "n2"))
    [same] = log.fleet.actions("n3")
    assert same == fresh


def test_a_rebalance_never_takes_a_partition_back_to_a_node_it_left_within_the_day() -> None:
    log = _cluster()
    _place(log, "p", ["n0", "n1"])
    log.ok(C.FleetPlan(log.index, [["p", "n0", "n2"]], []))  # a rebalance: n0 -> n2
    _ack_all(log)
    _ack_all(log)
    log.tick(1_000 + CFG.rebalance_cooldown_ms)  # past the cooldown, not the return cooldown
    log.ok(C.FleetPlan(log.index, [["p", "n2", "n0"]], []))  # back: an oscillation
    assert not log.fleet.ops and not log.fleet.queue and not log.fleet.needs_plan()
    log.ok(C.FleetPlan(log.index, [["p", "n2", "n3"]], []))  # elsewhere: fine
    assert len(log.fleet.ops) == 1
    _ack_all(log)
    _ack_all(log)
    assert log.fleet.parts["p"][6] == ("n0", "n2")  # it remembers both nodes it left
    snap = log.sm.snapshot()
    other = StateMachine(fleet=CFG)
    other.restore(snap)
    assert other.snapshot() == snap and other.fleet.parts["p"][6] == ("n0", "n2")
    end = log.sm.tick_ms + CFG.return_cooldown_ms
    while log.sm.tick_ms < end:  # a day of one-minute ticks
        log.tick(min(end, log.sm.tick_ms + 60_000))
    log.ok(C.FleetPlan(log.index, [["p", "n3", "n0"]], []))  # a day later it may return
    assert len(log.fleet.ops) == 1
    log.report(silent=[("n1", log.sm.tick_ms)])
    log.tick(log.sm.tick_ms + CFG.dead_after_ms + CFG.suspect_after_ms)
    _ack_all(log)
    _ack_all(log)
    assert "p" in log.fleet.under  # n1 dead
    log.ok(C.FleetPlan(log.index, [["p", "n1", "n2"]], []))  # a repair is never held back
    assert len(log.fleet.ops) == 1


def test_a_partition_below_rf_is_not_taken_back_to_a_node_it_left() -> None:
    """Below its RF, a partition's repair is never held back, but a rebalance of its live
    replicas still is: a plan made while it waits for its repair may move a live replica back
    to the node it left (the solver has no memory), which is an oscillation, not a repair."""
    log = _cluster(nodes=6, zones=3)
    _place(log, "p", ["n0", "n1", "n2"])
    log.ok(C.FleetPlan(log.index, [["p", "n0", "n3"]], []))  # a rebalance within zone z0
    _ack_all(log)
    _ack_all(log)
    log.tick(log.sm.tick_ms + CFG.rebalance_cooldown_ms)  # past the cooldown, not the return
    log.report(silent=[("n1", log.sm.tick_ms)])
    log.tick(log.sm.tick_ms + CFG.dead_after_ms)
    assert log.fleet.nodes["n1"].liveness == "dead" and "p" in log.fleet.under
    # The solver's plan for it: n3 back to n0 (its balance) first, then the repair n1 -> n4.
    log.ok(C.FleetPlan(log.index, [["p", "n3", "n0"], ["p", "n1", "n4"]], []))
    (op,) = log.fleet.ops.values()
    assert (op.source, op.target, op.cause) == ("n1", "n4", "repair")
    assert not log.fleet.queue and not log.fleet.needs_plan()  # dropped quietly
    _ack_all(log)
    assert log.fleet.partition_view("p")["replicas"] == ["n2", "n3", "n4"]
    assert not log.fleet.under

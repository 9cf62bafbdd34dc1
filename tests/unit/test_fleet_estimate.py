"""The dry run's estimate: sizes, the copy throttle and this cluster's measured throughput; a
replica that waits for a provisioned node, said in the same voice as the blast radius."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from coreplane.api.fleet_routes import _estimate, _measured, _pending
from coreplane.ops import guard
from coreplane.ops.fleet import estimate_words, size_words

GIB, MIB = 1 << 30, 1 << 20


def _journal(*rows: tuple[int, str, str]) -> list[dict[str, Any]]:
    return [{"tick_ms": t, "subjects": [pid], "text": text} for t, pid, text in rows]


# p1 moved s0 -> s3: copied 1 GiB in 4 s (256 MiB/s), cut over and cleaned up 1 s later;
# p9 was created (no source, nothing to copy from): its first copy measures nothing
JOURNAL = _journal(
    (1_000, "p9", "p9@5 started (rf): p9 - -> s1"),
    (1_100, "p9", "p9@5 copy on s1 caught up"),
    (1_100, "p9", "p9@5 cutover: p9 on s1"),
    (1_100, "p9", "p9@5 done"),
    (10_000, "p1", "p1@40 started (rebalance): p1 s0 -> s3"),
    (14_000, "p1", "p1@40 copy on s3 caught up"),
    (15_000, "p1", "p1@40 done: p1 removed from s0"),
)


def _move(pid: str, wave: int = 0, source: str | None = "s0") -> dict[str, Any]:
    return {"partition": pid, "source": source, "target": "s4", "wave": wave}


def test_the_copy_rate_is_the_measured_throughput_capped_by_the_throttle() -> None:
    m = _measured(JOURNAL)
    assert m.copies == [("p1", 4_000)] and m.rest_ms == [1_000]
    assert m.move_ms == [100, 5_000]
    sizes = {"p1": GIB, "p2": 2 * GIB, "p9": 5 * GIB}
    slow = _estimate([_move("p2")], sizes, m, 50 * MIB, 1)
    assert slow["measured_bytes_per_s"] == 256 * MIB and slow["rate_bytes_per_s"] == 50 * MIB
    assert slow["bytes"] == 2 * GIB and slow["copies"] == 1
    assert slow["total_ms"] == -(-2 * GIB * 1000 // (50 * MIB)) + 1_000  # 41.96 s + 1 s
    fast = _estimate([_move("p2")], sizes, m, 10 * GIB, 1)
    assert fast["rate_bytes_per_s"] == 256 * MIB and fast["total_ms"] == 8_000 + 1_000


def test_waves_run_their_moves_in_flight_limit_at_a_time() -> None:
    sizes = {"a": GIB, "b": GIB, "c": GIB}
    m = _measured([])
    moves = [_move("a"), _move("b"), _move("c", wave=1)]
    one = _estimate(moves, sizes, m, GIB, 1)["total_ms"]
    two = _estimate(moves, sizes, m, GIB, 2)["total_ms"]
    assert (one, two) == (3_000, 2_000)
    nothing = _estimate(moves, sizes, m, GIB, 2)
    assert nothing["measured_bytes_per_s"] is None and nothing["rate_bytes_per_s"] == GIB


def test_a_new_replica_of_a_partition_that_has_one_is_a_copy_too() -> None:
    added = _journal(
        (20_000, "p9", "p9@60 started (rf): p9 - -> s2"),
        (22_000, "p9", "p9@60 copy on s2 caught up"),
        (22_000, "p9", "p9@60 cutover: p9 on s1, s2"),
        (22_000, "p9", "p9@60 done"),
    )
    m = _measured(JOURNAL + added)
    assert m.copies == [("p1", 4_000), ("p9", 2_000)]
    assert m.rest_ms == [1_000]  # an addition has no cleanup: not a measure of one


def test_an_unsized_partition_needs_a_measured_move_or_the_time_is_unknown() -> None:
    unknown = _estimate([_move("x")], {}, _measured([]), 50 * MIB, 1)
    assert unknown["known"] is False and unknown["total_ms"] is None and unknown["unsized"] == 1
    measured = _estimate([_move("x")], {}, _measured(JOURNAL), 50 * MIB, 1)
    assert measured["total_ms"] == 2_550  # the median whole move (100 ms and 5 s)


def test_the_words_say_it_as_the_issue_does() -> None:
    plan = {
        "moves": [_move("p1"), _move("p1", source=None), _move("p1", 1, None)],
        "others": [],
        "estimate": {
            "provision": 1,
            "provision_ms": 90_000,
            "copies": 3,
            "bytes": 2_576_980_378,  # 2.4 GiB
            "unsized": 0,
            "rate_bytes_per_s": 50 * MIB,
            "throttle_bytes_per_s": 50 * MIB,
            "total_ms": 160_000,
            "waves": 2,
            "parallel": 2,
        },
    }
    head = estimate_words(plan).splitlines()[0]
    assert head == (
        "provision 1 node in a new zone (typically 1 min 30 s), copy 3 replicas, 2.4 GiB at "
        "the 50 MiB/s throttle: about 2 min 40 s; affects 1 partition, 0 others"
    )
    assert (size_words(512), size_words(3 * MIB), size_words(5 << 40)) == (
        "512 B",
        "3 MiB",
        "5 TiB",
    )


def _scale_past_the_zones() -> dict[str, Any]:
    """`update partition p3 --scale-up --new-num-nodes 4` on a fleet of 3 zones: no move of
    the plan carries p3's 4th replica; it waits for the node the provider adds."""
    return {
        "moves": [],
        "others": [],
        "pending": [{"partition": "p3", "replicas": 1, "size_bytes": 3 * GIB}],
        "estimate": {
            "provision": 1,
            "provision_ms": 90_000,
            "copies": 0,
            "bytes": 0,
            "unsized": 0,
            "rate_bytes_per_s": 50 * MIB,
            "throttle_bytes_per_s": 50 * MIB,
            "pending_replicas": 1,
            "pending_bytes": 3 * GIB,
            "pending_unsized": 0,
            "pending_ms": 61_440,
            "total_ms": 151_440,
            "waves": 0,
            "parallel": 0,
        },
    }


def test_a_replica_waiting_for_a_provisioned_node_is_said_as_one_plan() -> None:
    lines = estimate_words(_scale_past_the_zones(), ["p3"]).splitlines()
    assert lines[0] == (
        "provision 1 node in a new zone (typically 1 min 30 s), then add 1 replica of p3 on it "
        "(3 GiB at the 50 MiB/s throttle: 1 min 1 s): about 2 min 31 s; affects 1 partition, "
        "0 others"
    )
    assert lines[1] == (
        "1 move(s): move 0 replica(s) (copy, catch up, cut over, remove the source), add 1 new "
        "(1 once the new node has joined), drop 0"
    )
    assert lines[2] == "  p3: - -> the new node"
    unsized = _scale_past_the_zones()
    unsized["estimate"].update(pending_bytes=0, pending_unsized=1, pending_ms=110)
    assert "then add 1 replica of p3 on it (size not reported yet: 110 ms, as a move here " in (
        estimate_words(unsized, ["p3"])
    )


def test_the_blast_radius_line_counts_what_the_plan_line_counts() -> None:
    plan = _scale_past_the_zones()
    rad = guard.radius(
        named_partitions=["p3", *(p["partition"] for p in plan["pending"])],
        moves=plan["moves"],
        nodes_total=12,
        partitions_total=9,
        destructive=True,
        production=False,
        provision=plan["estimate"]["provision"],
    )
    assert rad.sentence() == (
        "affects 0 of 12 nodes (plus 1 new node to provision) and 1 of 9 partitions"
    )
    head = estimate_words(plan, ["p3"]).splitlines()[0]
    assert head.endswith(f"affects {len(rad.partitions)} partition, 0 others")
    # a change that names a partition and moves nothing still affects it, in both lines
    quiet = estimate_words({"moves": [], "estimate": {}}, ["p5"]).splitlines()[0]
    assert quiet == "no move; affects 1 partition, 0 others"


def test_the_replicas_beyond_the_zones_are_the_pending_ones() -> None:
    solve = SimpleNamespace(capped=["p3", "p4"], zones=3)
    changes = [
        {"verb": "set_rf", "subject": "p3", "rf": 4},
        {"verb": "set_rf", "subject": "p4", "rf": 5},
        {"verb": "set_rf", "subject": "p5", "rf": 3},  # within the zones: moves carry it
    ]
    assert _pending(changes, solve, {"p3": GIB}) == [
        {"partition": "p3", "replicas": 1, "size_bytes": GIB},
        {"partition": "p4", "replicas": 2, "size_bytes": None},
    ]

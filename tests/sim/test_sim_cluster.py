"""SimCluster: real ControlPlane nodes on a simulated network, clock and disk, from one seed.

What is claimed and checked here: the same seed gives the same event trace (in this process
and in fresh processes under different PYTHONHASHSEED values); a leader is elected and KV
operations complete; partitions, crashes and pauses heal into a converged cluster with equal
state hashes; the simulated disk loses exactly what was not flushed; the stale-read and
lease canaries are caught. A failure names its seed: replay it with
``python -m coreplane.testing.chaos --replay SEED``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from coreplane.testing import Canaries, SimCluster, catch, run_schedule

SCRIPT = """
from coreplane.testing import SimCluster
with SimCluster(7) as c:
    c.run_until(c.converged, 5_000)
    for i in range(20):
        c.put("c", i + 1, f"k{i % 4}", b"v%d" % i)
        c.run_for(7)
    c.isolate(c.leader())
    c.run_for(2_000)
    c.heal()
    c.run_until(c.converged, 10_000)
    print(c.trace_hash(), len(c.trace))
"""


def _trace_in_subprocess(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return out.stdout.strip().splitlines()[-1]


def test_same_seed_gives_the_same_trace_under_any_hash_seed() -> None:
    first = _trace_in_subprocess("0")
    second = _trace_in_subprocess("4242")
    assert first == second, "the event trace depends on PYTHONHASHSEED"
    _digest, length = first.split()
    assert int(length) > 20


def test_same_seed_same_trace_in_process_and_different_seeds_differ() -> None:
    def trace(seed: int) -> str:
        with SimCluster(seed) as c:
            c.run_until(c.converged, 5_000)
            c.put("c", 1, "k", b"v")
            c.crash(c.leader() or "n1")
            c.run_for(1_500)
            return c.trace_hash()

    assert trace(3) == trace(3)
    assert trace(3) != trace(4)


def test_leader_elected_and_kv_operations_complete() -> None:
    with SimCluster(1) as c:
        assert c.run_until(c.converged, 5_000), "no leader in 5 s of simulated time"
        w = c.put("c", 1, "k", b"v1")
        c.run_until(lambda: w.done, 1_000)
        r = c.get("c", "k")
        c.run_until(lambda: r.done, 1_000)
        assert not w.unknown and not r.unknown
        assert r.result[0] == b"v1"
        cas = c.cas("c", 2, "k", (b"v1", r.result[1]), b"v2")
        c.run_until(lambda: cas.done, 1_000)
        assert cas.result is True
        c.check_linearizable()
        assert c.violations == []


def test_partition_crash_and_pause_heal_into_equal_state_hashes() -> None:
    with SimCluster(5, 5) as c:
        assert c.run_until(c.converged, 5_000)
        for i in range(30):
            c.put(f"c{i % 3}", i // 3 + 1, f"k{i % 5}", b"x%d" % i)
            c.run_for(11)
        leader = c.leader()
        assert leader is not None
        c.partition([leader, "n1" if leader != "n1" else "n2"])
        c.run_for(1_500)
        c.crash("n3")
        c.pause("n4", 800)
        c.run_for(1_000)
        c.heal()
        c.restart("n3")
        assert c.run_until(c.converged, 15_000), "no convergence after faults stopped"
        c.check_hashes()
        c.check_acknowledged()
        c.check_linearizable()
        assert c.violations == []
        hashes = {c.slots[n].node.state_hash() for n in c.node_ids}
        assert len(hashes) == 1


def test_simulated_disk_loses_only_what_was_not_flushed() -> None:
    from coreplane.raft.simnet import SimDisk, SimJournal

    disk = SimDisk()
    journal = SimJournal(disk)
    journal.add(b"a", 1, 1)
    journal.add(b"b", 2, 1)
    journal.flush()
    journal.setCurrentTerm(2, "n2")  # durable at once (with the log): a vote goes out next
    journal.add(b"c", 3, 2)
    reopened = SimJournal(disk)  # the crash: memory gone
    assert [e[0] for e in reopened] == [b"a", b"b"]
    assert (reopened.getCurrentTerm(), reopened.getVotedForNodeId()) == (2, "n2")

    lazy = SimJournal(SimDisk(), vote_durable=False, fsync=False)
    lazy.add(b"a", 1, 1)
    lazy.setCurrentTerm(3, "n1")
    lazy.flush()
    again = SimJournal(lazy.disk)
    assert len(again) == 0 and again.getCurrentTerm() == 0


def test_bit_flip_on_disk_stops_the_node_instead_of_applying_garbage() -> None:
    with SimCluster(2) as c:
        assert c.run_until(c.converged, 5_000)
        for i in range(10):
            c.put("c", i + 1, "k", b"%d" % i)
            c.run_for(5)
        c.run_for(500)
        c.crash("n1")
        assert c.flip_bit("n1")
        c.restart("n1")
        assert c.slots["n1"].node is None and c.slots["n1"].corrupt
        assert c.run_until(c.converged, 10_000)  # the other two carry on
        assert c.violations == []


@pytest.mark.parametrize("name", ["stale_read", "lease_unchecked"])
def test_quick_canaries_are_caught(name: str) -> None:
    found = catch(name, seeds_max=8)
    assert found.caught, f"the harness missed the {name} bug in {found.seeds_tried} seeds"


def test_a_short_schedule_runs_clean_and_reports() -> None:
    result = run_schedule(2, chaos_ms=(2_000, 3_000))
    assert result.ops_checked > 20
    assert result.unknown_results == 0
    assert result.ok, f"seed 2 failed: {result.violations[:3]}; replay: {result.replay}"


def test_canary_switches_default_off() -> None:
    assert not any(getattr(Canaries(), n) for n in Canaries.names())


def test_checker_agrees_with_brute_force_on_simulated_histories() -> None:
    """Small per-key histories from a faulty run: Wing-Gong-Lowe and brute force agree, also
    on histories made wrong by swapping a read's result."""
    from coreplane.testing import check, check_brute_force, kv_register_model
    from coreplane.testing.linearizability import Operation, Verdict

    with SimCluster(11) as c:
        c.run_until(c.converged, 5_000)
        for i in range(60):
            key = f"k{i % 12}"
            if i % 3:
                c.put(f"c{i % 4}", i + 1, key, b"v%d" % i)
            else:
                c.get(f"c{i % 4}", key)
            if i == 30:
                c.crash(c.leader() or "n1")
            c.run_for(9)
        c.run_for(3_000)
        history = c.history()
    model = kv_register_model()
    compared = 0
    for key in sorted({op.key for op in history}):
        ops = [op for op in history if op.key == key][:7]
        assert check(ops, model).verdict.value == check_brute_force(ops, model).value
        reads = [i for i, op in enumerate(ops) if op.kind == "read" and op.ret is not None]
        if reads:
            i = reads[0]
            bad = list(ops)
            bad[i] = Operation(
                bad[i].client, bad[i].call, bad[i].ret, "read", key, None, b"never written"
            )
            assert check(bad, model).verdict is Verdict.VIOLATION
            assert check_brute_force(bad, model) is Verdict.VIOLATION
        compared += 1
    assert compared >= 6


def test_runner_writes_the_summary_keys(tmp_path: object) -> None:
    import json
    from pathlib import Path

    from coreplane.testing import chaos

    out = Path(str(tmp_path)) / "out.json"
    code = chaos.main(["--schedules", "1", "--seed", "2", "--no-canaries", "--json", str(out)])
    summary = json.loads(out.read_text())["summary"]
    assert set(chaos.SUMMARY_KEYS) <= set(summary)
    assert summary["schedules"] == 1 and summary["ops_checked"] > 0
    assert code == (1 if summary["violations"] else 0)

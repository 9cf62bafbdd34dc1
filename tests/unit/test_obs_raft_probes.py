"""What the raft layer hands to coreplane.obs: the latency histogram's buckets, the journal's
flush timing and fill stats, and the engine's observations on a one-voter node."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from coreplane.errors import InvalidArgument
from coreplane.obs.diagnose import quantile_s
from coreplane.raft.journal import LatencyHistogram, LmdbJournal
from coreplane.runtime.controlplane import ControlPlane
from coreplane.testing.ports import free_ports

SECRET = b"unit-test-secret-0123456789abcdef"


def test_histogram_puts_each_value_in_its_bucket() -> None:
    h = LatencyHistogram()
    for seconds in (0.0001, 0.0005, 0.0006, 0.2, 7.0):
        h.observe(seconds)
    snap = h.snapshot()
    assert snap["counts"][0] == 2  # <= 0.5 ms, the bound inclusive
    assert snap["counts"][1] == 1  # (0.5, 1] ms
    assert snap["counts"][8] == 1  # (100, 250] ms
    assert snap["counts"][-1] == 1  # +Inf
    assert snap["count"] == 5 and snap["max_s"] == 7.0
    assert snap["sum_s"] == pytest.approx(7.2012)
    assert quantile_s(snap, 0.5) == 0.001 and quantile_s(snap, 1.0) == float("inf")


def test_journal_times_flushes_that_wrote_and_reports_its_fill(tmp_path: Path) -> None:
    j = LmdbJournal(str(tmp_path / "j"), node_id="n1")
    try:
        j.flush()  # nothing to write: not a flush that counts
        before = j.flush_latency.snapshot()["count"]
        for i in range(3):
            j.add(b"\x00cmd", i + 1, 1)
            j.flush()
        assert j.flush_latency.snapshot()["count"] == before + 3
        stats = j.stats()
        assert stats["page_bytes"] >= 4096 and stats["map_size_max_bytes"] == 8192 << 20
        assert stats["disk_free_bytes"] > 0 and stats["entries"] == 3
    finally:
        j.close()


@pytest.mark.slow  # one real node on a 127.0.0.1 socket
def test_a_single_voter_observes_its_term_commits_and_flushes(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    cp = ControlPlane("a", f"127.0.0.1:{port}", {}, tmp_path / "a", SECRET)
    with cp:
        cp.wait_for_leader(timeout_s=10)
        for i in range(5):
            cp.kv.put(f"k{i}", b"v")
        engine = cp._engine
        assert engine is not None
        deadline = time.monotonic() + 5
        obs = engine.observations()
        while obs["commit_latency"]["count"] < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
            obs = engine.observations()
        assert obs["commit_latency"]["count"] >= 5  # the runtime's own entries count too
        assert obs["flush_latency"]["count"] >= 5
        assert [t for _, t in obs["terms"]][-1] == cp.status().term
        assert obs["leader_changes"] == 1
        assert obs["ack_age_s"] == {} and obs["match_index"] == {}  # no followers
        assert obs["journal"]["entries"] >= 5 and obs["auth_failures"] == {}


@pytest.mark.slow  # one real node on a 127.0.0.1 socket
def test_observations_are_the_public_typed_door_for_obs(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    cp = ControlPlane("a", f"127.0.0.1:{port}", {}, tmp_path / "a", SECRET)
    with cp:
        cp.wait_for_leader(timeout_s=10)
        for pid in ("p1", "p2", "p3"):
            cp.fleet.create_partition(pid, 3)
        got = cp.observations()
        assert got.raft["leader_changes"] == 1 and got.fleet is not None
        batches = got.raft["batches"]  # the bench reads coalescing here, not in the engine
        assert set(batches) == {"entries", "commands"} and batches["commands"] >= 0
        assert (got.fleet.partitions_total, got.fleet.under_total) == (3, 3)
        assert [p["id"] for p in got.fleet.under_replicated] == ["p1", "p2", "p3"]
        assert got.fleet.silent_after_ms == cp.fleet.silent_after_ms
        totals = cp.observations(rows_max=1).fleet
        assert totals is not None and totals.under_total == 3
        assert [p["id"] for p in totals.under_replicated] == ["p1"]
        assert cp.observations(rows_max=0).fleet.under_replicated == []  # type: ignore[union-attr]
        with pytest.raises(InvalidArgument) as bad:
            cp.observations(rows_max=-1)
        assert bad.value.field == "rows_max"
    stopped = cp.observations()
    assert (stopped.raft, stopped.fleet) == ({}, None)


def _documented(section: str) -> set[str]:
    """The metric names in one section's table of docs/metrics.md."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    body = text.split(f"### {section}", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    names = set()
    for line in body.splitlines():
        if line.startswith("| `coreplane_"):
            names |= {part.strip("`") for part in line.split("|")[1].split(", ")}
    return {n.strip().strip("`").removesuffix("_total") for n in names}


@pytest.mark.slow  # one real node on a 127.0.0.1 socket
def test_every_exported_metric_is_documented_and_back(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from coreplane.obs import Metrics

    (port,) = free_ports(1)
    cp = ControlPlane("a", f"127.0.0.1:{port}", {}, tmp_path / "a", SECRET)
    with cp:
        cp.wait_for_leader(timeout_s=10)
        cp.kv.put("k", b"v")
        m = Metrics(cp)
        m.api.observe("/v1/kv/get", "GET", 200, 0.001)
        exported = {
            f.name
            for f in text_string_to_metric_families(m.generate().decode())
            if not f.name.endswith("_created")
        }  # prometheus_client's own timestamps
    documented = _documented("Raft and storage") | _documented("Fleet") | _documented("API")
    assert exported - documented == set()
    assert documented - exported == {"coreplane_node_stopped_on_error"}  # after a fatal error

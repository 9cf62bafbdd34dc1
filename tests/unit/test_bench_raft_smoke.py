"""The replication bench runs at a small size inside the suite so it never rots.

Three coreplane processes and three raw pysyncobj processes on 127.0.0.1 for a few seconds,
one leader kill; etcd and grpcio are never needed here (the smoke mode installs nothing). No
timing assertions: only that every figure the summary promises is there, that the load went
through both public write paths, and that no acknowledged write was lost. The pure helpers
(etcd's hand-encoded PutRequest, the generator ceiling rule) are checked directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benches import _cpu
from benches._etcd_proto import put_request, varint

ROOT = Path(__file__).resolve().parents[2]


def test_put_request_is_protobuf_fields_1_and_2_length_delimited() -> None:
    assert put_request(b"k", b"vv") == b"\x0a\x01k\x12\x02vv"
    long_key = b"k" * 200  # a length over 127 takes a two-byte varint: 200 = 0xc8 0x01
    assert put_request(long_key, b"") == b"\x0a\xc8\x01" + long_key + b"\x12\x00"
    assert varint(0) == b"\x00" and varint(300) == b"\xac\x02"
    with pytest.raises(ValueError):
        varint(-1)


def test_generator_near_ceiling_is_ninety_percent_of_its_cores() -> None:
    busy = _cpu.generator(1.8, 2.0, 1000, 1.0)  # 0.9 cores of one GIL
    assert busy["near_ceiling"] is True and busy["cpu_us_per_write"] == pytest.approx(1800)
    idle = _cpu.generator(1.0, 2.0, 1000, 2.0)  # 0.5 cores of two processes' two cores
    assert idle["near_ceiling"] is False and idle["cores"] == pytest.approx(0.5)
    assert _cpu.generator(None, 2.0, 1000, 1.0)["near_ceiling"] is None
    assert _cpu.ceiling_cores(64) == float(os.cpu_count() or 1)


def test_process_cpu_is_read_from_proc() -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc here")
    assert (_cpu.process_cpu_s(os.getpid()) or 0.0) > 0
    assert _cpu.process_cpu_s(None) is None


@pytest.mark.slow
def test_raft_bench_smoke_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "raft.json"
    done = subprocess.run(
        [sys.executable, "-m", "benches", "raft", "--json", str(out), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-4000:]  # the bench's traceback, in CI's log
    record = json.loads(out.read_text())
    assert record["bench"] == "raft" and record["params"]["smoke"] is True
    assert len(record["load_average"]) == 2 and all(x >= 0 for x in record["load_average"])
    summary = record["summary"]
    for key in (
        "tput_writes_per_s_sync",
        "tput_writes_per_s_async",
        "tput_ratio_vs_pysyncobj",
        "p50_ms_at_100_sync",
        "p50_ms_at_100_async",
        "failover_s_median",
        "failover_s_max",
        "leader_cpu_us_per_write_sync",
        "leader_cpu_us_per_write_async",
        "pysyncobj_leader_cpu_us_per_write",
    ):
        assert summary[key] > 0, key
    assert summary["acked_lost"] == 0
    assert summary["etcd"] == "skipped (--smoke)"
    for key in (
        "tput_ratio_vs_etcd_sync",
        "tput_ratio_vs_etcd_async",
        "etcd_tput_writes_per_s",
        "etcd_leader_cpu_us_per_write",
        "etcd_generator_near_ceiling",
    ):
        assert summary[key] is None, key
    for name in ("coreplane_sync", "coreplane_async", "pysyncobj"):
        generator = summary["generators"][name]
        assert generator["cpu_us_per_write"] > 0 and generator["near_ceiling"] in (True, False)
    core = record["results"]["coreplane"]
    for path in ("sync", "async"):  # every write of both paths acknowledged, none failed
        for phase in core[path]["tput_phases"]:
            assert phase["ok"] > 0 and phase["failed"] == 0, path
            # a batch entry holds at least two writes (one alone is a plain entry)
            assert phase["batched_writes"] >= 2 * phase["batch_entries"] >= 0, path
    assert record["results"]["pysyncobj"]["tput_writes_per_s"] > 0
    assert record["git_revision"]

"""Replay law: a copy of a voter's data dir reproduces that voter's state hash from the log
alone, in another process with another PYTHONHASHSEED (DESIGN: any decision can be replayed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coreplane import CorruptData, InvalidArgument
from coreplane.core import commands as C
from coreplane.runtime.replay import replay

pytestmark = pytest.mark.slow

TAGS = {"apply": lambda s, c, ctx: ({**s, c["k"]: ctx.tick_ms}, len(s)), "initial": {}}


def test_a_copied_data_dir_replays_to_the_same_hash(
    cluster_factory: Callable[..., Any], tmp_path: Path
) -> None:
    cluster = cluster_factory(log_compaction_min_entries=50)  # a snapshot, then a log tail
    for node_id in cluster.addresses:
        node = cluster.make(node_id, start=False)
        node.register_machine("tags", **TAGS)
        node.start()
    leader = cluster.leader()
    lease = leader.propose(C.LeaseGrant(ttl_ms=60_000)).value
    for i in range(300):
        leader.kv.put(f"k/{i % 40}", b"v%d" % i, lease_id=lease if i % 3 == 0 else 0)
        if i % 25 == 0:
            leader.call("tags", {"k": f"t{i}"})
    follower = cluster.followers()[0]
    index, expected = follower.state_hash()
    follower.stop()
    copy = tmp_path / "copy"
    shutil.copytree(cluster.base / follower.node_id, copy)

    result = replay(copy, machines=[("tags", TAGS)], upto=index)
    assert (result.applied_index, result.state_hash) == (index, expected)
    assert result.snapshot_index > 0 and result.entries_applied > 0
    assert not result.unknown_machines

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "coreplane.runtime.replay",
            str(copy),
            "--json",
            "--upto",
            str(index),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONHASHSEED": "4242"},
    )
    assert out.returncode == 0, out.stderr
    plain = json.loads(out.stdout)
    assert plain["applied_index"] == index and plain["unknown_machines"] is True  # no "tags"
    assert plain["refusals"].get("unknown_machine", 0) > 0


def test_replay_refuses_what_is_not_a_data_dir(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        replay(tmp_path / "missing")
    with pytest.raises(CorruptData):
        replay(tmp_path)


def test_batch_entries_replay_to_the_same_hash(
    cluster_factory: Callable[..., Any], tmp_path: Path
) -> None:
    cluster = cluster_factory().start_all()
    leader = cluster.leader()
    futures = [leader.kv.put_async(f"b/{i % 50}", b"v%d" % i) for i in range(1500)]
    assert len({f.result(timeout=60) for f in futures}) == 1500
    batches, batched = leader._engine.batch_stats()
    assert batches > 0 and batched > batches  # the pipeline's writes shared entries
    follower = cluster.followers()[0]
    index, expected = follower.state_hash()
    follower.stop()
    copy = tmp_path / "copy"
    shutil.copytree(cluster.base / follower.node_id, copy)
    result = replay(copy, upto=index)
    assert (result.applied_index, result.state_hash) == (index, expected)
    assert result.refusals == {}

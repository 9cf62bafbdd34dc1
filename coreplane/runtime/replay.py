"""Replay a voter's data dir from its log alone: the state hash it reaches, and every refusal.

Because apply is a pure function of the log (time included: it comes from committed ticks), a
copy of any voter's data dir is enough to rebuild that voter's replicated state, byte for byte,
on another machine, in another process, with another hash seed: load the stored snapshot, then
apply every committed entry after it. `replay` does that and returns the index it reached and
the `state_hash` there, which every replica that applied that index agrees on, so an operator
can check a suspect replica offline, explain a decision, or reproduce a bug from a log.

Host machines: entries for user machines apply only if the same machines are passed in
(`machines`); otherwise they are counted as ``unknown_machine`` refusals and the hash is that of
the built-in state only, which the result says.

Run it on a copy of a data dir, or on a stopped node's: it opens the journal like a node does.
``python -m coreplane.runtime.replay DATA_DIR [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from coreplane.core.state import StateMachine
from coreplane.errors import CorruptData, InvalidArgument
from coreplane.raft import engine as E
from coreplane.raft import serialization
from coreplane.runtime.controlplane import register_builtins
from coreplane.runtime.datadir import META_FILE

__all__ = ["ReplayResult", "main", "replay"]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Where the replay got to and what it found."""

    node_id: str
    snapshot_index: int  # the stored snapshot's last index (0: none)
    commit_index: int  # the journal's recorded commit index: replay stops there
    applied_index: int  # the state's applied index after the replay
    state_hash: str
    entries_applied: int  # coreplane entries applied after the snapshot
    refusals: dict[str, int] = field(default_factory=dict)  # code -> count
    unknown_machines: bool = False  # entries for machines not passed in: hash of built-ins
    # The fleet's decision journal at that index (its last `journal_max`), oldest first:
    # {index, tick_ms, subjects, text}, for `coreplane replay` to print.
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _identity(data_dir: str) -> tuple[str, str]:
    """(node id, cluster fingerprint) as the data dir records them."""
    try:
        with open(os.path.join(data_dir, META_FILE), "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
        node_id, cluster = meta["node_id"], meta["cluster"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"{data_dir}: not a coreplane data dir ({META_FILE}: {exc})") from exc
    if not isinstance(node_id, str) or not isinstance(cluster, str):
        raise CorruptData(f"{data_dir}: {META_FILE} has no node id or cluster")
    return node_id, cluster


def replay(
    data_dir: str | os.PathLike[str],
    *,
    machines: Sequence[tuple[str, Any]] = (),
    upto: int | None = None,
    fleet_config: Any = None,
) -> ReplayResult:
    """Rebuild the replicated state of the node whose data dir this is, from its log alone.

    `machines` are ``(name, machine)`` pairs as the host registers them (an object, or a dict
    of ``apply=``/``on_tick=``/``initial=``); `upto` stops at that log index (default: the
    journal's commit index); `fleet_config` is the `FleetConfig` the cluster runs with (its
    timings decide the fleet's apply)."""
    if upto is not None and (isinstance(upto, bool) or not isinstance(upto, int) or upto < 0):
        raise InvalidArgument("upto", "must be a log index (an integer >= 0)")
    if not isinstance(data_dir, (str, os.PathLike)):
        raise InvalidArgument("data_dir", "must be a path")
    path = os.path.abspath(os.fspath(data_dir))
    if not os.path.isdir(path):
        raise InvalidArgument("data_dir", f"{path} is not a directory")
    node_id, cluster = _identity(path)
    sm = StateMachine(fleet=fleet_config)
    register_builtins(sm)
    for name, machine in machines:
        if isinstance(machine, dict):
            sm.register(name, **machine)
        else:
            sm.register(name, machine)
    journal = E.open_journal(
        os.path.join(path, "journal.lmdb"), node_id=node_id, cluster_id=cluster
    )
    try:
        snapshot_index = 0
        if journal.load_snapshot() is not None:
            loader = serialization.SnapshotSerializer(
                journal, capture=lambda: lambda: b"", restore=sm.restore
            )
            _app, last_entry, _prev, _cluster = loader.deserialize()
            snapshot_index = int(last_entry[1])
        commit = int(journal.getRaftCommitIndex())
        last = commit if upto is None else min(commit, upto)
        refusals: Counter[str] = Counter()
        applied = 0
        for position in range(len(journal)):
            command, index, _term = journal[position]
            if index <= snapshot_index or index > last:
                continue
            kind = command[:1]
            if kind == E.BATCH_COMMAND_TYPE:  # several KV writes in one entry
                results = sm.apply_batch(E.split_batch(bytes(command[1:])), index)
            elif kind == E.ENTRY_COMMAND_TYPE:
                results = [sm.apply(bytes(command[1:]), index)]
            else:
                continue  # pysyncobj's own entries (no-op, membership): no replicated state
            applied += 1
            for result in results:
                if not result.ok:
                    refusals[result.code] += 1
    finally:
        journal.close()
    return ReplayResult(
        node_id=node_id,
        snapshot_index=snapshot_index,
        commit_index=commit,
        applied_index=sm.applied_index,
        state_hash=sm.state_hash(),
        entries_applied=applied,
        refusals=dict(sorted(refusals.items())),
        unknown_machines=refusals.get("unknown_machine", 0) > 0,
        decisions=[
            {"index": e[0], "tick_ms": e[1], "subjects": list(e[2]), "text": e[3]}
            for e in sm.fleet.journal
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coreplane.runtime.replay",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("data_dir")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--upto", type=int, default=None, help="stop at this log index")
    args = parser.parse_args(argv)
    try:
        result = replay(args.data_dir, upto=args.upto)
    except (InvalidArgument, CorruptData) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), sort_keys=True))
    else:
        print(
            f"node {result.node_id}: applied index {result.applied_index} "
            f"(snapshot {result.snapshot_index}, commit {result.commit_index}), "
            f"state hash {result.state_hash}"
        )
        print(
            f"{result.entries_applied} entries applied after the snapshot; refusals: "
            f"{result.refusals or 'none'}"
        )
        if result.unknown_machines:
            print(
                "note: entries for host machines not given to replay were refused; the hash "
                "covers the built-in state only"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`coreplane replay DATA_DIR`: the CLI's one offline command, and its one layer exception.

Replay reads a voter's data dir (LMDB journal and snapshot) and applies its log with the real
state machine, so it needs `coreplane.runtime.replay` and cannot go through the API, like
etcdutl beside etcdctl. The import is deferred to this function so the rest of the CLI stays a
pure API client (tests/unit/test_layers.py allows exactly this import in this module).
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_replay"]


def run_replay(data_dir: str, *, upto: int | None = None) -> dict[str, Any]:
    from coreplane.runtime import replay as offline  # the documented exception (see above)

    result = offline.replay(data_dir, upto=upto)
    out = result.to_dict()
    out.setdefault("decisions", [])  # fleet decisions with their sentences, when recorded
    return out

"""`coreplane replay DATA_DIR`: the CLI's one offline command, and its one layer exception.

Replay reads a voter's data dir (LMDB journal and snapshot) and applies its log with the real
state machine, so it needs `coreplane.runtime.replay` and cannot go through the API, like
etcdutl beside etcdctl. The imports are deferred to this function so the rest of the CLI stays
a pure API client (tests/unit/test_layers.py allows exactly these imports in this module).

The fleet's timings (`FleetConfig`) decide parts of apply, so a cluster that runs with other
than the defaults must be replayed with the same values: ``--fleet-config FILE`` (a YAML map of
`FleetConfig` fields, as the host passes them to its ControlPlane).
"""

from __future__ import annotations

from typing import Any

import yaml

from coreplane.errors import InvalidArgument

__all__ = ["run_replay"]


def run_replay(
    data_dir: str, *, upto: int | None = None, fleet_config_path: str | None = None
) -> dict[str, Any]:
    from coreplane.core.machines.fleet import FleetConfig  # the documented exception
    from coreplane.runtime import replay as offline  # the documented exception

    config = None
    if fleet_config_path:
        with open(fleet_config_path, encoding="utf-8") as f:
            fields = yaml.safe_load(f) or {}
        if not isinstance(fields, dict):
            raise InvalidArgument("fleet-config", "must be a map of FleetConfig fields")
        try:
            config = FleetConfig(**fields)
        except TypeError as exc:
            raise InvalidArgument("fleet-config", str(exc)) from None
        config.validate()
    result = offline.replay(data_dir, upto=upto, fleet_config=config)
    return result.to_dict()  # with the fleet's decisions and their sentences

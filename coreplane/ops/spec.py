"""Declarative desired state for `coreplane plan -f` / `apply -f`: a spec file and its diff.

    cluster: prod-eu-1          # optional: must match the cluster's name when given
    partitions:
      orders-0: {rf: 3}
      orders-1: {rf: 5}
    cordoned: [n7, n9]          # exactly these nodes cordoned; others uncordoned
    prune: false                # true: partitions not listed are deleted (default: left)

`diff(spec, partitions, nodes)` compares it with the current fleet (the API's views) and
returns the changes in a fixed order: create, set RF, delete, cordon, uncordon. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from coreplane.errors import InvalidArgument

__all__ = ["Change", "diff", "parse"]

_RF_MAX = 64


@dataclass(frozen=True)
class Change:
    verb: str  # create | set_rf | delete | cordon | uncordon
    subject: str
    old: Any
    new: Any

    def line(self) -> str:
        """kubectl-diff style: '-' the old, '+' the new."""
        if self.verb == "create":
            return f"+ partition {self.subject}: rf {self.new}"
        if self.verb == "delete":
            return f"- partition {self.subject}: rf {self.old}"
        if self.verb == "set_rf":
            return f"~ partition {self.subject}: rf {self.old} -> {self.new}"
        return f"~ node {self.subject}: {self.old} -> {self.new}"

    def to_dict(self) -> dict[str, Any]:
        return {"verb": self.verb, "subject": self.subject, "old": self.old, "new": self.new}


def parse(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidArgument("spec", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument("spec", "must be a map")
    unknown = sorted(set(data) - {"cluster", "partitions", "cordoned", "prune"})
    if unknown:
        raise InvalidArgument(f"spec.{unknown[0]}", "unknown field")
    parts = data.get("partitions") or {}
    if not isinstance(parts, dict):
        raise InvalidArgument("spec.partitions", "must map partition ids to {rf: N}")
    out: dict[str, int] = {}
    for pid, body in parts.items():
        rf = body.get("rf") if isinstance(body, dict) else body
        if isinstance(rf, bool) or not isinstance(rf, int) or not 1 <= rf <= _RF_MAX:
            raise InvalidArgument(f"spec.partitions.{pid}.rf", f"must be an int in [1, {_RF_MAX}]")
        out[str(pid)] = rf
    cordoned = data.get("cordoned")
    if cordoned is not None and (
        not isinstance(cordoned, list) or not all(isinstance(n, str) for n in cordoned)
    ):
        raise InvalidArgument("spec.cordoned", "must be a list of node ids")
    prune = data.get("prune", False)
    if not isinstance(prune, bool):
        raise InvalidArgument("spec.prune", "must be true or false")
    return {
        "cluster": str(data.get("cluster") or ""),
        "partitions": out,
        "cordoned": None if cordoned is None else sorted(set(cordoned)),
        "prune": prune,
    }


def diff(
    spec: dict[str, Any], partitions: list[dict[str, Any]], nodes: list[dict[str, Any]]
) -> list[Change]:
    have = {p["id"]: int(p["rf"]) for p in partitions}
    want: dict[str, int] = spec["partitions"]
    changes = [
        Change("create", pid, None, rf) for pid, rf in sorted(want.items()) if pid not in have
    ]
    changes += [
        Change("set_rf", pid, have[pid], rf)
        for pid, rf in sorted(want.items())
        if pid in have and have[pid] != rf
    ]
    if spec["prune"]:
        changes += [
            Change("delete", pid, rf, None) for pid, rf in sorted(have.items()) if pid not in want
        ]
    if spec["cordoned"] is not None:
        admin = {n["id"]: n.get("admin", "active") for n in nodes}
        wanted = set(spec["cordoned"])
        unknown = sorted(wanted - set(admin))
        if unknown:
            raise InvalidArgument("spec.cordoned", f"no node {unknown[0]!r} in the fleet")
        changes += [
            Change("cordon", n, admin[n], "cordoned")
            for n in sorted(wanted)
            if admin[n] == "active"
        ]
        changes += [
            Change("uncordon", n, "cordoned", "active")
            for n in sorted(admin)
            if admin[n] == "cordoned" and n not in wanted
        ]
    return changes

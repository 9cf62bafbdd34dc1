"""Operator operations: one record per command, with a deterministic id, so the same command
run again attaches to the operation it started instead of starting a second one.

A record lives in the replicated KV at ``coreplane/ops/<id>`` (JSON) and is created with a
compare-and-set on "absent", so two operators racing the same command get one operation. The
id is derived from the request alone (`op_id`): ``drain-n3-1a2b3c4d`` is the drain of n3 with
those options, whoever asks, on whichever endpoint, after any failover. The record holds the
changes (what to ask of the fleet: each is idempotent, so re-asking is safe), the goals that
say when it is done, and how far away they were at the start (the progress bar's 100 %).

Pure except `fetch`/`create`/`save`, which take the SDK client.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from coreplane.errors import CommandRejected

__all__ = ["PREFIX", "create", "distance", "fetch", "goals_for", "op_id", "save"]

PREFIX = "coreplane/ops/"


def op_id(verb: str, subject: str, changes: list[dict[str, Any]]) -> str:
    canon = json.dumps(
        {"verb": verb, "subject": subject, "changes": changes},
        sort_keys=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(canon.encode("utf-8")).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in subject)[:64]
    return f"{verb}-{safe}-{digest}"


def goals_for(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What "done" means for each change, in terms of the fleet's views."""
    goals: list[dict[str, Any]] = []
    for ch in changes:
        verb, subject = ch["verb"], ch["subject"]
        if verb in ("drain", "decommission"):
            goals.append({"type": "node_empty", "node": subject})
        elif verb in ("cordon", "uncordon"):
            goals.append(
                {
                    "type": "node_admin",
                    "node": subject,
                    "admin": "cordoned" if verb == "cordon" else "active",
                }
            )
        elif verb in ("set_rf", "create"):
            goals.append({"type": "partition_rf", "partition": subject, "rf": ch["rf"]})
        elif verb == "delete":
            goals.append({"type": "partition_gone", "partition": subject})
    return goals


def distance(
    goals: list[dict[str, Any]], nodes: dict[str, dict[str, Any]], parts: dict[str, dict[str, Any]]
) -> int:
    """Units of work left: replicas still to move, plus one per unmet admin goal."""
    left = 0
    for g in goals:
        if g["type"] == "node_empty":
            node = nodes.get(g["node"])
            left += int(node.get("replicas", 0)) if node else 0
        elif g["type"] == "node_admin":
            node = nodes.get(g["node"])
            left += 0 if node is None or node.get("admin") == g["admin"] else 1
        elif g["type"] == "partition_rf":
            p = parts.get(g["partition"])
            if p is None:
                left += g["rf"]
                continue
            have = len(p.get("replicas") or [])
            live = int(p.get("live_replicas", have))
            # replicas to add or drop, plus dead ones to replace; a move still in flight
            # counts as one unit until it is finished
            mine = abs(g["rf"] - have) + max(0, min(g["rf"], have) - live)
            left += mine if mine or not p.get("operation") else 1
        elif g["type"] == "partition_gone":
            left += 1 if g["partition"] in parts else 0
    return left


def fetch(client: Any, oid: str) -> tuple[dict[str, Any], int] | None:
    got = client.get(PREFIX + oid)
    if got is None:
        return None
    return json.loads(got[0].decode("utf-8")), got[1]


def create(client: Any, record: dict[str, Any]) -> tuple[bool, dict[str, Any], int]:
    """(created, record, mod_revision): the existing record when someone made it first."""
    data = json.dumps(record, sort_keys=True).encode("utf-8")
    try:
        rev = client.cas(PREFIX + record["id"], 0, data)
        return True, record, rev
    except CommandRejected as exc:
        if exc.code != "compare_failed":
            raise
    found = fetch(client, record["id"])
    if found is None:  # deleted in between: try once more
        rev = client.cas(PREFIX + record["id"], 0, data)
        return True, record, rev
    return False, found[0], found[1]


def save(client: Any, record: dict[str, Any]) -> int:
    return int(
        client.put(PREFIX + record["id"], json.dumps(record, sort_keys=True).encode("utf-8"))
    )

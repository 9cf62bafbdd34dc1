"""The fleet on the HTTP API (issue 14's operator surface over issue 12's `cp.fleet`).

Kept apart from routes.py: `fleet_routes(cp)` returns the routes, and the server adds them
when the node has a fleet. Shapes follow the built-in routes (``POST`` with a body, ``GET``
for lists); every answer is plain data.

- views (every role): ``GET /v1/fleet/nodes``, ``/v1/fleet/partitions``,
  ``/v1/fleet/operations``; ``POST /v1/fleet/node {node_id}``, ``/v1/fleet/partition {pid}``,
  ``/v1/fleet/explain {thing, limit}``;
- desired state (admin): ``POST /v1/fleet/{cordon,uncordon,drain,decommission} {node_id}``,
  ``/v1/fleet/partitions/{create,set_rf,delete}``; each is idempotent;
- the agent protocol (an ``agent:<node>`` token may act only for its own node, by
  ``node_field``): ``POST /v1/fleet/heartbeat``, ``/v1/fleet/actions``, ``/v1/fleet/ack``;
- **the dry-run** (admin, read-only): ``POST /v1/fleet/plan {changes}`` applies the changes
  (a JSON list of ``{verb, subject, rf?}``) to a capture of the committed fleet, runs the real
  solver (`coreplane.placement.solve`) on it and on the capture as it is, and answers the
  moves the change causes (those not in the baseline plan), the blast-radius totals, the
  production flag, and an estimate: waves of the plan times the median duration of this
  cluster's last finished moves (cluster tick time between "started" and "done" in the
  fleet's decision journal; the last five, so the estimate follows the throughput of now),
  or none while no move was measured; and `warnings` when the fleet would be left with
  fewer zones or active nodes than its highest RF (the CLI then asks for confirmation).
  Nothing is proposed.

The plan handler reads the state machine through the node's private `_read_state` (as
`cp.fleet` itself does): the capture needs the fleet's internal records, which no public
view carries.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from typing import Any

from coreplane import placement
from coreplane.api.routes import ADMIN, EVERYONE, F, Route
from coreplane.core.reconcile import problem_from_capture
from coreplane.errors import InvalidArgument

__all__ = ["PRODUCTION_KEY", "fleet_routes", "plan_change"]

PRODUCTION_KEY = "coreplane/cluster/production"
_ID = F("str", None, 256, True)
_CHANGES_MAX = 1_000
_MEASURED_MAX = 5  # the most recent moves: throughput now, not at bootstrap
_VERBS = ("cordon", "uncordon", "drain", "decommission", "set_rf", "create", "delete")
_ADMIN_OF = {
    "cordon": "cordoned",
    "uncordon": "active",
    "drain": "draining",
    "decommission": "decommissioning",
}


def _changes(text: str) -> list[dict[str, Any]]:
    try:
        changes = json.loads(text)
    except ValueError:
        raise InvalidArgument("changes", "must be a JSON list") from None
    if not isinstance(changes, list) or len(changes) > _CHANGES_MAX:
        raise InvalidArgument("changes", f"must be a list of at most {_CHANGES_MAX}")
    for ch in changes:
        if (
            not isinstance(ch, dict)
            or ch.get("verb") not in _VERBS
            or not isinstance(ch.get("subject"), str)
            or not ch["subject"]
        ):
            raise InvalidArgument("changes", f"each is {{verb: one of {_VERBS}, subject}}")
        if ch["verb"] in ("set_rf", "create") and (
            type(ch.get("rf")) is not int or not 1 <= ch["rf"] <= 64
        ):
            raise InvalidArgument("changes", "set_rf and create need an rf in [1, 64]")
    return changes


def _apply_hypothetically(view: dict[str, Any], changes: list[dict[str, Any]]) -> dict[str, Any]:
    nodes = list(view["nodes"])
    parts = dict(view["parts"])
    ids = [n[0] for n in nodes]
    for ch in changes:
        verb, subject = ch["verb"], ch["subject"]
        if verb in _ADMIN_OF:
            if subject not in ids:
                raise InvalidArgument("changes", f"no node {subject!r}")
            i = ids.index(subject)
            nodes[i] = (*nodes[i][:5], _ADMIN_OF[verb])
        elif verb == "set_rf":
            if subject not in parts:
                raise InvalidArgument("changes", f"no partition {subject!r}")
            parts[subject] = (ch["rf"], *parts[subject][1:])
        elif verb == "create":
            parts.setdefault(subject, (ch["rf"], 1, (), 0, 0, -1))
        elif verb == "delete":
            parts.pop(subject, None)
    return {**view, "nodes": sorted(nodes), "parts": parts}


def _solve(view: dict[str, Any], per_node: int) -> tuple[Any, Any]:
    solve = problem_from_capture(view, moves_in_flight_per_node=per_node)
    return solve, placement.solve(solve.problem)


def _measured_move_ms(journal: list[dict[str, Any]]) -> list[int]:
    started: dict[str, int] = {}
    took: list[int] = []
    for entry in journal:
        op, _, rest = entry["text"].partition(" ")
        if rest.startswith("started"):
            started[op] = entry["tick_ms"]
        elif rest.startswith("done") and op in started:
            took.append(entry["tick_ms"] - started.pop(op))
    return took[-_MEASURED_MAX:]


def _capacity_warnings(after: dict[str, Any]) -> list[str]:
    """What the fleet is left short of after the change, counted on the whole fleet (earlier
    drains and cordons included, not only this change): zones and nodes that still take
    replicas, against the highest RF."""
    rf_max = max((rec[0] for rec in after["parts"].values()), default=0)
    left = {n[1] for n in after["nodes"] if n[4] == "alive" and n[5] == "active"}
    out = []
    if len(left) < rf_max:
        out.append(
            f"afterwards {len(left)} zone(s) can take replicas and the highest RF is "
            f"{rf_max}: partitions above {len(left)} cannot be fully placed"
        )
    active = [n[0] for n in after["nodes"] if n[4] == "alive" and n[5] == "active"]
    if len(active) < rf_max:
        out.append(f"afterwards {len(active)} node(s) are active and take new replicas")
    return out


def plan_change(cp: Any, changes: list[dict[str, Any]]) -> dict[str, Any]:
    """The dry-run: what `changes` would make the fleet do, from the current state."""
    thunk, config, journal = cp._read_state(
        lambda sm: (
            sm.fleet.capture(),
            sm.fleet.config,
            [{"tick_ms": e[1], "text": e[3]} for e in sm.fleet.journal],
        )
    )
    view = thunk()
    per_node = config.moves_in_flight_per_node
    _base_solve, base = _solve(view, per_node)
    solve, plan = _solve(_apply_hypothetically(view, changes), per_node)
    baseline = {(m.partition, m.source, m.target) for m in base.moves}
    waves = plan.by_wave()
    moves = [
        {"partition": m.partition, "source": m.source, "target": m.target, "wave": m.wave}
        for wave in waves
        for m in wave
        if (m.partition, m.source, m.target) not in baseline
    ]
    used_waves = len({m["wave"] for m in moves})
    measured = _measured_move_ms(journal)
    ms = int(statistics.median(measured)) if measured else 0
    parallel = max((len(w) for w in waves), default=0)
    nodes = [n for n in view["nodes"] if n[5] != "decommissioned"]
    touched = {ch["subject"] for ch in changes}
    provision = max(0, max((ch.get("rf", 0) for ch in changes), default=0) - solve.zones)
    warnings = _capacity_warnings(_apply_hypothetically(view, changes))
    production = cp.kv.get(PRODUCTION_KEY)
    return {
        "feasible": plan.feasible,
        "reason": plan.reason,
        "index": int(view["index"]),
        "moves": moves,
        "baseline_moves": len(base.moves),
        "warnings": warnings,
        "capped": [p for p in solve.capped if p in touched],
        "nodes_total": len(nodes),
        "partitions_total": len(view["parts"]),
        "production": production is not None
        and production[0].strip().lower() in (b"1", b"true", b"yes"),
        "estimate": {
            "waves": used_waves,
            "parallel": min(parallel, config.moves_in_flight_max),
            "ms_per_move": ms,
            "measured_moves": len(measured),
            "total_ms": used_waves * ms,
            "provision": provision,
        },
    }


def fleet_routes(cp: Any) -> list[Route]:
    fleet = cp.fleet
    ok = {"stale_ok": F("bool", False)}

    def stale(b: dict[str, Any]) -> bool:
        return bool(b.get("stale_ok", False))

    def admin(verb: str) -> Route:
        method = getattr(fleet, verb)
        return Route(
            "POST",
            f"/v1/fleet/{verb}",
            ADMIN,
            {"node_id": _ID},
            lambda b: {"result": method(b["node_id"])},
        )

    def heartbeat(b: dict[str, Any]) -> Any:
        try:
            heat = json.loads(b["heat"]) if b["heat"] else {}
            lost = json.loads(b["lost"]) if b["lost"] else []
            sizes = json.loads(b["sizes"]) if b["sizes"] else {}
        except ValueError:
            raise InvalidArgument("heat", "heat, sizes: JSON maps; lost: a JSON list") from None
        if not isinstance(heat, dict) or not isinstance(lost, list):
            raise InvalidArgument("heat", "heat is a JSON map, lost a JSON list")
        if not isinstance(sizes, dict):
            raise InvalidArgument("sizes", "a JSON map of partition to size in bytes")
        return fleet.heartbeat(
            b["node_id"],
            zone=b["zone"],
            weight=b["weight"] or 1,
            slots=b["slots"] or 1 << 20,
            heat=heat,
            lost=lost,
            sizes=sizes,
        )

    return [
        Route("GET", "/v1/fleet/nodes", EVERYONE, {}, lambda b: {"nodes": fleet.nodes()}),
        Route(
            "GET",
            "/v1/fleet/partitions",
            EVERYONE,
            {},
            lambda b: {"partitions": fleet.partitions()},
        ),
        Route(
            "GET",
            "/v1/fleet/operations",
            EVERYONE,
            {},
            lambda b: {"operations": fleet.operations()},
        ),
        Route(
            "POST",
            "/v1/fleet/node",
            EVERYONE,
            {"node_id": _ID, **ok},
            lambda b: {"node": fleet.node(b["node_id"], stale_ok=stale(b))},
        ),
        Route(
            "POST",
            "/v1/fleet/partition",
            EVERYONE,
            {"pid": _ID, **ok},
            lambda b: {"partition": fleet.partition(b["pid"], stale_ok=stale(b))},
        ),
        Route(
            "POST",
            "/v1/fleet/explain",
            EVERYONE,
            {"thing": _ID, "limit": F("int", 100), **ok},
            lambda b: {"decisions": fleet.explain(b["thing"], limit=min(b["limit"] or 100, 1000))},
        ),
        *(admin(verb) for verb in ("cordon", "uncordon", "drain", "decommission")),
        Route(
            "POST",
            "/v1/fleet/partitions/create",
            ADMIN,
            {"pid": _ID, "rf": F("int", 3), "heat": F("int", 1)},
            lambda b: {"result": fleet.create_partition(b["pid"], b["rf"], b["heat"])},
        ),
        Route(
            "POST",
            "/v1/fleet/partitions/set_rf",
            ADMIN,
            {"pid": _ID, "rf": F("int", None)},
            lambda b: {"result": fleet.set_rf(b["pid"], b["rf"])},
        ),
        Route(
            "POST",
            "/v1/fleet/partitions/delete",
            ADMIN,
            {"pid": _ID},
            lambda b: {"result": fleet.delete_partition(b["pid"])},
        ),
        Route(
            "POST",
            "/v1/fleet/plan",
            ADMIN,
            {"changes": F("str", None, 1 << 20)},
            lambda b: plan_change(cp, _changes(b["changes"])),
        ),
        Route(
            "POST",
            "/v1/fleet/heartbeat",
            frozenset({"admin", "agent"}),
            {
                "node_id": _ID,
                "zone": _ID,
                "weight": F("int", 1),
                "slots": F("int", 0),
                "heat": F("str", "", 1 << 20),
                "lost": F("str", "", 1 << 20),
                "sizes": F("str", "", 1 << 20),
            },
            heartbeat,
            node_field="node_id",
        ),
        Route(
            "POST",
            "/v1/fleet/actions",
            frozenset({"admin", "agent"}),
            {"node_id": _ID},
            lambda b: {
                "actions": [
                    dataclasses.asdict(a) for a in fleet.actions(b["node_id"], stale_ok=True)
                ]
            },
            node_field="node_id",
        ),
        Route(
            "POST",
            "/v1/fleet/ack",
            frozenset({"admin", "agent"}),
            {
                "node_id": _ID,
                "action_id": _ID,
                "token": F("int", None),
                "ok": F("bool", True),
                "detail": F("str", "", 1000),
            },
            lambda b: {
                "result": fleet.ack(b["node_id"], b["action_id"], b["token"], b["ok"], b["detail"])
            },
            node_field="node_id",
        ),
    ]

"""The fleet on the HTTP API (issue 14's operator surface over issue 12's `cp.fleet`).

Kept apart from routes.py: `fleet_routes(cp)` returns the routes, and the server adds them
when the node has a fleet. Shapes follow the built-in routes (``POST`` with a body, ``GET``
for lists); every answer is plain data.

- views (every role): ``GET /v1/fleet/nodes``, ``/v1/fleet/partitions``,
  ``/v1/fleet/operations``; ``POST /v1/fleet/node {node_id}``, ``/v1/fleet/partition {pid}``,
  ``/v1/fleet/explain {thing, limit}``;
- desired state (admin): ``POST /v1/fleet/{cordon,uncordon,drain,decommission} {node_id}``,
  ``/v1/fleet/partitions/{create,set_rf,delete}``; each is idempotent;
- the operator's cancel of one move while it copies (admin):
  ``POST /v1/fleet/operations/cancel {operation, reason}`` (rolled back through the fenced
  action protocol, the reason journaled; 409 ``too_late`` after the cutover);
- the agent protocol (an ``agent:<node>`` token may act only for its own node, by
  ``node_field``): ``POST /v1/fleet/heartbeat``, ``/v1/fleet/actions``, ``/v1/fleet/ack``;
- **the dry-run** (admin, read-only): ``POST /v1/fleet/plan {changes}`` applies the changes
  (a JSON list of ``{verb, subject, rf?}``) to a capture of the committed fleet, runs the real
  solver (`coreplane.placement.solve`) on it and on the capture as it is, and answers the
  moves the change causes (those not in the baseline plan), the blast-radius totals, the
  production flag, `warnings` when the fleet would be left with fewer zones or active nodes
  than its highest RF (the CLI then asks for confirmation), and an estimate (`_estimate`).
  Nothing is proposed.

**The estimate** is made of this cluster's own numbers, read from the fleet's decision journal
in cluster tick time (the last five of each, so it follows the throughput of now): a copy
moves the partition's size (`size_bytes`, reported by its agents) at the copy rate, which is
the measured copy throughput (the bytes of copies from an existing replica over their time
from "started" to "caught up") where there is one, never above the copy throttle (the KV key
`THROTTLE_KEY`, bytes/s; default 50 MiB/s), plus the measured rest of a move (cutover and
cleanup); a move whose partition has no size yet counts the median measured whole move. Moves
run in the plan's waves, up to the in-flight limit at a time. A node to provision counts the
median measured provisioning time (the provider's request to its answer).

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

__all__ = ["PRODUCTION_KEY", "THROTTLE_DEFAULT", "THROTTLE_KEY", "fleet_routes", "plan_change"]

PRODUCTION_KEY = "coreplane/cluster/production"
THROTTLE_KEY = "coreplane/cluster/copy-throttle-bytes-per-s"
THROTTLE_DEFAULT = 50 << 20
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


@dataclasses.dataclass
class _Measured:
    """What this cluster's journal says moves take (the newest `_MEASURED_MAX` of each)."""

    move_ms: list[int]  # whole moves: "started" -> "done"
    copies: list[tuple[str, int]]  # (partition, ms) of real copies: started -> caught up
    rest_ms: list[int]  # moves': "caught up" -> "done" (cutover and cleanup)
    provision_ms: list[int]  # the provider asked -> done


def _measured(journal: list[dict[str, Any]]) -> _Measured:
    started: dict[str, tuple[str, int, bool]] = {}  # op -> (pid if it copies, t0, from a source)
    caught: dict[str, int] = {}
    asked: dict[str, int] = {}
    held: dict[str, bool] = {}  # pid -> a replica existed after its last cutover
    m = _Measured([], [], [], [])
    for entry in journal:
        op, _, rest = entry["text"].partition(" ")
        subjects, t = entry["subjects"], entry["tick_ms"]
        if rest.startswith("started") and subjects:
            # "started (cause): pid source -> target". A move from a source copies; so does a
            # new replica of a partition that has one; a new partition's first does not
            _, _, what = rest.partition(": ")
            sourced = what.split(" ")[1:2] not in (["-"], [])
            copies = sourced or held.get(subjects[0], False)
            started[op] = (subjects[0] if copies else "", t, sourced)
        elif rest.startswith("cutover: ") and subjects:
            held[subjects[0]] = not rest.endswith(" on no node")
        elif rest.startswith("copy on") and rest.endswith("caught up") and op in started:
            pid, t0, sourced = started[op]
            if pid:
                m.copies.append((pid, t - t0))
            if sourced:
                caught[op] = t
        elif rest.startswith("done") and op in started:
            m.move_ms.append(t - started.pop(op)[1])
            if op in caught:
                m.rest_ms.append(t - caught.pop(op))
        elif entry["text"].startswith("provider asked to provision") and subjects:
            asked[subjects[0]] = t
        elif entry["text"].startswith("provider provision") and subjects:
            t0 = asked.pop(subjects[0], None)
            if t0 is not None and " done" in entry["text"]:
                m.provision_ms.append(t - t0)
    n = _MEASURED_MAX
    return _Measured(m.move_ms[-n:], m.copies[-n:], m.rest_ms[-n:], m.provision_ms[-n:])


def _median(values: list[int]) -> int | None:
    return int(statistics.median(values)) if values else None


def _estimate(
    moves: list[dict[str, Any]],
    sizes: dict[str, int],
    measured: _Measured,
    throttle: int,
    parallel: int,
) -> dict[str, Any]:
    """Bytes to copy, the copy rate, and the time: per wave, its moves `parallel` at a time,
    each the longest of its batch (see the module docstring)."""
    copied = [(pid, ms) for pid, ms in measured.copies if sizes.get(pid)]
    copy_bytes, copy_ms = sum(sizes[p] for p, _ in copied), sum(ms for _, ms in copied)
    # a copy within one tick measures nothing but "faster than a tick": no rate from it
    rate_measured = copy_bytes * 1000 // copy_ms if copy_bytes and copy_ms > 0 else None
    rate = min(throttle, rate_measured) if rate_measured else throttle
    rest_ms = _median(measured.rest_ms) or 0
    move_ms = _median(measured.move_ms)
    copies = [m for m in moves if m["target"] and sizes.get(m["partition"]) is not None]
    unsized = [m for m in moves if m["target"] and sizes.get(m["partition"]) is None]
    known = not unsized or move_ms is not None

    def one(m: dict[str, Any]) -> int:
        if not m["target"]:
            return rest_ms  # a drop: the cleanup alone
        size = sizes.get(m["partition"])
        if size is None:
            return move_ms or 0
        return -(-size * 1000 // rate) + rest_ms

    total_ms = 0
    by_wave: dict[int, list[int]] = {}
    for m in moves:
        by_wave.setdefault(m["wave"], []).append(one(m))
    for wave in sorted(by_wave):
        times = sorted(by_wave[wave], reverse=True)
        total_ms += sum(times[i] for i in range(0, len(times), max(1, parallel)))
    return {
        "known": known,
        "total_ms": total_ms if known else None,
        "copies": len(copies) + len(unsized),
        "bytes": sum(sizes[m["partition"]] for m in copies),
        "unsized": len(unsized),
        "throttle_bytes_per_s": throttle,
        "measured_bytes_per_s": rate_measured,
        "measured_copies": len(copied),
        "rate_bytes_per_s": rate,
        "rest_ms": rest_ms,
        "ms_per_move": move_ms or 0,
        "measured_moves": len(measured.move_ms),
        "provision_ms": _median(measured.provision_ms),
        "measured_provisions": len(measured.provision_ms),
    }


def _throttle(cp: Any) -> int:
    got = cp.kv.get(THROTTLE_KEY)
    if got is None:
        return THROTTLE_DEFAULT
    try:
        value = int(got[0].decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return THROTTLE_DEFAULT
    return value if value > 0 else THROTTLE_DEFAULT


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
            [{"tick_ms": e[1], "subjects": e[2], "text": e[3]} for e in sm.fleet.journal],
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
    parallel = min(max((len(w) for w in waves), default=0), config.moves_in_flight_max)
    nodes = [n for n in view["nodes"] if n[5] != "decommissioned"]
    touched = {ch["subject"] for ch in changes}
    sizes, measured, throttle = view.get("sizes") or {}, _measured(journal), _throttle(cp)
    estimate = _estimate(moves, sizes, measured, throttle, parallel)
    # the partitions the change names or that have a replica on a node it names; the others
    # are moved only because the solver rebalances around the change
    parts = view["parts"]
    others = sorted(
        {
            m["partition"]
            for m in moves
            if m["partition"] not in touched
            and not touched.intersection(parts.get(m["partition"], (0, 0, ()))[2])
        }
    )
    provision = max(0, max((ch.get("rf", 0) for ch in changes), default=0) - solve.zones)
    warnings = _capacity_warnings(_apply_hypothetically(view, changes))
    pending = _pending(changes, solve, sizes) if provision else []
    if provision and estimate["total_ms"] is not None:
        if estimate["provision_ms"] is None:
            estimate["known"], estimate["total_ms"] = False, None
        else:
            estimate["total_ms"] += estimate["provision_ms"]
    # the replicas that wait for the provisioned node(s): copied once it has joined
    later = _estimate(
        [
            {"partition": p["partition"], "source": "", "target": "(new)", "wave": 0}
            for p in pending
            for _ in range(p["replicas"])
        ],
        sizes,
        measured,
        throttle,
        max(1, parallel),
    )
    estimate["pending_replicas"] = sum(p["replicas"] for p in pending)
    estimate["pending_bytes"] = later["bytes"]
    estimate["pending_unsized"] = later["unsized"]
    estimate["pending_ms"] = later["total_ms"]
    if estimate["total_ms"] is not None:
        if later["total_ms"] is None:
            estimate["known"], estimate["total_ms"] = False, None
        else:
            estimate["total_ms"] += later["total_ms"]
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
        "others": others,
        "pending": pending,
        "estimate": {
            **estimate,
            "waves": used_waves,
            "parallel": parallel,
            "provision": provision,
        },
    }


def _pending(
    changes: list[dict[str, Any]], solve: Any, sizes: dict[str, int]
) -> list[dict[str, Any]]:
    """Partitions the change asks more replicas of than the fleet has zones: the replicas
    beyond the zones wait for a provisioned node, so no move of the plan carries them."""
    out = []
    for ch in changes:
        pid, rf = str(ch.get("subject", "")), int(ch.get("rf", 0) or 0)
        if pid in solve.capped and rf > solve.zones:
            out.append(
                {"partition": pid, "replicas": rf - solve.zones, "size_bytes": sizes.get(pid)}
            )
    return sorted(out, key=lambda p: p["partition"])


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
            "/v1/fleet/operations/cancel",
            ADMIN,
            {"operation": _ID, "reason": F("str", "", 1000)},
            lambda b: {"result": fleet.cancel_move(b["operation"], b["reason"])},
        ),
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

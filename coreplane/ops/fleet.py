"""What the fleet commands (`coreplane.ops.fleet_commands`) share: reading the fleet, the
guards, and running a change as a resumable operation.

Every mutating command:
1. asks the server for a **dry-run plan** (``POST /v1/fleet/plan``: the real solver on the
   current fleet with the change applied hypothetically, its moves and an estimate from the
   measured move time; nothing is proposed) and prints it in words with ``--dry-run``;
2. checks the **blast radius** (`coreplane.ops.guard`) and asks for the cluster's name when
   the change is wide or the cluster is production (``--confirm-cluster NAME`` in automation);
3. creates or **attaches to** its operation record (`coreplane.ops.operations`: deterministic
   id, compare-and-set), re-asks the fleet for the idempotent changes, and
4. follows progress with a bar, woken by the watch API on the record (a cancel from another
   terminal shows at once) and measured against the fleet's views; Ctrl-C detaches (exit 130)
   and never cancels: the same command, or ``ops resume ID``, attaches again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Iterable
from typing import Any

import click

from coreplane.errors import CommandRejected
from coreplane.ops import guard, operations
from coreplane.ops.context import EXIT, Ctx, fail
from coreplane.ops.output import table

__all__ = [
    "as_change",
    "cluster_flags",
    "confirm",
    "dry_plan",
    "estimate_words",
    "follow",
    "issue",
    "limits",
    "list_nodes",
    "list_partitions",
    "node_rows",
    "part_rows",
    "progress_of",
    "run_change",
    "size_words",
]

CLUSTER_NAME_KEY = "coreplane/cluster/name"
PRODUCTION_KEY = "coreplane/cluster/production"
WAIT_POLL_MS = 1_000


# ------------------------------------------------------------------------------ guards


def cluster_flags(obj: Ctx) -> dict[str, Any]:
    """The cluster's name and production flag (KV keys; the context's name as fallback)."""
    client = obj.remote.client
    got = client.get(CLUSTER_NAME_KEY)
    name = got[0].decode("utf-8", "replace") if got else (obj.settings.cluster or "coreplane")
    prod = client.get(PRODUCTION_KEY)
    production = bool(prod) and prod[0].strip().lower() in (b"1", b"true", b"yes")
    return {"name": name, "production": production}


def confirm(
    obj: Ctx,
    *,
    radius: guard.Radius | None,
    destructive: bool,
    what: str,
    confirm_cluster: str | None = None,
    force: bool = False,
) -> None:
    """Refuse (exit 6) unless the change is within the blast radius or confirmed by the
    cluster's name: typed back on a terminal, or ``--confirm-cluster NAME``."""
    flags = cluster_flags(obj)
    reasons = list(radius.reasons) if radius is not None else []
    if radius is None and flags["production"] and destructive:
        reasons.append("the cluster is marked production")
    if force:
        reasons.append("it changes the voters of a cluster with fewer than 3 left")
    if not reasons:
        return
    name = flags["name"]
    why = "; ".join(reasons)
    if confirm_cluster is not None:
        if confirm_cluster == name:
            return
        raise fail(
            f"{what}: --confirm-cluster {confirm_cluster!r} is not this cluster ({why})",
            "unconfirmed",
        )
    if not sys.stdin.isatty():
        raise fail(
            f"{what} needs confirmation: {why}. Pass --confirm-cluster {name} to proceed",
            "unconfirmed",
        )
    click.echo(f"{what}: {why}.", err=True)
    typed = click.prompt(
        f"Type the cluster's name ({name}) to proceed", default="", show_default=False, err=True
    )
    if typed.strip() != name:
        raise fail("confirmation did not match; nothing changed", "unconfirmed")


# ------------------------------------------------------------------------------ reading


def list_nodes(obj: Ctx) -> list[dict[str, Any]]:
    return list(obj.remote.call("/v1/fleet/nodes", method="GET")["nodes"])


def list_partitions(obj: Ctx) -> list[dict[str, Any]]:
    return list(obj.remote.call("/v1/fleet/partitions", method="GET")["partitions"])


def node_rows(rows: list[dict[str, Any]]) -> Any:
    return table(
        "nodes",
        ("id", "zone", "state", "liveness", "admin", "replicas", "size", "heat", "operations"),
        [
            (
                n["id"],
                n["zone"],
                n["state"],
                n["liveness"],
                n["admin"],
                n["replicas"],
                size_words(n["size_bytes"]) if n.get("size_bytes") is not None else "-",
                n["heat"],
                len(n.get("operations") or []),
            )
            for n in rows
        ],
    )


def part_rows(rows: list[dict[str, Any]]) -> Any:
    return table(
        "partitions",
        ("id", "rf", "replicas", "live", "health", "size", "heat", "operation"),
        [
            (
                p["id"],
                p["rf"],
                ",".join(p["replicas"]),
                p["live_replicas"],
                p["health"],
                size_words(p["size_bytes"]) if p.get("size_bytes") is not None else "-",
                p["heat"],
                (p.get("operation") or {}).get("id", ""),
            )
            for p in rows
        ],
    )


def estimate_words(plan: dict[str, Any], named_partitions: Iterable[str] = ()) -> str:
    """The dry run in words: a headline as an operator says it ("copy 3 replicas, 2.4 GiB at
    the 50 MiB/s throttle: about 2 min 40 s; affects 3 partitions, 0 others"), then the moves
    and where each number comes from. Replicas that wait for a node to be provisioned (more
    replicas asked than the fleet has zones) are said as such: "provision 1 node in a new zone
    (...), then add 1 replica of p3 (...)". The partitions counted are those the change names
    or moves, as in the blast-radius line."""
    est = plan.get("estimate") or {}
    moves = plan.get("moves") or []
    pending = plan.get("pending") or []
    moved = sum(1 for m in moves if m.get("source") and m.get("target"))
    added = sum(1 for m in moves if m.get("target") and not m.get("source"))
    dropped = sum(1 for m in moves if m.get("source") and not m.get("target"))
    parts = {m["partition"] for m in moves} | {p["partition"] for p in pending}
    parts |= set(named_partitions)
    others = plan.get("others") or []
    words = [_headline(est, dropped, len(parts), len(others), pending)]
    later = sum(int(p["replicas"]) for p in pending)
    words.append(
        f"{len(moves) + later} move(s): move {moved} replica(s) (copy, catch up, cut over, "
        f"remove the source), add {added + later} new"
        + (f" ({later} once the new node has joined)" if later else "")
        + f", drop {dropped}"
    )
    for m in moves[:12]:
        words.append(f"  {m['partition']}: {m.get('source') or '-'} -> {m.get('target') or '-'}")
    if len(moves) > 12:
        words.append(f"  ... and {len(moves) - 12} more")
    for p in pending[:12]:
        n = int(p["replicas"])
        words.append(f"  {p['partition']}: - -> {'the new node' if n == 1 else f'{n} new nodes'}")
    if moves:
        words.append(
            f"{est.get('waves', 0)} wave(s), up to {est.get('parallel', 1)} move(s) at a time"
        )
    words.extend(_sources(est))
    if others:
        words.append(f"moved around the change: {', '.join(others[:12])}")
    for warning in plan.get("warnings") or []:
        words.append(f"WARNING: {warning}")
    if plan.get("feasible") is False:
        words.append(f"NOT feasible as asked: {plan.get('reason', '')}")
    return "\n".join(words)


def _headline(
    est: dict[str, Any], dropped: int, parts: int, others: int, pending: list[dict[str, Any]]
) -> str:
    steps = []
    if est.get("provision"):
        n = est["provision"]
        took = est.get("provision_ms")
        steps.append(
            f"provision {n} node{'s' if n > 1 else ''} in a new zone "
            + (f"(typically {_duration(took)})" if took is not None else "(time not measured yet)")
        )
    copies = int(est.get("copies") or 0)
    if copies:
        what = f"copy {copies} replica{'s' if copies > 1 else ''}"
        if est.get("bytes") or not est.get("unsized"):
            what += f", {size_words(int(est.get('bytes') or 0))}{_at(est)}"
            if est.get("unsized"):
                what += f" (+{est['unsized']} of unknown size)"
        else:
            what += " of unknown size"
        steps.append(what)
    if dropped:
        steps.append(f"drop {dropped} replica{'s' if dropped > 1 else ''}")
    if pending:
        steps.append(_pending_words(est, pending))
    head = ", ".join(steps) or "no move"
    total = est.get("total_ms")
    if total is not None:
        head += f": about {_duration(int(total))}" if total > 0 else ": within a few ticks"
    elif est.get("provision") and est.get("provision_ms") is None:
        head += ": time unknown until this cluster has provisioned a node to measure"
    elif steps:
        head += ": time unknown until this cluster has finished a move to measure"
    partitions = f"{parts} partition{'' if parts == 1 else 's'}"
    return f"{head}; affects {partitions}, {others} other{'' if others == 1 else 's'}"


def _at(est: dict[str, Any]) -> str:
    rate, throttle = est.get("rate_bytes_per_s"), est.get("throttle_bytes_per_s")
    if rate and throttle and rate < throttle:
        return f" at the measured {size_words(rate)}/s"
    return f" at the {size_words(throttle or 0)}/s throttle"


def _pending_words(est: dict[str, Any], pending: list[dict[str, Any]]) -> str:
    """ "then add 1 replica of p3 (3 GiB at the 50 MiB/s throttle: 1 min 1 s)"."""
    n = sum(int(p["replicas"]) for p in pending)
    names = ", ".join(p["partition"] for p in pending[:3])
    if len(pending) > 3:
        names += f" and {len(pending) - 3} more"
    size = int(est.get("pending_bytes") or 0)
    unsized = int(est.get("pending_unsized") or 0)
    took = est.get("pending_ms")
    if size or not unsized:
        what = f"{size_words(size)}{_at(est)}"
        if unsized:
            what += f" (+{unsized} of unknown size)"
        what += f": {_duration(int(took))}" if took is not None else ": time unknown"
    elif took is not None:  # unsized: the median whole move of this cluster
        what = f"size not reported yet: {_duration(int(took))}, as a move here takes"
    else:
        what = "size not reported yet: time unknown"
    return f"then add {n} replica{'s' if n > 1 else ''} of {names} on it ({what})"


def _sources(est: dict[str, Any]) -> list[str]:
    """Where the estimate's numbers come from, in words."""
    out = []
    if est.get("measured_copies"):
        out.append(
            f"copy rate: {size_words(int(est.get('rate_bytes_per_s') or 0))}/s "
            f"(measured {size_words(int(est.get('measured_bytes_per_s') or 0))}/s over the last "
            f"{est['measured_copies']} copies of this cluster, at most the "
            f"{size_words(int(est.get('throttle_bytes_per_s') or 0))}/s throttle)"
        )
    elif est.get("copies") or est.get("pending_replicas"):
        out.append(
            f"copy rate: the {size_words(int(est.get('throttle_bytes_per_s') or 0))}/s throttle "
            "(no copy of a sized partition measured yet)"
        )
    if est.get("measured_moves"):
        out.append(
            f"a move took {_duration(int(est.get('ms_per_move') or 0))} "
            f"(median of the last {est['measured_moves']} of this cluster); cutover and "
            f"cleanup {_duration(int(est.get('rest_ms') or 0))}"
        )
    return out


def size_words(n: int) -> str:
    """Bytes as an operator reads them: 2.4 GiB, 50 MiB, 512 B."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.1f} {unit}".replace(".0 ", " ")
    return f"{n} B"


def _duration(ms: int) -> str:
    if ms <= 0:
        return "under one tick"  # moves measured in cluster tick time, finished within one
    s = ms // 1000
    if s < 60:
        return f"{s} s" if s else f"{ms} ms"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


# ------------------------------------------------------------------------------ changing


def issue(obj: Ctx, ch: dict[str, Any]) -> Any:
    """Ask the fleet for one change; every change is idempotent, so re-asking is safe."""
    verb = ch["verb"]
    if verb in ("cordon", "uncordon", "drain", "decommission"):
        return obj.remote.call(f"/v1/fleet/{verb}", {"node_id": ch["subject"]})
    if verb == "set_rf":
        return obj.remote.call(
            "/v1/fleet/partitions/set_rf", {"pid": ch["subject"], "rf": ch["rf"]}
        )
    if verb == "create":
        return obj.remote.call(
            "/v1/fleet/partitions/create", {"pid": ch["subject"], "rf": ch["rf"]}
        )
    if verb == "delete":
        return obj.remote.call("/v1/fleet/partitions/delete", {"pid": ch["subject"]})
    raise fail(f"unknown change {verb}", "error")


def limits(obj: Ctx) -> dict[str, int]:
    """Blast-radius limits: the flags, else the config file's ``blast-radius:``, else the
    defaults (`coreplane.ops.guard`)."""
    from coreplane.ops.config import load_file

    conf = load_file().get("blast-radius") or {}
    nodes = obj.nodes_pct if obj.nodes_pct is not None else conf.get("nodes-pct", guard.NODES_PCT)
    parts = (
        obj.partitions_pct
        if obj.partitions_pct is not None
        else conf.get("partitions-pct", guard.PARTITIONS_PCT)
    )
    for name, value in (("nodes-pct", nodes), ("partitions-pct", parts)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise fail(f"blast-radius.{name} must be an integer percentage", "usage")
    return {"nodes_pct": nodes, "partitions_pct": parts}


def dry_plan(obj: Ctx, changes: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(obj.remote.call("/v1/fleet/plan", {"changes": json.dumps(changes)}))


def run_change(
    obj: Ctx,
    *,
    verb: str,
    subject: str,
    changes: list[dict[str, Any]],
    dry_run: bool,
    confirm_cluster: str | None,
    wait: bool,
    destructive: bool = True,
) -> None:
    plan = dry_plan(obj, changes)
    named_nodes = [
        c["subject"]
        for c in changes
        if c["verb"] in ("cordon", "uncordon", "drain", "decommission")
    ]
    named_parts = [c["subject"] for c in changes if c["verb"] in ("set_rf", "create", "delete")]
    rad = guard.radius(
        named_nodes=named_nodes,
        named_partitions=[*named_parts, *(p["partition"] for p in plan.get("pending") or [])],
        moves=plan.get("moves") or [],
        nodes_total=plan.get("nodes_total", 0),
        partitions_total=plan.get("partitions_total", 0),
        destructive=destructive,
        production=bool(plan.get("production")),
        provision=int((plan.get("estimate") or {}).get("provision") or 0),
        **limits(obj),
    )
    if plan.get("warnings"):  # a change that leaves the fleet short always asks
        rad = dataclasses.replace(rad, reasons=(*rad.reasons, *plan["warnings"]))
    oid = operations.op_id(verb, subject, changes)
    if dry_run:
        words = (
            f"{verb} {subject} (operation {oid})\n"
            + estimate_words(plan, named_parts)
            + "\n"
            + rad.sentence()
            + ("\nneeds confirmation: " + "; ".join(rad.reasons) if rad.reasons else "")
        )
        obj.out.data(
            {
                "dry_run": True,
                "operation": oid,
                "changes": changes,
                "plan": plan,
                "blast_radius": rad.to_dict(),
                "words": words,
            },
            lambda d: d["words"],
        )
        return
    client = obj.remote.client
    existing = operations.fetch(client, oid)
    if existing is not None and existing[0].get("state") == "running":
        obj.out.note(
            f"attaching to operation {oid} (started at revision "
            f"{existing[0].get('created_revision', '?')}); not starting another"
        )
        record = existing[0]
    else:
        nodes = {n["id"]: n for n in list_nodes(obj)}
        parts = {p["id"]: p for p in list_partitions(obj)}
        goals = operations.goals_for(changes)
        if (
            existing is not None
            and existing[0].get("state") == "done"
            and operations.distance(goals, nodes, parts) == 0
        ):
            obj.out.note(f"operation {oid} is already done; nothing to do")
            _report(obj, existing[0], 1, 1)
            return
        confirm(
            obj,
            radius=rad,
            destructive=destructive,
            what=f"{verb} {subject}",
            confirm_cluster=confirm_cluster,
        )
        record = {
            "id": oid,
            "verb": verb,
            "subject": subject,
            "changes": changes,
            "goals": goals,
            "state": "running",
            "initial": max(1, operations.distance(goals, nodes, parts)),
            "undo": _undo(changes, nodes, parts),
            "attempt": 1,
        }
        if existing is not None:  # done or cancelled before: the same operation, again
            record["attempt"] = int(existing[0].get("attempt", 1)) + 1
            record["created_revision"] = existing[0].get("created_revision")
            operations.save(client, record)
        else:
            created, record, rev = operations.create(client, record)
            if created:
                record["created_revision"] = rev
                operations.save(client, record)
            else:
                obj.out.note(f"attaching to operation {oid}: another client started it")
    for ch in record["changes"]:
        issue(obj, ch)
    follow(obj, record["id"], wait=wait)


def _undo(
    changes: list[dict[str, Any]],
    nodes: dict[str, dict[str, Any]],
    parts: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """What `ops cancel` asks for: the state before, where it can be asked for."""
    undo: list[dict[str, Any]] = []
    for ch in changes:
        if ch["verb"] in ("drain", "cordon", "decommission"):
            node = nodes.get(ch["subject"])
            if node is not None and node.get("admin") == "active":
                undo.append({"verb": "uncordon", "subject": ch["subject"]})
        elif ch["verb"] == "set_rf" and ch["subject"] in parts:
            undo.append(
                {"verb": "set_rf", "subject": ch["subject"], "rf": parts[ch["subject"]]["rf"]}
            )
        elif ch["verb"] == "uncordon":
            undo.append({"verb": "cordon", "subject": ch["subject"]})
    return undo


def progress_of(obj: Ctx, record: dict[str, Any]) -> tuple[int, int]:
    """(done units, total units) of an operation, from the fleet's views now."""
    nodes = {n["id"]: n for n in list_nodes(obj)}
    parts = {p["id"]: p for p in list_partitions(obj)}
    left = operations.distance(record["goals"], nodes, parts)
    total = max(int(record.get("initial", 1)), left, 1)
    return total - left, total


def follow(obj: Ctx, oid: str, *, wait: bool) -> None:
    """Show the operation until it is done; the watch API on its record paces the loop."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    client = obj.remote.client
    found = operations.fetch(client, oid)
    if found is None:
        raise fail(f"no operation {oid}", "rejected")
    record, rev = found
    done, total = progress_of(obj, record)
    if not wait:
        _report(obj, record, done, total)
        return
    show_bar = obj.output == "table" and sys.stderr.isatty()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=obj.out.err,
        disable=not show_bar,
        transient=False,
    )
    try:
        with progress:
            task = progress.add_task(f"{oid}", total=total, completed=done)
            while record.get("state") == "running" and done < total:
                events, _next = client.watch(
                    operations.PREFIX + oid, start_revision=rev + 1, wait_ms=WAIT_POLL_MS
                )
                for erev, kind, _key, value in events:
                    rev = max(rev, erev)
                    if kind == "put":
                        record = json.loads(value.decode("utf-8"))
                    else:
                        record = {**record, "state": "deleted"}
                done, total = progress_of(obj, record)
                progress.update(task, completed=done, total=total)
                if not show_bar and obj.output == "table":
                    click.echo(f"{oid}: {done}/{total}", err=True)
    except KeyboardInterrupt:
        click.echo(
            f"\ndetached from {oid}; it goes on in the cluster. Run the same command "
            f"or `coreplane ops show {oid}` to attach again.",
            err=True,
        )
        sys.exit(EXIT["detached"])
    if record.get("state") == "running" and done >= total:
        record["state"] = "done"
        record["finished_progress"] = [done, total]
        with contextlib.suppress(CommandRejected):  # a refused put only loses the note
            operations.save(client, record)
    _report(obj, record, done, total)
    if record.get("state") not in ("done", "running"):
        raise fail(f"operation {oid} is {record.get('state')}", "rejected")


def _report(obj: Ctx, record: dict[str, Any], done: int, total: int) -> None:
    data = {
        "operation": record["id"],
        "state": record.get("state"),
        "done": done,
        "total": total,
        "changes": record.get("changes"),
        "attempt": record.get("attempt"),
    }
    obj.out.data(
        data, lambda d: f"operation {d['operation']}: {d['state']} ({d['done']}/{d['total']})"
    )


def as_change(c: Any) -> dict[str, Any]:
    d = {"verb": c.verb, "subject": c.subject}
    if c.verb in ("set_rf", "create"):
        d["rf"] = c.new
    return d

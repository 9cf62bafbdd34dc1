"""The fleet commands: views, admin verbs, scale, plan/apply and operations.

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
from collections.abc import Callable
from typing import Any

import click

from coreplane.errors import CommandRejected
from coreplane.ops import guard, operations
from coreplane.ops.context import EXIT, Ctx, fail
from coreplane.ops.output import kv_table, table

__all__ = ["cluster_flags", "confirm", "register"]

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


def confirm(obj: Ctx, *, radius: guard.Radius | None, destructive: bool, what: str,
            confirm_cluster: str | None = None, force: bool = False) -> None:
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
        raise fail(f"{what}: --confirm-cluster {confirm_cluster!r} is not this cluster "
                   f"({why})", "unconfirmed")
    if not sys.stdin.isatty():
        raise fail(f"{what} needs confirmation: {why}. Pass --confirm-cluster {name} "
                   f"to proceed", "unconfirmed")
    click.echo(f"{what}: {why}.", err=True)
    typed = click.prompt(f"Type the cluster's name ({name}) to proceed", default="",
                         show_default=False, err=True)
    if typed.strip() != name:
        raise fail("confirmation did not match; nothing changed", "unconfirmed")


# ------------------------------------------------------------------------------ reading


def _nodes(obj: Ctx) -> list[dict[str, Any]]:
    return list(obj.remote.call("/v1/fleet/nodes", method="GET")["nodes"])


def _parts(obj: Ctx) -> list[dict[str, Any]]:
    return list(obj.remote.call("/v1/fleet/partitions", method="GET")["partitions"])


def _node_rows(rows: list[dict[str, Any]]) -> Any:
    return table("nodes", ("id", "zone", "state", "liveness", "admin", "replicas", "heat",
                           "operations"),
                 [(n["id"], n["zone"], n["state"], n["liveness"], n["admin"], n["replicas"],
                   n["heat"], len(n.get("operations") or [])) for n in rows])


def _part_rows(rows: list[dict[str, Any]]) -> Any:
    return table("partitions", ("id", "rf", "replicas", "live", "health", "heat", "operation"),
                 [(p["id"], p["rf"], ",".join(p["replicas"]), p["live_replicas"], p["health"],
                   p["heat"], (p.get("operation") or {}).get("id", "")) for p in rows])


def _estimate_words(plan: dict[str, Any]) -> str:
    est = plan.get("estimate") or {}
    moves = plan.get("moves") or []
    moved = sum(1 for m in moves if m.get("source") and m.get("target"))
    added = sum(1 for m in moves if m.get("target") and not m.get("source"))
    dropped = sum(1 for m in moves if m.get("source") and not m.get("target"))
    parts = sorted({m["partition"] for m in moves})
    words = [f"{len(moves)} move(s): move {moved} replica(s) (copy, catch up, cut over, "
             f"remove the source), add {added} new, drop {dropped}"]
    for m in moves[:12]:
        words.append(f"  {m['partition']}: {m.get('source') or '-'} -> {m.get('target') or '-'}")
    if len(moves) > 12:
        words.append(f"  ... and {len(moves) - 12} more")
    ms = est.get("ms_per_move")
    if est.get("measured_moves"):
        total, each = int(est.get("total_ms", 0)), int(ms or 0)
        head = f"about {_duration(total)}" if total > 0 else "within a few ticks"
        words.append(f"{head}: {len(moves)} move(s) in {est.get('waves', 0)} wave(s), up to "
                     f"{est.get('parallel', 1)} at a time; a move took {_duration(each)} "
                     f"(median of the last {est.get('measured_moves', 0)} of this cluster)")
    else:
        words.append("time: unknown until this cluster has finished a move to measure")
    if est.get("provision"):
        words.append(f"provision {est['provision']} node(s) (the host's provider)")
    words.append(f"affects {len(parts)} partition(s)")
    for warning in plan.get("warnings") or []:
        words.append(f"WARNING: {warning}")
    if plan.get("feasible") is False:
        words.append(f"NOT feasible as asked: {plan.get('reason', '')}")
    return "\n".join(words)


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


def _issue(obj: Ctx, ch: dict[str, Any]) -> Any:
    """Ask the fleet for one change; every change is idempotent, so re-asking is safe."""
    verb = ch["verb"]
    if verb in ("cordon", "uncordon", "drain", "decommission"):
        return obj.remote.call(f"/v1/fleet/{verb}", {"node_id": ch["subject"]})
    if verb == "set_rf":
        return obj.remote.call("/v1/fleet/partitions/set_rf",
                               {"pid": ch["subject"], "rf": ch["rf"]})
    if verb == "create":
        return obj.remote.call("/v1/fleet/partitions/create",
                               {"pid": ch["subject"], "rf": ch["rf"]})
    if verb == "delete":
        return obj.remote.call("/v1/fleet/partitions/delete", {"pid": ch["subject"]})
    raise fail(f"unknown change {verb}", "error")


def _limits(obj: Ctx) -> dict[str, int]:
    """Blast-radius limits: the flags, else the config file's ``blast-radius:``, else the
    defaults (`coreplane.ops.guard`)."""
    from coreplane.ops.config import load_file

    conf = load_file().get("blast-radius") or {}
    nodes = (obj.nodes_pct if obj.nodes_pct is not None
             else conf.get("nodes-pct", guard.NODES_PCT))
    parts = (obj.partitions_pct if obj.partitions_pct is not None
             else conf.get("partitions-pct", guard.PARTITIONS_PCT))
    for name, value in (("nodes-pct", nodes), ("partitions-pct", parts)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise fail(f"blast-radius.{name} must be an integer percentage", "usage")
    return {"nodes_pct": nodes, "partitions_pct": parts}


def _dry_plan(obj: Ctx, changes: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(obj.remote.call("/v1/fleet/plan", {"changes": json.dumps(changes)}))


def run_change(obj: Ctx, *, verb: str, subject: str, changes: list[dict[str, Any]],
               dry_run: bool, confirm_cluster: str | None, wait: bool,
               destructive: bool = True) -> None:
    plan = _dry_plan(obj, changes)
    named_nodes = [c["subject"] for c in changes
                   if c["verb"] in ("cordon", "uncordon", "drain", "decommission")]
    named_parts = [c["subject"] for c in changes if c["verb"] in ("set_rf", "create", "delete")]
    rad = guard.radius(named_nodes=named_nodes, named_partitions=named_parts,
                       moves=plan.get("moves") or [], nodes_total=plan.get("nodes_total", 0),
                       partitions_total=plan.get("partitions_total", 0),
                       destructive=destructive, production=bool(plan.get("production")),
                       **_limits(obj))
    if plan.get("warnings"):  # a change that leaves the fleet short always asks
        rad = dataclasses.replace(rad, reasons=(*rad.reasons, *plan["warnings"]))
    oid = operations.op_id(verb, subject, changes)
    if dry_run:
        words = (f"{verb} {subject} (operation {oid})\n" + _estimate_words(plan) + "\n"
                 + rad.sentence()
                 + ("\nneeds confirmation: " + "; ".join(rad.reasons) if rad.reasons else ""))
        obj.out.data({"dry_run": True, "operation": oid, "changes": changes,
                      "plan": plan, "blast_radius": rad.to_dict(), "words": words},
                     lambda d: d["words"])
        return
    client = obj.remote.client
    existing = operations.fetch(client, oid)
    if existing is not None and existing[0].get("state") == "running":
        obj.out.note(f"attaching to operation {oid} (started at revision "
                     f"{existing[0].get('created_revision', '?')}); not starting another")
        record = existing[0]
    else:
        nodes = {n["id"]: n for n in _nodes(obj)}
        parts = {p["id"]: p for p in _parts(obj)}
        goals = operations.goals_for(changes)
        if existing is not None and existing[0].get("state") == "done" \
                and operations.distance(goals, nodes, parts) == 0:
            obj.out.note(f"operation {oid} is already done; nothing to do")
            _report(obj, existing[0], 1, 1)
            return
        confirm(obj, radius=rad, destructive=destructive, what=f"{verb} {subject}",
                confirm_cluster=confirm_cluster)
        record = {"id": oid, "verb": verb, "subject": subject, "changes": changes,
                  "goals": goals, "state": "running",
                  "initial": max(1, operations.distance(goals, nodes, parts)),
                  "undo": _undo(changes, nodes, parts), "attempt": 1}
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
        _issue(obj, ch)
    follow(obj, record["id"], wait=wait)


def _undo(changes: list[dict[str, Any]], nodes: dict[str, dict[str, Any]],
          parts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """What `ops cancel` asks for: the state before, where it can be asked for."""
    undo: list[dict[str, Any]] = []
    for ch in changes:
        if ch["verb"] in ("drain", "cordon", "decommission"):
            node = nodes.get(ch["subject"])
            if node is not None and node.get("admin") == "active":
                undo.append({"verb": "uncordon", "subject": ch["subject"]})
        elif ch["verb"] == "set_rf" and ch["subject"] in parts:
            undo.append({"verb": "set_rf", "subject": ch["subject"],
                         "rf": parts[ch["subject"]]["rf"]})
        elif ch["verb"] == "uncordon":
            undo.append({"verb": "cordon", "subject": ch["subject"]})
    return undo


def progress_of(obj: Ctx, record: dict[str, Any]) -> tuple[int, int]:
    """(done units, total units) of an operation, from the fleet's views now."""
    nodes = {n["id"]: n for n in _nodes(obj)}
    parts = {p["id"]: p for p in _parts(obj)}
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
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=obj.out.err, disable=not show_bar, transient=False)
    try:
        with progress:
            task = progress.add_task(f"{oid}", total=total, completed=done)
            while record.get("state") == "running" and done < total:
                events, _next = client.watch(operations.PREFIX + oid, start_revision=rev + 1,
                                             wait_ms=WAIT_POLL_MS)
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
        click.echo(f"\ndetached from {oid}; it goes on in the cluster. Run the same command "
                   f"or `coreplane ops show {oid}` to attach again.", err=True)
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
    data = {"operation": record["id"], "state": record.get("state"), "done": done,
            "total": total, "changes": record.get("changes"), "attempt": record.get("attempt")}
    obj.out.data(data, lambda d: f"operation {d['operation']}: {d['state']} ({d['done']}/"
                                 f"{d['total']})")


# ------------------------------------------------------------------------------ commands


def register(main: click.Group, command: Callable[..., Any]) -> None:
    mutating = [
        click.option("--dry-run", is_flag=True, help="the plan in words; change nothing"),
        click.option("--confirm-cluster", default=None, metavar="NAME",
                     help="the cluster's name: confirms a wide or production change"),
        click.option("--wait/--no-wait", default=True, help="follow progress (default)"),
    ]

    def with_mutating(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(mutating):
            fn = opt(fn)
        return fn

    @main.group()
    def nodes() -> None:
        """Fleet nodes: list, show."""

    @command(nodes, "list")
    @click.option("--zone", default=None, help="only this zone")
    def nodes_list(obj: Ctx, zone: str | None) -> None:
        rows = [n for n in _nodes(obj) if zone is None or n["zone"] == zone]
        obj.out.data(rows, _node_rows)

    @command(nodes, "show")
    @click.argument("node_id")
    def nodes_show(obj: Ctx, node_id: str) -> None:
        node = obj.remote.call("/v1/fleet/node", {"node_id": node_id})["node"]
        if node is None:
            raise fail(f"no node {node_id!r}", "rejected")
        obj.out.data(node, lambda d: kv_table(f"node {node_id}", d))

    @main.group()
    def partitions() -> None:
        """Partitions: list, show."""

    @command(partitions, "list")
    @click.option("--unhealthy", is_flag=True, help="only those not healthy")
    def partitions_list(obj: Ctx, unhealthy: bool) -> None:
        rows = [p for p in _parts(obj) if not unhealthy or p["health"] != "healthy"]
        obj.out.data(rows, _part_rows)

    @command(partitions, "show")
    @click.argument("pid")
    def partitions_show(obj: Ctx, pid: str) -> None:
        part = obj.remote.call("/v1/fleet/partition", {"pid": pid})["partition"]
        if part is None:
            raise fail(f"no partition {pid!r}", "rejected")
        obj.out.data(part, lambda d: kv_table(f"partition {pid}", d))

    def admin_command(verb: str, doc: str, destructive: bool) -> None:
        @command(main, verb, help=doc)
        @click.argument("node_id")
        @with_mutating
        def run(obj: Ctx, node_id: str, dry_run: bool, confirm_cluster: str | None,
                wait: bool) -> None:
            run_change(obj, verb=verb, subject=node_id,
                       changes=[{"verb": verb, "subject": node_id}], dry_run=dry_run,
                       confirm_cluster=confirm_cluster, wait=wait, destructive=destructive)

    admin_command("cordon", "Place no new replica on NODE.", True)
    admin_command("uncordon", "Let NODE take replicas again.", False)
    admin_command("drain", "Move every replica off NODE (it stays cordoned).", True)
    admin_command("decommission", "Drain NODE, then release it for good.", True)

    @main.group()
    def update() -> None:
        """Change desired state: `update partition ID --scale-up --new-num-nodes N`."""

    @command(update, "partition")
    @click.argument("pid")
    @click.option("--scale-up", "direction", flag_value="up", help="more nodes hold it")
    @click.option("--scale-down", "direction", flag_value="down", help="fewer nodes hold it")
    @click.option("--new-num-nodes", type=click.IntRange(1, 64), required=True,
                  help="how many nodes hold a replica (its RF) afterwards")
    @with_mutating
    def update_partition(obj: Ctx, pid: str, direction: str | None, new_num_nodes: int,
                         dry_run: bool, confirm_cluster: str | None, wait: bool) -> None:
        """Scale partition PID to --new-num-nodes replicas (one per node, distinct zones)."""
        if direction is None:
            raise fail("say --scale-up or --scale-down", "usage")
        part = obj.remote.call("/v1/fleet/partition", {"pid": pid})["partition"]
        if part is None:
            raise fail(f"no partition {pid!r}", "rejected")
        rf = int(part["rf"])
        if (new_num_nodes < rf) if direction == "up" else (new_num_nodes > rf):
            raise fail(f"--scale-{direction} to {new_num_nodes}, but {pid} has {rf} now",
                       "usage")
        run_change(obj, verb=f"scale-{direction}", subject=pid,
                   changes=[{"verb": "set_rf", "subject": pid, "rf": new_num_nodes}],
                   dry_run=dry_run, confirm_cluster=confirm_cluster, wait=wait)

    def spec_changes(obj: Ctx, path: str) -> tuple[dict[str, Any], list[Any]]:
        from coreplane.ops import spec as specs

        with open(path, encoding="utf-8") as f:
            desired = specs.parse(f.read())
        return desired, specs.diff(desired, _parts(obj), _nodes(obj))

    @command(main, "plan")
    @click.option("-f", "--filename", "path", required=True, type=click.Path(exists=True))
    def plan_cmd(obj: Ctx, path: str) -> None:
        """Show what `apply -f` would change (as kubectl diff); exit 8 when something would."""
        _desired, changes = spec_changes(obj, path)
        moves: dict[str, Any] = {}
        if changes:
            moves = _dry_plan(obj, [_as_change(c) for c in changes])
        data = {"in_sync": not changes, "changes": [c.to_dict() for c in changes],
                "diff": [c.line() for c in changes], "plan": moves}
        obj.out.data(data, lambda d: "\n".join(d["diff"]) + (
            "\n\n" + _estimate_words(moves) if moves else "") if d["diff"] else "in sync")
        if changes:
            raise SystemExit(EXIT["pending"])

    @command(main, "apply")
    @click.option("-f", "--filename", "path", required=True, type=click.Path(exists=True))
    @with_mutating
    def apply_cmd(obj: Ctx, path: str, dry_run: bool, confirm_cluster: str | None,
                  wait: bool) -> None:
        """Make the fleet match the spec file (partitions with RF, cordons); resumable."""
        desired, changes = spec_changes(obj, path)
        if desired["cluster"]:
            name = cluster_flags(obj)["name"]
            if desired["cluster"] != name:
                raise fail(f"the spec is for cluster {desired['cluster']!r}, this is {name!r}",
                           "usage")
        if not changes:
            obj.out.data({"in_sync": True, "changes": []}, lambda d: "in sync: nothing to do")
            return
        run_change(obj, verb="apply", subject=path.rsplit("/", 1)[-1],
                   changes=[_as_change(c) for c in changes], dry_run=dry_run,
                   confirm_cluster=confirm_cluster, wait=wait)

    @main.group()
    def ops() -> None:
        """Operations: list, show, resume, cancel."""

    @command(ops, "list")
    @click.option("--all", "show_all", is_flag=True, help="finished ones too")
    def ops_list(obj: Ctx, show_all: bool) -> None:
        client = obj.remote.client
        records = [json.loads(v.decode("utf-8")) for _k, v, _r in
                   client.range(operations.PREFIX)]
        records = [r for r in records if show_all or r.get("state") == "running"]
        moves = obj.remote.call("/v1/fleet/operations", method="GET")["operations"]
        data = {"operations": records, "moves_in_flight": moves}

        def show(d: dict[str, Any]) -> Any:
            from rich.console import Group

            return Group(
                table("operations", ("id", "state", "changes", "attempt"),
                      [(r["id"], r.get("state"), len(r.get("changes") or []), r.get("attempt"))
                       for r in d["operations"]]),
                table("moves in flight", ("id", "partition", "source", "target", "step",
                                          "attempt"),
                      [(m["id"], m["partition"], m.get("source"), m.get("target"), m["step"],
                        m["attempt"]) for m in d["moves_in_flight"]]))

        obj.out.data(data, show)

    @command(ops, "show")
    @click.argument("oid")
    def ops_show(obj: Ctx, oid: str) -> None:
        found = operations.fetch(obj.remote.client, oid)
        if found is None:
            raise fail(f"no operation {oid}", "rejected")
        done, total = progress_of(obj, found[0])
        obj.out.data({**found[0], "progress": [done, total]},
                     lambda d: kv_table(f"operation {oid}", d))

    @command(ops, "resume")
    @click.argument("oid")
    @click.option("--wait/--no-wait", default=True)
    def ops_resume(obj: Ctx, oid: str, wait: bool) -> None:
        """Ask again for the operation's changes (idempotent) and follow it."""
        found = operations.fetch(obj.remote.client, oid)
        if found is None:
            raise fail(f"no operation {oid}", "rejected")
        record = found[0]
        if record.get("state") != "running":
            raise fail(f"operation {oid} is {record.get('state')}; run its command again to "
                       "start it anew", "rejected")
        for ch in record["changes"]:
            _issue(obj, ch)
        follow(obj, oid, wait=wait)

    @command(ops, "cancel")
    @click.argument("oid")
    @click.option("--dry-run", is_flag=True)
    @click.option("--confirm-cluster", default=None, metavar="NAME")
    def ops_cancel(obj: Ctx, oid: str, dry_run: bool, confirm_cluster: str | None) -> None:
        """Stop an operation: ask for the state before it (where that can be asked for)."""
        client = obj.remote.client
        found = operations.fetch(client, oid)
        if found is None:
            raise fail(f"no operation {oid}", "rejected")
        record = found[0]
        undo = record.get("undo") or []
        if dry_run:
            obj.out.data({"dry_run": True, "operation": oid, "undo": undo},
                         lambda d: f"cancel {oid}: " + (", ".join(
                             f"{u['verb']} {u['subject']}" + (f" rf {u['rf']}" if "rf" in u
                                                              else "") for u in undo)
                             or "nothing to undo; the record is marked cancelled"))
            return
        rad = None
        if undo:  # the undo is a change like any other: the same blast-radius rule
            plan = _dry_plan(obj, undo)
            rad = guard.radius(named_nodes=[u["subject"] for u in undo if u["verb"] != "set_rf"],
                               named_partitions=[u["subject"] for u in undo
                                                 if u["verb"] == "set_rf"],
                               moves=plan.get("moves") or [],
                               nodes_total=plan.get("nodes_total", 0),
                               partitions_total=plan.get("partitions_total", 0),
                               destructive=True, production=bool(plan.get("production")),
                               **_limits(obj))
        confirm(obj, radius=rad, destructive=True, what=f"cancel {oid}",
                confirm_cluster=confirm_cluster)
        record["state"] = "cancelled"
        operations.save(client, record)
        for ch in undo:
            _issue(obj, ch)
        obj.out.data({"operation": oid, "state": "cancelled", "undo": undo},
                     lambda d: f"operation {oid} cancelled")

    @command(main, "explain")
    @click.argument("thing")
    @click.option("--limit", type=click.IntRange(1, 1000), default=50)
    def explain(obj: Ctx, thing: str, limit: int) -> None:
        """The fleet's committed decisions about a node, partition or operation, in order."""
        rows = obj.remote.call("/v1/fleet/explain", {"thing": thing, "limit": limit})[
            "decisions"]
        obj.out.data(rows, lambda r: table(f"decisions about {thing}",
                                           ("index", "tick_ms", "decision"),
                                           [(x["index"], x["tick_ms"], x["text"]) for x in r])
                     if r else f"no decision names {thing}")


def _as_change(c: Any) -> dict[str, Any]:
    d = {"verb": c.verb, "subject": c.subject}
    if c.verb in ("set_rf", "create"):
        d["rf"] = c.new
    return d

